"""Store identities for the airlock's differencing ledger (security-critical).

Pseudonyms differ per project, so outputs of two projects on the same patients cannot be compared
by them. When a desensitized release is built, the builder (root, in the restricted zone) also
writes an *identity map* for that release: per patient, the 64-bit hash the output checks compute
from the release's ``person_id`` (``hash(person_id)`` in DuckDB, a BIGINT) and a **ledger
token**, a keyed hash (HMAC-SHA256, key ``<restricted>/keys/ledger.key``) of the store's person id.
The same patient has the same token in every project's release; the store's person id, the key and
the project keys never leave the restricted zone, and a token cannot be turned back into either.

The map goes to the airlock's own folder (``<airlock>/ledger/identity/<project>/v<N>.parquet``,
service user only, 0700), where :func:`enclave.io.airlock.checks.run_checks` translates a re-run's
patient sets into tokens and compares every output of every project drawn from the store. Nothing
else reads it: researchers, stewards and the dashboards cannot.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb
import polars as pl

from enclave.core import audit
from enclave.core.crypto import hmac_sha256_u64
from enclave.core.keystore import load_or_create_key
from enclave.core.settings import Settings

LEDGER_KEY = "ledger.key"
RELEASE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_-]{0,63})/v([1-9][0-9]{0,5})")


def identity_map_path(settings: Settings, release: str) -> Path | None:
    """Where the identity map of desensitized release ``<project>/vN`` lives (None for any other
    name, e.g. a synthetic twin's: twins hold no real patients)."""
    m = RELEASE.fullmatch(release or "")
    if m is None:
        return None
    return audit.airlock_dir(settings) / "ledger" / "identity" / m.group(1) / f"v{m.group(2)}.parquet"


def ledger_tokens(settings: Settings, store_ids: pl.Series) -> pl.Series:
    """The ledger token (UInt64) of each store person id."""
    key = load_or_create_key(settings.keys_dir, LEDGER_KEY)
    return hmac_sha256_u64(key, "ledger:" + store_ids.cast(pl.Int64).cast(pl.String)).alias("token")


def write_identity_map(settings: Settings, release: str, persons: pl.DataFrame) -> Path:
    """Write the identity map of ``release`` from ``persons`` (``id`` = store person id,
    ``pseudo`` = the release's ``person_id``); returns its path. 0600 in 0700 folders, handed to
    the airlock's service user when it owns its folder."""
    path = identity_map_path(settings, release)
    if path is None:
        raise ValueError(f"not a desensitized release name: {release}")
    con = duckdb.connect()
    try:
        con.register("_p", persons.select("pseudo").to_arrow())
        hashed = pl.from_arrow(con.sql("SELECT hash(pseudo::BIGINT) AS person "
                                       "FROM _p").to_arrow_table())
    finally:
        con.close()
    out = pl.DataFrame({"person": hashed["person"].cast(pl.UInt64),
                        "token": ledger_tokens(settings, persons["id"])})
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    old = os.umask(0o077)
    try:
        out.write_parquet(tmp)
    finally:
        os.umask(old)
    os.replace(tmp, path)
    audit.hand_over(settings)
    return path


def to_tokens(members: pl.DataFrame, path: Path) -> pl.DataFrame:
    """``members`` (cell_key, person_id = the hash above, rows) with ``person_id`` replaced by
    the ledger token. Raises ``LookupError`` when the map is missing or does not cover every
    patient (a map that does not match its release must not quietly shrink the sets)."""
    if not path.is_file():
        raise LookupError("the release has no identity map")
    ids = pl.read_parquet(path)
    out = members.join(ids, left_on="person_id", right_on="person", how="left")
    if out["token"].null_count():
        raise LookupError("the release's identity map does not cover every patient of the "
                          "output")
    return out.drop("person_id").rename({"token": "person_id"}).select(members.columns)
