"""Minimum values: a magnitude statistic needs ``min_values`` patients with a non-missing value."""

from __future__ import annotations

from enclave.core.disclosure_registry import MAGNITUDES, Cell, Check, Outcome, Rule, Statistic
from enclave.core.disclosure_rules._problems import patients_threshold


def check(policy, stat: Statistic, cell: Cell) -> list[Check]:
    import polars as pl
    if stat not in MAGNITUDES:
        return []
    vals = pl.col("value_patients")
    return [Check((pl.col("patients") > 0) & (vals < policy.min_values), Outcome.SUPPRESS,
                  pl.format("cell has non-missing values from {} patients ({} rows); at least {} "
                            "are needed", vals, pl.col("rows"), pl.lit(policy.min_values)))]


RULE = Rule(
    name="minimum values", order=30, check=check,
    thresholds=(patients_threshold(
        "min_values", "a magnitude statistic needs this many patients with a non-missing value",
        "Override: fewest patients with a non-missing value behind a statistic (-1 = preset's)."),),
    evidence=lambda policy, stat: ("patients", "value_patients", "rows") if stat in MAGNITUDES
    else (),
    docs=(("minimum values", "sum, mean, min, max, quantile",
           ("patients with a non-missing value < `min_values` (a mean of 3 values in a 10-row cell "
            "fails)")),),
)
