"""Class disclosure: a published statistic that shows every patient of a cell shares one value.

When every patient of a cell shares one value of the sensitive column (its share is 100 %, every
other value's 0 %), or a sum, mean, std, min or max is over a cell whose values are all the same
(min = max: a proportion of 0 or 1, a std of 0), the cell goes to review, or is suppressed under a
policy with ``class_disclosure_fails``. Quantiles, crosstab rows and histograms are checked for
the same in :mod:`enclave.io.outputs.tables`, models in :mod:`enclave.io.outputs.support` and survival
in :mod:`enclave.io.outputs.models`, where their values are computed; they read
:func:`class_outcome` and the two thresholds declared here.
"""

from __future__ import annotations

from enclave.core.disclosure_registry import (
    SAME_VALUE,
    Cell,
    Check,
    Outcome,
    Rule,
    Statistic,
    Threshold,
)


def class_outcome(policy) -> Outcome:
    """What a class-disclosure hit does under ``policy``: review, or suppression when strict."""
    return Outcome.SUPPRESS if policy.class_disclosure_fails else Outcome.REVIEW


def check(policy, stat: Statistic, cell: Cell) -> list[Check]:
    import polars as pl
    if not policy.class_disclosure:
        return []
    pats, vals = pl.col("patients"), pl.col("value_patients")
    out = []
    if cell.has_sensitive:
        mp = pl.col("modal_patients")
        out.append(Check((pats > 0) & mp.is_not_null() & (mp >= pats), class_outcome(policy),
                         pl.format("all {} patients in the cell share one value of the sensitive "
                                   "column (100 %, every other value 0 %): class disclosure",
                                   pats)))
    if stat in SAME_VALUE:
        out.append(Check((vals > 0) & (pl.col("min") == pl.col("max")), class_outcome(policy),
                         pl.format("all {} patients with a value in the cell have the same value "
                                   "(its minimum equals its maximum), which the {} reveals: class "
                                   "disclosure", vals, pl.lit(cell.label))))
    return out


def evidence(policy, stat: Statistic) -> tuple[str, ...]:
    """The cell's ``min`` and ``max`` for a sum, mean, min or max (``bounds`` or ``extremes``
    evidence; null bounds never match); ``modal_patients`` is read where it was computed."""
    if policy.class_disclosure and stat in SAME_VALUE:
        return ("patients", "value_patients", "min", "max")
    return ()


RULE = Rule(
    name="class disclosure", order=80, check=check, evidence=evidence,
    thresholds=(
        Threshold("class_disclosure", True,
                  "flag cells whose statistic shows every patient shares a value"),
        Threshold("class_disclosure_fails", False,
                  "class disclosure is suppressed (fail), not review", presets={"strict": True}),
    ),
    docs=(
        ("class disclosure, sensitive column", "any, with a sensitive column",
         "every patient in the cell shares one value (100 % / 0 %)"),
        ("class disclosure, same value", "sum, mean, std, min, max",
         ("the cell's minimum equals its maximum (a 0/1 proportion at 0 or 1, a std of 0, "
          "min = max)")),
        ("class disclosure, quantile", "median, qNN",
         "the quantile equals the cell's minimum or maximum"),
        ("class disclosure, crosstab row", "crosstab counts",
         "a row's patients all fall in one column (100 % / 0 %)"),
        ("class disclosure, histogram", "histogram",
         "one non-empty bin of several (or of edges derived from the data)"),
        ("class disclosure, models", "ols, logit",
         ("the dependent variable is constant within a level of a binary/categorical term; a "
          "logit with a separating threshold or certain predictions")),
        ("class disclosure, survival", "survival", "every patient at risk at a step has the event"),
    ),
)
