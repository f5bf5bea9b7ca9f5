"""Release manifests: what a release holds, how it was made, and the hashes to verify it by.

Releases are published through :mod:`enclave.core.publish` (a staged build folder renamed to ``v<N>``);
this module finds, reads and verifies them."""

from __future__ import annotations

import json
from pathlib import Path

from enclave.core.crypto import file_sha256
from enclave.core.errors import BadInputError
from enclave.core.publish import MANIFEST
from enclave.core.settings import Settings

__all__ = ["KINDS", "MANIFEST", "RELEASE_DB", "load_manifest", "release_dirs", "resolve_release",
           "verify_release"]

RELEASE_DB = "release.duckdb"
KINDS = ("desensitized", "synthetic")


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
