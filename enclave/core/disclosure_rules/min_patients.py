"""Minimum patients: a non-empty cell needs ``min_patients`` distinct patients."""

from __future__ import annotations

from enclave.core.disclosure_registry import Cell, Check, Outcome, Rule, Statistic
from enclave.core.disclosure_rules._problems import patients_threshold


def check(policy, stat: Statistic, cell: Cell) -> list[Check]:
    import polars as pl
    pats = pl.col("patients")
    return [Check((pats > 0) & (pats < policy.min_patients), Outcome.SUPPRESS,
                  pl.format("cell has {} patients; at least {} are needed", pats,
                            pl.lit(policy.min_patients)))]


RULE = Rule(
    name="minimum patients", order=20, check=check,
    thresholds=(patients_threshold(
        "min_patients", "a cell needs at least this many distinct patients",
        "Override: fewest distinct patients per cell (-1 = preset's)."),),
    evidence=lambda policy, stat: ("patients",),
    docs=(("minimum patients", "every statistic", "0 < distinct patients < `min_patients`"),),
)
