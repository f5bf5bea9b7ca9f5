"""The checked outputs a notebook makes: each takes ibis tables from ``ws.table(...)``.

Every function compiles its ibis expression to SQL (``ibis.to_sql(expr, dialect="duckdb")``),
evaluates the output from that SQL and a small spec (:func:`enclave.io.outputs.evaluation.evaluate`,
the same code the recheck runs), writes the record (SQL, the code lists it reads, release and
policy hashes, cells, record hash) and checks it against the user's local differencing ledger.
"""

from __future__ import annotations

import builtins
import datetime as dt
import getpass
import hashlib
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import ibis

from enclave.core.errors import BadInputError
from enclave.core.manifest import RELEASE_DB
from enclave.core.settings import Settings
from enclave.io.db import rows as db_rows
from enclave.io.outputs import ledger
from enclave.io.outputs.cells import q, status_of
from enclave.io.outputs.codelists import CodeListLimits, create, from_record, referenced
from enclave.io.outputs.evaluation import evaluate
from enclave.io.outputs.recheck import record_release_dir
from enclave.io.outputs.record import RECORD_FORMAT, record_hash
from enclave.io.outputs.tables import nice_edges, parse_aggfunc
from enclave.logic.disclosure.policy import policy_dict, policy_from_settings, policy_hash
from enclave.research.output import Output

PATIENT = "person_id"


def _backend(t):
    try:
        con = t.get_backend()
    except Exception:  # noqa: BLE001 - an expression with no backend (a memtable only)
        con = None
    if con is None or getattr(con, "_enclave_release", None) is None:
        raise BadInputError("checked outputs take tables from a workspace: ws = workspace(); "
                            "t = ws.table('person')")
    return con


def _settings(con) -> Settings:
    """The settings of the workspace that opened ``con`` (see :func:`_backend`)."""
    settings = getattr(con, "_enclave_settings", None)
    if settings is None:
        raise BadInputError("checked outputs take tables from a workspace: ws = workspace(); "
                            "t = ws.table('person')")
    return settings


def _need(t, cols: list[str], patient: str) -> None:
    have = list(t.columns)
    if patient not in have:
        raise BadInputError(
            f"the table has no patient column '{patient}' (columns: {', '.join(have)}); every "
            "release table carries person_id: join to one that has it, or pass patient=...")
    missing = [c for c in cols if c is not None and c not in have]
    if missing:
        raise BadInputError(f"no column(s) {', '.join(missing)} in the table "
                            f"(columns: {', '.join(have)})")


def _select(t, patient: str, cols: list[str | None]):
    names = []
    for c in [patient, *cols]:
        if c is not None and c not in names:
            names.append(c)
    return t.select(*names)


def user_dir(settings: Settings) -> Path:
    return Path(settings.research.user_dir).expanduser()


class _Clock:
    """Seconds spent in each step of making an output (``Output.timings``; not recorded)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._t
        self._t = now


def _make(kind: str, expr, spec: dict) -> Output:
    clock = _Clock()
    con = _backend(expr)
    ref, settings = con._enclave_release, _settings(con)
    policy = policy_from_settings(settings.disclosure)
    sql = ibis.to_sql(expr, dialect="duckdb")
    mine = getattr(con, "_enclave_codelists", None)
    lists = referenced(sql, mine.values()) if mine else ()  # the code lists the output reads
    clock.lap("compile")
    ev = evaluate(con.con, sql, spec, policy, lists)
    clock.lap("evaluate")
    spec = spec | ev.spec
    record = {
        "format": RECORD_FORMAT,
        "output_id": uuid.uuid4().hex,
        "kind": kind,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "user": getpass.getuser(),
        "project": ref.project,
        "tier": ref.tier,
        "release": ref.name,
        "release_sha256": ref.release_sha256,
        "manifest_sha256": ref.manifest_sha256,
        "sql": sql,
        "codelists": [c.as_record() for c in lists],
        "spec": spec,
        "policy": policy_dict(policy),
        "policy_sha256": policy_hash(policy),
        "policy_settings": asdict(settings.disclosure),
        "cells": ev.cells,
        "status": status_of(ev.cells),
        "reasons": ev.reasons,
        "ledger_hits": [],
    }
    if ev.members is not None:
        path = user_dir(settings) / "ledger.duckdb"
        try:
            hits = ledger.check_and_add_output(path, record, ev, policy.min_patients,
                                               _recompute(con, ref, settings, policy))
            record["ledger_hits"] = [h.as_dict() for h in hits]
        except Exception as exc:  # noqa: BLE001 - local feedback only; the airlock's ledger rules
            record["reasons"] = record["reasons"] + [
                (f"the local differencing ledger could not be consulted ({type(exc).__name__}); "
                "the airlock checks its own")]
        clock.lap("ledger")
    ev.close()
    record["record_sha256"] = record_hash(record)
    out = Output(record, ev.result, settings=settings)
    clock.lap("record")
    out.timings = clock.laps
    return out


def _recompute(con, ref, settings: Settings, policy):
    """The members of earlier outputs, recomputed from their recipes (release, SQL, code lists,
    spec) when the local ledger needs their exact patient sets: on this workspace's connection
    when the release is the same (a cursor of it, with the recipe's own code lists, when it has
    any: the workspace's may have changed since), else on that release opened read-only."""
    import duckdb
    import polars as pl


    def members(recipes: list[dict]) -> pl.DataFrame:
        parts = []
        for r in recipes:
            lists = from_record(r.get("codelists"), CodeListLimits.from_settings(settings))
            same = r.get("release") == ref.name
            db = (con.con.cursor() if lists else con.con) if same else duckdb.connect(
                str(record_release_dir(r, settings) / RELEASE_DB), read_only=True)
            try:
                create(db, lists)
                ev = evaluate(db, r["sql"], r["spec"], policy, lists)
                m = ev.members()
                ev.close()
            finally:
                if db is not con.con:
                    db.close()
            parts.append(m.with_columns(pl.lit(r["output_id"]).alias("output_id")))
        return pl.concat(parts, how="diagonal_relaxed")

    return members


def crosstab(t, index: str, columns: str, values: str | None = None, aggfunc: str = "count", *,
             patient: str = PATIENT, sensitive: str | None = None) -> Output:
    """A two-way table of ``index`` × ``columns``: counts of rows (``count``), distinct patients
    (``patients``), or ``aggfunc`` of ``values`` per cell. Empty cells are cells (zeros rule);
    secondary suppression protects suppressed cells from the totals; a row whose patients all
    share one ``columns`` value is flagged for review (class disclosure)."""
    _need(t, [index, columns, values, sensitive], patient)
    parse_aggfunc(aggfunc)
    if values is None and aggfunc not in ("count", "patients"):
        raise BadInputError(f"aggfunc '{aggfunc}' needs values=...")
    spec = {"kind": "crosstab", "patient": patient, "groups": [index, columns], "value": values,
            "sensitive": sensitive, "aggfuncs": [aggfunc]}
    return _make("crosstab", _select(t, patient, [index, columns, values, sensitive]), spec)


def pivot_table(t, index: str | list[str], values: str | None = None,
                aggfunc: str | list[str] = "mean", *, patient: str = PATIENT,
                sensitive: str | None = None) -> Output:
    """One row per level of ``index`` (one or two columns), one column per ``aggfunc`` of
    ``values``: count, patients, sum, mean, median, min, max, std, q1 … q99. ``sensitive``: a
    column whose value, shared by every patient of a cell, is flagged (class disclosure)."""
    idx = [index] if isinstance(index, str) else list(index)
    aggs = [aggfunc] if isinstance(aggfunc, str) else list(aggfunc)
    for a in aggs:
        parse_aggfunc(a)
    _need(t, [*idx, values, sensitive], patient)
    spec = {"kind": "pivot_table", "patient": patient, "groups": idx, "value": values,
            "sensitive": sensitive, "aggfuncs": aggs}
    return _make("pivot_table", _select(t, patient, [*idx, values, sensitive]), spec)


def histogram(t, column: str, bins: int | list[float] = 10,
              range: tuple[float, float] | None = None, *, patient: str = PATIENT) -> Output:
    """Counts of rows per bin of ``column`` (each bin a cell; the last bin is closed). Without
    ``range`` or explicit edges, the edges are widened to round numbers around the data."""
    _need(t, [column], patient)
    expr = _select(t, patient, [column])
    if isinstance(bins, (list, tuple)):
        edges, given = [float(b) for b in bins], True
    else:
        if int(bins) < 1:
            raise BadInputError("bins must be ≥ 1")
        if range is not None:
            lo, hi = float(range[0]), float(range[1])
            if not hi > lo:
                raise BadInputError("range must be (low, high) with high > low")
            edges, given = ([lo + (hi - lo) * i / int(bins) for i in builtins.range(int(bins) + 1)],
                             True)
        else:
            con = _backend(t).con
            sql = ibis.to_sql(expr, dialect="duckdb")
            (lo, hi), = db_rows(con, f"SELECT min(CAST({q(column)} AS DOUBLE)), "
                                     f"max(CAST({q(column)} AS DOUBLE)) FROM ({sql})")
            if lo is None:
                raise BadInputError(f"column '{column}' has no values")
            edges, given = nice_edges(lo, hi, int(bins)), False
    spec = {"kind": "histogram", "patient": patient, "value": column, "edges": edges,
            "range_given": given, "groups": ["bin"]}
    return _make("histogram", expr, spec)



def ols(formula: str, data, *, patient: str = PATIENT) -> Output:
    """Ordinary least squares (statsmodels formula) on ``data``; coefficients with standard
    errors, p-values and 95 % intervals, checked on the whole estimation sample."""
    _need(data, [], patient)
    return _make("ols", data, {"kind": "ols", "patient": patient, "formula": formula})


def logit(formula: str, data, *, patient: str = PATIENT) -> Output:
    """Logistic regression (statsmodels formula) on ``data``; checked like :func:`ols`."""
    _need(data, [], patient)
    return _make("logit", data, {"kind": "logit", "patient": patient, "formula": formula})


def survival(t, duration: str, event: str, group: str | None = None, *,
             interval: float | None = None, patient: str = PATIENT) -> Output:
    """Kaplan–Meier curve(s) of ``duration`` with ``event`` (non-zero = event), one row per
    patient, optionally per ``group``; times are coarsened to ``interval`` (default: the smallest
    of ``research.survival_intervals`` that passes; see :mod:`enclave.io.outputs.models`)."""
    _need(t, [duration, event, group], patient)
    settings = _settings(_backend(t))
    spec = {"kind": "survival", "patient": patient, "duration": duration, "event": event,
            "group": group, "interval": interval,
            "intervals": list(settings.research.survival_intervals),
            "groups": [group] if group else []}
    return _make("survival", _select(t, patient, [duration, event, group]), spec)


def custom(path: str | Path, *, ws, description: str = "") -> Output:
    """A file no rule can read (a figure, a fitted object), made in workspace ``ws`` (its release
    and settings): always ``review`` by two stewards."""
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"no file {p}")
    data = p.read_bytes()
    ref = ws.current()
    settings = ws.settings
    policy = policy_from_settings(settings.disclosure)
    record = {
        "format": RECORD_FORMAT, "output_id": uuid.uuid4().hex, "kind": "custom",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "user": getpass.getuser(), "project": ref.project, "tier": ref.tier, "release": ref.name,
        "release_sha256": ref.release_sha256, "manifest_sha256": ref.manifest_sha256,
        "sql": None, "codelists": [], "spec": {"kind": "custom", "file": p.name, "bytes": len(data),
                              "sha256": hashlib.sha256(data).hexdigest(),
                              "description": description},
        "policy": policy_dict(policy), "policy_sha256": policy_hash(policy),
        "policy_settings": asdict(settings.disclosure), "cells": [], "status": "review",
        "reasons": ["a custom file: no rule can read it, a steward must review it"],
        "ledger_hits": [],
    }
    record["record_sha256"] = record_hash(record)
    return Output(record, None, files={p.name: data}, settings=settings)

