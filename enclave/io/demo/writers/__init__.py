"""Demo hospital writers: one per export dialect.

The population generator (``enclave.io.demo.population``) produces, for each hospital, clean frames in
the *staging contract* (``enclave.io.ingest.staging``: kinds person, visit, condition, drug, measurement,
procedure, note, care_site, provider — without the ``_file/_row/_reject`` columns) plus a list of
:class:`Defect` instructions. A writer serializes those frames in its dialect, applies the defects it
is told to plant, and returns the files it wrote and the text of the site's ``site.toml`` mapping.

Round trip: writer → ``enclave ingest`` adapter of the same dialect must give back the clean frames
(tests check this), and every planted defect must come back as a reject with the expected reason.

``WRITERS`` maps a dialect key to ``module:function``; the function has the signature of
:func:`write` below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import polars as pl


class DefectKind(StrEnum):
    """Planted defects and the reject reason (``RejectReason`` value) each must produce."""

    BAD_ID_CHECKSUM = "bad_id_checksum"  # → invalid_resident_id   (an extra person row)
    IDENTITY_CONFLICT = "identity_conflict"  # → identity_conflict (sex/birth disagree with the ID)
    IMPOSSIBLE_DATE = "impossible_date"  # → invalid_date (e.g. 20230230, 2023年2月30日)
    DATE_ORDER = "date_order"  # → date_order (discharge before admission)
    MISSING_REQUIRED = "missing_required"  # → missing_required (e.g. visit without patient id)
    UNKNOWN_CODE = "unknown_code"  # → invalid_code (a diagnosis code that is not ICD-10 at all)
    UNKNOWN_PATIENT = "unknown_patient"  # → unknown_patient (visit of a patient not in the extract)
    DUPLICATE_ROW = "duplicate_row"  # → merged_duplicates (same record written twice)
    TRUNCATED_LINE = "truncated_line"  # → malformed_row (last record of a file cut short)


EXPECTED_REASON: dict[DefectKind, str] = {
    DefectKind.BAD_ID_CHECKSUM: "invalid_resident_id",
    DefectKind.IDENTITY_CONFLICT: "identity_conflict",
    DefectKind.IMPOSSIBLE_DATE: "invalid_date",
    DefectKind.DATE_ORDER: "date_order",
    DefectKind.MISSING_REQUIRED: "missing_required",
    DefectKind.UNKNOWN_CODE: "invalid_code",
    DefectKind.UNKNOWN_PATIENT: "unknown_patient",
    DefectKind.DUPLICATE_ROW: "merged_duplicates",
    DefectKind.TRUNCATED_LINE: "malformed_row",
}


@dataclass(frozen=True, slots=True)
class Defect:
    """Plant ``kind`` on row ``row`` (0-based index) of the staging frame ``frame_kind``.

    The population generator only ever targets *extra* rows it added for the purpose (copies of real
    rows with fresh ids and no dependent records), so a rejected defect never removes real data.
    """

    kind: DefectKind
    frame_kind: str
    row: int


@dataclass(frozen=True, slots=True)
class HospitalSpec:
    site_id: str  # e.g. "h1"
    name: str  # Chinese hospital name
    dialect: str  # a key of WRITERS
    level: str  # 三级甲等 / 二级甲等 / ...
    region_code: str  # GB/T 2260 county code of the hospital
    glucose_unit: str = "mmol/L"  # some hospitals report mg/dL (per-analyte units)


@dataclass(slots=True)
class WriteResult:
    files: list[Path] = field(default_factory=list)
    site_toml: str = ""
    #: defects actually planted, by kind (a writer may refuse kinds it cannot express, e.g.
    #: TRUNCATED_LINE in a format without lines — it must then not count them)
    planted: dict[str, int] = field(default_factory=dict)


def write(
    out_dir: Path, hospital: HospitalSpec, frames: dict[str, pl.DataFrame], defects: list[Defect]
) -> WriteResult:  # pragma: no cover - signature documentation only
    raise NotImplementedError


WRITERS: dict[str, str] = {
    "csv_gb18030": "enclave.io.demo.writers.csv_pinyin:write",  # GB18030, pinyin headers, D8/DT15, GB/T 2261
    "csv_zh": "enclave.io.demo.writers.csv_chinese:write",  # UTF-8, Chinese headers, 2023年1月5日
    "frontsheet": "enclave.io.demo.writers.frontsheet:write",  # 病案首页 wide inpatient layout
    "fhir_ndjson": "enclave.io.demo.writers.fhir:write",  # FHIR R4 NDJSON, one file per resource type
    "hl7v2": "enclave.io.demo.writers.hl7:write",  # HL7 v2.5 ADT^A04 / ORU^R01 batch files
}
