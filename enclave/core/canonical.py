"""Canonical JSON: the one text a value is hashed by, and the bytes manifests are written as.

``canonical_json`` sorts keys, keeps non-ASCII characters as they are (UTF-8) and writes
anything JSON cannot hold with ``str``. Its one variant, ``spaced``, keeps the ``", "`` and
``": "`` separators of :func:`json.dumps`' default: the release policy's ``policy_sha256`` and the
audit trail's stored ``detail`` text were first written that way, and their stored hashes must keep
their values. Every other hash (output records, export records, disclosure policies, the audit
chain, cell keys) uses the compact form. ``tests/unit/test_canonical.py`` pins a known value of each.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_COMPACT = (",", ":")
_SPACED = (", ", ": ")


def canonical_json(obj: Any, *, spaced: bool = False) -> str:
    """``obj`` as canonical JSON text (sorted keys, UTF-8, compact unless ``spaced``)."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str,
                      separators=_SPACED if spaced else _COMPACT)


def canonical_sha256(obj: Any, *, spaced: bool = False) -> str:
    """SHA-256 (hex) of ``obj``'s :func:`canonical_json` in UTF-8."""
    return hashlib.sha256(canonical_json(obj, spaced=spaced).encode("utf-8")).hexdigest()


def manifest_bytes(manifest: dict) -> bytes:
    """A manifest as written to disk: sorted keys, indented by two, UTF-8 (hashed as a file)."""
    return json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")
