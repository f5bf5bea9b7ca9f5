"""The staging contract: what every ingest adapter hands to the loader.

An adapter turns one source file (or directory) of one dialect into a :class:`StagedBatch`: one polars
frame per record *kind* below, with typed, normalized columns. Adapters never write to the store;
the loader (``enclave.io.ingest.loader``) validates, links persons, maps codes, de-duplicates and writes
OMOP rows, lineage and rejects in one transaction.

Every staged frame carries four bookkeeping columns:

``_file``           Utf8   the source file (path as given to ``enclave ingest``)
``_row``            Int64  1-based record number in that file (data line for delimited files, line
                           for NDJSON, message number for HL7, entry index for a FHIR bundle)
``_reject``         Utf8   a :class:`RejectReason` value when the adapter already knows the row is
                           bad (unparseable date, malformed line ...), else null
``_reject_column``  Utf8   the source column or field that caused ``_reject``, else null

A row that the adapter cannot turn into any kind at all (a truncated line, an unknown segment) is
staged in the ``unparsed`` kind with only those four columns, so it is counted and quarantined.

Counting rule (acceptance of issue 2): for every file, ``read`` = rows the adapter staged (all kinds
together, each source record counted once — see :attr:`StagedBatch.read_counts`), and the loader
guarantees ``read == loaded + rejected + merged_duplicates``.

Values are already normalized by the adapter with the helpers in ``enclave.io.ingest.normalize``:
dates are ``pl.Date``/``pl.Datetime``, sex is one of ``M``/``F``/``U``, numbers are Float64, region
codes are 6-digit GB/T 2260 strings, code systems are :class:`CodeSystem` values. Raw identifiers
(resident ID, name, phone, address, MRN) are passed through verbatim: only the loader's linkage step
touches them and they never leave the restricted zone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import polars as pl


class RejectReason(StrEnum):
    """Why a source row was quarantined. Stable string values: they are stored in ``etl_reject``."""

    MALFORMED_ROW = "malformed_row"  # wrong number of fields, truncated line, unparseable record
    MISSING_REQUIRED = "missing_required"  # a required field is empty
    INVALID_DATE = "invalid_date"  # unparseable or impossible date (Feb 30, future birth ...)
    DATE_ORDER = "date_order"  # end before start, event before birth
    INVALID_RESIDENT_ID = "invalid_resident_id"  # GB 11643 format/checksum fails
    IDENTITY_CONFLICT = "identity_conflict"  # resident ID disagrees with birth date / sex given
    INVALID_SEX = "invalid_sex"  # sex code outside the site's code list
    INVALID_CODE = "invalid_code"  # a clinical code that is not syntactically valid in its system
    INVALID_NUMBER = "invalid_number"  # unparseable or impossible numeric value
    UNKNOWN_UNIT = "unknown_unit"  # a unit the analyte cannot be converted from
    UNKNOWN_PATIENT = "unknown_patient"  # references a patient not in this site's extract/store
    UNKNOWN_VISIT = "unknown_visit"  # no longer a reject (see LoadWarning); kept for older stores
    VALUE_TOO_LONG = "value_too_long"  # longer than the CDM column allows
    UNSUPPORTED_RECORD = "unsupported_record"  # a record type the enclave does not store
    REPEATED_HEADER = "repeated_header"  # a data row holding the column names (an empty table's export)


class LoadWarning(StrEnum):
    """Why a *loaded* row is counted under a warning (``etl_warning``): it is kept, with what
    the source gave, but something about it is incomplete. Stable string values."""

    UNKNOWN_VISIT = "unknown_visit"  # its visit is not in the extract or the store: visit left NULL
    UNMAPPED_CODE = "unmapped_code"  # its code has no standard concept in the store: concept 0
    VALUE_TRUNCATED = "value_truncated"  # a free-text value longer than its CDM column was cut


class CodeSystem(StrEnum):
    """Code systems whose syntax the loader knows. ``code_system`` may also be any other OMOP
    ``vocabulary_id`` (``CPT4``, ``HCPCS`` ...): such codes are looked up in the store's
    vocabulary without a syntax check (see :mod:`enclave.io.ingest.concepts`)."""

    ICD10_CN = "ICD10CN"  # ICD-10 national clinical version 2.0 (E11.900, I10.x00x002)
    ICD10 = "ICD10"  # WHO ICD-10 (E11.9, I10)
    ICD10_CM = "ICD10CM"  # ICD-10-CM, the US clinical modification (K92.2, S72.001A)
    ICD9_CM = "ICD9CM"  # ICD-9-CM diagnoses (250.00, V45.81, E849.0)
    NDC = "NDC"  # US National Drug Code (10 or 11 digits, or with dashes)
    ICD9_CM_PROC = "ICD9Proc"  # ICD-9-CM-3 procedure codes (Chinese clinical version)
    SNOMED = "SNOMED"
    LOINC = "LOINC"
    RXNORM = "RxNorm"
    CVX = "CVX"
    LOCAL = "LOCAL"  # a hospital's own code list; mapped via the site's mapping file


VISIT_TYPES = ("outpatient", "inpatient", "emergency")

_BOOK = {"_file": pl.Utf8, "_row": pl.Int64, "_reject": pl.Utf8, "_reject_column": pl.Utf8}

#: The columns a coded event kind starts with (the patient, the visit, the code) ...
_CODED_EVENT: dict[str, pl.DataType] = {
    "site_patient_id*": pl.Utf8,
    "site_visit_id": pl.Utf8,
    "code_system*": pl.Utf8,
    "code*": pl.Utf8,  # a measurement's is the analyte (LOINC or local lab code)
    "description": pl.Utf8,
}
#: ... and ends with: only when the source already carries OMOP concept ids (``source_concept_id``:
#: the source's own ``*_source_concept_id``)
_CONCEPT_IDS: dict[str, pl.DataType] = {"concept_id": pl.Int64, "source_concept_id": pl.Int64}

#: Columns of each kind. ``*`` marks a required column (null → ``missing_required``).
KINDS: dict[str, dict[str, pl.DataType]] = {
    "person": {
        "site_patient_id*": pl.Utf8,  # the hospital's patient id / MRN
        "resident_id": pl.Utf8,  # raw resident ID number (GB 11643), verbatim
        "name": pl.Utf8,
        "sex": pl.Utf8,  # M / F / U
        "birth_date": pl.Date,
        "phone": pl.Utf8,
        "address": pl.Utf8,
        "region_code": pl.Utf8,  # GB/T 2260 county-level code, 6 digits
        "ethnicity": pl.Utf8,  # GB/T 3304 code or name, verbatim
        "insurance_no": pl.Utf8,
        "death_date": pl.Date,
    },
    "visit": {
        "site_visit_id*": pl.Utf8,
        "site_patient_id*": pl.Utf8,
        "visit_type*": pl.Utf8,  # one of VISIT_TYPES
        "start_date*": pl.Date,
        "start_datetime": pl.Datetime("us"),
        "end_date": pl.Date,
        "end_datetime": pl.Datetime("us"),
        "department": pl.Utf8,
        "provider_id": pl.Utf8,
        "care_site_id": pl.Utf8,
        "total_cost": pl.Float64,  # CNY
        "paid_by_patient": pl.Float64,
    },
    "condition": {
        **_CODED_EVENT,
        "start_date*": pl.Date,
        "end_date": pl.Date,
        "primary": pl.Boolean,
        **_CONCEPT_IDS,
    },
    "drug": {
        **_CODED_EVENT,
        "start_date*": pl.Date,
        "end_date": pl.Date,
        "quantity": pl.Float64,
        "days_supply": pl.Int64,
        "dose_unit": pl.Utf8,
        "route": pl.Utf8,
        "cost": pl.Float64,  # CNY
        **_CONCEPT_IDS,
    },
    "measurement": {
        **_CODED_EVENT,
        "date*": pl.Date,
        "datetime": pl.Datetime("us"),
        "value": pl.Float64,
        "value_text": pl.Utf8,
        "unit": pl.Utf8,  # as given; the loader converts per analyte (enclave.logic.codes.units)
        "range_low": pl.Float64,
        "range_high": pl.Float64,
        "cost": pl.Float64,
        **_CONCEPT_IDS,
    },
    "procedure": {
        **_CODED_EVENT,
        "date*": pl.Date,
        "cost": pl.Float64,
        **_CONCEPT_IDS,
    },
    "observation": {
        **_CODED_EVENT,
        "date*": pl.Date,
        "value": pl.Float64,
        "value_text": pl.Utf8,
        "unit": pl.Utf8,
        **_CONCEPT_IDS,
    },
    "note": {
        "site_patient_id*": pl.Utf8,
        "site_visit_id": pl.Utf8,
        "date*": pl.Date,
        "title": pl.Utf8,
        "text*": pl.Utf8,  # free text: may contain identifiers; stays in the restricted zone
    },
    "death": {
        "site_patient_id*": pl.Utf8,
        "date*": pl.Date,
        "cause_code_system": pl.Utf8,
        "cause_code": pl.Utf8,
    },
    "care_site": {
        "care_site_id*": pl.Utf8,
        "name": pl.Utf8,
        "level": pl.Utf8,  # hospital level, e.g. 三级甲等 / tertiary
        "region_code": pl.Utf8,
    },
    "provider": {
        "provider_id*": pl.Utf8,
        "name": pl.Utf8,
        "specialty": pl.Utf8,
        "care_site_id": pl.Utf8,
    },
    # OMOP vocabulary rows carried by an OMOP CSV export (CONCEPT.csv): merged into `concept`.
    "concept": {
        "concept_id*": pl.Int64,
        "concept_name*": pl.Utf8,
        "domain_id*": pl.Utf8,
        "vocabulary_id*": pl.Utf8,
        "concept_class_id*": pl.Utf8,
        "standard_concept": pl.Utf8,
        "concept_code*": pl.Utf8,
        "valid_start_date*": pl.Date,
        "valid_end_date*": pl.Date,
        "invalid_reason": pl.Utf8,
    },
    "unparsed": {},
}


def column_names(kind: str) -> list[str]:
    return [c.rstrip("*") for c in KINDS[kind]]


def required_columns(kind: str) -> list[str]:
    return [c.rstrip("*") for c in KINDS[kind] if c.endswith("*")]


#: The order a batch's kinds are loaded in: what later kinds refer to (concepts, care sites,
#: providers, patients, visits) first, then the events. Adapters that read in the background read
#: in this order, so that the loader can start while the last kinds are still being read.
REFERENCE_ORDER = ("concept", "care_site", "provider", "person", "visit")
EVENT_ORDER = ("condition", "drug", "measurement", "procedure", "observation", "note", "death")
LOAD_ORDER = REFERENCE_ORDER + EVENT_ORDER


def kind_schema(kind: str) -> dict[str, pl.DataType]:
    schema = {c.rstrip("*"): t for c, t in KINDS[kind].items()}
    schema.update(_BOOK)
    return schema


def conform(kind: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Add missing columns as nulls, cast to the contract's types, order columns.

    Raises ``KeyError`` for columns the kind does not know (a bug in the adapter, not bad input).
    """
    schema = kind_schema(kind)
    unknown = set(frame.columns) - set(schema)
    if unknown:
        raise KeyError(f"staged {kind} has columns outside the contract: {sorted(unknown)}")
    return frame.select(
        [
            (pl.col(c) if c in frame.columns else pl.lit(None)).cast(t, strict=True).alias(c)
            for c, t in schema.items()
        ]
    )


@dataclass(slots=True)
class StagedBatch:
    """What one adapter produced from one source (a file or a folder of files)."""

    site: str
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    #: source records read per file; each record counted once even if it yields several kinds
    #: (e.g. an HL7 message with PID + PV1 + OBX counts once per message line that the adapter
    #: treats as a record — adapters document their unit of counting).
    read_counts: dict[str, int] = field(default_factory=dict)
    #: kinds an adapter is still reading in the background, each with the call that waits for its
    #: files and adds their frames, malformed lines and counts here (see :meth:`ready`); their
    #: files are already keys of ``read_counts`` (with 0), so the batch's file list is complete
    pending: dict[str, Callable[[], None]] = field(default_factory=dict)

    def ready(self, kind: str) -> pl.DataFrame | None:
        """The frame of ``kind``, waiting for it first if it is still being read (a read's error
        is raised here)."""
        fill = self.pending.pop(kind, None)
        if fill is not None:
            fill()
        return self.frames.get(kind)

    def complete(self) -> None:
        """Wait for every pending kind: afterwards ``frames`` and ``read_counts`` are final."""
        for kind in list(self.pending):
            self.ready(kind)

    def add(self, kind: str, frame: pl.DataFrame) -> None:
        frame = conform(kind, frame)
        if kind in self.frames:
            self.frames[kind] = pl.concat([self.frames[kind], frame], how="vertical")
        else:
            self.frames[kind] = frame
