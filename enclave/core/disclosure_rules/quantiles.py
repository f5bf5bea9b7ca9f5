"""Quantiles: a quantile needs ``quantile_min_values`` patients with a value."""

from __future__ import annotations

from enclave.core.disclosure_registry import Cell, Check, Outcome, Rule, Statistic
from enclave.core.disclosure_rules._problems import patients_threshold


def check(policy, stat: Statistic, cell: Cell) -> list[Check]:
    import polars as pl
    if stat is not Statistic.QUANTILE:
        return []
    vals = pl.col("value_patients")
    return [Check((pl.col("patients") > 0) & (vals < policy.quantile_min_values), Outcome.SUPPRESS,
                  pl.format("a quantile over values from {} patients; at least {} are needed",
                            vals, pl.lit(policy.quantile_min_values)))]


RULE = Rule(
    name="quantiles", order=70, check=check,
    thresholds=(patients_threshold(
        "quantile_min_values", "a quantile needs this many patients with a value",
        "Override: fewest patients with a value behind a quantile (-1 = preset's)."),),
    evidence=lambda policy, stat: ("patients", "value_patients")
    if stat is Statistic.QUANTILE else (),
    docs=(("quantiles", "quantile", "patients with a value < `quantile_min_values`"),),
)
