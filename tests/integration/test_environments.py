"""Issue 21, build item 1 acceptance: every environment the project installs holds exactly its
lock. ``pip freeze --all`` of this interpreter's environment (``.venv`` under ``bash .ci/run``) and
of the user and service environments (``hub.userenv_dir``, ``hub.serviceenv_dir`` of the
configured enclave) is compared with ``requirements/<name>.lock``. An environment that is not
built is skipped, except under CI (``CI=true``), where ``.ci/install`` must have built it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from enclave.core.settings import load_settings
from enclave.io.envlock import (
    BOOTSTRAP,
    LOCKS,
    PROJECT,
    canonical,
    compare,
    env_python,
    environments,
    installed,
    read_lock,
)

IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _freeze(python: Path) -> tuple[dict[str, str], list[str]]:
    """``pip freeze --all``: its ``name==version`` lines, and every other line that is not a
    comment (editable or direct-URL installs)."""
    out = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "freeze",
                          "--all"], check=True, capture_output=True, text=True).stdout
    pins, other = {}, []
    for line in out.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[canonical(name)] = version
        else:
            other.append(line)
    return pins, other


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_pip_freeze_of_each_environment_is_its_lock(name):
    env = environments(load_settings())[name]
    if not env_python(env).exists():
        message = f"the {name} environment {env} is not built (bash .ci/install, as root)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    lock = read_lock(LOCKS[name].path)
    pins, other = _freeze(env_python(env))
    unlocked = {n: v for n, v in pins.items() if n not in lock.pins and n not in BOOTSTRAP}
    assert not unlocked, f"{env} holds packages {lock.path.name} does not name: {unlocked}"
    assert {n: v for n, v in pins.items() if n in lock.pins} == dict(lock.pins), (
        f"{env} {compare(installed(env_python(env)), lock).describe(lock.path.name)}")
    # the only install that is not name==version is the enclave itself (editable, or from the tree)
    assert all(PROJECT.replace("-", "_") in line.replace("-", "_") or line.startswith("-e ")
               for line in other), other
    assert compare(installed(env_python(env)), lock).matches
