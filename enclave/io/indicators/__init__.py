"""Policymaker indicators: computed from a release, checked like researcher outputs, published as
one table the dashboards read (see ``docs/dashboards.md``).

Security-critical: :mod:`.cube` (rules, secondary suppression across every face of the cube,
cell-key rounding). :mod:`.definitions` says what each indicator counts (ibis), :mod:`.build`
publishes.
"""

from __future__ import annotations

import importlib

# Names are imported on first use (PEP 562): the dashboards import only ``regions`` and should not
# pay for ibis and sqlglot (``build``, ``definitions``) on a server's first page.
_EXPORTS = {
    "DIMENSIONS": "build", "INDICATORS_DB": "build", "build_indicators": "build",
    "indicators_root": "build", "latest_indicators": "build", "ALL": "cube",
    "CheckedCube": "cube", "cell_key_round": "cube", "check_cube": "cube",
    "suppress_cube": "cube", "INDICATORS": "definitions", "Indicator": "definitions",
}

__all__ = ["ALL", "DIMENSIONS", "INDICATORS", "INDICATORS_DB", "CheckedCube", "Indicator",
           "build_indicators", "cell_key_round", "check_cube", "indicators_root",
           "latest_indicators", "suppress_cube"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'enclave.io.indicators' has no attribute '{name}'")
    module = importlib.import_module(f"enclave.io.indicators.{_EXPORTS[name]}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return __all__
