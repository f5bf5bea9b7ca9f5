"""The loader: a staged batch of one site → OMOP rows, lineage and rejects, in one transaction.

Every staged row ends in exactly one of three places: loaded (a CDM row and its lineage), rejected
(``etl_reject`` with reason, file and row number — never its contents) or merged as a duplicate.
A failure anywhere rolls the whole batch back: the store is left as it was.

What the loader checks (adapters have already flagged parse failures):
required columns · resident-ID checksum and identity conflicts · references to unknown patients or
visits · end before start · code syntax · units per analyte · duplicates (exact rows within the batch,
natural keys ``(site, site_patient_id)`` and ``(site, site_visit_id)`` against the store, whole files
already ingested).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import duckdb
import ibis.expr.types as ir
import numpy as np
import polars as pl

from enclave.core.errors import BadInputError
from enclave.io import db
from enclave.io.db import insert_frame
from enclave.io.engine import duckdb_engine
from enclave.io.ingest import cdm_rows, linkage, transforms
from enclave.io.ingest.cdm_rows import EHR, YUAN
from enclave.io.ingest.concepts import ConceptMapper
from enclave.io.ingest.derived import EVENT_DATES, observation_periods
from enclave.io.ingest.files import move_reference_lineage, plan_files, skipped_rows
from enclave.io.ingest.mapping import SiteMapping
from enclave.io.ingest.reports import OUTCOME_SCHEMA, FileReport, file_reports
from enclave.io.ingest.staging import (
    EVENT_ORDER,
    REFERENCE_ORDER,
    VISIT_TYPES,
    LoadWarning,
    RejectReason,
    StagedBatch,
    required_columns,
)
from enclave.logic.codes import units as unit_codes

GENDER = {"M": 8507, "F": 8532}
VISIT_CONCEPT = {"inpatient": 9201, "outpatient": 9202, "emergency": 9203}
BOOK = ["_fid", "_row", "_reject", "_reject_column", "_dup", "_warning", "_warning_column"]
#: identifiers longer than this are rejected (``value_too_long``): no hospital id is that long
ID_LIMIT = 255
#: columns a row is rejected for when longer than the CDM column they go to (``value_too_long``)
CODE_LIMITS = {"unit": 50, "route": 50, "dose_unit": 50, "cause_code": 50}
#: free text cut to its CDM column, counted under ``value_truncated`` (per kind)
TEXT_LIMITS = {"measurement": {"value_text": 50}, "observation": {"value_text": 60},
               "note": {"title": 250}, "visit": {"department": 50}}
#: compiled ingest statements by step and shape (see BatchLoader._compiled)
_COMPILED: dict[tuple, tuple[str, pl.Schema]] = {}


# --- small vectorized helpers ------------------------------------------------------------------
def _reject_where(frame: pl.DataFrame, cond: pl.Expr, reason: RejectReason, column: str | pl.Expr) -> pl.DataFrame:
    hit = pl.col("_reject").is_null() & ~pl.col("_dup") & cond.fill_null(False)
    col_expr = pl.lit(column) if isinstance(column, str) else column
    return frame.with_columns(
        pl.when(hit).then(pl.lit(str(reason))).otherwise(pl.col("_reject")).alias("_reject"),
        pl.when(hit).then(col_expr).otherwise(pl.col("_reject_column")).alias("_reject_column"),
    )


def _require(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    for col in required_columns(kind):
        frame = _reject_where(frame, pl.col(col).is_null(), RejectReason.MISSING_REQUIRED, col)
    return frame


def _limits(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Reject identifiers and codes longer than their column allows; warn on cut free text.
    The longest value of each column is found in one pass; only a column over its limit (rare)
    is checked row by row."""
    limits = {c: (ID_LIMIT, True) for c, t in frame.schema.items() if c.endswith("_id") and t == pl.Utf8}
    limits |= {c: (n, False) for c, n in CODE_LIMITS.items() if c in frame.columns}
    texts = {c: n for c, n in TEXT_LIMITS.get(kind, {}).items() if c in frame.columns}
    measure = [pl.col(c).str.len_bytes().max().alias(c) for c in {*limits, *texts}]
    if not measure or frame.height == 0:
        return frame
    longest = frame.select(measure).row(0, named=True)
    for col, (limit, in_bytes) in limits.items():
        if (longest[col] or 0) > limit:  # bytes ≥ characters: below the limit in bytes is below it
            length = pl.col(col).str.len_bytes() if in_bytes else pl.col(col).str.len_chars()
            frame = _reject_where(frame, length > limit, RejectReason.VALUE_TOO_LONG, col)
    for col, limit in texts.items():
        if (longest[col] or 0) > limit:
            frame = _warn_where(frame, pl.col(col).str.len_chars() > limit, LoadWarning.VALUE_TRUNCATED, col)
    return frame


def _warn_where(frame: pl.DataFrame, cond: pl.Expr, warning: LoadWarning, column: str) -> pl.DataFrame:
    hit = pl.col("_reject").is_null() & ~pl.col("_dup") & pl.col("_warning").is_null() & cond.fill_null(False)
    return frame.with_columns(
        pl.when(hit).then(pl.lit(str(warning))).otherwise(pl.col("_warning")).alias("_warning"),
        pl.when(hit).then(pl.lit(column)).otherwise(pl.col("_warning_column")).alias("_warning_column"),
    )


def _dedupe(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Mark all but the first pending row of each key group as a merged duplicate.

    Rows are hashed first (one vectorized pass); only rows whose hash repeats, usually a handful,
    are compared exactly, so a hash collision can never merge two different records.
    """
    pending = pl.col("_reject").is_null() & ~pl.col("_dup")
    frame = frame.with_columns(frame.select(keys).hash_rows(seed=0).alias("__h"))
    repeated = frame.with_row_index("__i").filter(pending & pl.col("__h").is_duplicated().over(pending))
    frame = frame.drop("__h")
    if repeated.height == 0:
        return frame
    later = repeated.filter(~pl.struct(keys).is_first_distinct())["__i"]
    return frame.with_columns(
        (pl.col("_dup") | pl.int_range(pl.len(), dtype=pl.UInt32).is_in(later.implode())).alias("_dup"))


def _warn_unmapped(f: pl.DataFrame, code_map: pl.DataFrame) -> pl.DataFrame:
    """Count the rows whose code has no standard concept (and that carry none of their own)
    under ``unmapped_code``."""
    unmapped = code_map.filter(pl.col("_target") == 0).select("code_system", "code")
    if unmapped.height == 0:
        return f
    hit = f.select("code_system", "code").join(
        unmapped.with_columns(pl.lit(True).alias("_u")), on=["code_system", "code"], how="left",
        maintain_order="left")["_u"].fill_null(False)
    if "concept_id" in f.columns:
        hit = hit & (f["concept_id"].fill_null(0) == 0)
    return _warn_where(f, pl.lit(hit), LoadWarning.UNMAPPED_CODE, "code")


def _content_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if not c.startswith("_")]


def _dedupe_known(frame: pl.DataFrame, key: str, known: pl.Series) -> pl.DataFrame:
    """:func:`_dedupe` on ``key``, and a pending row whose ``key`` is ``known`` (loaded before)
    marked a duplicate too."""
    frame = _dedupe(frame, [key])
    return frame.with_columns(
        (pl.col("_dup") | (pl.col("_reject").is_null() & pl.col(key).is_in(known.implode()))).alias("_dup")
    )


def _ok(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("_reject").is_null() & ~pl.col("_dup"))


def _next_id(con: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
    return int(db.scalar(con, f"SELECT coalesce(max({column}), 0) + 1 FROM {table}"))


def _in_row_order(got: pl.DataFrame) -> pl.DataFrame:
    """``got`` without ``_i``, its rows in ``_i`` order: ``_i`` numbers the batch's rows 0 … n−1,
    so one scatter of the positions lines them up (a sort costs twice as much on millions of
    rows). Raises if ``_i`` is not each row number once."""
    order = np.full(got.height, -1, dtype=np.int64)
    order[got["_i"].to_numpy()] = np.arange(got.height)
    if got.height and order.min() < 0:
        raise RuntimeError("an ingest transform returned a row twice")
    return got.drop("_i")[order]


def _unless_everyone(con: duckdb.DuckDBPyConnection, touched: pl.DataFrame, persons: ir.Table):
    """``persons`` (the touched persons as an engine table), or ``None`` where the batch touched
    every person of the store (a first load): the observation periods then need no semi join,
    which costs more than the aggregate itself on millions of events."""
    everyone = touched.height == db.scalar(con, "SELECT count(*) FROM person")
    return None if everyone else persons


class BatchLoader:
    def __init__(self, con: duckdb.DuckDBPyConnection, key: bytes, mapping: SiteMapping, *,
                 redo: bool = False):
        self.con = con
        self.redo = redo
        self.key = key
        self.mapping = mapping
        self.site = mapping.site_id
        self.file_ids: dict[str, int] = {}
        self.outcomes: list[pl.DataFrame] = []  # (_fid, _row, kind, _reject, _reject_column, _dup)
        self.lineage: list[pl.DataFrame] = []
        self.touched_persons: list[pl.Series] = []
        self.now = dt.datetime.now()
        self.engine = duckdb_engine(con)  # the ibis transforms run on the store's connection

    # ------------------------------------------------------------------------------------------
    def load(self, batch: StagedBatch, file_sha: dict[str, str]) -> list[FileReport]:
        con = self.con
        self._register_site()
        # a kind still being read (StagedBatch.pending) is waited for only when it is loaded;
        # its files are in read_counts already
        staged_files = sorted({f for fr in batch.frames.values() for f in fr["_file"].unique().to_list()})
        order = list(dict.fromkeys([*file_sha, *batch.read_counts, *staged_files]))
        self.plan = plan = plan_files(con, self.site, order, file_sha, redo=self.redo)
        self.touched_persons.append(pl.Series(plan.touched_persons, dtype=pl.Int64))
        self._register_files([f for f in order if f not in plan.skipped], file_sha, batch)
        move_reference_lineage(con, plan, self.file_ids)
        skipped: dict[str, int] = {}
        frames = {kind: self._prepare(kind, frame, skipped) for kind in REFERENCE_ORDER
                  if (frame := batch.ready(kind)) is not None}

        self.mapper = ConceptMapper(con, self.site, self.mapping.options)
        if "concept" in frames:
            frames["concept"] = self._load_concepts(frames["concept"])
            self.mapper = ConceptMapper(con, self.site, self.mapping.options)
        self.care_sites = self._load_care_sites(frames.get("care_site"))
        self.providers = self._load_providers(frames.get("provider"))
        if "care_site" in frames:
            frames["care_site"] = self._care_site_frame
        if "provider" in frames:
            frames["provider"] = self._provider_frame
        persons = self._load_persons(frames.get("person"))
        if "person" in frames:
            frames["person"] = persons
        self.patient_map = db.frame(con, 
            "SELECT site_patient_id, person_id FROM identity.site_patient WHERE site_id = ?", [self.site]
        ).with_columns(pl.col("person_id").cast(pl.Int64))
        if "visit" in frames:
            frames["visit"] = self._load_visits(frames["visit"])
        self.visit_map = db.frame(con, 
            "SELECT site_visit_id, visit_occurrence_id FROM identity.site_visit WHERE site_id = ?",
            [self.site],
        ).with_columns(pl.col("visit_occurrence_id").cast(pl.Int64))
        eng = self.engine
        self.patients_view = eng.put("_ingest_patients", self.patient_map)
        self.visits_view = eng.put("_ingest_visits", self.visit_map)
        self.conversions_view = eng.put("_ingest_conversions", unit_codes.conversion_table())
        for kind in EVENT_ORDER:
            if (frame := batch.ready(kind)) is not None:
                frames[kind] = self._load_events(kind, self._prepare(kind, frame, skipped))
        batch.complete()  # what no step loads (malformed lines): counted in the reports
        for kind, frame in batch.frames.items():
            if kind not in frames:
                frames[kind] = self._prepare(kind, frame, skipped)
        self.mapper.write_new_concepts()
        for kind, frame in frames.items():
            self.outcomes.append(
                frame.select(
                    "_fid", "_row", pl.lit(kind).alias("kind"), "_reject", "_reject_column", "_dup",
                    "_warning", "_warning_column",
                )
            )
        self._refresh_observation_periods()
        return self._finish(batch, file_sha, skipped)

    def _prepare(self, kind: str, frame: pl.DataFrame, skipped: dict[str, int]) -> pl.DataFrame:
        """A staged frame as the steps take it: rows of skipped files dropped (counted in
        ``skipped``), missing required values and over-long values rejected, bookkeeping columns
        added, and each row's file as its small integer id (cheaper than its path per row)."""
        frame = frame.with_columns(pl.lit(False).alias("_dup"), pl.lit(None, pl.Utf8).alias("_warning"),
                                   pl.lit(None, pl.Utf8).alias("_warning_column"))
        frame, counts = skipped_rows(frame, self.plan.skipped)
        for f, n in counts.items():
            skipped[f] = skipped.get(f, 0) + n
        if kind != "unparsed":
            frame = _limits(_require(frame, kind), kind)
        return frame.with_columns(
            pl.col("_file").replace_strict(self.file_ids, return_dtype=pl.Int32).alias("_fid")
        ).drop("_file")

    # --- bookkeeping ---------------------------------------------------------------------------
    def _register_site(self) -> None:
        m = self.mapping
        exists = db.scalar(self.con, 
            "SELECT care_site_id FROM site_registry WHERE site_id = ?", [self.site]
        )
        if exists is not None:
            self.site_care_site = exists
            return
        self.site_care_site = _next_id(self.con, "care_site", "care_site_id")
        location_id = self._location_ids(pl.Series([m.region_code]))[0] if m.region_code else None
        db.run(self.con, 
            "INSERT INTO care_site (care_site_id, care_site_name, place_of_service_concept_id, "
            "location_id, care_site_source_value, place_of_service_source_value) VALUES (?, ?, 0, ?, ?, ?)",
            [self.site_care_site, m.name or self.site, location_id, self.site, m.level],
        )
        db.run(self.con, 
            "INSERT INTO site_registry VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [self.site, m.name, m.dialect, m.encoding, ",".join(sorted((m.options.get("codes") or {}).keys())),
             m.source, m.sha256, self.site_care_site, self.now],
        )

    def _register_files(self, files: list[str], file_sha: dict[str, str], batch: StagedBatch) -> None:
        next_id = _next_id(self.con, "etl_file", "file_id")
        for i, f in enumerate(files):
            self.file_ids[f] = next_id + i
            db.run(self.con,
                "INSERT INTO etl_file VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, 0, ?)",
                [next_id + i, self.site, f, file_sha.get(f, f"unhashed:{f}"), self.mapping.dialect,
                 batch.read_counts.get(f, 0), self.now],
            )

    def _add_lineage(self, table: str, ids: pl.Series, rows: pl.DataFrame) -> None:
        self.lineage.append(
            rows.select(pl.col("_fid").alias("file_id"), pl.col("_row").alias("source_row")).with_columns(
                pl.lit(table).alias("table_name"), ids.cast(pl.Int64).alias("row_id")
            )
        )

    # --- locations / care sites / providers ----------------------------------------------------
    def _location_ids(self, codes: pl.Series) -> list[int | None]:
        codes = codes.cast(pl.Utf8)
        uniq = [c for c in codes.unique().drop_nulls().to_list() if c]
        if uniq:
            existing = dict(db.rows(self.con, 
                "SELECT location_source_value, location_id FROM location WHERE location_source_value IN "
                "(SELECT unnest(?))", [uniq]
            ))
            missing = [c for c in uniq if c not in existing]
            if missing:
                start = _next_id(self.con, "location", "location_id")
                rows = pl.DataFrame({
                    "location_id": list(range(start, start + len(missing))),
                    "county": missing,
                    "state": [c[:2] + "0000" for c in missing],
                    "location_source_value": missing,
                    "country_concept_id": [0] * len(missing),
                    "country_source_value": ["CN"] * len(missing),
                })
                insert_frame(self.con, "location", rows)
                existing.update(zip(missing, range(start, start + len(missing))))
        else:
            existing = {}
        return [existing.get(c) if c else None for c in codes.to_list()]

    def _location_frame(self, codes: pl.Series) -> pl.Series:
        uniq = codes.unique().drop_nulls()
        ids = self._location_ids(uniq)
        table = dict(zip(uniq.to_list(), ids))
        return codes.replace_strict(table, default=None, return_dtype=pl.Int64)

    def _load_care_sites(self, frame: pl.DataFrame | None) -> pl.DataFrame:
        self._care_site_frame = frame
        existing, frame = self._keyed("care_site", frame)
        if frame is None:
            return existing
        frame = _dedupe_known(frame, "key", existing["key"])
        ok = _ok(frame)
        if ok.height:
            existing = self._insert_keyed("care_site", ok, existing, [
                pl.col("name").alias("care_site_name"),
                pl.lit(0).alias("place_of_service_concept_id"),
                self._location_frame(ok["region_code"]).alias("location_id"),
                pl.col("key").alias("care_site_source_value"),
                pl.col("level").alias("place_of_service_source_value"),
            ])
        self._care_site_frame = frame.drop("key")
        return existing

    def _load_providers(self, frame: pl.DataFrame | None) -> pl.DataFrame:
        self._provider_frame = frame
        existing, frame = self._keyed("provider", frame)
        if frame is None:
            return existing
        frame = _reject_where(frame, pl.col("key").str.len_chars() > 50, RejectReason.VALUE_TOO_LONG, "provider_id")
        frame = _dedupe_known(frame, "key", existing["key"])
        ok = _ok(frame).join(
            self.care_sites.rename({"key": "_cs", "care_site_id": "_cs_id"}),
            left_on=pl.lit(self.site + ":") + pl.col("care_site_id"), right_on="_cs", how="left",
        )
        if ok.height:
            existing = self._insert_keyed("provider", ok, existing, [
                pl.col("name").alias("provider_name"),
                pl.col("specialty").alias("specialty_source_value"),
                pl.col("_cs_id").alias("care_site_id"),
                pl.col("key").alias("provider_source_value"),
            ])
        self._provider_frame = frame.drop("key")
        return existing

    def _keyed(self, table: str, frame: pl.DataFrame | None
               ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """The ``key`` (``<table>_source_value``: site:id) and id of every row ``table`` (care_site
        or provider) holds, and ``frame`` (None: the batch has none) with each row's ``key``."""
        existing = db.frame(self.con,
            f"SELECT {table}_source_value AS key, {table}_id FROM {table}"
        ).with_columns(pl.col(f"{table}_id").cast(pl.Int64))
        if frame is not None:
            frame = frame.with_columns((pl.lit(self.site + ":") + pl.col(f"{table}_id")).alias("key"))
        return existing, frame

    def _site_ids(self, table: str, column: str) -> pl.Series:
        """``column`` of every row of ``identity.<table>`` of this site: the source ids loaded
        before (site_patient, site_visit)."""
        return db.frame(self.con, f"SELECT {column} FROM identity.{table} WHERE site_id = ?",
                        [self.site])[column]

    def _insert_keyed(self, table: str, ok: pl.DataFrame, existing: pl.DataFrame,
                      columns: list[pl.Expr | pl.Series]) -> pl.DataFrame:
        """Insert ``ok``'s rows into ``table`` (care_site or provider) under new ids, with
        ``columns`` and their lineage; ``existing`` (:meth:`_keyed`) with their keys added."""
        start = _next_id(self.con, table, f"{table}_id")
        ids = pl.int_range(start, start + ok.height, eager=True)
        rows = ok.select(ids.alias(f"{table}_id"), *columns)
        insert_frame(self.con, table, rows)
        self._add_lineage(table, ids, ok)
        return pl.concat([existing, rows.select(pl.col(f"{table}_source_value").alias("key"),
                                                pl.col(f"{table}_id").cast(pl.Int64))])

    # --- concepts from an OMOP export ----------------------------------------------------------
    def _load_concepts(self, frame: pl.DataFrame) -> pl.DataFrame:
        frame = _dedupe(frame, ["concept_id"])
        existing = db.frame(self.con, "SELECT concept_id FROM concept")["concept_id"].cast(pl.Int64)
        frame = frame.with_columns(
            (pl.col("_dup") | (pl.col("_reject").is_null() & pl.col("concept_id").is_in(existing.implode()))).alias("_dup")
        )
        ok = _ok(frame)
        cols = ["concept_id", "concept_name", "domain_id", "vocabulary_id", "concept_class_id",
                "standard_concept", "concept_code", "valid_start_date", "valid_end_date", "invalid_reason"]
        insert_frame(self.con, "concept", ok.select(cols).with_columns(
            pl.col("standard_concept").replace("", None)))
        self._add_lineage("concept", ok["concept_id"], ok)
        return frame

    # --- persons -------------------------------------------------------------------------------
    def _load_persons(self, p: pl.DataFrame | None) -> pl.DataFrame | None:
        if p is None:
            return None
        con = self.con
        if self.mapping.linkage == "resident_id":
            p = _reject_where(p, pl.col("resident_id").is_null(), RejectReason.MISSING_REQUIRED, "resident_id")
            p = linkage.resident_id_checks(p)
            msg = pl.lit("rid:") + pl.col("rid")
        else:
            p = p.with_columns(pl.lit(None, pl.Utf8).alias("rid"))
            msg = pl.lit(f"site:{self.site}:") + pl.col("site_patient_id")
        p = p.with_columns(
            pl.when(pl.col("_reject").is_null()).then(msg).otherwise(None).alias("_msg")
        )
        p = p.with_columns(linkage.link_keys(self.key, p["_msg"]).alias("link_key")).drop("_msg")
        p = _dedupe(p, [c for c in _content_columns(p) if c not in ("rid", "link_key")])
        p = _dedupe_known(p, "site_patient_id", self._site_ids("site_patient", "site_patient_id"))
        ok = _ok(p)
        if ok.height == 0:
            return p
        keys = ok.select("link_key").unique()
        con.register("_batch_keys", db.arrow(keys))
        existing = db.frame(con, 
            "SELECT i.link_key, i.person_id FROM identity.person_index i JOIN _batch_keys b USING (link_key)"
        ).with_columns(pl.col("person_id").cast(pl.Int64))
        con.unregister("_batch_keys")
        first = ok.unique("link_key", keep="first", maintain_order=True).join(
            existing, on="link_key", how="anti"
        )
        start = _next_id(con, "person", "person_id")
        first = first.with_columns(pl.int_range(start, start + first.height, dtype=pl.Int64).alias("person_id"))
        all_ids = pl.concat([existing, first.select("link_key", "person_id")])
        ok = ok.join(all_ids, on="link_key", how="left")
        region = pl.coalesce(pl.col("region_code"), pl.col("rid").str.slice(0, 6))
        first = first.with_columns(region.alias("_region"))
        person_rows = first.select(
            pl.col("person_id"),
            pl.col("sex").replace_strict(GENDER, default=0, return_dtype=pl.Int64).alias("gender_concept_id"),
            pl.col("birth_date").dt.year().fill_null(0).alias("year_of_birth"),
            pl.col("birth_date").dt.month().alias("month_of_birth"),
            pl.col("birth_date").dt.day().alias("day_of_birth"),
            pl.col("birth_date").cast(pl.Datetime("us")).alias("birth_datetime"),
            pl.lit(0).alias("race_concept_id"),
            pl.lit(0).alias("ethnicity_concept_id"),
            self._location_frame(first["_region"]).alias("location_id"),
            pl.lit(self.site_care_site).alias("care_site_id"),
            pl.col("link_key").alias("person_source_value"),
            pl.col("sex").alias("gender_source_value"),
            pl.col("ethnicity").alias("ethnicity_source_value"),
        )
        insert_frame(con, "person", person_rows)
        insert_frame(con, "identity.person_index", first.select(
            "person_id", "link_key", pl.col("rid").alias("resident_id"), "name", "birth_date", "sex",
            "phone", "address", "insurance_no"))
        insert_frame(con, "identity.site_patient", ok.select(
            pl.lit(self.site).alias("site_id"), "site_patient_id", "person_id"))
        deaths = ok.filter(pl.col("death_date").is_not_null()).unique("person_id", keep="first")
        if deaths.height:
            con.register("_deaths", db.arrow(deaths.select("person_id", "death_date")))
            db.run(con, 
                "INSERT INTO death (person_id, death_date, death_type_concept_id) "
                f"SELECT person_id, death_date, {EHR} FROM _deaths WHERE person_id NOT IN (SELECT person_id FROM death)"
            )
            con.unregister("_deaths")
        self._add_lineage("person", ok["person_id"], ok)
        self.touched_persons.append(ok["person_id"])
        return p

    # --- visits --------------------------------------------------------------------------------
    def _resolve_person(self, frame: pl.DataFrame) -> pl.DataFrame:
        frame = frame.join(self.patient_map, on="site_patient_id", how="left")
        return _reject_where(frame, pl.col("person_id").is_null(), RejectReason.UNKNOWN_PATIENT, "site_patient_id")

    def _load_visits(self, v: pl.DataFrame) -> pl.DataFrame:
        con = self.con
        v = _reject_where(v, ~pl.col("visit_type").is_in(list(VISIT_TYPES)), RejectReason.INVALID_CODE, "visit_type")
        v = self._resolve_person(v)
        v = _reject_where(v, pl.col("end_date") < pl.col("start_date"), RejectReason.DATE_ORDER, "end_date")
        v = _dedupe(v, [c for c in _content_columns(v) if c != "person_id"])
        v = _dedupe_known(v, "site_visit_id", self._site_ids("site_visit", "site_visit_id"))
        ok = _ok(v)
        if ok.height == 0:
            return v.drop("person_id")
        start = _next_id(con, "visit_occurrence", "visit_occurrence_id")
        ok = ok.with_columns(pl.int_range(start, start + ok.height, dtype=pl.Int64).alias("visit_occurrence_id"))
        ok = ok.join(self.care_sites.rename({"key": "_cs", "care_site_id": "_cs_id"}),
                     left_on=pl.lit(self.site + ":") + pl.col("care_site_id"), right_on="_cs", how="left")
        ok = ok.join(self.providers.rename({"key": "_pv", "provider_id": "_pv_id"}),
                     left_on=pl.lit(self.site + ":") + pl.col("provider_id"), right_on="_pv", how="left")
        rows = ok.select(
            "visit_occurrence_id", "person_id",
            pl.col("visit_type").replace_strict(VISIT_CONCEPT, default=0, return_dtype=pl.Int64).alias("visit_concept_id"),
            pl.col("start_date").alias("visit_start_date"),
            pl.col("start_datetime").alias("visit_start_datetime"),
            pl.coalesce("end_date", "start_date").alias("visit_end_date"),
            pl.col("end_datetime").alias("visit_end_datetime"),
            pl.lit(EHR).alias("visit_type_concept_id"),
            pl.col("_pv_id").alias("provider_id"),
            pl.coalesce(pl.col("_cs_id"), pl.lit(self.site_care_site)).alias("care_site_id"),
            pl.col("visit_type").alias("visit_source_value"),
            pl.col("department").str.slice(0, 50).alias("admitted_from_source_value"),
        )
        insert_frame(con, "visit_occurrence", rows)
        insert_frame(con, "identity.site_visit", ok.select(
            pl.lit(self.site).alias("site_id"), "site_visit_id", "visit_occurrence_id"))
        costs = ok.filter(pl.col("total_cost").is_not_null())
        if costs.height:
            self._insert_costs(costs, "visit_occurrence_id", "Visit", "total_cost", "paid_by_patient")
        self._add_lineage("visit_occurrence", ok["visit_occurrence_id"], ok)
        self.touched_persons.append(ok["person_id"])
        return v.drop("person_id")

    def _insert_costs(self, frame: pl.DataFrame, id_col: str, domain: str, cost_col: str,
                      patient_col: str | None = None) -> None:
        start = _next_id(self.con, "cost", "cost_id")
        rows = frame.select(
            pl.int_range(start, start + frame.height, dtype=pl.Int64).alias("cost_id"),
            pl.col(id_col).alias("cost_event_id"),
            pl.lit(domain).alias("cost_domain_id"),
            pl.lit(EHR).alias("cost_type_concept_id"),
            pl.lit(YUAN).alias("currency_concept_id"),
            pl.col(cost_col).alias("total_cost"),
            (pl.col(patient_col) if patient_col else pl.lit(None, pl.Float64)).alias("paid_by_patient"),
        )
        insert_frame(self.con, "cost", rows)

    # --- clinical events -----------------------------------------------------------------------
    def _load_events(self, kind: str, f: pl.DataFrame) -> pl.DataFrame:
        """Check, de-duplicate, map, convert (measurements) and insert one kind's rows with the
        ibis expressions of :mod:`enclave.io.ingest.transforms` and :mod:`enclave.io.ingest.cdm_rows`
        on the store's connection.

        The staged rows go to the engine as they are (an Arrow view, no copy); what each step
        adds or changes comes back as narrow columns and is set beside them, and the CDM rows,
        costs and lineage are inserted from there with ``INSERT … SELECT``. ``_i`` is the row's
        place in the batch, which decides ids and which duplicate is kept."""
        eng = self.engine
        f = f.with_row_index("_i").with_columns(pl.col("_i").cast(pl.Int64))
        has_code = "code" in f.columns
        shape = (kind, tuple((c, str(t)) for c, t in f.schema.items()))
        rows = eng.put("_ingest_rows", f)
        checks = eng.put("_ingest_code_checks", self.mapper.code_checks(f)) if has_code else None
        deaths = None
        if kind == "death":
            deaths = eng.put("_ingest_deaths", db.frame(self.con, "SELECT person_id FROM death")
                             .with_columns(pl.col("person_id").cast(pl.Int64)))
        visits = self.visits_view if "site_visit_id" in f.columns else None
        f = self._merge(f, ("check", shape), lambda: transforms.check_events(
            rows, self.patients_view, visits, checks, deaths))
        live = pl.col("_reject").is_null() & ~pl.col("_dup")
        if has_code:
            # the distinct codes of the pending rows, in first use (they number new concepts)
            pairs = (f.lazy().filter(live).select("code_system", "code")
                     .unique(maintain_order=True).collect())
            mapped = self.mapper.code_map(pairs, kind)
            code_map = eng.put("_ingest_code_map", mapped)
            f = _warn_unmapped(f, mapped)
        if kind == "measurement":  # a unit may still quarantine a row: fetch that first
            rows, ucum = eng.put("_ingest_rows", f), self.ucum_view()
            f = self._merge(f, ("units", shape), lambda: transforms.convert_units(
                transforms.map_concepts(rows, code_map), self.conversions_view, ucum,
                unit_codes.UNIT_SYNONYMS).drop("std_system", "std_code", "_dup"))
            has_code = False  # mapped already
        pending = f.lazy().filter(live).select("person_id").collect()  # not every column
        if pending.height:
            table, id_col = cdm_rows.TARGETS[kind]
            # ids in batch order from the table's next id: the store's sequence is the loader's
            start = _next_id(self.con, table, id_col) if id_col else 0
            f = f.with_columns(pl.when(live).then(start + live.cum_sum() - 1).alias("_id"))
            costed = kind in cdm_rows.COST_DOMAINS
            if costed:
                with_cost = live & pl.col("cost").is_not_null()
                cost_start = _next_id(self.con, "cost", "cost_id")
                f = f.with_columns(pl.when(with_cost).then(cost_start + with_cost.cum_sum() - 1)
                                   .alias("_cost_id"))
            shape = (kind, tuple((c, str(t)) for c, t in f.schema.items()))
            rows = eng.put("_ingest_rows", f)

            def done(mapped: bool = True):  # costs and lineage need no concepts: no join
                t = rows.filter(rows._id.notnull())
                return transforms.map_concepts(t, code_map) if has_code and mapped else t

            self._insert(table, ("rows", shape), lambda: cdm_rows.event_rows(kind, done()))
            if costed:
                self._insert("cost", ("cost", shape), lambda: cdm_rows.cost_rows(kind, done(False)))
            self._insert("etl_lineage", ("lineage", shape),
                         lambda: cdm_rows.lineage_rows(kind, done(False)))
            self.touched_persons.append(pending["person_id"])
        return f.select(BOOK)

    def _compiled(self, key: tuple, build: Callable[[], ir.Table]) -> tuple[str, pl.Schema]:
        """The SQL and result schema of ``build()``, compiled once per process and shape:
        compiling an ibis expression costs tens of milliseconds, and every batch of a kind with
        the same columns (``key``) reads the same views with the same statement."""
        hit = _COMPILED.get(key)
        if hit is None:
            expr = build()
            hit = _COMPILED[key] = (self.engine.sql(expr), expr.schema().to_polars())
        return hit

    def _merge(self, f: pl.DataFrame, key: tuple, build: Callable[[], ir.Table]) -> pl.DataFrame:
        """``f`` with the columns ``build()`` adds or changes (:data:`transforms.CHANGED`): only
        those come back from the engine. The expression has one row per row of ``f`` (its joins
        are many-to-one), so sorting on ``_i`` lines the two up."""
        def narrow() -> ir.Table:
            expr = build()
            return expr.select("_i", *[c for c in expr.columns if c != "_i" and (
                c not in f.columns or c in transforms.CHANGED)])

        sql, schema = self._compiled(key, narrow)
        got = pl.from_arrow(self.con.sql(sql).to_arrow_table()).cast(dict(schema))
        if got.height != f.height:
            raise RuntimeError(f"an ingest transform returned {got.height} rows for {f.height}")
        return f.with_columns(_in_row_order(got))

    def _insert(self, table: str, key: tuple, build: Callable[[], ir.Table]) -> None:
        """INSERT the rows of ``build()`` on the store's connection (they stay there)."""
        sql, schema = self._compiled(key, build)
        cols = ", ".join(schema)
        db.run(self.con, f"INSERT INTO {table} ({cols}) SELECT {cols} FROM ({sql})")

    def ucum_view(self):
        """The UCUM units of the store's vocabulary (after this batch's concepts are loaded)."""
        return self.engine.put("_ingest_ucum", self.mapper.ucum_units())

    # --- derived tables ------------------------------------------------------------------------
    def _refresh_observation_periods(self) -> None:
        if not self.touched_persons:
            return
        # person ids as the store keeps them (INTEGER): a join on them needs no cast
        touched = pl.concat(self.touched_persons).unique().cast(pl.Int32).to_frame("person_id")
        con = self.con
        con.register("_touched", db.arrow(touched))
        db.run(con, "DELETE FROM observation_period WHERE person_id IN (SELECT person_id FROM _touched)")
        start = _next_id(con, "observation_period", "observation_period_id")
        engine = self.engine
        periods = observation_periods({t: engine.table(t) for t, _ in EVENT_DATES},
                                      _unless_everyone(con, touched, engine.table("_touched")))
        db.run(con, f"""
            INSERT INTO observation_period
            SELECT {start} + row_number() OVER (ORDER BY person_id) - 1, person_id,
                   observation_period_start_date, observation_period_end_date, {EHR}
            FROM ({engine.sql(periods)})
        """)
        con.unregister("_touched")

    # --- reports -------------------------------------------------------------------------------
    def _finish(self, batch: StagedBatch, file_sha: dict[str, str],
                skipped: dict[str, int]) -> list[FileReport]:
        outcomes = pl.concat(self.outcomes) if self.outcomes else pl.DataFrame(schema=OUTCOME_SCHEMA)
        rejects = outcomes.filter(pl.col("_reject").is_not_null())
        insert_frame(self.con, "etl_reject", rejects.select(
            pl.col("_fid").alias("file_id"), pl.col("_row").alias("source_row"), "kind", pl.col("_reject").alias("reason"),
            pl.col("_reject_column").alias("column_name"), pl.lit(self.now).alias("rejected_at")))
        insert_frame(self.con, "etl_warning", outcomes.filter(
            pl.col("_reject").is_null() & ~pl.col("_dup") & pl.col("_warning").is_not_null()).select(
            pl.col("_fid").alias("file_id"), pl.col("_row").alias("source_row"), "kind",
            pl.col("_warning").alias("warning"), pl.col("_warning_column").alias("column_name")))
        if self.lineage:
            lin = pl.concat(self.lineage, how="vertical_relaxed")
            insert_frame(self.con, "etl_lineage", lin.select("table_name", "row_id", "file_id", "source_row"))
        reports = file_reports(outcomes, self.file_ids, self.plan, skipped, batch.read_counts,
                               list(dict.fromkeys(list(file_sha) + list(batch.read_counts))),
                               site=self.site, dialect=self.mapping.dialect)
        for r in reports:
            if r.file in self.file_ids:
                db.run(self.con, 
                    "UPDATE etl_file SET read = ?, loaded = ?, rejected = ?, merged_duplicates = ? "
                    "WHERE file_id = ?",
                    [r.read, r.loaded, r.rejected_total, r.merged_duplicates, self.file_ids[r.file]],
                )
        self._write_cdm_source()
        return reports

    def _write_cdm_source(self) -> None:
        if db.scalar(self.con, "SELECT count(*) FROM cdm_source"):
            return
        db.run(self.con, 
            "INSERT INTO cdm_source (cdm_source_name, cdm_source_abbreviation, cdm_holder, "
            "source_release_date, cdm_release_date, cdm_version, cdm_version_concept_id, vocabulary_version) "
            "VALUES ('Research data enclave', 'enclave', 'enclave', current_date, current_date, "
            "'5.4', 756265, 'enclave subset')"
        )


def too_many_rejects(reports: list[FileReport], max_share: float) -> str | None:
    """Why the batch is refused under ``ingest.max_reject_share`` (None: it is not): the files
    whose rejected share of the rows read exceeds ``max_share``, with their counts by reason."""
    over = [r for r in reports if r.read and r.rejected_total / r.read > max_share]
    if not over:
        return None
    names = "; ".join(
        f"{Path(r.file).name}: {r.rejected_total} of {r.read} rows rejected "
        f"({r.rejected_total / r.read:.0%}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(r.rejected.items())) + ")" for r in over[:5])
    more = f" and {len(over) - 5} more files" if len(over) > 5 else ""
    return (f"ingest refused, nothing loaded: more than {max_share:.0%} of a file's rows were "
            f"rejected (ingest.max_reject_share) in {names}{more}; fix the mapping or the extract, "
            "or raise the setting")


def load_batch(con: duckdb.DuckDBPyConnection, key: bytes, mapping: SiteMapping, batch: StagedBatch,
               file_sha: dict[str, str], *, redo: bool = False,
               max_reject_share: float = 1.0) -> list[FileReport]:
    """Load one batch in one transaction; on any error the store is rolled back and the error raised.
    ``redo``: forget the batch's files that earlier runs loaded rows from, and load them afresh
    (:mod:`enclave.io.ingest.files`). ``max_reject_share``: a file rejecting a larger share of its
    rows refuses the whole batch (:class:`BadInputError`, rolled back: nothing loaded and nothing
    quarantined); 1.0 never refuses."""
    db.run(con, "BEGIN TRANSACTION")
    try:
        loader = BatchLoader(con, key, mapping, redo=redo)
        try:
            reports = loader.load(batch, file_sha)
        finally:
            loader.engine.close()
        refusal = too_many_rejects(reports, max_reject_share)
        if refusal:
            raise BadInputError(refusal)
    except BaseException:
        db.run(con, "ROLLBACK")
        raise
    db.run(con, "COMMIT")
    return reports
