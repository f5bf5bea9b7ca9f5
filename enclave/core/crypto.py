"""Hashing: keyed hashes for linkage keys and pseudonyms (security-critical, small on purpose),
and file digests for lineage and release manifests.

HMAC-SHA256 (RFC 2104) has one implementation, :func:`hmac_sha256_hex`: the construction over a
whole column with DuckDB's ``sha256`` in a private in-memory connection (no Python object per
message, and all cores), the same digests as ``hmac.digest(key, msg, "sha256")``. The numbers that
pseudonyms, date shifts and ledger tokens draw from a digest are its first 8 bytes
(:func:`hmac_sha256_u64`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import polars as pl

_BLOCK = 64


def _pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer padded keys of RFC 2104."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_sha256_hex(key: bytes, messages: pl.Series, chars: int = 64) -> pl.Series:
    """HMAC-SHA256 of each message (UTF-8) as lowercase hex, its first ``chars`` characters; null
    for null. The key's pads are query parameters of a connection that lives for this call only:
    nothing is stored, and the store's connection never sees them."""
    inner_pad, outer_pad = _pads(key)
    con = duckdb.connect()
    try:
        frame = pl.DataFrame({"m": messages.cast(pl.Utf8)})  # string views, no copy (io.db.arrow)
        con.register("_messages", frame.to_arrow(compat_level=pl.CompatLevel.newest()))
        # a projection of one scan keeps the input's order (DuckDB preserves insertion order)
        out = con.sql("SELECT left(sha256($outer || unhex(sha256($inner || encode(m)))), $n) "
                      "AS k FROM _messages",
                      params={"inner": inner_pad, "outer": outer_pad, "n": chars}).to_arrow_table()
    finally:
        con.close()
    return pl.from_arrow(out)["k"].alias(messages.name)


def hmac_sha256_u64(key: bytes, messages: pl.Series) -> pl.Series:
    """The first 8 bytes of each message's HMAC-SHA256, big-endian, as UInt64; null for null."""
    return hmac_sha256_hex(key, messages, 16).str.to_integer(base=16, dtype=pl.UInt64)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 4 MiB blocks (hashlib releases the GIL on each)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
