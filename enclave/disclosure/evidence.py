"""Disclosure evidence: one DuckDB statement per output computes, per cell, everything the rules need.

The input is any SQL relation (a table name or a parenthesised-able query text, later the SQL that
ibis compiles for a researcher's output) with a patient id column, grouping columns, an optional
value column and an optional sensitive column. The statement scans the relation once, aggregates to
one row per cell × patient (so a patient with many rows is one contributor), and from there to one
row per cell:

==================  ==========================================================================
``rows``            rows in the cell
``patients``        distinct patients
``values``          non-missing values
``value_patients``  distinct patients with at least one non-missing value
``sum``/``mean``    of the value; ``min``/``max`` of the value (with ``extremes`` or ``bounds``)
``top1``/``top2``   the largest / two largest per-patient contributions together (a patient's
                    contribution is the sum of the absolute values of their rows)
``abs_total``       sum of all patients' contributions (the dominance denominator)
``negatives``       rows with a negative value
``patients_at_min`` patients holding the cell minimum (``patients_at_max`` likewise)
``modal_rows``      rows holding the most common value of the sensitive column
``modal_patients``  patients holding that column's most-patient value (class disclosure)
==================  ==========================================================================

Dominance uses absolute values: a patient's contribution is the sum of the magnitudes of their
values, so negative values cannot hide a dominant contributor (as the ABS rules prescribe).
With ``complete=True`` cells of the cross product of observed levels that no row reaches come back
with zero counts (zeros rule). Evidence holds aggregates only; no patient-level value leaves it.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import polars as pl

from enclave.db import frame
from enclave.errors import BadInputError

EVIDENCE_COLUMNS = (
    "rows", "patients", "values", "value_patients", "sum", "mean", "min", "max", "top1", "top2",
    "abs_total", "negatives", "patients_at_min", "patients_at_max", "modal_rows", "modal_patients",
)
COUNT_COLUMNS = ("rows", "patients", "values", "value_patients", "negatives", "patients_at_min",
                 "patients_at_max", "modal_rows", "modal_patients")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _same(cols: Sequence[str], left: str, right: str) -> str:
    if not cols:
        return "TRUE"
    return " AND ".join(f"{left}.{_q(c)} IS NOT DISTINCT FROM {right}.{_q(c)}" for c in cols)


def check_roles(patient: str, groups: Sequence[str], value: str | None,
                sensitive: str | None) -> None:
    """Refuse grouping columns that clash with the evidence's own names, and a patient, value or
    sensitive column that is also a grouping column (shared by the SQL and the ibis evidence)."""
    clash = [g for g in groups if g in EVIDENCE_COLUMNS or g.startswith("_")]
    if clash:
        raise BadInputError(
            f"grouping column(s) {', '.join(clash)} clash with evidence column names; rename them"
        )
    for name, col in (("patient", patient), ("value", value), ("sensitive", sensitive)):
        if col is not None and col in groups:
            raise BadInputError(f"the {name} column '{col}' is also a grouping column")


def evidence_sql(relation: str, patient: str, groups: Sequence[str], value: str | None = None,
                 sensitive: str | None = None, extremes: bool = True,
                 bounds: bool = False, per_patient: bool = False) -> str:
    """The single statement that computes the evidence (see the module docstring).

    ``per_patient``: the relation is already one row per cell × patient (what
    :func:`enclave.outputs.membership.materialize` computes once for the counts, the value
    statistics and the ledger), ``patient`` its patient column, with that patient's ``_rows`` and,
    given a value, ``_nv`` (non-missing values), ``_sum``, ``_abs`` (sum of magnitudes),
    ``_min``, ``_max`` and ``_neg`` (negative values) in the cell; not with a sensitive column."""
    groups = list(groups)
    check_roles(patient, groups, value, sensitive)
    src = relation.strip()
    src = f"({src})" if " " in src else src
    g = [_q(c) for c in groups]
    gsel = "".join(f"{c}, " for c in g)
    gby = ", ".join(g)
    if per_patient and sensitive is not None:
        raise BadInputError("a relation per cell × patient has no sensitive column")
    if value is None and sensitive is None:
        return _count_evidence_sql(src, _q(patient), g, per_patient)
    v = f"CAST(_r.{_q(value)} AS DOUBLE)" if value else "CAST(NULL AS DOUBLE)"
    s = f"_r.{_q(sensitive)}" if sensitive else "NULL"
    cell_by = f"GROUP BY {gby}" if g else ""
    # per cell × patient [× sensitive value]
    pp_keys = [*g, "_pid"] + (["_s"] if sensitive else [])
    # read once (no sensitive column, no extremes): let DuckDB stream it instead of materializing
    once = "NOT MATERIALIZED " if not sensitive and not extremes else ""
    # min, max and negatives feed only the extremes rule: an output without a min or max skips
    # them (three fewer aggregates over the largest grouping, about a third of its time)
    spread = ("min(_v) AS _min, max(_v) AS _max, count(*) FILTER (WHERE _v < 0) AS _neg"
              if extremes else "NULL::DOUBLE AS _min, NULL::DOUBLE AS _max, NULL::BIGINT AS _neg")
    # ``bounds`` alone (the class-disclosure rules of a sum or mean need the cell's min and max):
    # the cell's sum, min and max need no per-patient stage, so a second aggregation over the
    # relation, by cell only, computes them and the per-patient stage drops its sum. A min and a
    # max per cell × patient would add about a third to the statement; the second read costs
    # about what the per-patient sum did (bench_disclosure: 1M rows, 200 cells).
    apart = bounds and not extremes and value is not None and not per_patient
    bnd = f"""
    bnd AS (
      SELECT {gsel}sum(_v) AS _sum, min(_v) AS _min, max(_v) AS _max
      FROM (SELECT {''.join(f'_r.{c}, ' for c in g)}{v} AS _v FROM {src} AS _r) {cell_by}
    )""" if apart else ""
    if apart:
        total = ("b._sum AS sum", 'b._sum / nullif(c."values", 0) AS mean', "b._min AS min",
                 "b._max AS max")
    else:
        total = ("c.sum", "c.mean", "c.min", "c.max")
    join_bnd = f"LEFT JOIN bnd AS b ON {_same(groups, 'c', 'b')}\n" if apart else ""
    psum = "NULL::DOUBLE AS _sum" if apart else "sum(_v) AS _sum"
    csum = ("NULL::DOUBLE AS sum, NULL::DOUBLE AS mean" if apart
            else "sum(_sum) AS sum, sum(_sum) / nullif(sum(_nv), 0) AS mean")
    cspread = ("min(_min) AS min, max(_max) AS max, sum(_neg)::BIGINT AS negatives" if extremes
               else "min(_min) AS min, max(_max) AS max, NULL::BIGINT AS negatives"
               if bounds and per_patient  # the per-patient table has them: no second scan
               else "NULL::DOUBLE AS min, NULL::DOUBLE AS max, NULL::BIGINT AS negatives")
    pp = f"""
    pp AS {once}(
      SELECT {', '.join(pp_keys)}, count(*) AS _rows, count(_v) AS _nv, {psum},
             sum(abs(_v)) AS _abs, {spread}
      FROM (SELECT {''.join(f'_r.{c}, ' for c in g)}_r.{_q(patient)} AS _pid, {v} AS _v,
                   {s} AS _s FROM {src} AS _r)
      GROUP BY {', '.join(pp_keys)}
    )"""
    if per_patient:  # the relation is the per-patient stage: nothing to group
        pp = f"""
    pp AS NOT MATERIALIZED (
      SELECT {''.join(f'_r.{c}, ' for c in g)}_r.{_q(patient)} AS _pid, _r._rows, _r._nv,
             _r._sum, _r._abs, _r._min, _r._max, _r._neg FROM {src} AS _r
    )"""
    if sensitive:
        p = f"""
    p AS (
      SELECT {gsel}_pid, sum(_rows) AS _rows, sum(_nv) AS _nv, sum(_sum) AS _sum,
             sum(_abs) AS _abs, min(_min) AS _min, max(_max) AS _max, sum(_neg) AS _neg
      FROM pp GROUP BY {', '.join([*g, '_pid'])}
    )"""
        cls = f"""
    cls AS (
      SELECT {gsel}max(_np)::BIGINT AS modal_patients, max(_nr)::BIGINT AS modal_rows FROM (
        SELECT {gsel}count(DISTINCT _pid) AS _np, sum(_rows) AS _nr FROM pp
        WHERE _s IS NOT NULL GROUP BY {', '.join([*g, '_s'])}
      ) {cell_by}
    )"""
    else:
        p = f"\n    p AS {once}(SELECT * FROM pp)"
        cls = f"\n    cls AS (SELECT {gsel}NULL::BIGINT AS modal_patients, NULL::BIGINT AS modal_rows FROM cells)"
    cells = f"""
    cells AS (
      SELECT {gsel}sum(_rows)::BIGINT AS rows, count(*)::BIGINT AS patients,
             sum(_nv)::BIGINT AS "values", count(*) FILTER (WHERE _nv > 0)::BIGINT AS value_patients,
             {csum}, {cspread}, max(_abs, 2) AS _top, sum(_abs) AS abs_total
      FROM p {cell_by}
    )"""
    if not extremes:
        ext = f"""
    ext AS (SELECT {gsel}NULL::BIGINT AS patients_at_min, NULL::BIGINT AS patients_at_max
            FROM cells)"""
    else:
        ext = f"""
    ext AS (
      SELECT {''.join(f'c.{c}, ' for c in g)}
             count(*) FILTER (WHERE p._min = c.min)::BIGINT AS patients_at_min,
             count(*) FILTER (WHERE p._max = c.max)::BIGINT AS patients_at_max
      FROM p JOIN cells AS c ON {_same(groups, 'p', 'c')}
      {'GROUP BY ' + ', '.join(f'c.{c}' for c in g) if g else ''}
    )"""
    if not sensitive and not extremes:
        # nothing to join: the per-cell statement is the whole evidence
        out = ", ".join(
            [f"c.{c}" for c in g]
            + ["c.rows", "c.patients", 'c."values"', "c.value_patients", *total,
               "coalesce(c._top[1], 0) AS top1",
               "coalesce(c._top[1], 0) + coalesce(c._top[2], 0) AS top2",
               "coalesce(c.abs_total, 0) AS abs_total", "c.negatives",
               *(f"NULL::BIGINT AS {c}" for c in ("patients_at_min", "patients_at_max",
                                                  "modal_rows", "modal_patients"))]
        )
        return (f"WITH {pp},{p},{cells}{',' if apart else ''}{bnd}\n"
                f"SELECT {out} FROM cells AS c\n{join_bnd}"
                + (f"ORDER BY {', '.join(f'c.{c}' for c in g)}" if g else ""))
    out = ", ".join(
        [f"c.{c}" for c in g]
        + ["c.rows", "c.patients", 'c."values"', "c.value_patients", *total,
           "coalesce(c._top[1], 0) AS top1",
           "coalesce(c._top[1], 0) + coalesce(c._top[2], 0) AS top2",
           "coalesce(c.abs_total, 0) AS abs_total",
           "c.negatives", "e.patients_at_min", "e.patients_at_max", "k.modal_rows",
           "k.modal_patients"]
    )
    return (
        f"WITH {pp},{p},{cells},{ext},{cls}{',' if apart else ''}{bnd}\n"
        f"SELECT {out} FROM cells AS c\n"
        f"LEFT JOIN ext AS e ON {_same(groups, 'c', 'e')}\n"
        f"LEFT JOIN cls AS k ON {_same(groups, 'c', 'k')}\n{join_bnd}"
        + (f"ORDER BY {', '.join(f'c.{c}' for c in g)}" if g else "")
    )


def _count_evidence_sql(src: str, pid: str, g: list[str], per_patient: bool = False) -> str:
    """The evidence of an output without a value or sensitive column: one aggregation, no
    per-patient stage (nothing is summed per patient). Rows without a patient id count as one
    patient together, as in the per-patient statement. ``per_patient``: the relation holds one
    row per cell × patient: rows are the sum of ``_rows``, patients the rows of the cell."""
    gsel = "".join(f"{c}, " for c in g)
    if per_patient:
        rows, patients = "sum(_rows)::BIGINT", "count(*)::BIGINT"
    else:
        rows = "count(*)::BIGINT"
        patients = f"(count(DISTINCT {pid}) + (count(*) > count({pid}))::INTEGER)::BIGINT"
    nulls = ", ".join(f"NULL::{t} AS {c}" for c, t in (
        ("sum", "DOUBLE"), ("mean", "DOUBLE"), ("min", "DOUBLE"), ("max", "DOUBLE")))
    return (
        f"SELECT {gsel}{rows} AS rows,\n"
        f"       {patients} AS patients,\n"
        f'       0::BIGINT AS "values", 0::BIGINT AS value_patients, {nulls},\n'
        "       0.0::DOUBLE AS top1, 0.0::DOUBLE AS top2, 0.0::DOUBLE AS abs_total,\n"
        "       0::BIGINT AS negatives, NULL::BIGINT AS patients_at_min,\n"
        "       NULL::BIGINT AS patients_at_max, NULL::BIGINT AS modal_rows,\n"
        f"       NULL::BIGINT AS modal_patients\nFROM {src} AS _r\n"
        + (f"GROUP BY {', '.join(g)}\nORDER BY {', '.join(g)}" if g else "")
    )


def compute_evidence(con: duckdb.DuckDBPyConnection, relation: str, patient: str,
                     groups: Sequence[str], value: str | None = None,
                     sensitive: str | None = None, complete: bool = False,
                     extremes: bool = True, bounds: bool = False,
                     per_patient: bool = False) -> pl.DataFrame:
    """Evidence per cell of ``relation`` grouped by ``groups`` (one DuckDB statement).

    ``complete=True`` adds the empty cells of the cross product of the levels seen in each
    grouping column, with zero counts and null statistics. ``extremes=False`` leaves ``min``,
    ``max``, ``negatives`` and ``patients_at_min``/``patients_at_max`` null (outputs without a min
    or max do not need them; the extremes rule treats null as 0 patients, so it fails closed).
    ``bounds=True`` computes ``min`` and ``max`` without the rest of the extremes evidence (the
    class-disclosure rules of a sum or mean compare them). Without a value or sensitive column
    the evidence is one aggregation (rows, distinct patients); ``per_patient``: see
    :func:`evidence_sql`.
    """
    try:
        ev = frame(con, evidence_sql(relation, patient, groups, value, sensitive, extremes,
                                     bounds, per_patient))
    except duckdb.Error as exc:
        raise BadInputError(
            f"could not compute disclosure evidence over the given relation: {type(exc).__name__}"
        ) from None
    return complete_cells(ev, groups) if complete else ev


def complete_cells(ev: pl.DataFrame, groups: Sequence[str]) -> pl.DataFrame:
    """Add the empty cells of the cross product of the levels seen in each grouping column, with
    zero counts and null statistics (shared with the ibis evidence of
    :mod:`enclave.disclosure.portable`)."""
    if not groups:
        return ev
    grid = ev.select(pl.col(groups[0]).unique())
    for gcol in groups[1:]:
        grid = grid.join(ev.select(pl.col(gcol).unique()), how="cross")
    ev = grid.join(ev, on=list(groups), how="left", nulls_equal=True)
    return ev.with_columns(
        pl.col(c).fill_null(0) for c in COUNT_COLUMNS if c not in ("modal_rows", "modal_patients")
    ).with_columns(
        pl.col("top1").fill_null(0.0), pl.col("top2").fill_null(0.0),
        pl.col("abs_total").fill_null(0.0),
    ).sort(list(groups), nulls_last=True)


def margin_evidence(con: duckdb.DuckDBPyConnection, relation: str, patient: str, row: str,
                    col: str, row_levels: Sequence | None = None,
                    col_levels: Sequence | None = None,
                    per_patient: bool = False) -> pl.DataFrame:
    """Rows and distinct patients of the margins of a two-way table (one statement).

    ``level`` is ``row`` (one row per ``row`` level: the row totals), ``column`` or ``total``.
    Given ``row_levels`` and/or ``col_levels``, only those row and column totals are computed (no
    grand total), from a scan restricted to the rows that reach them. ``per_patient``: one row per
    cell × patient with its ``_rows`` (see :func:`evidence_sql`).
    """
    src = relation.strip()
    src = f"({src})" if " " in src else src
    r, c, pid = _q(row), _q(col), _q(patient)
    where, params = "", None
    if row_levels is not None or col_levels is not None:
        rl, cl = list(row_levels or []), list(col_levels or [])
        where = ("WHERE list_contains(?, _r." + r + ") OR (? AND _r." + r + " IS NULL) "
                 "OR list_contains(?, _r." + c + ") OR (? AND _r." + c + " IS NULL)")
        params = [[x for x in rl if x is not None] or None, None in rl,
                  [x for x in cl if x is not None] or None, None in cl]
    sql = f"""
    SELECT {r}, {c}, CASE GROUPING({r}, {c}) WHEN 1 THEN 'row' WHEN 2 THEN 'column'
                          ELSE 'total' END AS level,
           {"sum(_rows)" if per_patient else "count(*)"}::BIGINT AS rows,
           count(DISTINCT {pid})::BIGINT AS patients
    FROM {src} AS _r {where} GROUP BY GROUPING SETS (({r}), ({c}), ())
    """
    try:
        out = frame(con, sql, params)
    except duckdb.Error as exc:
        raise BadInputError(
            f"could not compute margin evidence over the given relation: {type(exc).__name__}"
        ) from None
    if params is None:
        return out
    # a restricted scan gives exact totals only for the requested levels
    keep = ((pl.col("level") == "row") & pl.col(row).is_in(rl, nulls_equal=True)) | (
        (pl.col("level") == "column") & pl.col(col).is_in(cl, nulls_equal=True))
    return out.filter(keep)
