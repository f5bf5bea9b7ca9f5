"""Minimum patients: a non-empty cell needs ``min_patients`` distinct patients."""

from __future__ import annotations

from enclave.core.disclosure_registry import Cell, Check, Outcome, Rule, Statistic, Threshold
from enclave.core.disclosure_rules._problems import at_least_zero


def check(policy, stat: Statistic, cell: Cell) -> list[Check]:
    import polars as pl
    pats = pl.col("patients")
    return [Check((pats > 0) & (pats < policy.min_patients), Outcome.SUPPRESS,
                  pl.format("cell has {} patients; at least {} are needed", pats,
                            pl.lit(policy.min_patients)))]


RULE = Rule(
    name="minimum patients", order=20, check=check,
    thresholds=(Threshold(
        "min_patients", 10, "a cell needs at least this many distinct patients",
        presets={"opensafely": 8, "opensafely-midpoint6": 8},
        setting="Override: fewest distinct patients per cell (-1 = preset's).",
        problem=at_least_zero),),
    evidence=lambda policy, stat: ("patients",),
    docs=(("minimum patients", "every statistic", "0 < distinct patients < `min_patients`"),),
)
