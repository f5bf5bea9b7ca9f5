"""Per-project keys, pseudonyms and date shifts (security-critical).

Each project has its own 256-bit key in ``<restricted>/keys/projects/<project>.key`` (0600). The
pseudonym of an id is a keyed hash (HMAC-SHA256) of ``namespace:id`` truncated to 62 bits, so two
projects' releases cannot be joined on their ids, and nobody without the key can invert them. The
date shift of a patient is drawn from the same key, so it is identical in every table of a release
and stable across rebuilds of the same project. Keys never leave the restricted zone; manifests
record neither keys nor offsets.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from enclave.crypto import hmac_sha256_many
from enclave.keystore import load_or_create_key

PSEUDONYM_MASK = (1 << 62) - 1


def project_key(keys_dir: Path, project_id: str) -> bytes:
    return load_or_create_key(keys_dir / "projects", f"{project_id}.key")


def pseudonyms(key: bytes, namespace: str, ids: pl.Series) -> pl.DataFrame:
    """(id, pseudo) for the distinct non-null ``ids``."""
    uniq = ids.drop_nulls().unique().to_list()
    digests = hmac_sha256_many(key, (f"{namespace}:{i}".encode() for i in uniq))
    pseudo = [int.from_bytes(d[:8], "big") & PSEUDONYM_MASK for d in digests]
    return pl.DataFrame({"id": uniq, "pseudo": pseudo}, schema={"id": pl.Int64, "pseudo": pl.Int64})


def date_shifts(key: bytes, person_ids: pl.Series, max_days: int) -> pl.DataFrame:
    """(id, shift_days) per person: in [-max_days, max_days], never 0."""
    uniq = person_ids.drop_nulls().unique().to_list()
    span = 2 * max_days + 1
    shifts = []
    for d in hmac_sha256_many(key, (f"shift:{i}".encode() for i in uniq)):
        v = int.from_bytes(d[:8], "big") % span - max_days
        shifts.append(v if v != 0 else max_days)
    return pl.DataFrame({"id": uniq, "shift_days": shifts}, schema={"id": pl.Int64, "shift_days": pl.Int32})
