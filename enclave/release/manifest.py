"""Release manifests: what a release holds, how it was made, and the hashes to verify it by."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from enclave.crypto import file_sha256
from enclave.errors import BadInputError
from enclave.settings import Settings

MANIFEST = "manifest.json"
RELEASE_DB = "release.duckdb"
KINDS = ("desensitized", "synthetic")


def write_manifest(path: Path, manifest: dict) -> None:
    data = json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o440)


def release_dirs(settings: Settings) -> list[Path]:
    out = []
    for kind in KINDS:
        root = settings.releases_dir / kind
        if root.exists():
            out.extend(sorted(p for p in root.glob("*/v*") if (p / MANIFEST).exists()))
    return out


def resolve_release(settings: Settings, name: str) -> Path:
    """``project/vN`` (desensitized), ``synthetic/<project>/vN``, or a path to a release folder."""
    candidates = [Path(name), settings.releases_dir / "desensitized" / name, settings.releases_dir / name]
    for c in candidates:
        if (c / MANIFEST).exists():
            return c
    known = ", ".join(f"{p.parent.name}/{p.name}" for p in release_dirs(settings)) or "none"
    raise BadInputError(f"no release '{name}' (releases: {known})")


def load_manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text(encoding="utf-8"))


def verify_release(path: Path) -> list[str]:
    """Problems found (empty: the release is intact): missing, changed or extra files."""
    try:
        manifest = load_manifest(path)
    except (OSError, json.JSONDecodeError) as exc:
        return [f"manifest unreadable: {exc.__class__.__name__}"]
    problems = []
    listed = manifest.get("files", {})
    for name, meta in listed.items():
        f = path / name
        if not f.exists():
            problems.append(f"{name}: missing")
        elif f.stat().st_size != meta["bytes"] or file_sha256(f) != meta["sha256"]:
            problems.append(f"{name}: content differs from the manifest")
    extra = sorted(p.name for p in path.iterdir() if p.name not in listed and p.name != MANIFEST)
    problems.extend(f"{name}: not in the manifest" for name in extra)
    return problems


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


def next_version(root: Path) -> int:
    return (versions(root) or [0])[-1] + 1


def publish_dir(build_dir: Path, root: Path, version: int) -> Path:
    """Publish a finished build folder as ``root/v<version>``: its files reach the disk, then one
    atomic rename makes it visible (a killed build never leaves a half-written version)."""
    fsync_dir(build_dir)
    target = root / f"v{version}"
    os.rename(build_dir, target)
    fsync_dir(root)
    return target
