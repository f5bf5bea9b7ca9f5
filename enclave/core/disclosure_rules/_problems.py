"""Validators shared by rule modules (not a rule: the registry skips modules named ``_*``)."""

from __future__ import annotations

from typing import Any


def at_least_zero(value: Any) -> str | None:
    return None if value >= 0 else "must be ≥ 0"
