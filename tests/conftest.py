from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from enclave.core.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The machine-wide registry of which enclave home owns which users, groups, nftables table and
# ports (enclave.io.hub.registry): one per test run, inherited by the `enclave` subprocesses the tests
# start, and removed at the end, so the tests neither read nor write the machine's own.
_OWN_REGISTRY = None
if not os.environ.get("ENCLAVE_REGISTRY"):
    _OWN_REGISTRY = tempfile.mkdtemp(prefix="enclave-registry-", dir="/tmp")
    os.environ["ENCLAVE_REGISTRY"] = _OWN_REGISTRY


def pytest_sessionfinish(session, exitstatus):
    if _OWN_REGISTRY is not None:
        shutil.rmtree(_OWN_REGISTRY, ignore_errors=True)


@pytest.fixture(autouse=True)
def _process_state():
    """Put back what code under test may change for its whole process: the umask and the temp
    folder (the lock-down server extension sets umask 077 and a private TMPDIR, as it must in a
    user server; in a test worker, every later test would write private files)."""
    import tempfile

    umask = os.umask(0o022)
    os.umask(umask)
    tmpdir, default = os.environ.get("TMPDIR"), tempfile.tempdir
    yield
    os.umask(umask)
    if tmpdir is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = tmpdir
    tempfile.tempdir = default


@pytest.fixture
def settings(tmp_path):
    """An isolated enclave home per test."""
    return load_settings(tmp_path / "enclave-home")


def researcher_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *unset: str) -> Path:
    """A researcher's own home, ``tmp_path/user``, as $HOME (exports and the local ledger go under
    ~/.enclave), with the environment variables ``unset`` removed."""
    h = tmp_path / "user"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    return h


#: Tests that use what the machine has only once (Unix users and groups, the nftables table,
#: ports, the shared /opt environments, a hub): run one after another on one xdist worker. The
#: other integration and security tests (their own home, free ports, no users) run beside them.
MACHINE_WIDE = ("tests/integration/test_hub", "tests/integration/test_environments.py",
                "tests/security/test_hub_", "tests/security/test_airlock_boundary.py",
                "tests/security/test_enclave_isolation.py",
                "tests/security/test_audit_integrity.py", "tests/unit/test_hub.py",
                "tests/unit/test_preflight.py", "tests/unit/test_instances.py")


def pytest_xdist_make_scheduler(config, log):
    """The default run's xdist scheduler (pyproject's addopts: ``-n 2``): whole groups go to one
    worker — the machine-wide tests form one group, the two-engine spec tests another (one Spark
    session), every other module its own (its fixtures are built once). xdist's own
    ``--dist loadgroup`` does not group under pytest 9 (it renames node ids in a way pytest 9 no
    longer reads)."""
    from xdist.scheduler import LoadScopeScheduling

    class Grouped(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path.startswith(MACHINE_WIDE):
                return "machine"
            return "spark" if path.startswith("tests/spec/") else path

    return Grouped(config, log)
