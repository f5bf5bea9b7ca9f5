"""The checker: every registered disclosure rule over the evidence frame, one outcome per cell.

:func:`check_cells` takes the evidence that :mod:`enclave.logic.disclosure.evidence` computed, the
statistic being published and a :class:`DisclosurePolicy`, and returns per cell an ``outcome``
(``ok`` / ``suppress`` / ``review``), the ``reasons`` in plain language and the publishable
``value`` (null when suppressed; counts rounded when the policy rounds). The rules are those of
:mod:`enclave.core.disclosure_rules` (see :mod:`enclave.core.disclosure_registry`), run in rule order as
vectorized expressions; there is no per-cell Python. Contributors are distinct patients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

from enclave.core.disclosure_registry import (
    COUNTS,
    MAGNITUDES,
    SAME_VALUE,
    Cell,
    Check,
    Outcome,
    Rounding,
    Statistic,
    rules,
)
from enclave.core.disclosure_rules.class_disclosure import class_outcome
from enclave.core.disclosure_rules.dof import check_dof, residual_dof
from enclave.core.errors import BadInputError
from enclave.logic.disclosure.policy import DisclosurePolicy

__all__ = ["COUNTS", "MAGNITUDES", "SAME_VALUE", "Outcome", "Statistic", "check_cells",
           "check_dof", "class_outcome", "evidence_needed", "residual_dof", "round_counts",
           "round_significant"]

VALUE_COLUMN = {Statistic.COUNT: "rows", Statistic.PATIENTS: "patients", Statistic.SUM: "sum",
                Statistic.MEAN: "mean", Statistic.MIN: "min", Statistic.MAX: "max"}
# what the checker itself reads: the published value's weight and the patients of every cell
BASE_EVIDENCE = ("rows", "patients")


def evidence_needed(policy: DisclosurePolicy, statistic: Statistic | str) -> tuple[str, ...]:
    """The evidence columns the rules read for ``statistic`` under ``policy`` (rule order)."""
    stat = Statistic(statistic)
    needed = dict.fromkeys(BASE_EVIDENCE)
    for rule in rules():
        needed.update(dict.fromkeys(rule.evidence(policy, stat)))
    return tuple(needed)


def _checks(policy: DisclosurePolicy, stat: Statistic, cell: Cell) -> list[Check]:
    return [c for rule in rules() if rule.check is not None for c in rule.check(policy, stat, cell)]


def round_counts(values: pl.Expr, policy: DisclosurePolicy) -> pl.Expr:
    """Round published counts as the policy says (nearest multiple, or midpoint; 0 stays 0)."""
    b = policy.round_base
    if policy.rounding is Rounding.NEAREST:
        return ((values / b + 0.5).floor() * b).cast(pl.Int64)
    if policy.rounding is Rounding.MIDPOINT:
        return pl.when(values == 0).then(0).otherwise(
            (values / b).ceil() * b - b // 2).cast(pl.Int64)
    return values


def round_significant(value: float, digits: int) -> float:
    """``value`` to ``digits`` significant digits (decimal, as it is written: 0.1 stays 0.1);
    ``digits`` 0, integers, and non-finite values are returned as they are."""
    if digits <= 0 or isinstance(value, (bool, int)) or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def check_cells(evidence: pl.DataFrame, statistic: Statistic | str, policy: DisclosurePolicy,
                groups: Sequence[str] = (), label: str | None = None) -> pl.DataFrame:
    """Per cell: ``groups``, ``outcome``, ``reasons`` (list of text), ``value`` (null unless ok).

    ``label`` names the published statistic in reasons (default: the statistic's own name).
    The class-disclosure rule of a sum, mean, min or max compares the evidence's ``min`` and
    ``max``: compute it with ``extremes`` or ``bounds`` (null bounds never match)."""
    stat = Statistic(statistic)
    missing = [c for c in evidence_needed(policy, stat) if c not in evidence.columns]
    if missing:
        raise BadInputError(f"evidence frame lacks column(s): {', '.join(missing)}")
    has_sensitive = ("modal_patients" in evidence.columns
                     and evidence["modal_patients"].null_count() < evidence.height)
    checks = _checks(policy, stat, Cell(has_sensitive, label or stat.value))
    fails = [c.fails.fill_null(False) for c in checks]
    suppress = pl.any_horizontal([f for f, c in zip(fails, checks)
                                  if c.outcome is Outcome.SUPPRESS] or [pl.lit(False)])
    review = pl.any_horizontal([f for f, c in zip(fails, checks)
                                if c.outcome is Outcome.REVIEW] or [pl.lit(False)])
    reasons = pl.concat_list([pl.when(f).then(c.reason) for f, c in zip(fails, checks)]
                             or [pl.lit(None, pl.String)]).list.drop_nulls()
    outcome = (pl.when(suppress).then(pl.lit(Outcome.SUPPRESS.value))
               .when(review).then(pl.lit(Outcome.REVIEW.value))
               .otherwise(pl.lit(Outcome.OK.value)))
    raw = pl.col(VALUE_COLUMN[stat]) if stat in VALUE_COLUMN else pl.lit(None, pl.Float64)
    published = round_counts(raw, policy) if stat in COUNTS else raw
    return evidence.select(
        *[pl.col(g) for g in groups],
        outcome.alias("outcome"),
        reasons.alias("reasons"),
        pl.when(suppress).then(None).otherwise(published).alias("value"),
        pl.col("rows").alias("weight"),
    )
