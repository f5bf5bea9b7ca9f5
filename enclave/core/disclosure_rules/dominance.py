"""N-K dominance: the largest n patients may contribute at most k of the cell total.

Contributions are per-patient sums of absolute values, so negatives count as magnitudes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from enclave.core.disclosure_registry import Cell, Check, Outcome, Rule, Statistic, Threshold

if TYPE_CHECKING:
    import polars as pl

APPLIES = (Statistic.SUM, Statistic.MEAN)


def _pct(x: pl.Expr) -> pl.Expr:
    import polars as pl
    return (x * 100).round(1).cast(pl.String)


def check(policy, stat: Statistic, cell: Cell) -> list[Check]:
    import polars as pl
    if stat not in APPLIES:
        return []
    total = pl.col("abs_total")
    out = []
    for n, k in policy.nk_rules:
        top = pl.col("top1" if n == 1 else "top2")
        out.append(Check((total > 0) & (top > k * total), Outcome.SUPPRESS,
                         pl.format("the largest {} patient(s) contribute {}% of the cell total; "
                                   "at most {}% is allowed (N-K rule)", pl.lit(n),
                                   _pct(top / total), pl.lit(f"{k * 100:g}"))))
    return out


def _convert(rules: Any) -> tuple[tuple[int, float], ...]:
    return tuple(tuple(r) for r in rules)


def _problem(rules: tuple[tuple[int, float], ...]) -> str | None:
    for n, k in rules:
        if n not in (1, 2) or not 0 < k <= 1:
            return f"has the N-K rule ({n}, {k}); each needs n in (1, 2) and 0 < k ≤ 1"
    return None


RULE = Rule(
    name="N-K dominance", order=40, check=check,
    thresholds=(Threshold(
        "nk_rules", ((2, 0.9),), "(n, k): the top n patients contribute at most k of the total",
        presets={"opensafely": (), "opensafely-midpoint6": (), "abs": ((1, 0.5), (2, 0.67))},
        convert=_convert, problem=_problem),),
    evidence=lambda policy, stat: ("abs_total", "top1", "top2") if stat in APPLIES else (),
    docs=(("N-K dominance", "sum, mean",
           ("the largest n patients' contribution > k × the cell total, for each (n, k) in "
            "`nk_rules`")),),
)
