"""The walkthrough's new disclosure rule, exactly as a developer adds it: this file, copied to
``enclave/core/disclosure_rules/min_rows.py``, is the whole product change (see
``tests/unit/test_disclosure_registry.py``, which does that in a copy of the package).

Minimum rows: a published row count needs ``min_rows`` rows (0 = off; the ``strict`` preset asks
for 20), overridable as the setting ``disclosure.min_rows``. It reads the evidence's ``rows``.
"""

from __future__ import annotations

from enclave.core.disclosure_registry import Cell, Check, Outcome, Rule, Statistic, Threshold


def check(policy, stat: Statistic, cell: Cell) -> list[Check]:
    import polars as pl
    if stat is not Statistic.COUNT or policy.min_rows <= 0:
        return []
    rows = pl.col("rows")
    return [Check((rows > 0) & (rows < policy.min_rows), Outcome.SUPPRESS,
                  pl.format("cell has {} rows; at least {} are needed (minimum rows)", rows,
                            pl.lit(policy.min_rows)))]


RULE = Rule(
    name="minimum rows", order=25, check=check,
    thresholds=(Threshold(
        "min_rows", 0, "a published row count needs this many rows (0 = off)",
        presets={"strict": 20},
        setting="Override: fewest rows behind a published row count, 0 = off (-1 = preset's).",
        problem=lambda v: None if v >= 0 else "must be ≥ 0"),),
    evidence=lambda policy, stat: ("rows",) if stat is Statistic.COUNT else (),
    docs=(("minimum rows", "count", "0 < rows < `min_rows`"),),
)
