"""Model support and survival steps: the patients behind a model's terms and a curve's steps.

Implemented where the numbers are computed (:mod:`enclave.io.outputs.support`,
:mod:`enclave.io.outputs.models`) with the ``min_patients`` threshold; declared here for the docs."""

from __future__ import annotations

from enclave.core.disclosure_registry import Rule

RULE = Rule(
    name="model support", order=100, implemented_in="enclave.io.outputs.support",
    docs=(
        ("model support", "ols, logit",
         ("a design column (dummy, interaction, `I(...)`, 0/1 numeric, few values) with fewer than "
          "`min_patients` patients at one of its values; a factor's reference level or a cell of "
          "interacting discrete terms with fewer; a column where fewer than `min_patients` "
          "patients differ from its most common value — the model fails and the reason names the "
          "term")),
        ("survival steps", "survival",
         ("a step with fewer than `min_patients` at risk ends the curve; 1 to `min_patients − 1` "
          "events fail the step")),
    ),
)
