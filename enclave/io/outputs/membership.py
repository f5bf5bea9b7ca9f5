"""Who is in each published cell of an output, for the differencing ledger (never for a record).

An output's membership is a relation with one row per cell × patient: the cell's grouping values,
``_person`` (the patient column as it is) and ``_rows`` (that patient's rows in the cell). A
patient's ledger key is DuckDB's 64-bit hash of it (:func:`person_hash`, computed next to the
data). Two things are drawn from the relation:

* :meth:`Membership.profile` — per published cell and for the whole population (cell
  :data:`POPULATION`): its patients, its rows and two sketches, the patients and the rows that
  fall in each of :data:`BUCKETS` buckets of their keys. One aggregation where the data are;
  nothing patient-level leaves DuckDB. If cell A's patients (or rows, as a multiset) are contained
  in cell B's, every bucket of A is ≤ that of B and the bucket differences add up to exactly the
  difference of the totals, so the ledger can rule out almost every pair from profiles alone.
* :meth:`Membership.members` — the exact sets ``(cell_key, person_id, rows)``, fetched only when
  a pair survives the profiles (the researcher's kernel) or for the airlock's authoritative ledger.

Outputs computed in Python (models, survival curves) give their members as a frame instead
(``Evaluation.members``); the ledger computes their profile from it by the same SQL
(:func:`members_profile`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import duckdb
import polars as pl

from enclave.core.errors import BadInputError
from enclave.io.db import frame, run, scalar

T = TypeVar("T")
POPULATION = "*"  # cell key of an output's whole population
BUCKETS = 64
MEMBER_SCHEMA = {"cell_key": pl.String, "person_id": pl.UInt64, "rows": pl.Int64}
#: four overlapping halves of the buckets (by position, parity, position mod 4, middle half):
#: their sums are scalar filters the ledger applies before it compares whole sketches
PARTS = ("_g._b < 32", "_g._b % 2 = 0", "_g._b % 4 IN (0, 3)", "_g._b BETWEEN 16 AND 47")
PROFILE_SCHEMA = {"cell_key": pl.String, "patients": pl.Int64, "sketch": pl.List(pl.Int32),
                  "rows": pl.Int64, "row_sketch": pl.List(pl.Int64),
                  **{f"{u}{i}": pl.Int64 for u in "pr" for i in range(len(PARTS))}}
ROW_COLUMNS = ("rows", "row_sketch", *(f"r{i}" for i in range(len(PARTS))))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def member_sql(sql: str, patient: str, groups: list[str], value: str | None = None) -> str:
    """One row per cell × patient of ``sql`` grouped by ``groups``: the grouping values,
    ``_person`` (the patient column as it is; null for rows without a patient, which are one
    patient together, as the evidence counts them) and ``_rows``; given a ``value``
    column, also that patient's per-cell value aggregates as the disclosure evidence reads them
    (``_nv``, ``_sum``, ``_abs``, ``_min``, ``_max``, ``_neg``; see
    :func:`enclave.logic.disclosure.evidence.evidence_expr` with ``per_patient``)."""
    g = "".join(f"_r.{_q(c)}, " for c in groups)
    person = f"_r.{_q(patient)}"  # as it is (rows without a patient: null, one group)
    if value is None:
        return (f"SELECT {g}{person} AS _person, "
                f"count(*)::BIGINT AS _rows FROM ({sql.strip()}) AS _r GROUP BY ALL")
    gi = "".join(f"{_q(c)}, " for c in groups)
    return (f"SELECT {gi}_person, count(*)::BIGINT AS _rows, count(_v)::BIGINT AS _nv, "
            f"sum(_v) AS _sum, sum(abs(_v)) AS _abs, min(_v) AS _min, max(_v) AS _max, "
            f"count(*) FILTER (WHERE _v < 0)::BIGINT AS _neg FROM (SELECT {g}"
            f"{person} AS _person, CAST(_r.{_q(value)} AS DOUBLE) AS _v "
            f"FROM ({sql.strip()}) AS _r) GROUP BY ALL")


def person_hash(column: str) -> str:
    """The SQL of a patient's 64-bit ledger key: DuckDB's ``hash`` of the release's
    ``person_id`` as it is, 0 for rows without a patient."""
    return f"if({column} IS NULL, 0::UBIGINT, hash({column}))"


def patient_hashes(con: duckdb.DuckDBPyConnection, patients, patient: str) -> pl.Series:
    """``hash(patient)`` of a frame of patient ids fetched from the release (pandas or polars),
    computed by DuckDB as :func:`member_sql` does, so that outputs computed in Python are
    compared with the others."""
    name = f"_enclave_pids_{uuid.uuid4().hex[:12]}"
    con.register(name, patients)
    try:
        out = frame(con, f"SELECT DISTINCT {person_hash(_q(patient))} AS person_id FROM {name}")
    finally:
        con.unregister(name)
    return out["person_id"].cast(pl.UInt64)


def materialize(con: duckdb.DuckDBPyConnection, sql: str, patient: str,
                groups: list[str], value: str | None = None) -> str:
    """:func:`member_sql` as a temporary table (its name), computed once: the evidence, the
    margins, the patients check (:func:`enclave.io.outputs.evaluation.evaluate`), the ledger's
    profile and the exact member sets all read it. Drop it with :meth:`Membership.close`."""
    name = f"_enclave_members_{uuid.uuid4().hex[:16]}"
    try:
        run(con, f"CREATE TEMP TABLE {name} AS {member_sql(sql, patient, groups, value)}")
    except duckdb.Error as exc:  # its messages may quote values: the kind only
        raise BadInputError(f"could not compute who is in each cell over the given relation: "
                            f"{type(exc).__name__}") from None
    return name


def owned_by(con: duckdb.DuckDBPyConnection, members: str, evaluate: Callable[[str], T]) -> T:
    """``evaluate(members)``, whose result (its :class:`Membership`) then owns the materialized
    table; if it raises, the table is dropped here."""
    try:
        return evaluate(members)
    except BaseException:
        run(con, f"DROP TABLE IF EXISTS {members}")
        raise


def profile_sql(relation: str, keys: list[str], population: bool, keyed: bool = False) -> str:
    """Per distinct ``keys`` of ``relation`` (keys…, ``_person``, ``_rows``; a query, or the name
    of a table :func:`materialize` made) — and, with ``population``, once more over all of it
    with ``_pop`` true — the patients, rows and their bucket sketches (lists of :data:`BUCKETS`
    counts, zeros included). ``keyed``: ``_person`` is already the ledger key (as in member
    sets), else the patient column as it is (hashed here by :func:`person_hash`)."""
    k = [_q(x) for x in keys]
    ksel = "".join(f"{c}, " for c in k)
    h = "_person" if keyed else person_hash("_person")
    parts = [(f"SELECT {ksel}FALSE AS _pop, ({h} % {BUCKETS})::INTEGER AS _b, "
             f"count(*)::BIGINT AS _np, sum(_rows)::BIGINT AS _nr FROM _m GROUP BY ALL")]
    if population:
        parts.append(f"SELECT TRUE AS _pop, ({h} % {BUCKETS})::INTEGER AS _b, "
                     f"count(*)::BIGINT AS _np, sum(_r)::BIGINT AS _nr FROM (SELECT _person, "
                     f"sum(_rows) AS _r FROM _m GROUP BY _person) GROUP BY ALL")
    same = " AND ".join([f"_g.{c} IS NOT DISTINCT FROM _l.{c}" for c in k]
                        + ["_g._pop = _l._pop", "_g._b = _l._b"])
    gsel = "".join(f"_g.{c}, " for c in k)
    return f"""
        WITH _m AS {_source(relation)},
        _l AS ({' UNION ALL BY NAME '.join(parts)}),
        _k AS (SELECT DISTINCT {ksel}_pop FROM _l),
        _g AS (SELECT _k.*, r.range::INTEGER AS _b FROM _k, range({BUCKETS}) AS r)
        SELECT {gsel}_g._pop, sum(coalesce(_l._np, 0))::BIGINT AS patients,
               list(coalesce(_l._np, 0)::INTEGER ORDER BY _g._b) AS sketch,
               sum(coalesce(_l._nr, 0))::BIGINT AS rows,
               list(coalesce(_l._nr, 0)::BIGINT ORDER BY _g._b) AS row_sketch,
               {_parts()}
        FROM _g LEFT JOIN _l ON {same} GROUP BY ALL"""


def _parts() -> str:
    return ", ".join(f"sum(coalesce(_l.{c}, 0)) FILTER (WHERE {cond})::BIGINT AS {u}{i}"
                     for u, c in (("p", "_np"), ("r", "_nr")) for i, cond in enumerate(PARTS))


def _no_rows(out: pl.DataFrame) -> pl.DataFrame:
    """A profile without row counts (the output publishes none)."""
    return out.with_columns(pl.lit(None, PROFILE_SCHEMA[c]).alias(c) for c in ROW_COLUMNS)


def _source(relation: str) -> str:
    """The ``_m`` CTE's body: a materialized table is read as it is, a query computed once."""
    if relation.isidentifier():
        return f"NOT MATERIALIZED (SELECT * FROM {relation})"
    return f"MATERIALIZED ({relation})"


@dataclass
class Membership:
    """The membership of one evaluated output on the connection it was evaluated on.

    ``relation``: SQL with ``groups``…, ``_person``, ``_rows`` (one row per cell × patient);
    ``key`` turns a tuple of grouping values into the output's cell key; ``published``: the keys
    of the published cells (None: all); ``rows``: the output publishes row counts (then the ledger
    compares row multisets too). A ``relation`` that is a table name (:func:`materialize`) is
    dropped by :meth:`close`."""

    con: duckdb.DuckDBPyConnection
    relation: str
    groups: list[str]
    key: Callable[[tuple], str]
    published: set[str] | None
    rows: bool

    def close(self) -> None:
        """Drop the materialized table, if any (idempotent)."""
        if self.relation.isidentifier():
            run(self.con, f"DROP TABLE IF EXISTS {self.relation}")

    def _keyed(self, data: pl.DataFrame) -> pl.DataFrame:
        """``data`` (groups…, ``_pop``, …) with ``cell_key`` instead of the grouping values,
        unpublished cells dropped (keys are made per cell, not per row)."""
        if not self.groups:
            return data.with_columns(pl.lit(POPULATION).alias("cell_key")).drop("_pop")
        levels = data.filter(~pl.col("_pop")).select(self.groups).unique()
        levels = levels.with_columns(pl.Series("cell_key", [self.key(r) for r in levels.rows()],
                                               dtype=pl.String))
        cells = data.filter(~pl.col("_pop")).join(levels, on=self.groups, how="left",
                                                  nulls_equal=True)
        if self.published is not None:
            cells = cells.filter(pl.col("cell_key").is_in(list(self.published)))
        pop = data.filter(pl.col("_pop")).with_columns(pl.lit(POPULATION).alias("cell_key"))
        return pl.concat([pop, cells], how="diagonal_relaxed").drop(*self.groups, "_pop")

    def _from(self) -> str:
        return self.relation if self.relation.isidentifier() else f"({self.relation})"

    def profile(self) -> pl.DataFrame:
        """Per published cell and the population: patients, sketch, rows, row sketch."""
        data = frame(self.con, profile_sql(self.relation, self.groups, bool(self.groups)))
        out = self._keyed(data).select(*PROFILE_SCHEMA).cast(PROFILE_SCHEMA)
        return out if self.rows else _no_rows(out)

    def members(self) -> pl.DataFrame:
        """``cell_key``, ``person_id`` (UInt64), ``rows`` of the published cells and the
        population (exact; only rows-publishing outputs keep ``rows``)."""
        data = frame(self.con, f"SELECT {', '.join(_q(g) for g in self.groups)}"
                               f"{', ' if self.groups else ''}{person_hash('_person')} AS _person, "
                               f"_rows FROM {self._from()}")
        data = data.with_columns(pl.lit(False).alias("_pop"))
        pop = data.group_by("_person").agg(pl.col("_rows").sum()).with_columns(
            pl.lit(True).alias("_pop"))
        both = pl.concat([pop, data], how="diagonal_relaxed") if self.groups else pop
        out = self._keyed(both).select(pl.col("cell_key"), pl.col("_person").alias("person_id"),
                                       pl.col("_rows").alias("rows")).cast(MEMBER_SCHEMA)
        return out if self.rows else out.with_columns(pl.lit(None, pl.Int64).alias("rows"))


def normalize_members(con: duckdb.DuckDBPyConnection, members: pl.DataFrame,
                      name: str) -> None:
    """``members`` (cell_key, person_id[, rows]) as the temporary table ``name`` (cell_key,
    person UBIGINT, rows BIGINT): a ``person_id`` that is not already the UInt64 hash is hashed
    here (its text: for sets given by hand, as in tests); ``rows`` is null when the output
    publishes no row counts."""
    m = members.select("cell_key", "person_id",
                       *(["rows"] if "rows" in members.columns else []))
    expr = ("person_id" if m.schema["person_id"] == pl.UInt64
            else "hash(CAST(person_id AS VARCHAR))")
    rows = "sum(rows)::BIGINT" if "rows" in m.columns else "NULL::BIGINT"
    con.register(f"{name}_raw", m.to_arrow())
    try:
        run(con, f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT cell_key, {expr} AS person, "
                 f"{rows} AS rows FROM {name}_raw GROUP BY ALL")
    finally:
        con.unregister(f"{name}_raw")


def members_profile(con: duckdb.DuckDBPyConnection, name: str) -> pl.DataFrame:
    """The profile (as :meth:`Membership.profile`) of the normalized members table ``name``."""
    rel = f"SELECT cell_key, person AS _person, coalesce(rows, 1) AS _rows FROM {name}"
    data = frame(con, profile_sql(rel, ["cell_key"], False, keyed=True))
    no_rows = scalar(con, f"SELECT count(*) FILTER (WHERE rows IS NULL) > 0 FROM {name}")
    out = data.drop("_pop").select(*PROFILE_SCHEMA).cast(PROFILE_SCHEMA)
    return _no_rows(out) if no_rows else out
