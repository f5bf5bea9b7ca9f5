"""Shared fixtures of the attack suite."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def user_home(tmp_path_factory):
    """The researcher API keeps a local ledger under ~: point it at a temporary folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path_factory.mktemp("user")))
        mp.delenv("ENCLAVE_HOME", raising=False)
        yield
