"""Linking one person across hospitals.

A person's *link key* is a keyed hash (HMAC-SHA256, truncated to 128 bits) of the normalized resident
ID number, so the same person gets the same key at every hospital while the number itself is never
needed outside the restricted zone. Sites without resident IDs (Synthea, FHIR samples) link by a
keyed hash of ``site:site_patient_id`` instead: such persons are site-local by construction.

The key lives in ``<restricted>/keys/linkage.key`` (0600), created on first use by the key store
(:func:`enclave.core.keystore.load_or_create_key`).
"""

from __future__ import annotations

import polars as pl

from enclave.core.crypto import hmac_sha256_hex
from enclave.io.ingest.staging import RejectReason
from enclave.logic.codes import resident_id

LINK_KEY_HEX = 32


def link_keys(key: bytes, messages: pl.Series) -> pl.Series:
    """The link key of each message (null for null): HMAC-SHA256, first :data:`LINK_KEY_HEX` hex
    characters."""
    return hmac_sha256_hex(key, messages, LINK_KEY_HEX)


def resident_id_checks(persons: pl.DataFrame) -> pl.DataFrame:
    """Add ``rid`` (normalized number) and flag invalid numbers and identity conflicts.

    A number that fails GB 11643 is ``invalid_resident_id``; a valid number whose birth date or sex
    disagrees with the row's own birth date / sex is ``identity_conflict``.
    """
    persons = resident_id.normalize_column(persons, "resident_id", "rid")
    persons = persons.with_columns(
        resident_id.birth_date_expr(pl.col("rid")).alias("_id_birth"),
        resident_id.sex_expr(pl.col("rid")).alias("_id_sex"),
    )
    id_birth, id_sex = pl.col("_id_birth"), pl.col("_id_sex")
    ok = pl.col("_reject").is_null()
    invalid = ok & pl.col("resident_id").is_not_null() & pl.col("rid").is_null()
    conflict = (
        ok
        & pl.col("rid").is_not_null()
        & (
            (pl.col("birth_date").is_not_null() & (pl.col("birth_date") != id_birth))
            | (pl.col("sex").is_in(["M", "F"]) & (pl.col("sex") != id_sex))
        )
    )
    persons = persons.with_columns(invalid.alias("_invalid"), conflict.fill_null(False).alias("_conflict"))
    bad = pl.col("_invalid") | pl.col("_conflict")
    return persons.with_columns(
        pl.when(pl.col("_invalid"))
        .then(pl.lit(str(RejectReason.INVALID_RESIDENT_ID)))
        .when(pl.col("_conflict"))
        .then(pl.lit(str(RejectReason.IDENTITY_CONFLICT)))
        .otherwise(pl.col("_reject"))
        .alias("_reject"),
        pl.when(bad).then(pl.lit("resident_id")).otherwise(pl.col("_reject_column")).alias("_reject_column"),
        # fill birth date and sex from the number where the site did not give them
        pl.coalesce(pl.col("birth_date"), id_birth).alias("birth_date"),
        pl.when(pl.col("sex").is_in(["M", "F"])).then(pl.col("sex")).otherwise(
            pl.coalesce(id_sex, pl.col("sex"))
        ).alias("sex"),
    ).drop("_id_birth", "_id_sex", "_invalid", "_conflict")
