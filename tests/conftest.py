from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from enclave.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"

# The machine-wide registry of which enclave home owns which users, groups, nftables table and
# ports (enclave.hub.registry): one per test run, inherited by the `enclave` subprocesses the tests
# start, and removed at the end, so the tests neither read nor write the machine's own.
_OWN_REGISTRY = None
if not os.environ.get("ENCLAVE_REGISTRY"):
    _OWN_REGISTRY = tempfile.mkdtemp(prefix="enclave-registry-", dir="/tmp")
    os.environ["ENCLAVE_REGISTRY"] = _OWN_REGISTRY


def pytest_sessionfinish(session, exitstatus):
    if _OWN_REGISTRY is not None:
        shutil.rmtree(_OWN_REGISTRY, ignore_errors=True)


@pytest.fixture
def settings(tmp_path):
    """An isolated enclave home per test."""
    return load_settings(tmp_path / "enclave-home")
