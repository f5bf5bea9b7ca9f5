"""Extremes: a published min/max must be shared by ``extremes_min_patients`` patients."""

from __future__ import annotations

from enclave.core.disclosure_registry import Cell, Check, Outcome, Rule, Statistic
from enclave.core.disclosure_rules._problems import patients_threshold

APPLIES = (Statistic.MIN, Statistic.MAX)


def check(policy, stat: Statistic, cell: Cell) -> list[Check]:
    import polars as pl
    if stat not in APPLIES:
        return []
    which = stat.value
    at = pl.col(f"patients_at_{which}").fill_null(0)  # not computed: fail closed
    return [Check((pl.col("patients") > 0) & (at < policy.extremes_min_patients), Outcome.SUPPRESS,
                  pl.format("the {}imum is held by {} patient(s); at least {} must share it",
                            pl.lit(which), at, pl.lit(policy.extremes_min_patients)))]


RULE = Rule(
    name="extremes", order=60, check=check,
    thresholds=(patients_threshold(
        "extremes_min_patients", "a min/max must be shared by this many patients",
        "Override: fewest patients sharing a published min/max (-1 = preset's)."),),
    # the extremes evidence (``extremes=True``); without it the rule fails closed
    evidence=lambda policy, stat: ("patients", f"patients_at_{stat.value}") if stat in APPLIES
    else (),
    docs=(("extremes", "min, max",
           "fewer than `extremes_min_patients` patients hold the published min/max"),),
)
