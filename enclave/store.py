"""The identified OMOP store (restricted zone): opening, creating, counting.

This is the one module that opens ``cdm.duckdb``. The restricted zone is created with mode 0700.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from enclave import db
from enclave.errors import StoreError
from enclave.model.bookkeeping import BOOKKEEPING_DDL
from enclave.model.omop import CDM_TABLES, create_table_sql
from enclave.model.vocab import shipped_concepts
from enclave.settings import Settings

RESTRICTED_MODE = 0o700


def ensure_restricted_zone(settings: Settings) -> Path:
    for d in (settings.home, settings.restricted_dir, settings.keys_dir):
        d.mkdir(parents=True, exist_ok=True)
    for d in (settings.restricted_dir, settings.keys_dir):
        os.chmod(d, RESTRICTED_MODE)
    return settings.restricted_dir


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    for table in CDM_TABLES:
        db.run(con, create_table_sql(table))
    for ddl in BOOKKEEPING_DDL:
        db.run(con, ddl)
    if db.scalar(con, "SELECT count(*) FROM concept") == 0:
        db.insert_frame(con, "concept", shipped_concepts())


@contextmanager
def open_store(settings: Settings, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the store; created (with its schema) on first write access."""
    path = settings.store_path
    if read_only and not path.exists():
        raise StoreError(
            f"no store at {path}: run 'enclave ingest' first (or pass --home for another enclave)"
        )
    if not read_only:
        ensure_restricted_zone(settings)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        raise StoreError(f"cannot open the store at {path}: {exc}") from None
    try:
        if not read_only:
            create_schema(con)
            os.chmod(path, 0o600)
        yield con
    finally:
        con.close()


def store_stats(con: duckdb.DuckDBPyConnection) -> dict:
    """Row counts of every CDM and bookkeeping table, and the number of distinct persons."""
    tables = {}
    for table in CDM_TABLES + ("etl_file", "etl_lineage", "etl_reject", "site_registry"):
        tables[table] = db.scalar(con, f"SELECT count(*) FROM {table}")
    persons = db.scalar(con, "SELECT count(*) FROM person")
    rejects = dict(
        db.rows(con, 
            "SELECT reason, count(*) FROM etl_reject GROUP BY reason ORDER BY reason"
        )
    )
    return {"tables": tables, "persons": persons, "rejects_by_reason": rejects}


#: (description, query returning a count of violations)
INTEGRITY_CHECKS: tuple[tuple[str, str], ...] = (
    ("duplicate person ids in the person index",
     "SELECT count(*) - count(DISTINCT person_id) FROM identity.person_index"),
    ("duplicate link keys in the person index",
     "SELECT count(*) - count(DISTINCT link_key) FROM identity.person_index"),
    ("duplicate (site, patient id) registrations",
     "SELECT count(*) - count(DISTINCT (site_id, site_patient_id)) FROM identity.site_patient"),
    ("duplicate (site, visit id) registrations",
     "SELECT count(*) - count(DISTINCT (site_id, site_visit_id)) FROM identity.site_visit"),
    ("duplicate visit ids", "SELECT count(*) - count(DISTINCT visit_occurrence_id) FROM visit_occurrence"),
    ("duplicate measurement ids", "SELECT count(*) - count(DISTINCT measurement_id) FROM measurement"),
    ("duplicate condition ids",
     "SELECT count(*) - count(DISTINCT condition_occurrence_id) FROM condition_occurrence"),
    ("duplicate drug exposure ids", "SELECT count(*) - count(DISTINCT drug_exposure_id) FROM drug_exposure"),
    ("visits of unknown persons",
     "SELECT count(*) FROM visit_occurrence v ANTI JOIN person p USING (person_id)"),
    ("measurements of unknown persons",
     "SELECT count(*) FROM measurement m ANTI JOIN person p USING (person_id)"),
    ("conditions of unknown persons",
     "SELECT count(*) FROM condition_occurrence c ANTI JOIN person p USING (person_id)"),
    ("files whose counts do not balance",
     "SELECT count(*) FROM etl_file WHERE read <> loaded + rejected + merged_duplicates"),
)


def store_check(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Violations per integrity rule (all zero for a healthy store)."""
    return {what: int(db.scalar(con, sql)) for what, sql in INTEGRITY_CHECKS}
