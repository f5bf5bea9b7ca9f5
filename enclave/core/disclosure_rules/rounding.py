"""Rounding of published counts after suppression (:func:`enclave.logic.disclosure.round_counts`):
``nearest`` multiple of ``round_base`` (halves up) or OpenSAFELY ``midpoint``; the indicator
cubes round by cell key instead (:func:`enclave.io.indicators.cube.cell_key_round`)."""

from __future__ import annotations

from enclave.core.disclosure_registry import Rounding, Rule, Threshold

RULE = Rule(
    name="rounding", order=110, implemented_in="enclave.logic.disclosure.check",
    thresholds=(
        Threshold("rounding", Rounding.NONE, "how published counts are rounded",
                  presets={"opensafely": Rounding.NEAREST,
                           "opensafely-midpoint6": Rounding.MIDPOINT},
                  convert=Rounding),
        Threshold("round_base", 5, "base of count rounding",
                  presets={"opensafely-midpoint6": 6},
                  setting="Override: base of count rounding (-1 = preset's).",
                  problem=lambda v: None if v >= 1 else "must be ≥ 1"),
    ),
)
