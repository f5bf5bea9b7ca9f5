"""Disclosure evidence: one ibis expression computes, per cell of an output, all the rules need.

The expression (:func:`evidence_expr`) is the one definition of the evidence, on every engine: on
DuckDB it is compiled to one SQL statement that runs on the caller's connection
(:func:`compute_evidence` takes a table name or a query text, as the researcher outputs and the
airlock hold them), on Spark it runs as a Spark plan (:func:`evidence_frame`). Its input has a
patient id column, grouping columns, an optional value column and an optional sensitive column.
It aggregates to one row per cell × patient (so a patient with many rows is one contributor), and
from there to one row per cell:

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

The second-largest contribution is the one step written per engine, because only DuckDB has a
one-pass top-n aggregate: on DuckDB the cell aggregation takes ``max(contribution, 2)``; elsewhere
one aggregation per cell finds a patient holding the largest contribution (``argmax``, no sort), a
join back to the cell × patient sums (null-safe on the grouping columns) excludes that patient, and
the largest of the rest is the second. Patients are told apart by id, never by comparing a
recomputed sum with the maximum of sums: doubles added in parallel differ in their last bits
between two computations of the same sum. ``tests/spec/test_evidence_engines.py`` holds both ways,
and Spark, to a plain Python reference on generated tables.

Dominance uses absolute values: a patient's contribution is the sum of the magnitudes of their
values, so negative values cannot hide a dominant contributor (as the ABS rules prescribe).
With ``complete=True`` cells of the cross product of observed levels that no row reaches come back
with zero counts (zeros rule). Evidence holds aggregates only; no patient-level value leaves it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import duckdb
import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir
import polars as pl
from ibis.backends.sql.datatypes import DuckDBType
from ibis.common.exceptions import IbisError

from enclave.core.errors import BadInputError

EVIDENCE_COLUMNS = (
    "rows", "patients", "values", "value_patients", "sum", "mean", "min", "max", "top1", "top2",
    "abs_total", "negatives", "patients_at_min", "patients_at_max", "modal_rows", "modal_patients",
)
COUNT_COLUMNS = ("rows", "patients", "values", "value_patients", "negatives", "patients_at_min",
                 "patients_at_max", "modal_rows", "modal_patients")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


#: the per-patient stage's columns, when the relation already is one row per cell × patient
PER_PATIENT_COLUMNS = ("_rows", "_nv", "_sum", "_abs", "_min", "_max", "_neg")
#: how the second-largest contribution is found: ``"list"`` (DuckDB's ``max(x, 2)``) or
#: ``"join"`` (argmax per cell and a join back: every engine)
TOP_TWO = ("list", "join")


@ibis.udf.agg.builtin(name="max", signature=((dt.float64, dt.int64), dt.Array(dt.float64)))
def _max_n(x, n):  # DuckDB's max(x, n): the n largest values, largest first
    ...


def check_roles(patient: str, groups: Sequence[str], value: str | None,
                sensitive: str | None) -> None:
    """Refuse grouping columns that clash with the evidence's own names, and a patient, value or
    sensitive column that is also a grouping column."""
    clash = [g for g in groups if g in EVIDENCE_COLUMNS or g.startswith("_")]
    if clash:
        raise BadInputError(
            f"grouping column(s) {', '.join(clash)} clash with evidence column names; rename them"
        )
    for name, col in (("patient", patient), ("value", value), ("sensitive", sensitive)):
        if col is not None and col in groups:
            raise BadInputError(f"the {name} column '{col}' is also a grouping column")


def _agg(t: ir.Table, groups: Sequence[str], **metrics: ir.Value) -> ir.Table:
    return t.group_by(list(groups)).aggregate(**metrics) if groups else t.aggregate(**metrics)


def _by_cell(left: ir.Table, right: ir.Table, groups: Sequence[str],
             how: str = "inner") -> ir.Table:
    """``left`` joined with the per-cell ``right`` on the grouping columns, nulls matching nulls
    (a null level is a cell); ``right``'s grouping columns are dropped."""
    if not groups:
        return left.cross_join(right)
    right = right.rename({f"_k_{g}": g for g in groups})
    on = [left[g].identical_to(right[f"_k_{g}"]) for g in groups]
    return left.join(right, on, how=how).drop(*(f"_k_{g}" for g in groups))


def _top_two_for(t: ir.Table) -> str:
    try:
        name = t._find_backend(use_default=False).name
    except IbisError:
        return "join"
    return "list" if name == "duckdb" else "join"


def evidence_expr(t: ir.Table, patient: str, groups: Sequence[str], value: str | None = None,
                  sensitive: str | None = None, extremes: bool = True, bounds: bool = False,
                  per_patient: bool = False, top_two: str | None = None) -> ir.Table:
    """Evidence per cell of ``t`` grouped by ``groups`` (columns: the groups, then
    :data:`EVIDENCE_COLUMNS`; see the module docstring).

    ``extremes=False`` leaves ``min``, ``max``, ``negatives`` and ``patients_at_min`` /
    ``patients_at_max`` null (outputs without a min or max do not need them; the extremes rule
    treats null as 0 patients, so it fails closed). ``bounds=True`` computes ``min`` and ``max``
    without the rest of the extremes evidence (the class-disclosure rules of a sum or mean compare
    them). ``per_patient``: ``t`` is already one row per cell × patient (what
    :func:`enclave.io.outputs.membership.materialize` computes once for the counts, the value
    statistics and the ledger), ``patient`` its patient column, with that patient's ``_rows`` and,
    given a value, :data:`PER_PATIENT_COLUMNS` in the cell; not with a sensitive column.
    ``top_two``: one of :data:`TOP_TWO` (default: ``"list"`` on DuckDB, else ``"join"``)."""
    groups = list(groups)
    check_roles(patient, groups, value, sensitive)
    if per_patient and sensitive is not None:
        raise BadInputError("a relation per cell × patient has no sensitive column")
    own = ("_rows",) if value is None else PER_PATIENT_COLUMNS
    need = [patient, *groups, *(own if per_patient else (value, sensitive))]
    missing = [c for c in need if c is not None and c not in t.columns]
    if missing:
        raise BadInputError(f"column(s) not in the relation: {', '.join(missing)}")
    how = top_two or _top_two_for(t)
    if how not in TOP_TWO:
        raise ValueError(f"top_two must be one of {', '.join(TOP_TWO)}, not {how!r}")
    if value is None and sensitive is None:
        return _count_expr(t, patient, groups, per_patient)
    i64, f64 = "int64", "float64"
    # ``bounds`` alone, over rows: the cell's sum, min and max need no per-patient stage, so a
    # second aggregation by cell computes them and the per-patient stage drops its sum (a min and
    # a max per cell × patient cost about a third more than that second read: bench_disclosure)
    apart = bounds and not extremes and value is not None and not per_patient
    if per_patient:  # the relation is the per-patient stage: nothing to group
        keep = PER_PATIENT_COLUMNS if extremes or bounds else PER_PATIENT_COLUMNS[:4]
        p = t.select(*groups, _pid=t[patient], **{c: t[c] for c in keep})
        if not extremes:
            p = p.mutate(_neg=ibis.null(i64), **({} if bounds else {
                "_min": ibis.null(f64), "_max": ibis.null(f64)}))
        pp = p
    else:
        v = t[value].cast(f64) if value else ibis.null(f64)
        base = t.select(*groups, _pid=t[patient], _v=v,
                        **({"_s": t[sensitive]} if sensitive else {}))
        # min, max and negatives feed only the extremes rule (and min, max the class rules)
        spread = ({"_min": base._v.min(), "_max": base._v.max(),
                   "_neg": base._v.count(where=base._v < 0)} if extremes
                  else {"_min": ibis.null(f64), "_max": ibis.null(f64), "_neg": ibis.null(i64)})
        pp = base.group_by([*groups, "_pid"] + (["_s"] if sensitive else [])).aggregate(
            _rows=base.count(), _nv=base._v.count(),
            _sum=ibis.null(f64) if apart else base._v.sum(), _abs=base._v.abs().sum(), **spread)
        p = pp
        if sensitive:
            p = pp.group_by([*groups, "_pid"]).aggregate(
                _rows=pp._rows.sum(), _nv=pp._nv.sum(), _sum=pp._sum.sum(), _abs=pp._abs.sum(),
                _min=pp._min.min(), _max=pp._max.max(), _neg=pp._neg.sum())
    lead = {}
    if how == "join":
        # ``argmax`` keeps a null id: the rows without a patient are one contributor
        lead["_top_pid"] = p._pid.argmax(p._abs)
    if extremes:
        lead |= {"_cmin": p._min.min(), "_cmax": p._max.max()}
    if lead:
        p = _by_cell(p, _agg(p, groups, **lead), groups)
    if how == "join":
        top1 = p._abs.max().fill_null(0.0)
        top2 = top1 + p._abs.max(where=~p._pid.identical_to(p._top_pid)).fill_null(0.0)
    else:
        top = _max_n(p._abs, 2)
        top1 = top[0].fill_null(0.0)
        top2 = top1 + top[1].fill_null(0.0)
    nv = p._nv.sum()
    cells = _agg(
        p, groups,
        rows=p._rows.sum().cast(i64),
        patients=p.count().cast(i64),
        values=nv.cast(i64),
        value_patients=(p._nv > 0).sum().cast(i64),
        sum=p._sum.sum(),
        mean=p._sum.sum() / ibis.ifelse(nv == 0, ibis.null(i64), nv),
        min=p._min.min(),
        max=p._max.max(),
        top1=top1,
        top2=top2,
        abs_total=p._abs.sum().fill_null(0.0),
        negatives=p._neg.sum().cast(i64),
        patients_at_min=p.count(where=(p._min == p._cmin).fill_null(False)) if extremes
        else ibis.null(i64),
        patients_at_max=p.count(where=(p._max == p._cmax).fill_null(False)) if extremes
        else ibis.null(i64),
    )
    if apart:
        # from the relation itself, not the per-patient stage's projection of it: read twice,
        # that projection would be a common table expression, which DuckDB materializes
        tv = t[value].cast(f64)
        bnd = _agg(t, groups, _bsum=tv.sum(), _bmin=tv.min(), _bmax=tv.max())
        cells = _by_cell(cells, bnd, groups, "left")
        cells = cells.mutate(
            sum=cells._bsum, min=cells._bmin, max=cells._bmax,
            mean=cells._bsum / ibis.ifelse(cells["values"] == 0, ibis.null(i64), cells["values"]))
    if not sensitive:
        cells = cells.mutate(modal_rows=ibis.null(i64), modal_patients=ibis.null(i64))
        return cells.select(*groups, *EVIDENCE_COLUMNS)
    known = pp.filter(pp._s.notnull())
    per_value = known.group_by([*groups, "_s"]).aggregate(
        _np=known._pid.nunique(), _nr=known._rows.sum())
    cls = _agg(per_value, groups, modal_patients=per_value._np.max().cast(i64),
               modal_rows=per_value._nr.max().cast(i64))
    return _by_cell(cells, cls, groups, "left").select(*groups, *EVIDENCE_COLUMNS)


def _count_expr(t: ir.Table, patient: str, groups: list[str], per_patient: bool) -> ir.Table:
    """The evidence of an output without a value or sensitive column: one aggregation, no
    per-patient stage (nothing is summed per patient). Rows without a patient id count as one
    patient together, as in the per-patient stage. ``per_patient``: rows are the sum of
    ``_rows``, patients the rows of the cell."""
    i64, f64 = "int64", "float64"
    pid = t[patient]
    if per_patient:
        rows, patients = t._rows.sum(), t.count()
    else:
        rows, patients = t.count(), pid.nunique() + (t.count() > pid.count()).cast(i64)
    out = _agg(
        t, groups,
        rows=rows.cast(i64), patients=patients.cast(i64),
        values=ibis.literal(0, i64), value_patients=ibis.literal(0, i64),
        **{c: ibis.null(f64) for c in ("sum", "mean", "min", "max")},
        top1=ibis.literal(0.0, f64), top2=ibis.literal(0.0, f64),
        abs_total=ibis.literal(0.0, f64), negatives=ibis.literal(0, i64),
        patients_at_min=ibis.null(i64), patients_at_max=ibis.null(i64),
        modal_rows=ibis.null(i64), modal_patients=ibis.null(i64),
    )
    return out.select(*groups, *EVIDENCE_COLUMNS)


def evidence_frame(engine, t: ir.Table, patient: str, groups: Sequence[str],
                   value: str | None = None, sensitive: str | None = None,
                   complete: bool = False, extremes: bool = True, bounds: bool = False,
                   per_patient: bool = False, top_two: str | None = None) -> pl.DataFrame:
    """:func:`evidence_expr` run on ``engine`` (an :class:`enclave.io.engine.Engine`), sorted by
    the grouping columns (nulls last).

    ``complete=True`` adds the empty cells of the cross product of the levels seen in each
    grouping column, with zero counts and null statistics (zeros rule)."""
    ev = engine.to_polars(evidence_expr(t, patient, groups, value, sensitive, extremes, bounds,
                                        per_patient, top_two))
    return _typed(ev, list(groups), complete)


def _typed(ev: pl.DataFrame, groups: list[str], complete: bool) -> pl.DataFrame:
    ev = ev.with_columns(pl.col(c).cast(pl.Int64) for c in COUNT_COLUMNS).with_columns(
        pl.col(c).cast(pl.Float64) for c in EVIDENCE_COLUMNS if c not in COUNT_COLUMNS)
    if complete and groups:
        return complete_cells(ev, groups)
    return ev.sort(groups, nulls_last=True) if groups else ev


#: the name the compiled statement reads its input by, replaced by the caller's relation
INPUT = "_enclave_input_relation"


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
           ) -> pl.DataFrame:
    """The answer of ``sql`` on the caller's connection, as a polars frame (through Arrow)."""
    return pl.from_arrow(con.sql(sql, params=params).to_arrow_table())


def input_schema(con: duckdb.DuckDBPyConnection, relation: str,
                 columns: Sequence[str | None]) -> tuple[tuple[str, str], ...]:
    """``(name, DuckDB type)`` of the named ``columns`` of ``relation`` (a table name or a query;
    nothing runs), the key of a compiled statement: a missing column is left out, for the
    expression to name it."""
    src = relation.strip()
    rel = con.sql(src if " " in src else f"SELECT * FROM {src}")
    want = {c for c in columns if c is not None}
    return tuple((c, str(t)) for c, t in zip(rel.columns, rel.types, strict=True) if c in want)


def input_table(schema: tuple[tuple[str, str], ...], name: str = INPUT) -> ir.Table:
    """The unbound ibis table of ``schema`` (from :func:`input_schema`)."""
    return ibis.table({c: DuckDBType.from_string(t) for c, t in schema}, name=name)


def bind(sql: str, sources: dict[str, str]) -> str:
    """A compiled statement with each placeholder table (``name``: its relation, a table name or
    a query) replaced by the relation."""
    for name, relation in sources.items():
        src = relation.strip()
        sql = sql.replace(f'"{name}"', f"({src})" if " " in src else src)
    return sql


@functools.lru_cache(maxsize=256)
def evidence_statement(schema: tuple[tuple[str, str], ...], patient: str, groups: tuple[str, ...],
                       value: str | None, sensitive: str | None, extremes: bool, bounds: bool,
                       per_patient: bool) -> str:
    """The DuckDB statement of :func:`evidence_expr` over the placeholder :data:`INPUT` of
    ``schema``: compiled once per input schema and options (ibis takes tens of milliseconds to
    build and compile it, more than the statement takes on a small output)."""
    expr = evidence_expr(input_table(schema), patient, groups, value, sensitive, extremes,
                         bounds, per_patient, top_two="list")
    return ibis.to_sql(expr, dialect="duckdb")


def compute_evidence(con: duckdb.DuckDBPyConnection, relation: str, patient: str,
                     groups: Sequence[str], value: str | None = None,
                     sensitive: str | None = None, complete: bool = False,
                     extremes: bool = True, bounds: bool = False,
                     per_patient: bool = False) -> pl.DataFrame:
    """Evidence per cell of ``relation`` (a table name or a query on ``con``) grouped by
    ``groups``: :func:`evidence_expr` compiled to one statement run on ``con``, sorted by the
    grouping columns (nulls last); options as in :func:`evidence_expr` and
    :func:`evidence_frame`. DuckDB's messages may quote values: only their kind is told."""
    groups = list(groups)
    check_roles(patient, groups, value, sensitive)
    try:
        schema = input_schema(con, relation, [patient, *groups, value, sensitive,
                                              *(PER_PATIENT_COLUMNS if per_patient else ())])
        sql = evidence_statement(schema, patient, tuple(groups), value, sensitive, extremes,
                                 bounds, per_patient)
        ev = _frame(con, bind(sql, {INPUT: relation}))
    except (duckdb.Error, IbisError) as exc:
        raise BadInputError(
            f"could not compute disclosure evidence over the given relation: {type(exc).__name__}"
        ) from None
    return _typed(ev, groups, complete)


def complete_cells(ev: pl.DataFrame, groups: Sequence[str]) -> pl.DataFrame:
    """Add the empty cells of the cross product of the levels seen in each grouping column, with
    zero counts and null statistics."""
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
    cell × patient with its ``_rows`` (see :func:`evidence_expr`).

    Written for DuckDB alone (``GROUPING SETS`` over a scan restricted to the requested levels):
    the margins are checked only where a researcher output runs, on a DuckDB release.
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
        out = _frame(con, sql, params)
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
