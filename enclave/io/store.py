"""The identified OMOP store (restricted zone): opening, creating, counting.

This is the one module that opens ``cdm.duckdb``. The restricted zone is created with mode 0700.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from enclave.core.errors import StoreError
from enclave.core.model.bookkeeping import BOOKKEEPING_DDL
from enclave.core.model.omop import CDM_TABLES, VOCABULARY_TABLES, cdm_columns, create_table_sql
from enclave.core.model.vocab import shipped_concepts
from enclave.core.settings import Settings
from enclave.io import db

RESTRICTED_MODE = 0o700


def ensure_restricted_zone(settings: Settings) -> Path:
    for d in (settings.home, settings.restricted_dir, settings.keys_dir):
        d.mkdir(parents=True, exist_ok=True)
    for d in (settings.restricted_dir, settings.keys_dir):
        os.chmod(d, RESTRICTED_MODE)
    return settings.restricted_dir


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Every table the store holds, created where missing (so an older store gains new tables on
    its next write open): the CDM tables, the vocabulary tables and the bookkeeping."""
    for table in CDM_TABLES + VOCABULARY_TABLES:
        db.run(con, create_table_sql(table))
    for ddl in BOOKKEEPING_DDL:
        db.run(con, ddl)
    # the shipped subset, and any concept a newer version of it added to an older store
    shipped = shipped_concepts()
    con.register("_shipped", db.arrow(shipped))
    try:
        db.run(con, f"INSERT INTO concept SELECT {', '.join(shipped.columns)} FROM _shipped "
                    "WHERE concept_id NOT IN (SELECT concept_id FROM concept)")
    finally:
        con.unregister("_shipped")


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
    """Row counts of every CDM and bookkeeping table, the number of distinct persons, rejects by
    reason and loaded rows by warning."""
    tables = {}
    present = {r[0] for r in db.rows(con, "SELECT table_name FROM information_schema.tables")}
    for table in CDM_TABLES + ("etl_file", "etl_lineage", "etl_reject", "etl_warning", "site_registry"):
        if table in present:  # a store written before a table existed gains it on the next ingest
            tables[table] = db.scalar(con, f"SELECT count(*) FROM {table}")
    persons = db.scalar(con, "SELECT count(*) FROM person")
    rejects = dict(
        db.rows(con, 
            "SELECT reason, count(*) FROM etl_reject GROUP BY reason ORDER BY reason"
        )
    )
    warnings = dict(db.rows(con, "SELECT warning, count(*) FROM etl_warning GROUP BY warning "
                                 "ORDER BY warning")) if "etl_warning" in present else {}
    return {"tables": tables, "persons": persons, "rejects_by_reason": rejects,
            "loaded_with_warnings": warnings}


def concept_reference_checks() -> tuple[tuple[str, str], ...]:
    """One check per CDM table with concept columns (every column whose foreign key is
    ``concept`` in the CDM model): the number of its non-zero concept ids absent from ``concept``,
    one per (row, column). 0 ("no matching concept") and NULL are not violations."""
    checks = []
    for table, cols in cdm_columns().items():
        names = [c.name for c in cols if c.fk_table == "concept"]
        if not names:
            continue
        checks.append((
            f"{table} concept ids absent from concept ({', '.join(names)})",
            (f"SELECT count(*) FROM (SELECT unnest([{', '.join(names)}]) AS concept_id FROM {table}) u "
             "WHERE u.concept_id <> 0 AND NOT EXISTS "
             "(SELECT 1 FROM concept c WHERE c.concept_id = u.concept_id)"),
        ))
    return tuple(checks)


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
) + concept_reference_checks()


def store_check(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Violations per integrity rule (all zero for a healthy store)."""
    return {what: int(db.scalar(con, sql)) for what, sql in INTEGRITY_CHECKS}
