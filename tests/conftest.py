from __future__ import annotations

from pathlib import Path

import pytest

from enclave.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture
def settings(tmp_path):
    """An isolated enclave home per test."""
    return load_settings(tmp_path / "enclave-home")
