"""The lock files of the enclave's Python environments, installing from them, and how an
environment differs from its lock.

Three environments, each with one lock in ``requirements/`` (exact versions with hashes, for one
Python and platform, generated from ``pyproject.toml`` by ``.ci/relock``, see
:mod:`enclave.io.relock`):

- ``admin``: the repository's ``.venv`` (the enclave's own extras);
- ``userenv``: ``hub.userenv_dir``, what user servers and kernels run from;
- ``serviceenv``: ``hub.serviceenv_dir``, what the hub services run from.

:func:`sync` makes an environment hold exactly a lock (``uv pip sync --require-hashes``: every file
checked against the lock's hashes, nothing resolved, what the lock does not name removed);
:func:`compare` says how installed distributions differ from a lock. The enclave package itself
is installed from the working tree, not from a lock, and is never compared. Low level: the
standard library only (``.ci/install`` runs this module in a venv that holds nothing yet:
``python -m enclave.io.envlock sync PYTHON LOCK``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from enclave.core.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]
LOCK_DIR = REPO / "requirements"

#: The distribution of the enclave itself: installed from the working tree, never from a lock.
PROJECT = "emr-enclave"
#: What ``python -m venv`` puts into an environment; compared only when the lock names them.
BOOTSTRAP = frozenset({"pip", "setuptools", "wheel"})
#: Packages whose versions the user and service environments share with the admin side (files
#: written by DuckDB, polars and pyarrow, the hub protocol): ``.ci/relock`` constrains them.
SHARED_WITH_ADMIN = ("duckdb", "polars", "ibis-framework", "pandas", "pyarrow", "jupyterhub")


@dataclass(frozen=True, slots=True)
class LockSpec:
    """One environment's lock: which extras of pyproject.toml it holds, for which interpreter
    (``admin``: the one running ``.ci/relock``, ``system``: ``hub.system_python``), which
    resolved packages it leaves out (and why), and whether it shares versions with the admin lock."""

    name: str
    extras: tuple[str, ...]
    python: str
    exclude: tuple[str, ...] = ()
    shared_with_admin: bool = False

    @property
    def path(self) -> Path:
        return LOCK_DIR / f"{self.name}.lock"


#: rfc3987-syntax: jsonschema imports it optionally and compiles a grammar at import, 1-3 s of
#: every server start (measured: server init 3.5 s -> 2.2 s without it).
LOCKS = {spec.name: spec for spec in (
    LockSpec("admin", ("test", "synthetic", "hub", "dashboards", "spark", "dev"), "admin"),
    LockSpec("userenv", ("userenv",), "system", ("rfc3987-syntax",), shared_with_admin=True),
    LockSpec("serviceenv", ("serviceenv",), "system", ("rfc3987-syntax",), shared_with_admin=True),
)}


@dataclass(frozen=True, slots=True)
class Lock:
    """A parsed lock: ``pins`` maps canonical names to exact versions and ``hashes`` to the
    sha256 of the files each version may be installed from; ``python`` is the Python version it
    was resolved for (from its header), or None when the header does not say."""

    path: Path
    pins: Mapping[str, str]
    hashes: Mapping[str, tuple[str, ...]]
    python: str | None


@dataclass(frozen=True, slots=True)
class LockDiff:
    """How installed distributions differ from a lock: locked but not installed (``missing``),
    installed but not locked (``extra``), both with ``name==version``; and installed in another
    version (``changed``: name, locked, installed). Empty everywhere: the environment matches."""

    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    changed: tuple[tuple[str, str, str], ...] = ()

    @property
    def matches(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def describe(self, lock: str = "its lock") -> str:
        if self.matches:
            return f"matches {lock}"
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({', '.join(self.missing)})")
        if self.extra:
            parts.append(f"{len(self.extra)} not in the lock ({', '.join(self.extra)})")
        if self.changed:
            parts.append(f"{len(self.changed)} in another version (" + ", ".join(
                f"{n} {have} instead of {want}" for n, want, have in self.changed) + ")")
        return f"differs from {lock}: " + "; ".join(parts)

    def as_dict(self) -> dict:
        return {"matches": self.matches, "missing": list(self.missing), "extra": list(self.extra),
                "changed": [{"name": n, "locked": w, "installed": h} for n, w, h in self.changed]}


def canonical(name: str) -> str:
    """PEP 503 name: ``Jinja2`` and ``jinja2``, ``typing_extensions`` and ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
_PYTHON = re.compile(r"#\s*Locked for Python (\d+\.\d+\.\d+)")


def read_lock(path: Path) -> Lock:
    """Parse a lock (requirements format, every requirement ``name==version`` with its hashes).
    Raises ConfigurationError when it is missing or holds a requirement that is not pinned."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigurationError(f"no lock file at {path} ({e.strerror}): run .ci/relock") from e
    pins: dict[str, str] = {}
    hashes: dict[str, list[str]] = {}
    python = name = None
    for n, line in enumerate(text.splitlines(), 1):
        if (m := _PYTHON.match(line)) and python is None:
            python = m.group(1)
        if name and line.startswith((" ", "\t")):  # a continuation: the pin's hashes, its via
            hashes[name] += _HASH.findall(line)
        if not line.strip() or line.startswith(("#", " ", "\t", "-")):
            continue
        m = _PIN.match(line)
        if not m:
            raise ConfigurationError(f"{path}, line {n}: not an exact pin (name==version): "
                                     f"{line.strip()[:80]!r}; regenerate it with .ci/relock")
        name = canonical(m.group(1))
        pins[name], hashes[name] = m.group(2), _HASH.findall(line)
    return Lock(Path(path), pins, {k: tuple(v) for k, v in hashes.items()}, python)


_LIST = ("import importlib.metadata as m, json, sys, platform; json.dump({'python': "
         "platform.python_version(), 'dists': [[d.metadata['Name'], d.version] for d in "
         "m.distributions() if d.metadata['Name']]}, sys.stdout)")


def _inspect(python: Path) -> dict:
    proc = subprocess.run([str(python), "-I", "-c", _LIST], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigurationError(f"cannot list the distributions of {python}: "
                                 f"{proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def installed(python: Path) -> dict[str, str]:
    """Every distribution importable by interpreter ``python`` (run isolated, ``-I``) with its
    version, by canonical name: what ``pip freeze --all`` lists."""
    return {canonical(name): v for name, v in _inspect(python)["dists"]}


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return False
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return False


def compare(have: Mapping[str, str], lock: Lock) -> LockDiff:
    """How ``have`` (canonical name -> version, e.g. :func:`installed`) differs from ``lock``.
    The enclave itself is left out, and so are pip, setuptools and wheel unless the lock names them."""
    have = {canonical(n): v for n, v in have.items() if canonical(n) != PROJECT}
    want = lock.pins
    return LockDiff(
        missing=tuple(f"{n}=={want[n]}" for n in sorted(want) if n not in have),
        extra=tuple(f"{n}=={have[n]}" for n in sorted(have)
                    if n not in want and n not in BOOTSTRAP),
        changed=tuple((n, want[n], have[n]) for n in sorted(want)
                      if n in have and not _same(want[n], have[n])))


def env_python(env: Path) -> Path:
    return Path(env) / "bin" / "python"


def check_python(python: Path, lock: Lock, version: str | None = None) -> None:
    """Raise ConfigurationError unless ``python`` can install ``lock``: same major.minor as the
    Python it was locked for, and no older patch release (requires-python bounds)."""
    if lock.python is None:
        return
    version = version or _inspect(python)["python"]
    have, want = (tuple(int(p) for p in v.split(".")[:3]) for v in (version, lock.python))
    if have[:2] != want[:2] or have < want:
        raise ConfigurationError(
            f"{lock.path} was locked for Python {lock.python}, but {python} is Python {version}: "
            f"use a Python {'.'.join(map(str, want[:2]))} at least as new, or re-lock for this one "
            "(.ci/relock)")


def find_links() -> list[str]:
    """pip's find-links (``PIP_FIND_LINKS``, else pip's configuration), handed to uv, which reads
    no pip configuration: where the local wheels lie (torch's CPU build)."""
    value = os.environ.get("PIP_FIND_LINKS")
    if value is None:
        proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                              check=False, capture_output=True, text=True)
        value = proc.stdout if proc.returncode == 0 else ""
    return value.split()


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        noise = "is ignored: it is neither a file nor a directory"
        err = "\n".join(ln for ln in proc.stderr.splitlines() if noise not in ln)
        raise ConfigurationError(f"{what} failed ({' '.join(map(str, cmd[:4]))} ...):\n{err[-3000:]}")


def uv_binary(python: Path, lock: Lock, *, echo: Callable[[str], None] = print) -> Path:
    """The uv that installs: the running environment's (the admin venv's dev extra); else, the
    first time (``.ci/install``), the lock's own pin of uv, installed by pip into the environment
    of ``python`` with its hashes checked. Raises ConfigurationError when neither exists."""
    try:
        from uv import find_uv_bin
    except ImportError:
        pass
    else:
        return Path(find_uv_bin())
    if "uv" not in lock.pins:
        raise ConfigurationError(f"no uv to install {lock.path.name} with: {sys.prefix} has none "
                                 "and the lock names none; run bash .ci/install first")
    echo(f"installing uv=={lock.pins['uv']} (from {lock.path.name}) to install the rest with")
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as req:
        req.write(f"uv=={lock.pins['uv']} " + " ".join(f"--hash=sha256:{h}"
                                                      for h in lock.hashes["uv"]) + "\n")
        req.flush()
        _run([python, "-m", "pip", "--disable-pip-version-check", "install", "-q",
              "--require-hashes", "--no-deps", "-r", req.name], f"installing uv into {python}")
    return Path(python).parent / "uv"


def sync(python: Path, lock_path: Path, *, echo: Callable[[str], None] = print) -> LockDiff:
    """Make the environment of interpreter ``python`` hold exactly ``lock_path``: ``uv pip sync``
    with ``--require-hashes`` (every file checked against the lock, nothing resolved; what the
    lock does not name is removed, the enclave itself too; pip stays), bytecode compiled, files
    copied (never linked to uv's cache). Returns the (empty) difference; raises
    ConfigurationError when the Python does not fit the lock, the install fails, or it still
    differs afterwards."""
    lock = read_lock(lock_path)
    check_python(python, lock)
    uv = uv_binary(python, lock, echo=echo)
    echo(f"installing {lock.path.name} ({len(lock.pins)} packages) into {Path(python).parents[1]}")
    _run([uv, "pip", "sync", "--no-config", "--quiet", "--python", python, "--require-hashes",
          "--compile-bytecode", "--link-mode", "copy",
          *(a for link in find_links() for a in ("--find-links", link)), lock.path],
         f"installing {lock.path}")
    diff = compare(installed(python), lock)
    if not diff.matches:
        raise ConfigurationError(f"{Path(python).parents[1]} {diff.describe(lock.path.name)} "
                                 "after installing it")
    return diff


def check_environment(env: Path, lock_path: Path) -> dict:
    """Report on one environment for ``enclave status``: its path and lock, ``built`` (an
    interpreter is there), when built the difference (:meth:`LockDiff.as_dict`), and ``error``
    instead when the lock cannot be read or the interpreter cannot list its packages."""
    report = {"path": str(env), "lock": str(lock_path), "built": env_python(env).exists()}
    if report["built"]:
        try:
            report.update(compare(installed(env_python(env)), read_lock(lock_path)).as_dict())
        except ConfigurationError as e:
            report["error"] = str(e)
    return report


def diff_of(report: dict) -> LockDiff:
    """The :class:`LockDiff` of a :func:`check_environment` report of a built environment."""
    return LockDiff(tuple(report["missing"]), tuple(report["extra"]),
                    tuple((c["name"], c["locked"], c["installed"]) for c in report["changed"]))


def environments(settings) -> dict[str, Path]:
    """The three environments by lock name: the one running this code is the admin one."""
    return {"admin": Path(sys.prefix), "userenv": Path(settings.hub.userenv_dir),
            "serviceenv": Path(settings.hub.serviceenv_dir)}


def main(argv: list[str] | None = None) -> int:
    """``python -m enclave.io.envlock sync|check PYTHON LOCK``: install exactly, or only compare."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m enclave.io.envlock", description=main.__doc__)
    parser.add_argument("action", choices=("sync", "check"))
    parser.add_argument("python", type=Path, help="the environment's interpreter")
    parser.add_argument("lock", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.action == "sync":
            sync(args.python, args.lock)
            diff = LockDiff()
        else:
            diff = compare(installed(args.python), read_lock(args.lock))
    except ConfigurationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.python.parents[1]}: {diff.describe()}")
    return 0 if diff.matches else 1


if __name__ == "__main__":
    sys.exit(main())
