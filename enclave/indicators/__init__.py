"""Policymaker indicators: computed from a release, checked like researcher outputs, published as
one table the dashboards read (see ``docs/dashboards.md``).

Security-critical: :mod:`.cube` (rules, secondary suppression across every face of the cube,
cell-key rounding). :mod:`.definitions` says what each indicator counts (ibis), :mod:`.build`
publishes.
"""

from enclave.indicators.build import (
    DIMENSIONS,
    INDICATORS_DB,
    build_indicators,
    indicators_root,
    latest_indicators,
)
from enclave.indicators.cube import ALL, CheckedCube, cell_key_round, check_cube, suppress_cube
from enclave.indicators.definitions import INDICATORS, Indicator

__all__ = ["ALL", "DIMENSIONS", "INDICATORS", "INDICATORS_DB", "CheckedCube", "Indicator",
           "build_indicators", "cell_key_round", "check_cube", "indicators_root",
           "latest_indicators", "suppress_cube"]
