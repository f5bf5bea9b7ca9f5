"""Degrees of freedom: a model needs ``min_dof`` residual degrees of freedom (checked by
:mod:`enclave.io.outputs.models` with :func:`check_dof`)."""

from __future__ import annotations

from enclave.core.disclosure_registry import Outcome, Rule, Threshold
from enclave.core.disclosure_rules._problems import at_least_zero
from enclave.core.errors import BadInputError


def residual_dof(n: int, k: int) -> int:
    """Residual degrees of freedom of a model with ``n`` observations and ``k`` parameters."""
    if n < 0 or k < 0:
        raise BadInputError("observations and parameters must be ≥ 0")
    return n - k


def check_dof(n: int, k: int, policy) -> tuple[Outcome, list[str]]:
    """A model passes when its residual degrees of freedom reach the policy's ``min_dof``."""
    dof = residual_dof(n, k)
    if dof < policy.min_dof:
        return Outcome.SUPPRESS, [(f"model has {dof} residual degrees of freedom ({n} observations, "
                                  f"{k} parameters); at least {policy.min_dof} are needed")]
    return Outcome.OK, []


RULE = Rule(
    name="degrees of freedom", order=90, implemented_in="enclave.io.outputs.models",
    thresholds=(Threshold(
        "min_dof", 10, "residual degrees of freedom of a model",
        setting="Override: fewest residual degrees of freedom (-1 = preset's).",
        problem=at_least_zero),),
    docs=(("degrees of freedom", "models",
           "observations − parameters < `min_dof` (`check_dof(n, k, policy)`)"),),
)
