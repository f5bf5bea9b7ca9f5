"""Zeros: an empty cell is suppressed when the policy says empty cells are disclosive."""

from __future__ import annotations

from enclave.core.disclosure_registry import Cell, Check, Outcome, Rule, Statistic, Threshold


def check(policy, stat: Statistic, cell: Cell) -> list[Check]:
    import polars as pl
    if not policy.zeros_disclosive:
        return []
    return [Check(pl.col("patients") == 0, Outcome.SUPPRESS,
                  pl.lit("cell is empty; empty cells are disclosive under this policy"))]


RULE = Rule(
    name="zeros", order=10, check=check,
    thresholds=(Threshold("zeros_disclosive", True, "an empty cell is suppressed"),),
    evidence=lambda policy, stat: ("patients",) if policy.zeros_disclosive else (),
    docs=(("zeros", "every statistic",
           "the cell is empty and the policy says zeros are disclosive"),),
)
