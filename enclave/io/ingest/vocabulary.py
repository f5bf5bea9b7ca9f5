"""Standard vocabularies: load an OHDSI Athena download into the store, re-map what is loaded.

**Load** (:func:`load_vocabulary`, ``enclave vocab load DIR``): the files of an Athena download
(``CONCEPT.csv`` required; ``VOCABULARY``, ``DOMAIN``, ``CONCEPT_CLASS``, ``RELATIONSHIP``,
``CONCEPT_RELATIONSHIP``, ``CONCEPT_ANCESTOR``, ``CONCEPT_SYNONYM``, ``DRUG_STRENGTH`` where present),
tab separated with a header row, no quoting, dates as YYYYMMDD, read by DuckDB with the types of the
CDM model. In one transaction: a row whose key (:attr:`AthenaFile.key`) is new is inserted, a row
whose key is stored with other values replaces them (so a newer download updates concepts), and a
stored row of a relationship-like table whose concepts are all in this download's ``CONCEPT.csv``
but that the file no longer lists is removed. The enclave's local concepts (ids above
:data:`~enclave.core.model.vocab.LOCAL_CONCEPT_BASE`) are never inserted, changed or removed.
Loading the same download twice changes nothing.

**Re-map** (:func:`remap_concepts`, ``enclave vocab remap``): rows loaded before the vocabulary
was get their concepts without re-ingesting. A local source concept whose (vocabulary, code) the
vocabulary now holds is replaced by the vocabulary's concept; a row whose standard concept is 0
gets the standard concept of its source concept by :data:`MAPS_TO_SQL`, the rule the ingest uses.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from enclave.core import audit
from enclave.core.model.vocab import LOCAL_CONCEPT_BASE
from enclave.core.settings import Settings
from enclave.io import db
from enclave.io.ingest.athena import VocabularyLoad, load_athena
from enclave.io.store import open_store

#: The standard concept of each source concept: the concept itself when it is standard
#: (``standard_concept = 'S'``), else the target of its valid ``Maps to`` relationship
#: (``concept_relationship.invalid_reason IS NULL``, the target present in ``concept``); of
#: several targets, the one whose ``domain_id`` is the event's domain, then the smallest id.
#:
#: Reads a relation ``_map_sources(concept_id)`` (a registered frame or a temp table of the
#: source concept ids) and the named parameter ``$domain`` (``'Condition'``, ``'Drug'`` ...).
#: Gives ``(source_concept_id, target_concept_id)``: one row per source id present in
#: ``concept``, ``target_concept_id`` NULL when it has no standard concept. See
#: :func:`standard_targets` for a call that does the registering.
MAPS_TO_SQL = """
    SELECT s.concept_id AS source_concept_id,
           CASE WHEN c.standard_concept = 'S' THEN c.concept_id ELSE m.target END AS target_concept_id
    FROM (SELECT DISTINCT concept_id FROM _map_sources) s
    JOIN concept c ON c.concept_id = s.concept_id
    LEFT JOIN (
        SELECT r.concept_id_1 AS source, r.concept_id_2 AS target
        FROM concept_relationship r JOIN concept t ON t.concept_id = r.concept_id_2
        WHERE r.relationship_id = 'Maps to' AND r.invalid_reason IS NULL
          AND r.concept_id_1 IN (SELECT concept_id FROM _map_sources)
        QUALIFY row_number() OVER (PARTITION BY r.concept_id_1
                                   ORDER BY t.domain_id = $domain DESC, r.concept_id_2) = 1
    ) m ON m.source = s.concept_id
"""


def standard_targets(con: duckdb.DuckDBPyConnection, source_concept_ids: Sequence[int] | pl.Series,
                     domain: str) -> pl.DataFrame:
    """:data:`MAPS_TO_SQL` for the given source concept ids and event domain: a frame of
    ``source_concept_id``, ``target_concept_id`` (Int64; target null when there is none)."""
    ids = pl.DataFrame({"concept_id": pl.Series(source_concept_ids, dtype=pl.Int64)})
    con.register("_map_sources", db.arrow(ids))
    try:
        out = db.frame(con, MAPS_TO_SQL, {"domain": domain})
    finally:
        con.unregister("_map_sources")
    return out.select(pl.col("source_concept_id").cast(pl.Int64), pl.col("target_concept_id").cast(pl.Int64))


# --- re-map -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventConcept:
    """An event table's concept columns ``<prefix>_concept_id``, ``<prefix>_source_concept_id``,
    ``<prefix>_source_value``, and the domain its standard concepts belong to."""

    table: str
    prefix: str
    domain: str

    @property
    def concept(self) -> str:
        return f"{self.prefix}_concept_id"

    @property
    def source_concept(self) -> str:
        return f"{self.prefix}_source_concept_id"


#: What ``enclave vocab remap`` re-maps (rows stay in their table, whatever the target's domain).
REMAPPED: tuple[EventConcept, ...] = (
    EventConcept("condition_occurrence", "condition", "Condition"),
    EventConcept("drug_exposure", "drug", "Drug"),
    EventConcept("procedure_occurrence", "procedure", "Procedure"),
    EventConcept("measurement", "measurement", "Measurement"),
    EventConcept("observation", "observation", "Observation"),
    EventConcept("death", "cause", "Condition"),
)


@dataclass(frozen=True, slots=True)
class TableRemap:
    table: str
    column: str
    unmapped_before: int  #: rows whose standard concept was 0 (or NULL with a source concept)
    unmapped_after: int
    source_concepts_replaced: int  #: local source concepts replaced by the vocabulary's concept

    def as_dict(self) -> dict:
        return {"table": self.table, "column": self.column, "unmapped_before": self.unmapped_before,
                "unmapped_after": self.unmapped_after,
                "source_concepts_replaced": self.source_concepts_replaced}


@dataclass(frozen=True, slots=True)
class VocabularyRemap:
    tables: tuple[TableRemap, ...]
    units_mapped: int  #: measurement rows whose unit_concept_id 0 became a UCUM concept

    def as_dict(self) -> dict:
        return {"tables": [t.as_dict() for t in self.tables], "units_mapped": self.units_mapped}


def _unmapped(e: EventConcept, alias: str = "") -> str:
    """SQL: the row's standard concept is 0 (a death without a cause: NULL, with nothing to map)."""
    a = f"{alias}." if alias else ""
    if e.table == "death":
        return f"coalesce({a}{e.concept}, 0) = 0 AND coalesce({a}{e.source_concept}, 0) <> 0"
    return f"{a}{e.concept} = 0"


def remap_concepts(con: duckdb.DuckDBPyConnection) -> VocabularyRemap:
    """Re-map the event tables through the store's vocabulary, in one transaction (rolled back
    on any error). Idempotent: a second run changes nothing.

    1. A local source concept (id above the local base) whose ``(vocabulary_id, concept_code)``
       the vocabulary holds is replaced, in every row, by the vocabulary's concept (a valid one
       first, then the smallest id).
    2. A row whose standard concept is 0 gets its source concept's standard concept
       (:data:`MAPS_TO_SQL`, with the table's domain); rows without one keep 0.
    3. A measurement with unit_concept_id 0 whose unit_source_value is a UCUM code in
       ``concept`` gets that unit's concept.
    """
    base = LOCAL_CONCEPT_BASE
    db.run(con, "BEGIN TRANSACTION")
    try:
        db.run(con, """
            CREATE OR REPLACE TEMP TABLE _vocab_local_real AS
            SELECT l.concept_id AS local_id, r.concept_id AS real_id
            FROM concept l JOIN concept r
              ON r.vocabulary_id = l.vocabulary_id AND r.concept_code = l.concept_code
            WHERE l.concept_id > $base AND r.concept_id > 0 AND r.concept_id < $base
            QUALIFY row_number() OVER (PARTITION BY l.concept_id
                                       ORDER BY r.invalid_reason IS NOT NULL, r.concept_id) = 1
        """, {"base": base})
        out = []
        for e in REMAPPED:
            before = int(db.scalar(con, f"SELECT count(*) FROM {e.table} WHERE {_unmapped(e)}"))
            replaced = int(db.scalar(con,
                f"UPDATE {e.table} t SET {e.source_concept} = m.real_id FROM _vocab_local_real m "
                f"WHERE t.{e.source_concept} = m.local_id"))
            db.run(con, f"CREATE OR REPLACE TEMP TABLE _map_sources AS SELECT DISTINCT "
                        f"{e.source_concept} AS concept_id FROM {e.table} WHERE {_unmapped(e)}")
            db.run(con,
                f"UPDATE {e.table} t SET {e.concept} = m.target_concept_id FROM ({MAPS_TO_SQL}) m "
                f"WHERE t.{e.source_concept} = m.source_concept_id "
                f"AND m.target_concept_id IS NOT NULL AND {_unmapped(e, 't')}",
                {"domain": e.domain})
            after = int(db.scalar(con, f"SELECT count(*) FROM {e.table} WHERE {_unmapped(e)}"))
            out.append(TableRemap(e.table, e.concept, before, after, replaced))
        units = int(db.scalar(con, """
            UPDATE measurement m SET unit_concept_id = u.concept_id
            FROM (SELECT concept_code, arg_min(concept_id, (invalid_reason IS NOT NULL, concept_id))
                         AS concept_id
                  FROM concept WHERE vocabulary_id = 'UCUM' AND concept_id > 0 AND concept_id < $base
                  GROUP BY concept_code) u
            WHERE coalesce(m.unit_concept_id, 0) = 0 AND m.unit_source_value = u.concept_code
        """, {"base": base}))
        db.run(con, "DROP TABLE IF EXISTS _map_sources")
        db.run(con, "DROP TABLE IF EXISTS _vocab_local_real")
    except BaseException:
        db.run(con, "ROLLBACK")
        raise
    db.run(con, "COMMIT")
    return VocabularyRemap(tuple(out), units)


# --- the commands: open the store, run, audit -----------------------------------------------------


def load_vocabulary(settings: Settings, folder: Path, *, progress: bool | None = None) -> VocabularyLoad:
    """``enclave vocab load``: load the Athena download in ``folder`` into the store (one
    transaction, see :func:`enclave.io.ingest.athena.load_athena`) and audit it (``vocab.load``).
    ``progress``: a progress bar on stderr (default: the ``ingest.progress`` setting, terminals
    only)."""
    show = settings.ingest.progress if progress is None else progress
    bar = None
    if show and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=1, desc="vocab load", unit="step", file=sys.stderr, leave=False)

    def step(what: str, done: int, total: int) -> None:
        if bar:
            bar.total = total
            bar.n = done
            bar.set_postfix_str(what)

    try:
        with open_store(settings) as con:
            result = load_athena(con, Path(folder), local_base=LOCAL_CONCEPT_BASE, progress=step)
    finally:
        if bar:
            bar.close()
    audit.record_event(settings, actor=getpass.getuser(), action="vocab.load", subject="vocabulary",
                       detail=result.as_dict())
    return result


def remap_vocabulary(settings: Settings) -> VocabularyRemap:
    """``enclave vocab remap``: :func:`remap_concepts` on the store, audited (``vocab.remap``)."""
    with open_store(settings) as con:
        result = remap_concepts(con)
    audit.record_event(settings, actor=getpass.getuser(), action="vocab.remap", subject="vocabulary",
                       detail=result.as_dict())
    return result
