"""Disclosure rules: pure polars over the evidence frame, one outcome per cell.

:func:`check_cells` takes the evidence that :mod:`enclave.disclosure.evidence` computed, the
statistic being published and a :class:`DisclosurePolicy`, and returns per cell an ``outcome``
(``ok`` / ``suppress`` / ``review``), the ``reasons`` in plain language and the publishable
``value`` (null when suppressed; counts rounded when the policy rounds). All rules run as vectorized
expressions; there is no per-cell Python.

Rules (thresholds from the policy; contributors are distinct patients):

* zeros — an empty cell is suppressed when the policy says zeros are disclosive;
* minimum patients — a non-empty cell needs ``min_patients`` distinct patients;
* minimum values — a magnitude statistic needs ``min_values`` patients with a non-missing value;
* N-K dominance — the largest n patients may contribute at most k of the cell total;
* p % — the rest of the cell (without its two largest patients) must be at least p of the largest;
  both dominance rules use per-patient sums of absolute values, so negatives count as magnitudes;
* extremes — a published min/max must be shared by ``extremes_min_patients`` patients;
* quantiles — need ``quantile_min_values`` patients with a value;
* class disclosure — when every patient of a cell shares one value of the sensitive column
  (its share is 100 %, every other value's 0 %), or a sum, mean, std, min or max is over a cell
  whose values are all the same (min = max: a proportion of 0 or 1, a std of 0), the published
  statistic shows every patient's value: the cell goes to review, or is suppressed under a
  policy with ``class_disclosure_fails`` (quantiles, crosstab rows and histograms are checked
  for the same in :mod:`enclave.outputs.tables`, where their values are computed);
* degrees of freedom — :func:`residual_dof` / :func:`check_dof` for models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

import polars as pl

from enclave.disclosure.policy import DisclosurePolicy, Rounding
from enclave.errors import BadInputError


class Outcome(str, Enum):
    OK = "ok"
    SUPPRESS = "suppress"
    REVIEW = "review"


class Statistic(str, Enum):
    """What a cell publishes; decides which rules apply and which evidence column is the value."""

    COUNT = "count"  # rows
    PATIENTS = "patients"  # distinct patients
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    QUANTILE = "quantile"  # the value itself is computed by the caller


COUNTS = (Statistic.COUNT, Statistic.PATIENTS)
MAGNITUDES = (Statistic.SUM, Statistic.MEAN, Statistic.MIN, Statistic.MAX, Statistic.QUANTILE)
VALUE_COLUMN = {Statistic.COUNT: "rows", Statistic.PATIENTS: "patients", Statistic.SUM: "sum",
                Statistic.MEAN: "mean", Statistic.MIN: "min", Statistic.MAX: "max"}


def _pct(x: pl.Expr) -> pl.Expr:
    return (x * 100).round(1).cast(pl.String)


# statistics whose value shows every patient's value when the cell's min equals its max
SAME_VALUE = (Statistic.SUM, Statistic.MEAN, Statistic.MIN, Statistic.MAX)


def class_outcome(policy: DisclosurePolicy) -> Outcome:
    """What a class-disclosure hit does under ``policy``: review, or suppression when strict."""
    return Outcome.SUPPRESS if policy.class_disclosure_fails else Outcome.REVIEW


def _rules(policy: DisclosurePolicy, stat: Statistic, has_sensitive: bool, label: str
           ) -> list[tuple[pl.Expr, Outcome, pl.Expr]]:
    """(fails, outcome, reason) for every rule that applies to ``stat`` under ``policy``;
    ``label`` names the published statistic in reasons (``std`` is checked as a mean)."""
    pats, vals = pl.col("patients"), pl.col("value_patients")
    rules: list[tuple[pl.Expr, Outcome, pl.Expr]] = []
    if policy.zeros_disclosive:
        rules.append((pats == 0, Outcome.SUPPRESS,
                      pl.lit("cell is empty; empty cells are disclosive under this policy")))
    rules.append(((pats > 0) & (pats < policy.min_patients), Outcome.SUPPRESS,
                  pl.format("cell has {} patients; at least {} are needed", pats,
                            pl.lit(policy.min_patients))))
    if stat in MAGNITUDES:
        rules.append(((pats > 0) & (vals < policy.min_values), Outcome.SUPPRESS,
                      pl.format("cell has non-missing values from {} patients ({} rows); at "
                                "least {} are needed", vals, pl.col("rows"),
                                pl.lit(policy.min_values))))
    if stat in (Statistic.SUM, Statistic.MEAN):
        total = pl.col("abs_total")
        for n, k in policy.nk_rules:
            top = pl.col("top1" if n == 1 else "top2")
            rules.append(((total > 0) & (top > k * total), Outcome.SUPPRESS,
                          pl.format("the largest {} patient(s) contribute {}% of the cell total; "
                                    "at most {}% is allowed (N-K rule)", pl.lit(n),
                                    _pct(top / total), pl.lit(f"{k * 100:g}"))))
        if policy.p_ratio > 0:
            rest = pl.col("abs_total") - pl.col("top2")
            rules.append(((total > 0) & (rest < policy.p_ratio * pl.col("top1")), Outcome.SUPPRESS,
                          pl.format("without its two largest patients the cell adds up to less "
                                    "than {}% of the largest patient's contribution (p % rule)",
                                    pl.lit(f"{policy.p_ratio * 100:g}"))))
    for which in ("min", "max"):
        if stat == Statistic(which):
            at = pl.col(f"patients_at_{which}").fill_null(0)  # not computed: fail closed
            rules.append(((pats > 0) & (at < policy.extremes_min_patients), Outcome.SUPPRESS,
                          pl.format("the {}imum is held by {} patient(s); at least {} must share "
                                    "it", pl.lit(which), at,
                                    pl.lit(policy.extremes_min_patients))))
    if stat == Statistic.QUANTILE:
        rules.append(((pats > 0) & (vals < policy.quantile_min_values), Outcome.SUPPRESS,
                      pl.format("a quantile over values from {} patients; at least {} are needed",
                                vals, pl.lit(policy.quantile_min_values))))
    if policy.class_disclosure and has_sensitive:
        mp = pl.col("modal_patients")
        rules.append(((pats > 0) & mp.is_not_null() & (mp >= pats), class_outcome(policy),
                      pl.format("all {} patients in the cell share one value of the sensitive "
                                "column (100 %, every other value 0 %): class disclosure", pats)))
    if policy.class_disclosure and stat in SAME_VALUE:
        rules.append(((vals > 0) & (pl.col("min") == pl.col("max")), class_outcome(policy),
                      pl.format("all {} patients with a value in the cell have the same value "
                                "(its minimum equals its maximum), which the {} reveals: class "
                                "disclosure", vals, pl.lit(label))))
    return rules


def round_counts(values: pl.Expr, policy: DisclosurePolicy) -> pl.Expr:
    """Round published counts as the policy says (nearest multiple, or midpoint; 0 stays 0)."""
    b = policy.round_base
    if policy.rounding is Rounding.NEAREST:
        return ((values / b + 0.5).floor() * b).cast(pl.Int64)
    if policy.rounding is Rounding.MIDPOINT:
        return pl.when(values == 0).then(0).otherwise(
            (values / b).ceil() * b - b // 2).cast(pl.Int64)
    return values


def round_significant(value: float, digits: int) -> float:
    """``value`` to ``digits`` significant digits (decimal, as it is written: 0.1 stays 0.1);
    ``digits`` 0, integers, and non-finite values are returned as they are."""
    if digits <= 0 or isinstance(value, (bool, int)) or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def check_cells(evidence: pl.DataFrame, statistic: Statistic | str, policy: DisclosurePolicy,
                groups: Sequence[str] = (), label: str | None = None) -> pl.DataFrame:
    """Per cell: ``groups``, ``outcome``, ``reasons`` (list of text), ``value`` (null unless ok).

    ``label`` names the published statistic in reasons (default: the statistic's own name).
    The class-disclosure rule of a sum, mean, min or max compares the evidence's ``min`` and
    ``max``: compute it with ``extremes`` or ``bounds`` (null bounds never match)."""
    stat = Statistic(statistic)
    needed = ("rows", "patients", "value_patients", "abs_total", "top1", "top2")
    if policy.class_disclosure and stat in SAME_VALUE:
        needed += ("min", "max")
    missing = [c for c in needed if c not in evidence.columns]
    if missing:
        raise BadInputError(f"evidence frame lacks column(s): {', '.join(missing)}")
    has_sensitive = "modal_patients" in evidence.columns and evidence["modal_patients"].null_count() < evidence.height
    rules = _rules(policy, stat, has_sensitive, label or stat.value)
    fails = [r[0].fill_null(False) for r in rules]
    suppress = pl.any_horizontal([f for f, r in zip(fails, rules) if r[1] is Outcome.SUPPRESS] or
                                 [pl.lit(False)])
    review = pl.any_horizontal([f for f, r in zip(fails, rules) if r[1] is Outcome.REVIEW] or
                               [pl.lit(False)])
    reasons = pl.concat_list([pl.when(f).then(r[2]) for f, r in zip(fails, rules)]
                             ).list.drop_nulls()
    outcome = (pl.when(suppress).then(pl.lit(Outcome.SUPPRESS.value))
               .when(review).then(pl.lit(Outcome.REVIEW.value))
               .otherwise(pl.lit(Outcome.OK.value)))
    raw = pl.col(VALUE_COLUMN[stat]) if stat in VALUE_COLUMN else pl.lit(None, pl.Float64)
    published = round_counts(raw, policy) if stat in COUNTS else raw
    return evidence.select(
        *[pl.col(g) for g in groups],
        outcome.alias("outcome"),
        reasons.alias("reasons"),
        pl.when(suppress).then(None).otherwise(published).alias("value"),
        pl.col("rows").alias("weight"),
    )


def residual_dof(n: int, k: int) -> int:
    """Residual degrees of freedom of a model with ``n`` observations and ``k`` parameters."""
    if n < 0 or k < 0:
        raise BadInputError("observations and parameters must be ≥ 0")
    return n - k


def check_dof(n: int, k: int, policy: DisclosurePolicy) -> tuple[Outcome, list[str]]:
    """A model passes when its residual degrees of freedom reach the policy's ``min_dof``."""
    dof = residual_dof(n, k)
    if dof < policy.min_dof:
        return Outcome.SUPPRESS, [(f"model has {dof} residual degrees of freedom ({n} observations, "
                                  f"{k} parameters); at least {policy.min_dof} are needed")]
    return Outcome.OK, []
