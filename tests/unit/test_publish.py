"""Publishing a versioned folder (enclave.core.publish): all or nothing, one build at a time."""

from __future__ import annotations

import json
import stat

import pytest

from enclave.core.crypto import file_sha256
from enclave.core.errors import BadInputError, DisclosureRiskError
from enclave.core.keystore import load_or_create_key
from enclave.core.manifest import verify_release
from enclave.core.publish import MANIFEST, build_lock, staged_version, versions


def _build(root, payload: bytes = b"rows", fail: Exception | None = None):
    with staged_version(root, "test build") as stage:
        (stage.dir / "data.bin").write_bytes(payload)
        files = stage.seal("data.bin")
        if fail is not None:
            raise fail
        return stage.publish({"version": stage.version, "files": files})


def test_published_version_holds_its_files_and_a_verifiable_manifest(tmp_path):
    root = tmp_path / "things"
    first = _build(root)
    second = _build(root, b"other rows")
    assert (first.name, second.name) == ("v1", "v2")
    assert versions(root) == [1, 2]
    manifest = json.loads((second / MANIFEST).read_text(encoding="utf-8"))
    assert manifest == {"version": 2, "files": {"data.bin": {
        "sha256": file_sha256(second / "data.bin"), "bytes": len(b"other rows")}}}
    assert verify_release(second) == []
    for f in (second / "data.bin", second / MANIFEST):
        assert stat.S_IMODE(f.stat().st_mode) == 0o440
    assert not list(root.glob(".build-*"))


def test_a_failing_build_leaves_no_version_and_no_build_folder(tmp_path):
    root = tmp_path / "things"
    _build(root)
    with pytest.raises(DisclosureRiskError, match="refused"):
        _build(root, fail=DisclosureRiskError("refused"))
    assert versions(root) == [1]
    assert not (root / "v2").exists()
    assert not list(root.glob(".build-*"))
    assert _build(root).name == "v2"  # the refused build took no version number


def test_a_build_that_never_publishes_leaves_nothing(tmp_path):
    root = tmp_path / "things"
    with staged_version(root, "test build") as stage:
        (stage.dir / "data.bin").write_bytes(b"x")
    assert versions(root) == []
    assert not list(root.glob(".build-*"))


def test_a_killed_builds_folder_is_swept_by_the_next_build(tmp_path):
    root = tmp_path / "things"
    root.mkdir()
    stale = root / ".build-1-dead"
    stale.mkdir()
    (stale / "data.bin").write_bytes(b"half")
    assert _build(root).name == "v1"
    assert not stale.exists()


def test_a_second_build_of_the_same_folder_is_refused(tmp_path):
    root = tmp_path / "things"
    with (build_lock(root, "test build"),
          pytest.raises(BadInputError, match="another test build for things is running")):
        _build(root)
    assert versions(root) == []


def test_key_store_creates_a_private_key_once(tmp_path):
    keys = tmp_path / "keys"
    key = load_or_create_key(keys, "a.key")
    assert len(key) == 32
    assert stat.S_IMODE((keys / "a.key").stat().st_mode) == 0o600
    assert load_or_create_key(keys, "a.key") == key
    assert load_or_create_key(keys, "b.key") != key
