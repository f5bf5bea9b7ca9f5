"""Publishing a versioned folder atomically: what every builder (desensitized releases, synthetic
twins, indicator tables) publishes through.

A builder enters :func:`staged_version` on its root folder (e.g.
``<home>/releases/desensitized/<project>``): under the root's build lock (one build at a time, a
second is refused) it gets a fresh hidden build folder and the next version number. It writes its
files there, seals them (:meth:`Staging.seal`: read-only, with their SHA-256 and size for the
manifest), and calls :meth:`Staging.publish` with its manifest: ``manifest.json`` is written
(sorted keys, indent 2, 0440), the files reach the disk, and one atomic rename makes the folder
``root/v<N>``. Whatever stops the build before that rename (an error, a refused check) leaves no
``v<N>`` and removes the build folder; a killed build's folder is swept by the next build.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from enclave.core.canonical import manifest_bytes
from enclave.core.crypto import file_sha256
from enclave.core.errors import BadInputError

MANIFEST = "manifest.json"


def write_manifest(path: Path, manifest: dict) -> None:
    """Write ``manifest`` (see :func:`enclave.core.canonical.manifest_bytes`) to disk, read-only."""
    with open(path, "wb") as fh:
        fh.write(manifest_bytes(manifest))
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o440)


@contextmanager
def build_lock(project_dir: Path, what: str = "release build") -> Iterator[None]:
    """One build per project folder at a time (a second one is refused, not queued)."""
    project_dir.mkdir(parents=True, exist_ok=True)
    with open(project_dir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInputError(f"another {what} for {project_dir.name} is running") from None
        yield


def versions(project_dir: Path) -> list[int]:
    """Published version numbers in a project folder, ascending."""
    return sorted(int(p.name[1:]) for p in project_dir.glob("v*") if p.name[1:].isdigit())


def next_version(root: Path) -> int:
    return (versions(root) or [0])[-1] + 1


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_build_dir(root: Path) -> Path:
    """A fresh hidden build folder (0750) in ``root``, after sweeping the leftovers of killed
    builds. Call under :func:`build_lock`."""
    for stale in root.glob(".build-*"):
        shutil.rmtree(stale, ignore_errors=True)
    build_dir = root / f".build-{os.getpid()}-{os.urandom(4).hex()}"
    build_dir.mkdir(mode=0o750)
    return build_dir


def publish_dir(build_dir: Path, root: Path, version: int) -> Path:
    """Publish a finished build folder as ``root/v<version>``: its files reach the disk, then one
    atomic rename makes it visible (a killed build never leaves a half-written version)."""
    fsync_dir(build_dir)
    target = root / f"v{version}"
    os.rename(build_dir, target)
    fsync_dir(root)
    return target


@dataclass(frozen=True, slots=True)
class Staging:
    """A version being built: files go into ``dir``; :meth:`publish` makes it ``root/v<version>``."""

    root: Path
    dir: Path
    version: int

    def seal(self, *names: str) -> dict[str, dict]:
        """Make the named files of the build folder read-only (0440); their manifest entries
        (``{name: {"sha256", "bytes"}}``)."""
        out = {}
        for name in names:
            path = self.dir / name
            os.chmod(path, 0o440)
            out[name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        return out

    def publish(self, manifest: dict) -> Path:
        """Write ``manifest.json`` and rename the build folder to ``root/v<version>``."""
        write_manifest(self.dir / MANIFEST, manifest)
        return publish_dir(self.dir, self.root, self.version)


@contextmanager
def staged_version(root: Path, what: str) -> Iterator[Staging]:
    """The next version of ``root``, staged under its build lock (``what`` names the build in the
    refusal a concurrent one gets). Unless :meth:`Staging.publish` is called, nothing is
    published and the build folder is removed on the way out, an error included."""
    with build_lock(root, what):
        staging = Staging(root, new_build_dir(root), next_version(root))
        try:
            yield staging
        finally:
            if staging.dir.exists():
                shutil.rmtree(staging.dir, ignore_errors=True)
