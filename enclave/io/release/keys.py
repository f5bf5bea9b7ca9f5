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

from enclave.core.crypto import hmac_sha256_u64
from enclave.core.keystore import load_or_create_key

PSEUDONYM_MASK = (1 << 62) - 1


def project_key(keys_dir: Path, project_id: str) -> bytes:
    return load_or_create_key(keys_dir / "projects", f"{project_id}.key")


def pseudonyms(key: bytes, namespace: str, ids: pl.Series) -> pl.DataFrame:
    """(id, pseudo) for the distinct non-null ``ids``."""
    uniq = ids.drop_nulls().unique().cast(pl.Int64)
    digits = hmac_sha256_u64(key, f"{namespace}:" + uniq.cast(pl.String))
    return pl.DataFrame({"id": uniq, "pseudo": (digits & PSEUDONYM_MASK).cast(pl.Int64)})


def date_shifts(key: bytes, person_ids: pl.Series, max_days: int) -> pl.DataFrame:
    """(id, shift_days) per person: in [-max_days, max_days], never 0."""
    uniq = person_ids.drop_nulls().unique().cast(pl.Int64)
    span = 2 * max_days + 1
    v = (hmac_sha256_u64(key, "shift:" + uniq.cast(pl.String)) % span).cast(pl.Int64) - max_days
    return pl.DataFrame({"id": uniq}).with_columns(
        shift_days=pl.when(v != 0).then(v).otherwise(max_days).cast(pl.Int32))
