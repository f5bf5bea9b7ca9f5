"""Demo writer: one Chinese demo hospital as FHIR R4 Bulk-export NDJSON (one file per resource type).

Kinds → resources: person→Patient (resident ID under the configured identifier system, name in
``HumanName.text``, address text with a GB/T 2260 region-code extension), visit→Encounter (costs as
the enclave's ``encounter-total-cost`` / ``encounter-paid-by-patient`` extensions), condition→
Condition (ICD10CN coding), drug→MedicationRequest (CVX codes → Immunization), measurement→
Observation (category laboratory, LOINC or the hospital's local code system), observation→
Observation (category exam), procedure→Procedure, note→DocumentReference (base64 text),
care_site→Organization, provider→Practitioner. The extension URLs are those the FHIR adapter reads
(``enclave.io.ingest.adapters.fhir.EXTENSIONS``).

Defects are planted while serializing the targeted row (see :func:`apply_defect`); DUPLICATE_ROW
writes the resource line twice, TRUNCATED_LINE writes it last in its file and cuts it in half
(one per file). Not expressible here (not counted): a measurement with only a text value comes back
as an observation; Immunization carries no end date, quantity or cost.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from enclave.io.demo.writers import Defect, DefectKind, HospitalSpec, WriteResult
from enclave.io.ingest.adapters.fhir import DEFAULT_CODE_SYSTEMS, EXTENSIONS, RESIDENT_ID_SYSTEM
from enclave.io.ingest.staging import CodeSystem
from enclave.logic.codes.resident_id import CHECK_CHARS

INSURANCE_SYSTEM = "urn:oid:2.16.156.10011.1.10"  # demo: medical insurance card number
MRN_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
SYSTEM_URI = {str(v): k for k, v in DEFAULT_CODE_SYSTEMS.items()}

#: the date column a planted IMPOSSIBLE_DATE replaces, and the datetime that goes with it
DATE_KEY = {"person": "birth_date", "visit": "start_date", "condition": "start_date",
            "drug": "start_date", "measurement": "date", "procedure": "date",
            "observation": "date", "note": "date"}
DATETIME_KEY = {"visit": "start_datetime", "measurement": "datetime"}
#: the required column a planted MISSING_REQUIRED blanks
MISSING_KEY = {"person": "site_patient_id", "visit": "visit_type", "condition": "code",
               "drug": "code", "measurement": "code", "procedure": "code", "observation": "code",
               "note": "text", "care_site": "care_site_id", "provider": "provider_id"}
END_KEY = {"visit": ("start_date", "end_date", "end_datetime"),
           "condition": ("start_date", "end_date", None), "drug": ("start_date", "end_date", None)}
CODED = ("condition", "drug", "measurement", "procedure", "observation")


def local_system(site_id: str) -> str:
    return f"urn:enclave:{site_id}:local"


# --------------------------------------------------------------------------------------------
# defects shared by the demo writers


def defect_plan(defects: list[Defect]) -> dict[tuple[str, int], list[DefectKind]]:
    plan: dict[tuple[str, int], list[DefectKind]] = {}
    for d in defects:
        plan.setdefault((d.frame_kind, d.row), []).append(DefectKind(d.kind))
    return plan


def corrupt_checksum(number: str) -> str:
    """The same number with a different (hence wrong) check character."""
    given = number[17].upper()
    index = CHECK_CHARS.index(given) if given in CHECK_CHARS else 0
    return number[:17] + CHECK_CHARS[(index + 1) % len(CHECK_CHARS)]


def apply_defect(kind: str, row: dict[str, Any], defect: DefectKind, impossible: str, tag: int = 0) -> bool:
    """Corrupt ``row`` in place for a value-level defect; True when the defect could be planted.

    ``impossible`` is the dialect's spelling of an impossible date (Feb 30 of the row's year, with
    ``{year}`` to fill in). DUPLICATE_ROW and TRUNCATED_LINE are record-level: the writers do them.
    """
    if defect == DefectKind.BAD_ID_CHECKSUM:
        rid = row.get("resident_id")
        if kind != "person" or not isinstance(rid, str) or len(rid) != 18:
            return False
        row["resident_id"] = corrupt_checksum(rid)
    elif defect == DefectKind.IDENTITY_CONFLICT:
        if kind != "person" or row.get("sex") not in ("M", "F"):
            return False
        row["sex"] = "F" if row["sex"] == "M" else "M"
    elif defect == DefectKind.IMPOSSIBLE_DATE:
        key = DATE_KEY.get(kind)
        if key is None:
            return False
        year = row[key].year if isinstance(row.get(key), dt.date) else 2023
        row[key] = impossible.format(year=year)
        if kind in DATETIME_KEY:
            row[DATETIME_KEY[kind]] = None
    elif defect == DefectKind.DATE_ORDER:
        if kind not in END_KEY or not isinstance(row.get(END_KEY[kind][0]), dt.date):
            return False
        start_key, end_key, end_dt_key = END_KEY[kind]
        row[end_key] = row[start_key] - dt.timedelta(days=1)
        if end_dt_key:
            row[end_dt_key] = None
    elif defect == DefectKind.MISSING_REQUIRED:
        if kind not in MISSING_KEY:
            return False
        row[MISSING_KEY[kind]] = None
    elif defect == DefectKind.UNKNOWN_CODE:
        if kind not in CODED or not row.get("code") or row.get("code_system") == str(CodeSystem.LOCAL):
            return False
        row["code"] = f"?{row['code']}?"
    elif defect == DefectKind.UNKNOWN_PATIENT:
        if "site_patient_id" not in row or kind == "person":
            return False
        row["site_patient_id"] = f"NO-SUCH-PATIENT-{kind}-{tag}"
    else:
        return False
    return True


def analyte_table() -> dict[str, str]:
    """Chinese and English analyte names → LOINC (to translate the hospital's local lab codes)."""
    text = resources.files("enclave.core.model").joinpath("vocabulary/analytes.csv").read_text("utf-8")
    table: dict[str, str] = {}
    for rec in csv.DictReader(text.splitlines()):
        table[rec["name_zh"]] = rec["loinc"]
        table[rec["name_en"]] = rec["loinc"]
    return table


def local_lab_codes(frames: dict[str, pl.DataFrame]) -> dict[str, str]:
    """``[codes.measurement]`` entries for LOCAL lab codes whose description names an analyte."""
    m = frames.get("measurement")
    if m is None or m.height == 0 or "description" not in m.columns:
        return {}
    names = analyte_table()
    out: dict[str, str] = {}
    for rec in m.filter(pl.col("code_system") == str(CodeSystem.LOCAL)).select("code", "description").unique().iter_rows():
        code, desc = rec
        if code and desc in names:
            out[code] = f"LOINC:{names[desc]}"
    return out


def toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def site_header(hospital: HospitalSpec, dialect: str, options: list[str]) -> list[str]:
    """The ``[site]`` table, preceded by the adapter's top-level ``options`` lines."""
    return [
        *options,
        "",
        "[site]",
        f"id = {toml_str(hospital.site_id)}",
        f"name = {toml_str(hospital.name)}",
        f"dialect = {toml_str(dialect)}",
        'encoding = "utf-8"',
        'linkage = "resident_id"',
        f"level = {toml_str(hospital.level)}",
        f"region_code = {toml_str(hospital.region_code)}",
        "",
    ]


def codes_section(frames: dict[str, pl.DataFrame]) -> list[str]:
    codes = local_lab_codes(frames)
    if not codes:
        return []
    return ["", "[codes.measurement]", *(f"{toml_str(k)} = {toml_str(v)}" for k, v in sorted(codes.items()))]


# --------------------------------------------------------------------------------------------
# FHIR serialization


def _date(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else value.isoformat()


def _datetime(value: dt.datetime | None, date: Any) -> str | None:
    if isinstance(value, dt.datetime) and not isinstance(date, str):
        return value.strftime("%Y-%m-%dT%H:%M:%S") + "+08:00"
    return _date(date)


def _money(url: str, value: float | None) -> dict | None:
    return None if value is None else {"url": url, "valueMoney": {"value": value, "currency": "CNY"}}


def _clean(obj: Any) -> Any:
    """Drop None values and empty containers (FHIR forbids empty elements)."""
    if isinstance(obj, dict):
        out = {k: _clean(v) for k, v in obj.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {})}
    if isinstance(obj, list):
        out = [_clean(v) for v in obj]
        return [v for v in out if v not in (None, [], {})]
    return obj


class _Builder:
    def __init__(self, hospital: HospitalSpec) -> None:
        self.local = local_system(hospital.site_id)

    def ref(self, rtype: str, value: Any) -> dict | None:
        return None if value is None else {"reference": f"{rtype}/{value}"}

    def concept(self, r: dict) -> dict | None:
        if r.get("code") is None:
            return None
        system = self.local if r.get("code_system") == str(CodeSystem.LOCAL) else SYSTEM_URI.get(
            r.get("code_system") or "", r.get("code_system"))
        return {"coding": [{"system": system, "code": r["code"], "display": r.get("description")}]}

    def person(self, r: dict, n: int) -> tuple[str, dict]:
        return "Patient", {
            "resourceType": "Patient",
            "id": r.get("site_patient_id"),
            "extension": [{"url": EXTENSIONS["ethnicity"], "valueCode": r["ethnicity"]}] if r.get("ethnicity") else [],
            "identifier": [
                {"system": RESIDENT_ID_SYSTEM, "value": r.get("resident_id")} if r.get("resident_id") else None,
                {"system": INSURANCE_SYSTEM, "value": r.get("insurance_no")} if r.get("insurance_no") else None,
                {"type": MRN_TYPE, "value": r.get("site_patient_id")} if r.get("site_patient_id") else None,
            ],
            "name": [{"use": "official", "text": r.get("name")}] if r.get("name") else [],
            "telecom": [{"system": "phone", "value": r.get("phone")}] if r.get("phone") else [],
            "gender": {"M": "male", "F": "female", "U": "unknown"}.get(r.get("sex") or ""),
            "birthDate": _date(r.get("birth_date")),
            "deceasedDateTime": _date(r.get("death_date")),
            "address": [{
                "text": r.get("address"),
                "extension": [{"url": EXTENSIONS["region_code"], "valueCode": r["region_code"]}]
                if r.get("region_code") else [],
            }],
        }

    def visit(self, r: dict, n: int) -> tuple[str, dict]:
        cls = {"outpatient": "AMB", "inpatient": "IMP", "emergency": "EMER"}.get(r.get("visit_type") or "")
        return "Encounter", {
            "resourceType": "Encounter",
            "id": r.get("site_visit_id"),
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls} if cls else None,
            "subject": self.ref("Patient", r.get("site_patient_id")),
            "period": {"start": _datetime(r.get("start_datetime"), r.get("start_date")),
                       "end": _datetime(r.get("end_datetime"), r.get("end_date"))},
            "serviceType": {"text": r.get("department")} if r.get("department") else None,
            "participant": [{"individual": self.ref("Practitioner", r.get("provider_id"))}],
            "serviceProvider": self.ref("Organization", r.get("care_site_id")),
            "extension": [_money(EXTENSIONS["total_cost"], r.get("total_cost")),
                          _money(EXTENSIONS["paid_by_patient"], r.get("paid_by_patient"))],
        }

    def condition(self, r: dict, n: int) -> tuple[str, dict]:
        primary = r.get("primary")
        return "Condition", {
            "resourceType": "Condition",
            "id": f"cond-{n}",
            "extension": [{"url": EXTENSIONS["primary"], "valueBoolean": primary}] if primary is not None else [],
            "code": self.concept(r),
            "subject": self.ref("Patient", r.get("site_patient_id")),
            "encounter": self.ref("Encounter", r.get("site_visit_id")),
            "onsetDateTime": _date(r.get("start_date")),
            "abatementDateTime": _date(r.get("end_date")),
        }

    def drug(self, r: dict, n: int) -> tuple[str, dict]:
        if r.get("code_system") == str(CodeSystem.CVX):
            return "Immunization", {
                "resourceType": "Immunization", "id": f"imm-{n}", "status": "completed",
                "vaccineCode": self.concept(r),
                "patient": self.ref("Patient", r.get("site_patient_id")),
                "encounter": self.ref("Encounter", r.get("site_visit_id")),
                "occurrenceDateTime": _date(r.get("start_date")),
                "route": {"text": r.get("route")} if r.get("route") else None,
            }
        return "MedicationRequest", {
            "resourceType": "MedicationRequest", "id": f"med-{n}", "status": "completed",
            "intent": "order",
            "extension": [_money(EXTENSIONS["cost"], r.get("cost"))],
            "medicationCodeableConcept": self.concept(r),
            "subject": self.ref("Patient", r.get("site_patient_id")),
            "encounter": self.ref("Encounter", r.get("site_visit_id")),
            "authoredOn": _date(r.get("start_date")),
            "dosageInstruction": [{"route": {"text": r.get("route")}}] if r.get("route") else [],
            "dispenseRequest": {
                "validityPeriod": {"end": _date(r.get("end_date"))},
                "quantity": {"value": r.get("quantity"), "unit": r.get("dose_unit")},
                "expectedSupplyDuration": {"value": r.get("days_supply"), "unit": "d"}
                if r.get("days_supply") is not None else None,
            },
        }

    def _observation(self, r: dict, n: int, category: str) -> dict:
        value, text = r.get("value"), r.get("value_text")
        quantity = value is not None or text is None
        return {
            "resourceType": "Observation", "id": f"obs-{category}-{n}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": category}]}],
            "code": self.concept(r),
            "subject": self.ref("Patient", r.get("site_patient_id")),
            "encounter": self.ref("Encounter", r.get("site_visit_id")),
            "effectiveDateTime": _datetime(r.get("datetime"), r.get("date")),
            "valueQuantity": {"value": value, "unit": r.get("unit")} if quantity else None,
            "valueString": None if quantity else text,
        }

    def measurement(self, r: dict, n: int) -> tuple[str, dict]:
        res = self._observation(r, n, "laboratory")
        res["extension"] = [_money(EXTENSIONS["cost"], r.get("cost"))]
        low, high = r.get("range_low"), r.get("range_high")
        res["referenceRange"] = [{"low": {"value": low} if low is not None else None,
                                  "high": {"value": high} if high is not None else None}]
        return "Observation", res

    def observation(self, r: dict, n: int) -> tuple[str, dict]:
        return "Observation", self._observation(r, n, "exam")

    def procedure(self, r: dict, n: int) -> tuple[str, dict]:
        return "Procedure", {
            "resourceType": "Procedure", "id": f"proc-{n}", "status": "completed",
            "extension": [_money(EXTENSIONS["cost"], r.get("cost"))],
            "code": self.concept(r),
            "subject": self.ref("Patient", r.get("site_patient_id")),
            "encounter": self.ref("Encounter", r.get("site_visit_id")),
            "performedDateTime": _date(r.get("date")),
        }

    def note(self, r: dict, n: int) -> tuple[str, dict]:
        text = r.get("text")
        return "DocumentReference", {
            "resourceType": "DocumentReference", "id": f"note-{n}", "status": "current",
            "subject": self.ref("Patient", r.get("site_patient_id")),
            "context": {"encounter": [self.ref("Encounter", r.get("site_visit_id"))]},
            "date": _date(r.get("date")),
            "description": r.get("title"),
            "content": [{"attachment": {
                "contentType": "text/plain; charset=utf-8",
                "data": base64.b64encode(text.encode("utf-8")).decode("ascii") if text is not None else None,
            }}],
        }

    def care_site(self, r: dict, n: int) -> tuple[str, dict]:
        return "Organization", {
            "resourceType": "Organization", "id": r.get("care_site_id"), "name": r.get("name"),
            "extension": [
                {"url": EXTENSIONS["level"], "valueString": r["level"]} if r.get("level") else None,
                {"url": EXTENSIONS["region_code"], "valueCode": r["region_code"]} if r.get("region_code") else None,
            ],
        }

    def provider(self, r: dict, n: int) -> tuple[str, dict]:
        return "Practitioner", {
            "resourceType": "Practitioner", "id": r.get("provider_id"),
            "name": [{"text": r.get("name")}] if r.get("name") else [],
            "qualification": [{"code": {"text": r.get("specialty")}}] if r.get("specialty") else [],
            "extension": [{"url": EXTENSIONS["care_site"],
                           "valueReference": self.ref("Organization", r.get("care_site_id"))}]
            if r.get("care_site_id") else [],
        }


KINDS = ("care_site", "provider", "person", "visit", "condition", "drug", "measurement",
         "observation", "procedure", "note")


def write(out_dir: Path, hospital: HospitalSpec, frames: dict[str, pl.DataFrame],
          defects: list[Defect]) -> WriteResult:
    """Write ``frames`` as NDJSON files under ``out_dir``; see the module docstring."""
    out_dir.mkdir(parents=True, exist_ok=True)
    builder = _Builder(hospital)
    plan = defect_plan(defects)
    planted: Counter[str] = Counter()
    lines: dict[str, list[str]] = {}
    truncated: dict[str, str] = {}
    for kind in KINDS:
        frame = frames.get(kind)
        if frame is None:
            continue
        for n, row in enumerate(frame.iter_rows(named=True)):
            wanted = plan.get((kind, n), [])
            for d in wanted:
                if apply_defect(kind, row, d, "{year}-02-30", n):
                    planted[str(d)] += 1
            rtype, resource = getattr(builder, kind)(row, n)
            line = json.dumps(_clean(resource), ensure_ascii=False)
            if DefectKind.TRUNCATED_LINE in wanted and rtype not in truncated:
                truncated[rtype] = line[: len(line) // 2]
                planted[str(DefectKind.TRUNCATED_LINE)] += 1
                continue
            lines.setdefault(rtype, []).append(line)
            if DefectKind.DUPLICATE_ROW in wanted:
                lines[rtype].append(line)
                planted[str(DefectKind.DUPLICATE_ROW)] += 1
    files = []
    for rtype in sorted(set(lines) | set(truncated)):
        path = out_dir / f"{rtype}.ndjson"
        body = "".join(f"{line}\n" for line in lines.get(rtype, []))
        if rtype in truncated:
            body += truncated[rtype]
        path.write_text(body, encoding="utf-8")
        files.append(path)
    return WriteResult(files=files, site_toml=site_toml(hospital, frames), planted=dict(planted))


def site_toml(hospital: HospitalSpec, frames: dict[str, pl.DataFrame]) -> str:
    lines = site_header(hospital, "fhir", [
        'patterns = ["*.ndjson"]',
        f"resident_id_system = {toml_str(RESIDENT_ID_SYSTEM)}",
        f"insurance_system = {toml_str(INSURANCE_SYSTEM)}",
    ]) + [
        "[code_systems]",
        *(f"{toml_str(uri)} = {toml_str(str(cs))}" for uri, cs in DEFAULT_CODE_SYSTEMS.items()),
        f"{toml_str(local_system(hospital.site_id))} = {toml_str(str(CodeSystem.LOCAL))}",
    ] + codes_section(frames)
    return "\n".join(lines) + "\n"
