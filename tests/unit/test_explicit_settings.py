"""Library code takes the enclave's settings from its caller, never from the global home."""

from __future__ import annotations

import pytest

from enclave.core.errors import BadInputError, ConfigurationError
from enclave.io.airlock import client
from enclave.research import custom, recheck
from enclave.research.api import _settings


@pytest.fixture
def outside_the_hub(monkeypatch):
    monkeypatch.delenv(client.URL_ENV, raising=False)
    monkeypatch.delenv(client.TOKEN_ENV, raising=False)


@pytest.mark.parametrize("call", [
    lambda: client.submit_export({}, {}, "why"),
    lambda: client.get_request("r-1"),
    lambda: client.list_requests(),
    lambda: client.record_event("release.read", "release:p/v1"),
])
def test_the_airlock_client_outside_the_hub_needs_settings(outside_the_hub, call):
    with pytest.raises(ConfigurationError, match="pass settings="):
        call()


def test_a_connection_without_a_workspace_has_no_settings_to_guess():
    class Bare:  # a backend that no workspace opened
        pass

    with pytest.raises(BadInputError, match="from a workspace"):
        _settings(Bare())


def test_recheck_and_custom_take_their_settings_from_the_caller(tmp_path):
    f = tmp_path / "figure.png"
    f.write_bytes(b"png")
    with pytest.raises(TypeError):
        recheck({})  # no settings: no global home either
    with pytest.raises(TypeError):
        custom(f)  # a custom file belongs to a workspace (its release and settings)
