"""The key store: the secret keys of the keyed hashes (:mod:`enclave.core.crypto`), one file each
(security-critical, small on purpose).

A key is 32 random bytes in ``<restricted>/keys/<name>`` (0600), created on first use and never
rewritten: the linkage key (``linkage.key``), one key per project (``projects/<project>.key``),
the release ledger's and the indicators' record keys. Keys never leave the restricted zone.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def load_or_create_key(keys_dir: Path, name: str = "linkage.key") -> bytes:
    """The key ``keys_dir/name``, created (0600) when it does not exist yet. A new key is written
    to a private file first and then linked into place, so the key file is never seen empty or
    half-written; when two processes create it at once, both get the one linked first."""
    path = keys_dir / name
    if path.exists():
        return path.read_bytes()
    keys_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        key = secrets.token_bytes(KEY_BYTES)
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, and refused when the key exists
    except FileExistsError:
        key = path.read_bytes()
    finally:
        tmp.unlink()
    return key
