"""Precision: published non-integer statistics (means, quantiles, coefficients, survival …) are
rounded to ``significant_digits`` significant digits before they are recorded, checked by the
airlock and released (:func:`enclave.logic.disclosure.round_significant`); 0 publishes them as
computed."""

from __future__ import annotations

from enclave.core.disclosure_registry import Rule, Threshold

RULE = Rule(
    name="precision", order=120, implemented_in="enclave.io.outputs.evaluation",
    thresholds=(Threshold(
        "significant_digits", 6, "significant digits of published non-integer statistics",
        setting="Override: significant digits of published non-integer statistics (means, "
                "quantiles, coefficients, survival), rounded before checking and release; "
                "0 = unrounded (-1 = preset's).",
        problem=lambda v: None if 0 <= v <= 17 else "must be in 0 … 17 (0: unrounded)"),),
)
