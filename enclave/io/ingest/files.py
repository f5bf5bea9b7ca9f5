"""Which source files a batch loads, and forgetting what earlier runs loaded from them.

The store records every file an ingest registered (``etl_file``, keyed by site and SHA-256). A
file counts as *ingested* only when at least one of its rows loaded: a run that loaded nothing
from it (a wrong encoding or dialect, an empty file) leaves its record and rejects for the
operator to read, and the next run with the same bytes replaces that record and tries again.

Within one run, a file whose bytes equal an earlier file of the same run (two copies in one
folder, two empty files) is its *twin*: its rows count as merged duplicates, under its own name.

``enclave ingest --redo`` forgets files that did load rows (loaded with another mapping, say):
every row that came from them (found through ``etl_lineage``), their rejects, warnings and
records, in the ingest's own transaction, so the run that follows loads them afresh. It refuses,
changing nothing, when rows of other files still refer to a patient or visit it would remove.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import polars as pl

from enclave.core.errors import BadInputError
from enclave.io import db
from enclave.io.ingest.cdm_rows import COST_DOMAINS, TARGETS

#: event tables → (id column, cost domain or None); the rows ``--redo`` removes by lineage
#: (the loader's own targets; deaths, keyed by person, are removed apart)
EVENT_TABLES: dict[str, tuple[str, str | None]] = {
    table: (id_col, COST_DOMAINS.get(kind)) for kind, (table, id_col) in TARGETS.items() if id_col
}


@dataclass(slots=True)
class FilePlan:
    """What one run does with each of its files."""

    known: set[str] = field(default_factory=set)  #: ingested by an earlier run (rows loaded)
    twins: dict[str, str] = field(default_factory=dict)  #: file → earlier file of this run, same bytes
    retried: set[str] = field(default_factory=set)  #: an earlier run loaded nothing from it
    redone: set[str] = field(default_factory=set)  #: forgotten by --redo, loaded afresh
    touched_persons: list[int] = field(default_factory=list)  #: persons whose rows --redo removed
    redo_ids: dict[str, int] = field(default_factory=dict)  #: redone file → its forgotten file id

    @property
    def skipped(self) -> set[str]:
        return self.known | set(self.twins)


def plan_files(con: duckdb.DuckDBPyConnection, site: str, files: list[str],
               file_sha: dict[str, str], *, redo: bool = False) -> FilePlan:
    """Decide, for ``files`` in order, which are known, twins, retried or redone; forget the
    records of retried and redone files (in the caller's transaction)."""
    plan = FilePlan()
    records = db.rows(con, "SELECT file_id, sha256, loaded FROM etl_file WHERE site_id = ?", [site])
    by_sha = {sha: (fid, loaded) for fid, sha, loaded in records}
    first: dict[str, str] = {}
    forget: list[int] = []
    redo_ids: list[int] = []
    for f in files:
        sha = file_sha.get(f)
        if sha is None:
            continue
        if sha in first:
            plan.twins[f] = first[sha]
            continue
        first[sha] = f
        if sha not in by_sha:
            continue
        fid, loaded = by_sha[sha]
        if loaded == 0:
            plan.retried.add(f)
            forget.append(fid)
        elif redo:
            plan.redone.add(f)
            plan.redo_ids[f] = fid
            redo_ids.append(fid)
        else:
            plan.known.add(f)
    if redo_ids:
        plan.touched_persons = _remove_loaded_rows(con, site, redo_ids)
    if forget or redo_ids:
        _forget_records(con, forget + redo_ids)
    return plan


#: reference rows --redo keeps (the re-run merges them): their lineage moves to the new record
REFERENCE_TABLES = ("care_site", "provider", "concept", "location")


def _forget_records(con: duckdb.DuckDBPyConnection, file_ids: list[int]) -> None:
    db.run(con, "DELETE FROM etl_lineage WHERE file_id IN (SELECT unnest(?)) AND table_name NOT IN "
                "(SELECT unnest(?))", [file_ids, list(REFERENCE_TABLES)])
    for table in ("etl_reject", "etl_warning", "etl_file"):
        db.run(con, f"DELETE FROM {table} WHERE file_id IN (SELECT unnest(?))", [file_ids])


def move_reference_lineage(con: duckdb.DuckDBPyConnection, plan: FilePlan,
                           file_ids: dict[str, int]) -> None:
    """Point the kept reference rows' lineage of each redone file at its new record."""
    for f, old in plan.redo_ids.items():
        db.run(con, "UPDATE etl_lineage SET file_id = ? WHERE file_id = ?", [file_ids[f], old])


def _remove_loaded_rows(con: duckdb.DuckDBPyConnection, site: str, file_ids: list[int]) -> list[int]:
    """Delete every CDM row that came from ``file_ids``; returns the persons it touched."""
    con.register("_redo_lineage", db.arrow(db.frame(con,
        "SELECT table_name, row_id FROM etl_lineage WHERE file_id IN (SELECT unnest(?))", [file_ids])))
    try:
        return _remove(con, site)
    finally:
        con.unregister("_redo_lineage")


def _ids(table: str) -> str:
    return f"(SELECT row_id FROM _redo_lineage WHERE table_name = '{table}')"


def _remove(con: duckdb.DuckDBPyConnection, site: str) -> list[int]:
    visits, persons = _ids("visit_occurrence"), _ids("person")
    # rows of other files that would lose their visit or patient: refuse, changing nothing
    for table, (id_col, _) in EVENT_TABLES.items():
        kept = f"{id_col} NOT IN {_ids(table)}"
        hanging = db.scalar(con, f"SELECT count(*) FROM {table} WHERE {kept} AND "
                                 f"(visit_occurrence_id IN {visits} OR person_id IN ({_orphans(site)}))")
        if hanging:
            raise BadInputError(
                f"--redo would remove patients or visits that {hanging} rows of {table} from other "
                "files refer to: redo those files in the same run (give their folder)")
    touched = [r[0] for r in db.rows(con, "SELECT DISTINCT person_id FROM identity.site_patient "
                                          f"WHERE site_id = ? AND person_id IN {persons}", [site])]
    for table, (id_col, domain) in EVENT_TABLES.items():
        touched += [r[0] for r in db.rows(con, f"SELECT DISTINCT person_id FROM {table} "
                                              f"WHERE {id_col} IN {_ids(table)}")]
        if domain:
            db.run(con, f"DELETE FROM cost WHERE cost_domain_id = '{domain}' AND "
                        f"cost_event_id IN {_ids(table)}")
        db.run(con, f"DELETE FROM {table} WHERE {id_col} IN {_ids(table)}")
    db.run(con, f"DELETE FROM death WHERE person_id IN {_ids('death')}")
    db.run(con, f"DELETE FROM cost WHERE cost_domain_id = 'Visit' AND cost_event_id IN {visits}")
    db.run(con, f"DELETE FROM visit_occurrence WHERE visit_occurrence_id IN {visits}")
    db.run(con, f"DELETE FROM identity.site_visit WHERE site_id = ? AND visit_occurrence_id IN {visits}",
           [site])
    orphans = [r[0] for r in db.rows(con, _orphans(site))]
    db.run(con, f"DELETE FROM identity.site_patient WHERE site_id = ? AND person_id IN {persons}", [site])
    if orphans:
        for table in ("person", "identity.person_index", "observation_period", "death"):
            db.run(con, f"DELETE FROM {table} WHERE person_id IN (SELECT unnest(?))", [orphans])
    return sorted(set(touched) - set(orphans))


def _orphans(site: str) -> str:
    """Persons of the lineage's person rows that no other site's registration keeps."""
    site = _quote(site)
    return (f"SELECT DISTINCT person_id FROM identity.site_patient WHERE site_id = '{site}' "
            f"AND person_id IN {_ids('person')} AND person_id NOT IN "
            f"(SELECT person_id FROM identity.site_patient WHERE site_id <> '{site}')")


def _quote(text: str) -> str:
    return text.replace("'", "''")


def skipped_rows(frame: pl.DataFrame, skipped: set[str]) -> tuple[pl.DataFrame, dict[str, int]]:
    """``frame`` without the rows of ``skipped`` files, and how many each file had."""
    if not skipped:
        return frame, {}
    names = list(skipped)
    done = frame.filter(pl.col("_file").is_in(names))
    counts = dict(done.group_by("_file").len().iter_rows())
    return frame.filter(~pl.col("_file").is_in(names)), counts
