"""The outbox: released files with their manifest, written atomically (security-critical).

``<home>/airlock/outbox/<request>/`` holds the released files and ``manifest.json`` (request,
record, checks, file hashes). The requester downloads the manifest, and the review is blind to the
requester: it names no steward and no vote (those stay in the control database and the audit
trail, for stewards and admins). It is written into a hidden temporary folder, every file and the
folder fsynced, then renamed into place, so a crash leaves either nothing or the complete release.
Revoking moves the folder to ``<home>/airlock/revoked/`` (one rename): it is no longer downloadable,
but kept as evidence.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from enclave.core.audit import airlock_dir
from enclave.core.canonical import manifest_bytes
from enclave.core.publish import fsync_dir
from enclave.core.settings import Settings

MANIFEST = "manifest.json"
#: what the reviewers know and the requester may not: kept out of the outbox manifest
REVIEW_ONLY = ("votes",)


def outbox_dir(settings: Settings) -> Path:
    return airlock_dir(settings) / "outbox"


def revoked_dir(settings: Settings) -> Path:
    return airlock_dir(settings) / "revoked"


def requests_dir(settings: Settings) -> Path:
    """Submitted files, per request and round (never served before release)."""
    return airlock_dir(settings) / "requests"


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_files_atomically(target: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into ``target`` (a new folder) via a temporary folder and one rename."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}-{os.urandom(4).hex()}"
    tmp.mkdir(mode=0o700)
    try:
        for name, data in files.items():
            _write(tmp / name, data)
        fsync_dir(tmp)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)


def requester_manifest(data: bytes) -> bytes:
    """A manifest as the requester may see it: ``data`` itself, or, for a manifest written before
    votes were kept out of the outbox, the same without the reviewers' part."""
    try:
        manifest = json.loads(data)
    except ValueError:
        return data
    if not isinstance(manifest, dict) or not any(k in manifest for k in REVIEW_ONLY):
        return data
    return manifest_bytes({k: v for k, v in manifest.items() if k not in REVIEW_ONLY})


def write_outbox(settings: Settings, request_id: str, files: dict[str, bytes],
                 manifest: dict) -> str:
    """Publish a released request; returns the manifest's SHA-256. Idempotent: when a complete
    outbox folder already exists (a crash after the rename), its manifest hash is returned."""
    target = outbox_dir(settings) / request_id
    if target.exists():
        return hashlib.sha256((target / MANIFEST).read_bytes()).hexdigest()
    for stale in outbox_dir(settings).glob(f".tmp-{request_id}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    manifest = {k: v for k, v in manifest.items() if k not in REVIEW_ONLY}
    manifest["files"] = {n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)}
                         for n, d in files.items()}
    data = manifest_bytes(manifest)
    write_files_atomically(target, {**files, MANIFEST: data})
    return hashlib.sha256(data).hexdigest()


def verify_outbox(folder: Path) -> list[str]:
    """Problems with a released folder (empty: intact)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"manifest unreadable: {exc.__class__.__name__}"]
    problems = []
    for name, meta in manifest.get("files", {}).items():
        f = folder / name
        if not f.exists():
            problems.append(f"{name}: missing")
        elif hashlib.sha256(f.read_bytes()).hexdigest() != meta["sha256"]:
            problems.append(f"{name}: content differs from the manifest")
    return problems


def revoke_outbox(settings: Settings, request_id: str) -> None:
    src = outbox_dir(settings) / request_id
    if not src.exists():
        return
    dst_root = revoked_dir(settings)
    dst_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    dst = dst_root / request_id
    if dst.exists():
        dst = dst_root / f"{request_id}-{os.urandom(3).hex()}"
    os.rename(src, dst)
    fsync_dir(dst_root)
    fsync_dir(src.parent)
