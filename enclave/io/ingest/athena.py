"""Reading an OHDSI Athena vocabulary download into the store (``enclave vocab load``).

Athena ships each vocabulary table as ``<TABLE>.csv``: tab separated, a header row, no quoting
(fields may contain ``"``), empty fields for NULL, dates as YYYYMMDD. DuckDB reads each file with
the column types of the CDM model (:func:`enclave.core.model.omop.table_columns`) into a temp table; the
store's table is then brought up to date by key. See :mod:`enclave.io.ingest.vocabulary`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from enclave.core.errors import BadInputError, StoreError
from enclave.core.model.omop import table_columns
from enclave.io import db


@dataclass(frozen=True, slots=True)
class AthenaFile:
    """One file of a download: the table it fills and the columns that identify a row.

    ``owned_by``: the concept columns of a relationship-like table. A stored row whose concepts
    are all in the download's CONCEPT.csv is one the download would list if it still held: when
    the file does not, the row is removed. Other stored rows are kept (a download may hold a
    subset of the vocabularies)."""

    table: str
    key: tuple[str, ...]
    owned_by: tuple[str, ...] = ()

    @property
    def file_name(self) -> str:
        return f"{self.table.upper()}.csv"

    @property
    def stage(self) -> str:
        return f"_athena_{self.table}"


#: The files of a download, in load order (CONCEPT.csv first: it is required and scopes removals).
ATHENA_FILES: tuple[AthenaFile, ...] = (
    AthenaFile("concept", ("concept_id",)),
    AthenaFile("vocabulary", ("vocabulary_id",)),
    AthenaFile("domain", ("domain_id",)),
    AthenaFile("concept_class", ("concept_class_id",)),
    AthenaFile("relationship", ("relationship_id",)),
    AthenaFile("concept_relationship", ("concept_id_1", "concept_id_2", "relationship_id"),
               ("concept_id_1", "concept_id_2")),
    AthenaFile("concept_ancestor", ("ancestor_concept_id", "descendant_concept_id"),
               ("ancestor_concept_id", "descendant_concept_id")),
    AthenaFile("concept_synonym", ("concept_id", "concept_synonym_name", "language_concept_id"),
               ("concept_id", "language_concept_id")),
    AthenaFile("drug_strength", ("drug_concept_id", "ingredient_concept_id"),
               ("drug_concept_id", "ingredient_concept_id")),
)
CONCEPT = ATHENA_FILES[0]

#: a load's progress: (what is being done, steps done, steps in all)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class TableLoad:
    table: str
    file: str
    read: int  #: data lines of the file
    inserted: int
    updated: int  #: stored rows with the same key whose values changed
    removed: int  #: stored rows of the download's concepts the file no longer lists
    unchanged: int
    skipped_local: int = 0  #: lines with a concept id in the enclave's local range (never loaded)
    repeated: int = 0  #: lines identical to an earlier line (loaded once)

    def as_dict(self) -> dict:
        return {"table": self.table, "file": self.file, "read": self.read,
                "inserted": self.inserted, "updated": self.updated, "removed": self.removed,
                "unchanged": self.unchanged, "skipped_local": self.skipped_local,
                "repeated": self.repeated}


@dataclass(frozen=True, slots=True)
class VocabularyLoad:
    folder: str
    vocabulary_version: str | None  #: VOCABULARY.csv's version of vocabulary 'None' (the release)
    tables: tuple[TableLoad, ...]
    missing: tuple[str, ...]  #: files of :data:`ATHENA_FILES` the download does not have

    @property
    def changed(self) -> bool:
        return any(t.inserted or t.updated or t.removed for t in self.tables)

    def as_dict(self) -> dict:
        return {"folder": self.folder, "vocabulary_version": self.vocabulary_version,
                "tables": [t.as_dict() for t in self.tables], "missing": list(self.missing)}


def download_files(folder: Path) -> tuple[dict[AthenaFile, Path], tuple[str, ...]]:
    """The download's files (names matched without regard to case) and the names it lacks;
    BadInputError when it has no CONCEPT.csv."""
    if not folder.is_dir():
        raise BadInputError(f"{folder}: not a folder (unzip the Athena download and give its folder)")
    names = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    found = {f: names[f.file_name.lower()] for f in ATHENA_FILES if f.file_name.lower() in names}
    if CONCEPT not in found:
        raise BadInputError(f"{folder}: no CONCEPT.csv; is this the folder of an unzipped Athena download?")
    return found, tuple(f.file_name for f in ATHENA_FILES if f not in found)


def file_columns(f: AthenaFile, path: Path) -> dict[str, str]:
    """The file's columns in its header's order, with their SQL types from the CDM model.
    BadInputError (naming the file, line 1) when the header does not name the table's columns."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = fh.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path.name}: line 1: cannot read the header ({exc.__class__.__name__})") from None
    got = [h.strip().lower() for h in header.split("\t")]
    model = {c.name: c.sql_type for c in table_columns(f.table)}
    if sorted(got) != sorted(model):
        missing = [c for c in model if c not in got]
        extra = sorted({c for c in got if c not in model or got.count(c) > 1})
        raise BadInputError(
            f"{path.name}: line 1: the header is not the columns of {f.table} (tab separated)"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected or repeated {', '.join(c[:40] for c in extra[:10])}" if extra else ""))
    return {name: model[name] for name in got}


_CSV_LINE = re.compile(r"CSV Error on Line: (\d+)")


def csv_error(file_name: str, exc: duckdb.Error) -> str:
    """DuckDB's CSV error as one line naming the file and line (not the line's contents)."""
    lines = [x.strip() for x in str(exc).splitlines()]
    m = _CSV_LINE.search(str(exc))
    reason = next((x for x in lines[1:] if x and not x.startswith("Original Line")), "") if m else ""
    reason = reason or lines[0].split(": ", 1)[-1]
    hint = " (Athena writes dates as YYYYMMDD)" if "'DATE'" in reason else ""
    return f"{file_name}: {'line ' + m.group(1) if m else 'cannot be read'}: {reason}{hint}"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _stage(con: duckdb.DuckDBPyConnection, f: AthenaFile, path: Path, local_base: int) -> dict:
    """Read the file into its temp table; the counts of what was read. BadInputError naming the
    file (and line, where DuckDB knows it) for anything the file gets wrong."""
    columns = file_columns(f, path)
    spec = "{" + ", ".join(f"{_sql_str(n)}: {_sql_str(t)}" for n, t in columns.items()) + "}"
    try:
        db.run(con, f"CREATE TEMP TABLE {f.stage} AS SELECT * FROM read_csv({_sql_str(str(path))}, "
                    f"delim='\t', quote='', escape='', header=true, auto_detect=false, "
                    f"strict_mode=true, null_padding=false, dateformat='%Y%m%d', columns={spec})")
    except duckdb.Error as exc:
        raise BadInputError(csv_error(path.name, exc)) from None
    read = int(db.scalar(con, f"SELECT count(*) FROM {f.stage}"))
    skipped = 0
    if f is CONCEPT:  # the enclave's local concepts are its own: a download never touches them
        skipped = int(db.scalar(con, f"DELETE FROM {f.stage} WHERE concept_id > ?", [local_base]))
    required = [c.name for c in table_columns(f.table) if c.required]
    nulls = db.rows(con, "SELECT " + ", ".join(f"count(*) FILTER ({c} IS NULL)" for c in required)
                    + f" FROM {f.stage}")[0]
    for col, n in zip(required, nulls):
        if n:
            raise BadInputError(f"{path.name}: {n} line(s) without {col}, which the CDM requires")
    key = ", ".join(f.key)
    distinct_keys = int(db.scalar(con, f"SELECT count(DISTINCT ({key})) FROM {f.stage}"))
    repeated = read - skipped - distinct_keys
    if repeated:
        distinct_rows = int(db.scalar(con, f"SELECT count(*) FROM (SELECT DISTINCT * FROM {f.stage})"))
        if distinct_rows != distinct_keys:
            example = db.rows(con, f"SELECT {key} FROM {f.stage} GROUP BY ALL "
                                   f"HAVING count(*) > 1 ORDER BY ALL LIMIT 1")[0]
            raise BadInputError(
                f"{path.name}: lines with the same {key} ({', '.join(map(str, example))}) "
                "but different values; a download lists each once")
        db.run(con, f"CREATE TEMP TABLE {f.stage}_distinct AS SELECT DISTINCT * FROM {f.stage}")
        db.run(con, f"DROP TABLE {f.stage}")
        db.run(con, f"ALTER TABLE {f.stage}_distinct RENAME TO {f.stage}")
    return {"read": read, "skipped_local": skipped, "repeated": repeated}


def _apply(con: duckdb.DuckDBPyConnection, f: AthenaFile, counts: dict) -> TableLoad:
    """Bring the store's table up to date with the staged file: remove, update, insert."""
    cols = [c.name for c in table_columns(f.table)]
    values = [c for c in cols if c not in f.key]
    same_key = " AND ".join(f"t.{k} = s.{k}" for k in f.key)
    removed = updated = 0
    if f.owned_by:
        ours = " AND ".join(f"t.{c} IN (SELECT concept_id FROM {CONCEPT.stage})" for c in f.owned_by)
        removed = int(db.scalar(con, f"DELETE FROM {f.table} AS t WHERE {ours} "
                                     f"AND NOT EXISTS (SELECT 1 FROM {f.stage} s WHERE {same_key})"))
    if values:
        updated = int(db.scalar(con,
            f"UPDATE {f.table} AS t SET {', '.join(f'{c} = s.{c}' for c in values)} "
            f"FROM {f.stage} s WHERE {same_key} "
            f"AND ({' OR '.join(f't.{c} IS DISTINCT FROM s.{c}' for c in values)})"))
    inserted = int(db.scalar(con,
        f"INSERT INTO {f.table} ({', '.join(cols)}) SELECT {', '.join(f's.{c}' for c in cols)} "
        f"FROM {f.stage} s WHERE NOT EXISTS (SELECT 1 FROM {f.table} t WHERE {same_key})"))
    loaded = counts["read"] - counts["skipped_local"] - counts["repeated"]
    return TableLoad(f.table, f.file_name, counts["read"], inserted, updated, removed,
                     loaded - inserted - updated, counts["skipped_local"], counts["repeated"])


def load_athena(con: duckdb.DuckDBPyConnection, folder: Path, *, local_base: int,
                progress: Progress | None = None) -> VocabularyLoad:
    """Load the download in ``folder`` in one transaction: on any error nothing is changed and
    the error (BadInputError for the download, StoreError otherwise) names the file."""
    folder = Path(folder)
    found, missing = download_files(folder)
    for f, path in found.items():  # a wrong header fails before any reading
        file_columns(f, path)
    total, done = 2 * len(found), 0

    def step(what: str) -> None:
        nonlocal done
        if progress:
            progress(what, done, total)
        done += 1

    db.run(con, "BEGIN TRANSACTION")
    try:
        counts = {}
        for f, path in found.items():
            step(f"reading {f.file_name}")
            counts[f] = _stage(con, f, path, local_base)
        version = None
        if any(f.table == "vocabulary" for f in found):
            version = db.scalar(con, "SELECT vocabulary_version FROM _athena_vocabulary "
                                     "WHERE vocabulary_id = 'None'")
        tables = []
        for f in found:
            step(f"loading {f.table}")
            try:
                tables.append(_apply(con, f, counts[f]))
            except duckdb.Error as exc:
                raise StoreError(f"{f.file_name}: loading into {f.table} failed: "
                                 f"{str(exc).splitlines()[0]}") from None
        if version:  # the CDM records the vocabulary release it was built with
            db.run(con, "UPDATE cdm_source SET vocabulary_version = ? "
                        "WHERE vocabulary_version IS DISTINCT FROM ?", [version[:20], version[:20]])
        for f in found:
            db.run(con, f"DROP TABLE IF EXISTS {f.stage}")
    except BaseException:
        db.run(con, "ROLLBACK")
        raise
    db.run(con, "COMMIT")
    if progress:
        progress("done", total, total)
    return VocabularyLoad(str(folder), version, tuple(tables), missing)
