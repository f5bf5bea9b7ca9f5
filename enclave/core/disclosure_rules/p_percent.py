"""p %: without its two largest patients a cell must add up to at least p of the largest one."""

from __future__ import annotations

from enclave.core.disclosure_registry import Cell, Check, Outcome, Rule, Statistic, Threshold

APPLIES = (Statistic.SUM, Statistic.MEAN)


def check(policy, stat: Statistic, cell: Cell) -> list[Check]:
    import polars as pl
    if stat not in APPLIES or policy.p_ratio <= 0:
        return []
    total = pl.col("abs_total")
    rest = total - pl.col("top2")
    return [Check((total > 0) & (rest < policy.p_ratio * pl.col("top1")), Outcome.SUPPRESS,
                  pl.format("without its two largest patients the cell adds up to less than {}% "
                            "of the largest patient's contribution (p % rule)",
                            pl.lit(f"{policy.p_ratio * 100:g}")))]


RULE = Rule(
    name="p %", order=50, check=check,
    thresholds=(Threshold(
        "p_ratio", 0.1, "p % rule; 0 switches it off",
        presets={"opensafely": 0.0, "opensafely-midpoint6": 0.0, "abs": 0.0},
        setting="Override: p of the p % dominance rule, 0 = off (-1 = preset's).",
        problem=lambda v: None if 0 <= v < 1 else "must be in [0, 1)"),),
    evidence=lambda policy, stat: ("abs_total", "top1", "top2") if stat in APPLIES else (),
    docs=(("p %", "sum, mean",
           "cell total − the two largest contributions < `p_ratio` × the largest"),),
)
