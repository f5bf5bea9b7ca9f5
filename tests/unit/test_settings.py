"""Settings: every setting documented, docs/settings.md generated from the code, overrides typed."""

from __future__ import annotations

import pytest

from enclave.core.errors import ConfigurationError
from enclave.core.settings import iter_settings, load_settings
from tests.conftest import REPO


def render_settings_doc() -> str:
    lines = ["# Settings", "", "Generated from `enclave/core/settings.py` (a test keeps this file in sync).",
             "Override in `<home>/settings.toml`, e.g. `[ingest]` / `max_reject_share = 0.2`.", "",
             "| setting | default | meaning |", "|---|---|---|"]
    for name, default, help_text in iter_settings():
        if name == "home":
            default = "$ENCLAVE_HOME or ~/.local/share/enclave"
        lines.append(f"| `{name}` | `{default}` | {help_text} |")
    return "\n".join(lines) + "\n"


def test_every_setting_has_help():
    for name, _, help_text in iter_settings():
        assert help_text.strip(), f"setting {name} is undocumented"


def test_settings_doc_is_generated_from_code():
    doc = REPO / "docs" / "settings.md"
    assert doc.read_text(encoding="utf-8") == render_settings_doc(), (
        "docs/settings.md is stale: regenerate with "
        "python -c 'from tests.unit.test_settings import render_settings_doc as r; print(r(), end=\"\")' > docs/settings.md"
    )


def test_settings_file_overrides_and_rejects_unknown_keys(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "settings.toml").write_text("[ingest]\nmax_reject_share = 0.25\n")
    assert load_settings(home).ingest.max_reject_share == 0.25
    (home / "settings.toml").write_text("[ingest]\nmax_reject_shar = 0.25\n")
    with pytest.raises(ConfigurationError, match="max_reject_shar"):
        load_settings(home)
    (home / "settings.toml").write_text("[ingest]\nmax_reject_share = 'many'\n")
    with pytest.raises(ConfigurationError, match="wrong type"):
        load_settings(home)


def test_home_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCLAVE_HOME", str(tmp_path / "x"))
    assert load_settings().home == (tmp_path / "x").resolve()
