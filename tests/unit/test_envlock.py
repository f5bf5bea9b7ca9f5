"""Lock files (enclave.io.envlock): reading a lock, how installed packages differ from it, installing
exactly a lock into a real venv (hand-made wheels, no network), and the repository's three locks
against pyproject.toml and each other."""

from __future__ import annotations

import base64
import hashlib
import platform
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from enclave.core.errors import ConfigurationError
from enclave.io.envlock import (
    BOOTSTRAP,
    LOCKS,
    PROJECT,
    REPO,
    SHARED_WITH_ADMIN,
    Lock,
    LockDiff,
    canonical,
    check_python,
    compare,
    installed,
    read_lock,
    sync,
)
from enclave.io.relock import CUDA

LOCK_TEXT = """\
# The demo environment.
# Locked for Python 3.11.2 on x86_64-manylinux_2_28.
--find-links /somewhere
click==8.5.1 \\
    --hash=sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    # via emr-enclave (pyproject.toml)
Jinja2==3.1.6 \\
    --hash=sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb \\
    --hash=sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff
ibis-framework[duckdb]==12.0.0 \\
    --hash=sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc
torch==2.13.0+cpu \\
    --hash=sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd
setuptools==84.2.1 \\
    --hash=sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee

# The following packages were excluded from the output:
# rfc3987-syntax
"""


@pytest.fixture
def lock(tmp_path) -> Lock:
    path = tmp_path / "demo.lock"
    path.write_text(LOCK_TEXT)
    return read_lock(path)


def test_a_lock_is_read_as_canonical_names_and_exact_versions(lock):
    assert dict(lock.pins) == {"click": "8.5.1", "jinja2": "3.1.6", "ibis-framework": "12.0.0",
                               "torch": "2.13.0+cpu", "setuptools": "84.2.1"}
    assert lock.python == "3.11.2"
    assert lock.hashes["jinja2"] == ("b" * 64, "f" * 64)
    assert lock.hashes["torch"] == ("d" * 64,)


def test_a_requirement_that_is_not_pinned_is_refused(tmp_path):
    path = tmp_path / "bad.lock"
    path.write_text("click>=8\n")
    with pytest.raises(ConfigurationError, match=r"line 1: not an exact pin.*\.ci/relock"):
        read_lock(path)
    with pytest.raises(ConfigurationError, match="no lock file at"):
        read_lock(tmp_path / "missing.lock")


def test_the_difference_names_missing_extra_and_other_versions(lock):
    have = {"Click": "8.5.1", "jinja2": "3.1.5", "ibis_framework": "12.0.0", "torch": "2.13.0",
            "setuptools": "84.2.1", "ruff": "0.17.6", "pip": "26.3", "emr-enclave": "0.1.0"}
    diff = compare(have, lock)
    assert diff == LockDiff(missing=(), extra=("ruff==0.17.6",),
                            changed=(("jinja2", "3.1.6", "3.1.5"), ("torch", "2.13.0+cpu", "2.13.0")))
    assert not diff.matches
    assert diff.describe("demo.lock") == (
        "differs from demo.lock: 1 not in the lock (ruff==0.17.6); 2 in another version "
        "(jinja2 3.1.5 instead of 3.1.6, torch 2.13.0 instead of 2.13.0+cpu)")
    del have["Click"], have["ruff"]
    have.update(jinja2="3.1.6", torch="2.13.0+cpu")
    assert compare(have, lock).missing == ("click==8.5.1",)
    have["click"] = "8.5.1"
    assert compare(have, lock).matches  # pip and the enclave itself are not the lock's business
    assert compare(have, lock).describe("demo.lock") == "matches demo.lock"


def test_setuptools_is_compared_only_when_the_lock_names_it(lock, tmp_path):
    assert "setuptools" in BOOTSTRAP
    have = dict(lock.pins, setuptools="65.5.0")
    assert compare(have, lock).changed == (("setuptools", "84.2.1", "65.5.0"),)
    unlocked = tmp_path / "no-setuptools.lock"
    unlocked.write_text(f"click==8.5.1 --hash=sha256:{'a' * 64}\n")
    assert compare({"click": "8.5.1", "setuptools": "65.5.0"}, read_lock(unlocked)).matches


def test_an_interpreter_older_than_the_lock_or_of_another_minor_is_refused(lock):
    check_python(Path("/x/python"), lock, "3.11.2")
    check_python(Path("/x/python"), lock, "3.11.9")
    for version in ("3.11.1", "3.12.2", "3.10.14"):
        with pytest.raises(ConfigurationError, match=f"locked for Python 3.11.2, but /x/python "
                                                     f"is Python {version}"):
            check_python(Path("/x/python"), lock, version)


def test_installed_lists_what_pip_freeze_lists():
    """The oracle: every ``name==version`` line of ``pip freeze --all`` of this interpreter."""
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], check=True,
                            capture_output=True, text=True).stdout
    pins = dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line
                and not line.startswith(("#", "-")))
    have = installed(Path(sys.executable))
    assert {canonical(n): v for n, v in pins.items()}.items() <= have.items()
    assert PROJECT in have


def _wheel(folder: Path, name: str, version: str) -> tuple[Path, str]:
    """A minimal pure-Python wheel and its sha256."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    digest = {f: base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).decode().rstrip("=")
              for f, c in files.items()}
    record = [f"{f},sha256={digest[f]},{len(c)}" for f, c in files.items()]
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(path, "w") as z:
        for f, c in files.items():
            z.writestr(f, c)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_sync_installs_exactly_the_lock_into_a_real_venv(tmp_path):
    pytest.importorskip("uv")  # the dev extra of the admin lock
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    a1, _ = _wheel(wheels, "enclavetesta", "1.0")
    _, a2_hash = _wheel(wheels, "enclavetesta", "2.0")
    extra, _ = _wheel(wheels, "enclavetestb", "1.0")
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", str(a1), str(extra)],
                   check=True)
    lock = tmp_path / "env.lock"
    version = platform.python_version()
    lock.write_text(f"# Locked for Python {version} on x86_64-manylinux_2_28.\n--no-index\n"
                    f"--find-links {wheels}\nenclavetesta==2.0 \\\n    --hash=sha256:{a2_hash}\n")
    assert compare(installed(python), read_lock(lock)) == LockDiff(
        extra=("enclavetestb==1.0",), changed=(("enclavetesta", "2.0", "1.0"),))
    said = []
    assert sync(python, lock, echo=said.append).matches
    assert compare(installed(python), read_lock(lock)).matches
    assert "enclavetestb" not in installed(python) and "pip" in installed(python)
    # a file whose hash is not the lock's is refused, and uv's words say why (the files it
    # installs are checked: an installed version is taken as it is)
    lock.write_text(lock.read_text().replace("enclavetesta==2.0", "enclavetesta==1.0"))
    with pytest.raises(ConfigurationError, match="(?si)installing .*env.lock failed.*hash"):
        sync(python, lock, echo=said.append)


# ------------------------------------------------------------------ the repository's own locks

def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_each_lock_satisfies_pyproject(name):
    """pyproject.toml changed without a re-lock: ``bash .ci/relock --keep``."""
    spec = LOCKS[name]
    lock = read_lock(spec.path)
    marker_env = dict(default_environment(), python_full_version=lock.python,
                      python_version=lock.python.rsplit(".", 1)[0])
    for req in _requirements(spec.extras):
        if req.marker and not req.marker.evaluate(marker_env):
            continue
        have = lock.pins.get(canonical(req.name))
        assert have is not None, f"{spec.path.name} lacks {req}: bash .ci/relock --keep"
        assert req.specifier.contains(have, prereleases=True), (
            f"{spec.path.name} has {req.name}=={have}, pyproject wants {req}: bash .ci/relock --keep")


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_each_lock_pins_every_package_with_hashes_and_no_cuda(name):
    spec = LOCKS[name]
    lock = read_lock(spec.path)
    assert lock.hashes.keys() == lock.pins.keys() and all(lock.hashes.values())
    assert not [n for n in lock.pins if n.startswith(CUDA)]
    assert not set(spec.exclude) & set(lock.pins)
    assert lock.python is not None


def test_the_admin_lock_holds_the_local_torch_cpu_wheel():
    lock = read_lock(LOCKS["admin"].path)
    assert lock.pins["torch"] == "2.13.0+cpu"
    wheel = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    if wheel.exists():
        assert lock.hashes["torch"] == (hashlib.sha256(wheel.read_bytes()).hexdigest(),)


def test_user_and_service_environments_share_the_admin_versions():
    admin = read_lock(LOCKS["admin"].path).pins
    user = read_lock(LOCKS["userenv"].path).pins
    service = read_lock(LOCKS["serviceenv"].path).pins
    for name in SHARED_WITH_ADMIN:
        assert user[name] == admin[name] == service[name], name
    assert "jupyterlab" in user and "ipykernel" in user
    assert {"streamlit", "jupyterhub-idle-culler"} <= service.keys()
    assert not {"jupyterlab", "ipykernel"} & service.keys()
