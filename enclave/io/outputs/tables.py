"""Tables: crosstabs, pivot tables and histograms, checked cell by cell over their SQL.

Every statistic is checked with :func:`enclave.logic.disclosure.check_table` over the output's SQL as a
subquery (one evidence pass per statistic; two grouping columns get secondary suppression). Counts,
sums, means, minima and maxima are published straight from the evidence; medians, quantiles and
standard deviations are computed by one more grouped statement over the same SQL and published only
where the cell passed. Aggregation functions:

``count`` rows · ``patients`` distinct patients · ``sum`` · ``mean`` · ``median`` · ``min`` ·
``max`` · ``std`` (sample) · ``qNN`` the NN-th percentile (``q25``, ``q75`` …).

``std`` is checked as a mean (minimum values, dominance); ``median`` and ``qNN`` as quantiles.

Class disclosure (a published statistic showing that every contributor of a cell shares one
value) goes to review, or is suppressed under ``class_disclosure_fails``: a sum, mean, std, min or
max over a cell whose min equals its max (in :mod:`enclave.core.disclosure_rules.class_disclosure`), and here, where the
values are computed, a quantile equal to its cell's min or max, a crosstab row whose patients all
fall in one column and a histogram whose values all fall in one bin.
"""

from __future__ import annotations

import itertools
import math
import re

import duckdb
import polars as pl

from enclave.core.errors import BadInputError
from enclave.io.db import frame
from enclave.io.outputs.cells import (
    OUTCOMES,
    Evaluation,
    cell_key,
    group_membership,
    make_cell,
    q,
    sub,
)
from enclave.io.outputs.membership import Membership, materialize, owned_by
from enclave.logic.disclosure import (
    DisclosurePolicy,
    Outcome,
    Statistic,
    check_table,
    class_outcome,
)
from enclave.logic.disclosure.evidence import check_roles

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
    """The statistic ``expr`` per cell (``_extra``) with the cell's min and max (``_lo``,
    ``_hi``: the quantile rule compares them), in one grouped statement."""
    g = ", ".join(q(c) for c in groups)
    v = f"CAST({q(value)} AS DOUBLE)"
    return frame(con, f"SELECT {g}, {expr.replace('_v', v)} AS _extra, min({v}) AS _lo, "
                      f"max({v}) AS _hi FROM {sub(sql)} AS _r GROUP BY {g}")


def flag_class(cells: pl.DataFrame, hit: pl.Expr, reason: pl.Expr,
               policy: DisclosurePolicy) -> pl.DataFrame:
    """Class disclosure found by a table rule: the hit cells get ``reason``; those that were
    ``ok`` go to review, or under ``class_disclosure_fails`` are suppressed (value withheld).
    Suppressed cells keep their outcome."""
    to = class_outcome(policy)
    changes = pl.col("_hit") & (pl.col("outcome") == Outcome.OK.value)
    return cells.with_columns(hit.fill_null(False).alias("_hit")).with_columns(
        pl.when(changes).then(pl.lit(to.value)).otherwise("outcome").alias("outcome"),
        pl.when("_hit").then(pl.col("reasons").list.concat(pl.concat_list(reason)))
        .otherwise("reasons").alias("reasons"),
        pl.when(changes & (to is Outcome.SUPPRESS)).then(None).otherwise("value").alias("value"),
    ).drop("_hit")


def _row_class_disclosure(index: str, columns: str, cells: pl.DataFrame,
                          policy: DisclosurePolicy) -> pl.DataFrame:
    """A crosstab row whose patients all fall in one column level discloses that level for every
    member of the row (the 100 % / 0 % case): its non-empty cell is flagged. ``cells`` is the
    complete grid with each cell's ``rows``, so a row with one non-empty cell is such a row."""
    if cells[columns].n_unique() < 2:
        return cells
    filled = pl.col("rows") > 0
    reason = pl.lit(f"every patient of this {index} falls in one {columns} value (100 %, the other "
                    "values 0 %): class disclosure")
    return flag_class(cells, filled & (filled.sum().over(index) == 1), reason, policy)


def _quantile_class_disclosure(agg: str, cells: pl.DataFrame,
                               policy: DisclosurePolicy) -> pl.DataFrame:
    """A quantile equal to its cell's minimum (maximum) publishes the value that every row at or
    below (above) it shares: flagged. ``cells`` holds the quantile (``_extra``) and the cell's
    min and max (``_lo``, ``_hi``)."""
    at_lo, at_hi = pl.col("_extra") == pl.col("_lo"), pl.col("_extra") == pl.col("_hi")
    reason = (
        pl.when(at_lo & at_hi)
        .then(pl.format(f"the {agg} equals the cell's minimum and maximum (over {{}} rows): every "
                        "row has the value it publishes; class disclosure", pl.col("rows")))
        .when(at_lo)
        .then(pl.format(f"the {agg} equals the cell's minimum (over {{}} rows): it publishes the "
                        f"value that every row at or below the {agg} shares; class disclosure",
                        pl.col("rows")))
        .otherwise(pl.format(f"the {agg} equals the cell's maximum (over {{}} rows): it publishes "
                             f"the value that every row at or above the {agg} shares; class "
                             "disclosure", pl.col("rows"))))
    return flag_class(cells, at_lo | at_hi, reason, policy)


def evaluate_groups(con: duckdb.DuckDBPyConnection, sql: str, spec: dict,
                    policy: DisclosurePolicy) -> Evaluation:
    """crosstab (``groups`` = [index, columns]) and pivot_table (1–2 index columns)."""
    groups, patient = list(spec["groups"]), spec["patient"]
    value, sensitive = spec.get("value"), spec.get("sensitive")
    aggfuncs = list(spec["aggfuncs"])
    if not 1 <= len(groups) <= 2:
        raise BadInputError("a table needs one or two grouping columns")
    for agg in aggfuncs:
        stat, _ = parse_aggfunc(agg)
        if value is None and stat not in (Statistic.COUNT, Statistic.PATIENTS):
            raise BadInputError(f"aggfunc '{agg}' needs a values column")
    check_roles(patient, groups, value, sensitive)
    # one row per cell × patient with their rows, computed once: the counts' evidence and
    # margins and the ledger's profile and member sets all read it
    members = materialize(con, sql, patient, groups, value if sensitive is None else None)
    return owned_by(con, members, lambda m: _evaluate_groups(con, sql, spec, policy, m))


def _evaluate_groups(con: duckdb.DuckDBPyConnection, sql: str, spec: dict,
                     policy: DisclosurePolicy, members: str) -> Evaluation:
    groups, patient = list(spec["groups"]), spec["patient"]
    value, sensitive = spec.get("value"), spec.get("sensitive")
    aggfuncs = list(spec["aggfuncs"])
    cells: list[dict] = []
    long = []
    for agg in aggfuncs:
        stat, expr = parse_aggfunc(agg)
        if sensitive is None:  # from the per-patient table, one aggregation per statistic
            checked = check_table(con, members, "_person", groups, stat, policy, label=agg,
                                  value=value if stat not in (Statistic.COUNT,
                                                              Statistic.PATIENTS) else None,
                                  per_patient=True)
        else:
            checked = check_table(con, sql, patient, groups, stat, policy,
                                  value=value if stat not in (Statistic.COUNT,
                                                              Statistic.PATIENTS) else None,
                                  sensitive=sensitive, label=agg)
        c = checked.cells
        if expr is not None:
            extra = _extra_values(con, sql, groups, value, expr)
            c = c.join(extra, on=groups, how="left", nulls_equal=True)
            if policy.class_disclosure and stat is Statistic.QUANTILE:
                c = _quantile_class_disclosure(agg, c, policy)
            c = c.with_columns(
                pl.when(pl.col("outcome") == "suppress").then(None).otherwise("_extra")
                .alias("value")).drop("_extra", "_lo", "_hi")
        if spec["kind"] == "crosstab" and len(groups) == 2 and policy.class_disclosure and \
                stat in (Statistic.COUNT, Statistic.PATIENTS):
            c = _row_class_disclosure(groups[0], groups[1], c, policy)
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
                            aggregate_function="first")
        levels = sorted(result.columns[1:], key=lambda n: level_key(
            None if n == "null" and data[groups[1]].null_count() else n))
        result = in_level_order(result.select(groups[0], *levels), [groups[0]])
    else:
        result = data.pivot(on="_stat", index=groups, values="value",
                            aggregate_function="first")
        result = in_level_order(result.select(*groups, *aggfuncs), groups)
    if all(a in ("count", "patients") for a in aggfuncs):
        result = result.with_columns(pl.exclude(groups).cast(pl.Int64))
    elif spec["kind"] == "pivot_table":  # counts beside other statistics are integers too
        result = result.with_columns(pl.col(a).cast(pl.Int64) for a in aggfuncs
                                     if a in ("count", "patients"))
    published = {_key(c_) for c_ in cells if c_["outcome"] != "fail"}
    return Evaluation(result=result, cells=cells, membership=group_membership(
        con, members, groups, published, rows="count" in aggfuncs))


#: a level that names a number or a band of numbers: ``5-9``, ``10-14``, ``85+``, ``<40``, ``2019``
BAND = re.compile(r"\s*(<=?|≤|>=?|≥)?\s*(-?\d+(?:\.\d+)?)")


def level_key(level: object) -> tuple:
    """Where a grouping level sorts: levels that start with a number (age bands ``5-9``,
    ``10-14``, ``85+``; ``<40`` before ``40-59``; years; codes written as numbers) by that number,
    then other text in text order, then null (missing) last."""
    if level is None:
        return (2, 0.0, 0, "")
    text = str(level)
    m = BAND.match(text)
    if m is None:
        return (1, 0.0, 0, text)
    side = {None: 1, "<": 0, "<=": 0, "≤": 0}.get(m.group(1), 2)
    return (0, float(m.group(2)), side, text)


def in_level_order(result: pl.DataFrame, groups: list[str]) -> pl.DataFrame:
    """``result`` sorted by its grouping columns: text levels by :func:`level_key` (age bands by
    their lower bound, not as text), other types (numbers, dates, enums) in their own order,
    nulls last."""
    ranks = []
    for i, g in enumerate(groups):
        name = f"_rank{i}"
        if result.schema[g] == pl.String:
            order = sorted(result[g].unique().to_list(), key=level_key)
            result = result.with_columns(pl.col(g).replace_strict(
                order, list(range(len(order))), return_dtype=pl.Int64).alias(name))
        else:
            result = result.with_columns(pl.col(g).alias(name))
        ranks.append(name)
    return result.sort(ranks, nulls_last=True, maintain_order=True).drop(ranks)


def _key(cell: dict) -> str:
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
    members = materialize(con, binned_sql(sql, patient, value, edges), patient, ["bin"])
    return owned_by(con, members, lambda m: _evaluate_histogram(con, spec, policy, edges, m))


def _evaluate_histogram(con: duckdb.DuckDBPyConnection, spec: dict, policy: DisclosurePolicy,
                        edges: list[float], members: str) -> Evaluation:
    checked = check_table(con, members, "_person", ["bin"], Statistic.COUNT, policy,
                          per_patient=True)
    binned = checked.cells
    # every value in one bin (of several, or of edges derived from the data): class disclosure
    if policy.class_disclosure and (len(edges) > 2 or not spec.get("range_given")):
        filled = pl.col("rows") > 0
        binned = flag_class(binned, filled & (filled.sum() == 1), pl.format(
            "all {} rows fall in this one bin (every other bin is empty), so every patient's "
            "value lies in its range: class disclosure", pl.col("rows")), policy)
    seen = {r["bin"]: r for r in binned.iter_rows(named=True)}
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

    def key(values: tuple) -> str:
        b = values[0]
        return cell_key({"bin": b, "lower": edges[b], "upper": edges[b + 1]})

    membership = Membership(con, members, ["bin"], key, published, rows=True)
    notes = [] if spec.get("range_given") else [
        "bin edges were widened to round numbers so that no edge is a data minimum or maximum"]
    return Evaluation(result=result, cells=cells, notes=notes, membership=membership)
