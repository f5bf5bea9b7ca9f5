"""Validators and threshold shapes shared by rule modules (not a rule: the registry skips modules
named ``_*``)."""

from __future__ import annotations

from typing import Any

from enclave.core.disclosure_registry import Threshold


def at_least_zero(value: Any) -> str | None:
    return None if value >= 0 else "must be ≥ 0"


def patients_threshold(name: str, doc: str, setting: str) -> Threshold:
    """A threshold on a number of patients: 10, OpenSAFELY's 8 (both its presets), never below 0."""
    return Threshold(name, 10, doc, presets={"opensafely": 8, "opensafely-midpoint6": 8},
                     setting=setting, problem=at_least_zero)
