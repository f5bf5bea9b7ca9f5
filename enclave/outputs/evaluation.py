"""Evaluating an output from its record alone: the one code path the kernel and the recheck share.

An output is described by its SQL (what ibis compiled; every row the output reads) and a small
``spec`` (kind, patient column, grouping, statistic, parameters). :func:`evaluate` runs both on a
DuckDB connection to the release and returns the result, the per-cell outcomes and the
publishable values. The researcher's kernel calls it to make an output; the recheck calls it in a
separate process on the release the record names, so what is recorded is exactly what is checked.

Cells are plain JSON-ready dicts: ``cell`` (the grouping values), ``statistic``, ``value`` (null
when suppressed), ``outcome`` (``pass`` / ``fail`` / ``review``), ``reasons`` and ``extra`` (other
published numbers of the cell, e.g. standard errors or patients at risk).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from enclave.disclosure import DisclosurePolicy
from enclave.errors import BadInputError

OUTCOMES = {"ok": "pass", "suppress": "fail", "review": "review"}
STATUSES = ("pass", "review", "fail")
POPULATION = "*"  # cell key of an output's whole population in the ledger


@dataclass
class Evaluation:
    """What one evaluation produced: the result frame, the cells, notes, and (lazily) who is in
    each published cell for the differencing ledger."""

    result: pl.DataFrame
    cells: list[dict]
    notes: list[str] = field(default_factory=list)
    members: Callable[[], pl.DataFrame] | None = None  # → (cell_key, person_id)
    spec: dict = field(default_factory=dict)  # parameters chosen while evaluating (e.g. interval)

    @property
    def status(self) -> str:
        return status_of(self.cells)

    @property
    def reasons(self) -> list[str]:
        return self.notes + summarize(self.cells)


def status_of(cells: list[dict]) -> str:
    outcomes = {c["outcome"] for c in cells}
    return "fail" if "fail" in outcomes else "review" if "review" in outcomes else "pass"


def summarize(cells: list[dict]) -> list[str]:
    """Plain-language reasons: one line per distinct reason, with how many cells it hit."""
    seen: dict[str, int] = {}
    for c in cells:
        for r in c["reasons"]:
            seen[r] = seen.get(r, 0) + 1
    out = []
    for reason in seen:
        labels = list(dict.fromkeys(cell_label(c["cell"]) for c in cells if reason in c["reasons"]))
        label = "; ".join(labels[:3]) + (f" (+{len(labels) - 3} more)" if len(labels) > 3 else "")
        out.append(f"{label}: {reason}")
    return out


def jsonable(v: Any) -> Any:
    """A JSON value for a cell key or statistic (dates as ISO text, NaN as null)."""
    if isinstance(v, float):
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(v, (dt.date, dt.datetime, dt.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if hasattr(v, "item"):  # numpy scalar
        return jsonable(v.item())
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return str(v)


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def cell_key(cell: dict) -> str:
    return canonical({k: jsonable(v) for k, v in cell.items()})


def cell_label(cell: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell.items()) or "(all)"


def make_cell(cell: dict, statistic: str, value: Any, outcome: str, reasons: list[str],
              extra: dict | None = None) -> dict:
    return {"cell": {k: jsonable(v) for k, v in cell.items()}, "statistic": statistic,
            "value": jsonable(value) if outcome != "fail" else None, "outcome": outcome,
            "reasons": list(reasons), "extra": {k: jsonable(v) for k, v in (extra or {}).items()}}


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def compare_cells(stored: list[dict], recomputed: list[dict]) -> list[str]:
    """Differences between a record's cells and a recomputation (cell labels only, no values)."""
    key = lambda c: (cell_key(c["cell"]), c["statistic"])
    old = {key(c): c for c in stored}
    new = {key(c): c for c in recomputed}
    problems = []
    for k in sorted(set(old) | set(new)):
        label = f"{cell_label(json.loads(k[0]))} [{k[1]}]"
        if k not in new:
            problems.append(f"cell {label} is in the record but not in the recomputed result")
        elif k not in old:
            problems.append(f"cell {label} is in the recomputed result but not in the record")
        else:
            a, b = old[k], new[k]
            if a["outcome"] != b["outcome"]:
                problems.append(f"cell {label}: recorded outcome {a['outcome']}, recomputed "
                                f"{b['outcome']}")
            if not _close(a["value"], b["value"]):
                problems.append(f"cell {label}: the recorded value differs from the recomputed one")
            for x in sorted(set(a.get("extra", {})) | set(b.get("extra", {}))):
                if not _close(a.get("extra", {}).get(x), b.get("extra", {}).get(x)):
                    problems.append(f"cell {label}: the recorded {x} differs from the recomputed one")
    return problems


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sub(sql: str) -> str:
    return f"({sql.strip()})"


def members_frame(con: duckdb.DuckDBPyConnection, sql: str, patient: str,
                  groups: list[str], published: set[str] | None) -> pl.DataFrame:
    """(cell_key, person_id) of the published cells of ``groups`` over ``sql``, plus the whole
    population under :data:`POPULATION`; ``person_id`` is the DuckDB hash of the pseudonym's text
    (computed next to the data). For the ledger only, never for a record."""
    from enclave.db import frame  # I/O helper; evaluation stays importable without a database

    cols = ", ".join(q(g) for g in groups)
    sel = f"{cols}, " if groups else ""
    data = frame(con, f"SELECT DISTINCT {sel}hash(CAST({q(patient)} AS VARCHAR)) AS person_id "
                      f"FROM {sub(sql)} AS _r")
    pop = data.select(pl.lit(POPULATION).alias("cell_key"), "person_id").unique()
    if not groups:
        return pop
    levels = data.select(groups).unique()  # keys are made per cell, not per row
    levels = levels.with_columns(pl.Series("cell_key", [cell_key(dict(zip(groups, row)))
                                                        for row in levels.rows()], dtype=pl.String))
    cells = data.join(levels, on=groups, how="left", nulls_equal=True).select("cell_key",
                                                                               "person_id")
    if published is not None:
        cells = cells.filter(pl.col("cell_key").is_in(list(published)))
    return pl.concat([pop, cells])


def evaluate(con: duckdb.DuckDBPyConnection, sql: str, spec: dict,
             policy: DisclosurePolicy) -> Evaluation:
    """Result and per-cell outcomes of the output ``spec`` over the rows of ``sql``.

    The SQL is validated first (:func:`enclave.outputs.sql.check_output_query`: one SELECT over
    the release's tables, patients from a release ``person_id`` that exist in ``person``), in the
    kernel as in the airlock's sandbox, so a researcher learns at once what the airlock refuses."""
    from enclave.outputs import models, tables
    from enclave.outputs.sql import check_output_query

    kinds = {"crosstab": tables.evaluate_groups, "pivot_table": tables.evaluate_groups,
             "histogram": tables.evaluate_histogram, "ols": models.evaluate_model,
             "logit": models.evaluate_model, "survival": models.evaluate_survival}
    kind = spec.get("kind")
    if kind not in kinds:
        raise BadInputError(f"unknown output kind '{kind}' (known: {', '.join(kinds)})")
    check_output_query(con, sql, spec.get("patient"))
    return kinds[kind](con, sql, spec, policy)
