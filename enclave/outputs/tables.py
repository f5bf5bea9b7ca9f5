"""Tables: crosstabs, pivot tables and histograms, checked cell by cell over their SQL.

Every statistic is checked with :func:`enclave.disclosure.check_table` over the output's SQL as a
subquery (one evidence pass per statistic; two grouping columns get secondary suppression). Counts,
sums, means, minima and maxima are published straight from the evidence; medians, quantiles and
standard deviations are computed by one more grouped statement over the same SQL and published only
where the cell passed. Aggregation functions:

``count`` rows · ``patients`` distinct patients · ``sum`` · ``mean`` · ``median`` · ``min`` ·
``max`` · ``std`` (sample) · ``qNN`` the NN-th percentile (``q25``, ``q75`` …).

``std`` is checked as a mean (minimum values, dominance); ``median`` and ``qNN`` as quantiles.
"""

from __future__ import annotations

import itertools
import math
import re

import duckdb
import polars as pl

from enclave.db import frame
from enclave.disclosure import DisclosurePolicy, Statistic, check_table
from enclave.errors import BadInputError
from enclave.outputs.evaluation import (
    OUTCOMES,
    Evaluation,
    make_cell,
    members_frame,
    q,
    sub,
)

SIMPLE = {"count": Statistic.COUNT, "patients": Statistic.PATIENTS, "sum": Statistic.SUM,
          "mean": Statistic.MEAN, "min": Statistic.MIN, "max": Statistic.MAX}


def parse_aggfunc(agg: str) -> tuple[Statistic, str | None]:
    """(rule statistic, SQL aggregate over ``_v`` or None when the evidence carries the value)."""
    if agg in SIMPLE:
        return SIMPLE[agg], None
    if agg == "median":
        return Statistic.QUANTILE, "quantile_cont(_v, 0.5)"
    if agg == "std":
        return Statistic.MEAN, "stddev_samp(_v)"
    m = re.fullmatch(r"q(\d{1,2})", agg)
    if m and 1 <= int(m.group(1)) <= 99:
        return Statistic.QUANTILE, f"quantile_cont(_v, {int(m.group(1)) / 100})"
    raise BadInputError(f"unknown aggfunc '{agg}' (known: {', '.join(SIMPLE)}, median, std, "
                        "q1 … q99)")


def _extra_values(con: duckdb.DuckDBPyConnection, sql: str, groups: list[str], value: str,
                  expr: str) -> pl.DataFrame:
    g = ", ".join(q(c) for c in groups)
    agg = expr.replace("_v", f"CAST({q(value)} AS DOUBLE)")
    return frame(con, f"SELECT {g}, {agg} AS _extra FROM {sub(sql)} AS _r GROUP BY {g}")


def _row_class_disclosure(index: str, columns: str, cells: pl.DataFrame) -> pl.DataFrame:
    """A crosstab row whose patients all fall in one column level discloses that level for every
    member of the row (the 100 % / 0 % case): its non-empty cell goes to review. ``cells`` is the
    complete grid with each cell's ``rows``, so a row with one non-empty cell is such a row."""
    if cells[columns].n_unique() < 2:
        return cells
    filled = cells.filter(pl.col("rows") > 0)
    single = filled.group_by(index).agg(pl.len().alias("_n")).filter(pl.col("_n") == 1)
    flagged_cells = filled.join(single.select(index), on=index, how="semi", nulls_equal=True)
    out = cells.join(flagged_cells.select(index, columns, pl.lit(True).alias("_single")),
                     on=[index, columns], how="left", nulls_equal=True)
    flagged = pl.col("_single").fill_null(False)
    hit = flagged & (pl.col("outcome") == "ok")
    reason = pl.lit(f"every patient of this {index} falls in one {columns} value (100 %, the other "
                    "values 0 %): class disclosure")
    return out.with_columns(
        pl.when(hit).then(pl.lit("review")).otherwise("outcome").alias("outcome"),
        pl.when(flagged).then(pl.col("reasons").list.concat(pl.concat_list(reason)))
        .otherwise("reasons").alias("reasons"),
    ).drop("_single")


def evaluate_groups(con: duckdb.DuckDBPyConnection, sql: str, spec: dict,
                    policy: DisclosurePolicy) -> Evaluation:
    """crosstab (``groups`` = [index, columns]) and pivot_table (1–2 index columns)."""
    groups, patient = list(spec["groups"]), spec["patient"]
    value, sensitive = spec.get("value"), spec.get("sensitive")
    aggfuncs = list(spec["aggfuncs"])
    if not 1 <= len(groups) <= 2:
        raise BadInputError("a table needs one or two grouping columns")
    cells: list[dict] = []
    long = []
    for agg in aggfuncs:
        stat, expr = parse_aggfunc(agg)
        if value is None and stat not in (Statistic.COUNT, Statistic.PATIENTS):
            raise BadInputError(f"aggfunc '{agg}' needs a values column")
        checked = check_table(con, sql, patient, groups, stat, policy,
                              value=value if stat not in (Statistic.COUNT, Statistic.PATIENTS)
                              else None, sensitive=sensitive)
        c = checked.cells
        if expr is not None:
            extra = _extra_values(con, sql, groups, value, expr)
            c = c.join(extra, on=groups, how="left", nulls_equal=True).with_columns(
                pl.when(pl.col("outcome") == "suppress").then(None).otherwise("_extra")
                .alias("value")).drop("_extra")
        if spec["kind"] == "crosstab" and len(groups) == 2 and policy.class_disclosure and \
                stat in (Statistic.COUNT, Statistic.PATIENTS):
            c = _row_class_disclosure(groups[0], groups[1], c)
        for row in c.iter_rows(named=True):
            cells.append(make_cell({g: row[g] for g in groups}, agg, row["value"],
                                   OUTCOMES[row["outcome"]], row["reasons"]))
        long.append(c.select(*groups, pl.lit(agg).alias("_stat"),
                             pl.col("value").cast(pl.Float64)))
    data = pl.concat(long)
    if spec["kind"] == "crosstab":
        if len(aggfuncs) != 1 or len(groups) != 2:
            raise BadInputError("a crosstab has one index, one columns and one aggfunc")
        result = data.pivot(on=groups[1], index=groups[0], values="value",
                            aggregate_function="first", sort_columns=True
                            ).sort(groups[0], nulls_last=True)
    else:
        result = data.pivot(on="_stat", index=groups, values="value",
                            aggregate_function="first").sort(groups, nulls_last=True)
        result = result.select(*groups, *aggfuncs)
    if all(a in ("count", "patients") for a in aggfuncs):
        result = result.with_columns(pl.exclude(groups).cast(pl.Int64))
    published = {_key(c_) for c_ in cells if c_["outcome"] != "fail"}
    return Evaluation(result=result, cells=cells,
                      members=lambda: members_frame(con, sql, patient, groups, published))


def _key(cell: dict) -> str:
    from enclave.outputs.evaluation import cell_key

    return cell_key(cell["cell"])


# --- histogram ---------------------------------------------------------------------------


def nice_edges(lo: float, hi: float, bins: int) -> list[float]:
    """Edges spanning [lo, hi] widened outward to round numbers, so that no edge is a data
    minimum or maximum (those would be extremes of one patient)."""
    if bins < 1:
        raise BadInputError("bins must be ≥ 1")
    span = hi - lo
    step = 10 ** math.floor(math.log10(span)) if span > 0 else 1.0
    a, b = math.floor(lo / step) * step, math.ceil(hi / step) * step
    if b <= a:
        b = a + step
    if b == hi:  # the top edge would be the data maximum itself
        b += step
    if a == lo:
        a -= step
    return [a + (b - a) * i / bins for i in range(bins + 1)]


def binned_sql(sql: str, patient: str, value: str, edges: list[float]) -> str:
    """The histogram's relation: one row per input row with its bin number (last bin closed)."""
    v = f"CAST(_r.{q(value)} AS DOUBLE)"
    whens = []
    for i in range(len(edges) - 1):
        upper = "<=" if i == len(edges) - 2 else "<"
        whens.append(f"WHEN {v} >= {edges[i]!r}::DOUBLE AND {v} {upper} {edges[i + 1]!r}::DOUBLE "
                     f"THEN {i}")
    case = "CASE " + " ".join(whens) + " END"
    return (f"SELECT * FROM (SELECT _r.{q(patient)} AS {q(patient)}, {case} AS bin "
            f"FROM {sub(sql)} AS _r) WHERE bin IS NOT NULL")


def evaluate_histogram(con: duckdb.DuckDBPyConnection, sql: str, spec: dict,
                       policy: DisclosurePolicy) -> Evaluation:
    patient, value, edges = spec["patient"], spec["value"], [float(e) for e in spec["edges"]]
    if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
        raise BadInputError("histogram edges must be at least two increasing numbers")
    rel = binned_sql(sql, patient, value, edges)
    checked = check_table(con, rel, patient, ["bin"], Statistic.COUNT, policy)
    seen = {r["bin"]: r for r in checked.cells.iter_rows(named=True)}
    cells, rows = [], []
    empty = ["cell is empty; empty cells are disclosive under this policy"]
    for i in range(len(edges) - 1):
        r = seen.get(i)
        if r is None:
            outcome, reasons, val = ("fail", empty, None) if policy.zeros_disclosive else \
                ("pass", [], 0)
        else:
            outcome, reasons, val = OUTCOMES[r["outcome"]], r["reasons"], r["value"]
        cell = {"bin": i, "lower": edges[i], "upper": edges[i + 1]}
        cells.append(make_cell(cell, "count", val, outcome, reasons))
        rows.append({**cell, "count": val if outcome != "fail" else None})
    result = pl.DataFrame(rows, schema={"bin": pl.Int64, "lower": pl.Float64,
                                        "upper": pl.Float64, "count": pl.Int64})
    published = {_key(c) for c in cells if c["outcome"] != "fail"}

    def members() -> pl.DataFrame:
        data = frame(con, f"SELECT DISTINCT bin, hash(CAST({q(patient)} AS VARCHAR)) AS person_id "
                          f"FROM ({rel})")
        from enclave.outputs.evaluation import POPULATION, cell_key

        keys = pl.DataFrame({"bin": list(range(len(edges) - 1)), "cell_key": [
            cell_key({"bin": b, "lower": edges[b], "upper": edges[b + 1]})
            for b in range(len(edges) - 1)]}, schema_overrides={"bin": data.schema["bin"]})
        cells_ = data.join(keys, on="bin").select("cell_key", "person_id").filter(
            pl.col("cell_key").is_in(list(published)))
        pop = data.select(pl.lit(POPULATION).alias("cell_key"), "person_id").unique()
        return pl.concat([pop, cells_])

    notes = [] if spec.get("range_given") else [
        "bin edges were widened to round numbers so that no edge is a data minimum or maximum"]
    return Evaluation(result=result, cells=cells, notes=notes, members=members)
