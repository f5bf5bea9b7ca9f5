"""FHIR R4 adapter: Bundles (``*.json``) and Bulk-FHIR NDJSON (``*.ndjson``) → staged kinds.

Unit of counting (``read_counts``): one resource = one record. For a Bundle file that is each entry
(``_row`` = 1-based entry index); for NDJSON each line (``_row`` = line number; blank lines inside the
file are records too and are rejected as ``malformed_row``). A ``.json`` file that is a single
resource counts as one record; a file that is not valid JSON at all is one ``malformed_row`` record.

Resources → kinds: Patient→person, Encounter→visit, Condition→condition, Observation→measurement
(``valueQuantity`` or quantity components; one row per component) or observation (anything else, or
a category in :data:`OBSERVATION_CATEGORIES`), MedicationRequest→drug, Immunization→drug
(``vaccineCode``), Procedure→procedure, AllergyIntolerance→observation (as the FHIR-to-OMOP IG's
AllergyMap and the Synthea CSV path: the allergy/substance ``code``, or the first
``reaction.substance`` without one; date = ``onset``, else ``recordedDate``; ``value_text`` = the
code's display), DocumentReference→note (base64 attachment), Organization→care_site,
Practitioner→provider. Every other resource type → ``unparsed``/``unsupported_record``.

Code systems: ``coding.system`` decides the staged ``code_system`` of every coded resource, as an
OMOP vocabulary id (:data:`enclave.io.ingest.adapters.code_systems.FHIR_URIS` and their OIDs: SNOMED,
LOINC, RxNorm, CVX, ICD10CM, ICD10, ICD9CM, ICD10PCS, NDC, CPT4, HCPCS, UCUM, ICD10CN, ICD9Proc).
Of a CodeableConcept's codings that carry a code, the first whose system the enclave maps to
standard concepts (:data:`~enclave.io.ingest.adapters.code_systems.MAPPABLE`) wins, then the first of
another named system, then the first of any system, staged as ``LOCAL`` (so is a coding without a
system).

References resolve through the bundle's ``fullUrl`` (``urn:uuid:…``) or relative form
(``Patient/123``, history suffix dropped). Times keep the source wall clock (the offset is dropped).

Options (``SiteMapping.options``; all optional):

``patterns``               file globs when PATH is a folder (default ``["*.json", "*.ndjson"]``)
``resident_id_system``     identifier system of the resident ID (GB 11643)
``insurance_system``       identifier system of the medical insurance number
``mrn_type``               identifier type code of the MRN (default ``"MR"``); used when Patient.id
                           is absent
``[code_systems]``         coding system URI → vocabulary id (merged over
                           :data:`DEFAULT_CODE_SYSTEMS` and the OIDs); e.g. the hospital's own
                           system URI → ``LOCAL``
``[visit_classes]``        Encounter.class code → visit type (merged over :data:`VISIT_CLASSES`)
``[extensions]``           overrides of the extension URLs in :data:`EXTENSIONS`
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import polars as pl

from enclave.io.ingest.adapters.code_systems import FHIR_URI_ALIASES, FHIR_URIS, MAPPABLE
from enclave.io.ingest.mapping import SiteMapping
from enclave.io.ingest.normalize import (
    ISO_DATE,
    flag_failures,
    parse_date,
    parse_datetime,
    parse_number,
    parse_sex,
)
from enclave.io.ingest.staging import CodeSystem, RejectReason, StagedBatch, column_names

RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"

#: coding system URI → vocabulary id, one preferred URI per vocabulary
DEFAULT_CODE_SYSTEMS: dict[str, str] = FHIR_URIS

VISIT_CLASSES: dict[str, str] = {
    "AMB": "outpatient", "VR": "outpatient", "HH": "outpatient", "OBSENC": "outpatient",
    "IMP": "inpatient", "ACUTE": "inpatient", "NONAC": "inpatient", "SS": "inpatient",
    "PRENC": "outpatient", "EMER": "emergency",
}

FHIR_GENDER = {"male": "M", "female": "F", "unknown": "U", "other": "U"}

#: Observation categories whose results are observations even when they carry a quantity.
OBSERVATION_CATEGORIES = frozenset({"social-history", "survey", "exam", "therapy", "activity"})

_EXT = "http://enclave.example.cn/fhir/StructureDefinition/"
#: Extensions the enclave's demo hospitals use (overridable per site with ``[extensions]``).
EXTENSIONS: dict[str, str] = {
    "total_cost": _EXT + "encounter-total-cost",  # valueMoney (CNY) on Encounter
    "paid_by_patient": _EXT + "encounter-paid-by-patient",  # valueMoney on Encounter
    "cost": _EXT + "cost",  # valueMoney on MedicationRequest / Observation / Procedure
    "primary": _EXT + "condition-primary",  # valueBoolean on Condition
    "region_code": _EXT + "region-code",  # valueCode (GB/T 2260) on Address or Organization
    "ethnicity": _EXT + "ethnicity",  # valueCode (GB/T 3304) on Patient
    "level": _EXT + "hospital-level",  # valueString on Organization
    "care_site": _EXT + "practitioner-care-site",  # valueReference on Practitioner
}

SUPPORTED = (
    "Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "Immunization",
    "Procedure", "AllergyIntolerance", "DocumentReference", "Organization", "Practitioner",
)

_FHIR_DT = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$"
_SIX_DIGITS = re.compile(r"^\d{6}$")


# --------------------------------------------------------------------------------------------
# shared frame building (also used by the HL7 v2 adapter)


class Rows:
    """Raw rows per kind; each row is a dict of raw strings keyed by contract or source field."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[dict[str, Any]]] = {}

    def add(self, kind: str, file: str, row: int, values: dict[str, Any]) -> None:
        values["_file"] = file
        values["_row"] = row
        self.by_kind.setdefault(kind, []).append(values)

    def reject(self, file: str, row: int, reason: RejectReason, column: str | None) -> None:
        self.add("unparsed", file, row, {"_reject": str(reason), "_reject_column": column})


def raw_frame(rows: list[dict[str, Any]], typed: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """A frame of the raw rows: every column Utf8 unless typed (``_row`` is Int64)."""
    typed = {"_row": pl.Int64, **(typed or {})}
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    for c in ("_reject", "_reject_column"):
        cols.setdefault(c, None)
    schema = {c: typed.get(c, pl.Utf8) for c in cols}
    return pl.DataFrame({c: [r.get(c) for r in rows] for c in cols}, schema=schema)


def finish(
    kind: str,
    frame: pl.DataFrame,
    parsed: dict[str, tuple[str, pl.Expr, RejectReason | None]],
) -> pl.DataFrame:
    """Apply ``parsed`` (target → (raw column, expression, reason)), flag failures, keep the contract.

    A raw column whose value is present but whose parsed target is null gets ``reason`` (first
    failing check of a row wins; rows rejected earlier keep their reason).
    """
    for raw, _, _ in parsed.values():
        if raw not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Utf8).alias(raw))
    frame = frame.with_columns([expr.alias(target) for target, (_, expr, _) in parsed.items()])
    checks = [(raw, target, why) for target, (raw, _, why) in parsed.items() if why is not None]
    frame = flag_failures(frame, checks)
    keep = set(column_names(kind)) | {"_file", "_row", "_reject", "_reject_column"}
    return frame.select([c for c in frame.columns if c in keep])


def stage_rows(batch: StagedBatch, rows: Rows, finishers: dict[str, Any]) -> StagedBatch:
    for kind, raw in rows.by_kind.items():
        if kind == "unparsed":
            batch.add(kind, raw_frame(raw).select("_file", "_row", "_reject", "_reject_column"))
            continue
        frame = raw_frame(raw, {"primary": pl.Boolean})
        batch.add(kind, finishers[kind](frame))
    return batch


def source_files(path: Path, patterns: Iterable[str]) -> list[Path]:
    if path.is_file():
        return [path]
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in path.glob(pattern) if p.is_file())
    return sorted(found)


# --------------------------------------------------------------------------------------------
# safe JSON access (input may be any JSON value)


def _get(obj: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(key, int):
            obj = obj[key] if isinstance(obj, list) and -len(obj) <= key < len(obj) else None
        else:
            obj = obj.get(key) if isinstance(obj, dict) else None
        if obj is None:
            return None
    return obj


def _str(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return value if value.strip() else None
    return None


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _first_str(*values: Any) -> str | None:
    for v in values:
        s = _str(v)
        if s is not None:
            return s
    return None


def _extension(obj: Any, url: str) -> Any:
    for ext in _list(_get(obj, "extension")):
        if isinstance(ext, dict) and ext.get("url") == url:
            return ext
    return None


def _ext_value(obj: Any, url: str) -> str | None:
    ext = _extension(obj, url)
    if ext is None:
        return None
    return _first_str(
        _get(ext, "valueMoney", "value"), ext.get("valueDecimal"), ext.get("valueInteger"),
        ext.get("valueCode"), ext.get("valueString"), _get(ext, "valueCoding", "code"),
        _get(ext, "valueCodeableConcept", "coding", 0, "code"),
    )


def _concept_text(cc: Any) -> str | None:
    return _first_str(_get(cc, "text"), _get(cc, "coding", 0, "display"), _get(cc, "coding", 0, "code"))


def _human_name(names: Any) -> str | None:
    chosen = None
    for n in _list(names):
        if isinstance(n, dict) and (chosen is None or n.get("use") == "official"):
            chosen = n
            if n.get("use") == "official":
                break
    if chosen is None:
        return None
    if _str(chosen.get("text")):
        return chosen["text"]
    given = [g for g in map(_str, _list(chosen.get("given"))) if g]
    family = _str(chosen.get("family"))
    parts = [*given, family] if family else given
    return " ".join(parts) or None


# --------------------------------------------------------------------------------------------
# resource extraction


class _Extractor:
    def __init__(self, options: dict[str, Any]) -> None:
        self.resident_system = options.get("resident_id_system", RESIDENT_ID_SYSTEM)
        self.insurance_system = options.get("insurance_system")
        self.mrn_type = options.get("mrn_type", "MR")
        self.systems = {**DEFAULT_CODE_SYSTEMS, **FHIR_URI_ALIASES,
                        **{str(k): str(v) for k, v in (options.get("code_systems") or {}).items()}}
        self.ext = {**EXTENSIONS, **(options.get("extensions") or {})}
        self.refs: dict[str, str] = {}

    # references --------------------------------------------------------------------------
    def ref(self, obj: Any) -> str | None:
        r = _str(_get(obj, "reference"))
        if r is None:
            return None
        if r in self.refs:
            return self.refs[r]
        if r.startswith("urn:uuid:"):
            return r[9:] or None
        if r.startswith("urn:"):
            return r
        parts = [p for p in r.split("/") if p]
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        return parts[-1] if parts and not r.startswith("#") else None

    def coding(self, cc: Any) -> dict[str, str | None]:
        """The coding to stage (code_system, code, description); see the module docstring."""
        chosen: tuple[int, str, dict] | None = None
        for c in _list(_get(cc, "coding")):
            if not isinstance(c, dict) or _str(c.get("code")) is None:
                continue
            system = _str(c.get("system"))
            vocab = self.systems.get(system) if system is not None else None
            rank = 0 if vocab in MAPPABLE else 1 if vocab is not None else 2
            if chosen is None or rank < chosen[0]:
                chosen = (rank, vocab or CodeSystem.LOCAL.value, c)
            if rank == 0:
                break
        if chosen is None:
            return {"code_system": None, "code": None, "description": _concept_text(cc)}
        _, vocab, c = chosen
        return {
            "code_system": vocab,
            "code": _str(c.get("code")),
            "description": _first_str(c.get("display"), _get(cc, "text")),
        }

    # resources ---------------------------------------------------------------------------
    def patient(self, r: dict) -> list[tuple[str, dict]]:
        resident = insurance = mrn = None
        for ident in _list(r.get("identifier")):
            system, value = _str(_get(ident, "system")), _str(_get(ident, "value"))
            if value is None:
                continue
            types = {_str(c.get("code")) for c in _list(_get(ident, "type", "coding")) if isinstance(c, dict)}
            if system == self.resident_system:
                resident = resident or value
            elif self.insurance_system and system == self.insurance_system:
                insurance = insurance or value
            elif self.mrn_type in types:
                mrn = mrn or value
        phone = next(
            (_str(t.get("value")) for t in _list(r.get("telecom"))
             if isinstance(t, dict) and t.get("system") == "phone" and _str(t.get("value"))),
            None,
        )
        address = _get(r, "address", 0)
        text = _str(_get(address, "text"))
        if text is None and isinstance(address, dict):
            pieces = [*_list(address.get("line")), address.get("district"), address.get("city"),
                      address.get("state"), address.get("postalCode")]
            text = " ".join(p for p in map(_str, pieces) if p) or None
        region = _ext_value(address, self.ext["region_code"]) or _str(_get(address, "district"))
        values = {
            "site_patient_id": _str(r.get("id")) or mrn,
            "resident_id": resident,
            "insurance_no": insurance,
            "name": _human_name(r.get("name")),
            "gender": _str(r.get("gender")),
            "birthDate": _str(r.get("birthDate")),
            "deceasedDateTime": _str(r.get("deceasedDateTime")),
            "phone": phone,
            "address": text,
            "region_code": region if region and _SIX_DIGITS.match(region) else None,
            "ethnicity": _ext_value(r, self.ext["ethnicity"]),
        }
        return [("person", values)]

    def encounter(self, r: dict) -> list[tuple[str, dict]]:
        cls = _get(r, "class")
        values = {
            "site_visit_id": _str(r.get("id")) or _str(_get(r, "identifier", 0, "value")),
            "site_patient_id": self.ref(r.get("subject")),
            "class": _first_str(_get(cls, "code"), _get(cls, "coding", 0, "code")),
            "period.start": _str(_get(r, "period", "start")),
            "period.end": _str(_get(r, "period", "end")),
            "department": _concept_text(r.get("serviceType")),
            "provider_id": self.ref(_get(r, "participant", 0, "individual")),
            "care_site_id": self.ref(r.get("serviceProvider")),
            "extension.total_cost": _ext_value(r, self.ext["total_cost"]),
            "extension.paid_by_patient": _ext_value(r, self.ext["paid_by_patient"]),
        }
        return [("visit", values)]

    def _clinical(self, r: dict, patient_key: str = "subject") -> dict:
        return {
            "site_patient_id": self.ref(r.get(patient_key)),
            "site_visit_id": self.ref(r.get("encounter")),
        }

    def condition(self, r: dict) -> list[tuple[str, dict]]:
        primary = _get(_extension(r, self.ext["primary"]), "valueBoolean")
        values = {
            **self._clinical(r),
            **self.coding(r.get("code")),
            "onsetDateTime": _first_str(r.get("onsetDateTime"), _get(r, "onsetPeriod", "start"),
                                        r.get("recordedDate")),
            "abatementDateTime": _first_str(r.get("abatementDateTime"), _get(r, "abatementPeriod", "end")),
            "primary": primary if isinstance(primary, bool) else None,
        }
        return [("condition", values)]

    def observation(self, r: dict) -> list[tuple[str, dict]]:
        base = {
            **self._clinical(r),
            "effectiveDateTime": _first_str(r.get("effectiveDateTime"), _get(r, "effectivePeriod", "start"),
                                            r.get("effectiveInstant"), r.get("issued")),
            "extension.cost": _ext_value(r, self.ext["cost"]),
            "referenceRange.low": _str(_get(r, "referenceRange", 0, "low", "value")),
            "referenceRange.high": _str(_get(r, "referenceRange", 0, "high", "value")),
        }
        categories = {
            _str(c.get("code")) for cat in _list(r.get("category")) if isinstance(cat, dict)
            for c in _list(cat.get("coding")) if isinstance(c, dict)
        }
        observation_only = bool(categories & OBSERVATION_CATEGORIES)
        parts = [r] + [c for c in _list(r.get("component")) if isinstance(c, dict)]
        quantities = [p for p in parts if isinstance(p.get("valueQuantity"), dict)]
        rows = []
        for part in quantities if quantities and not observation_only else [r]:
            q = part.get("valueQuantity")
            values = {**base, **self.coding(part.get("code"))}
            values["valueQuantity.value"] = _str(_get(q, "value"))
            values["unit"] = _first_str(_get(q, "unit"), _get(q, "code"))
            text = _first_str(
                r.get("valueString"), _concept_text(r.get("valueCodeableConcept")),
                "true" if r.get("valueBoolean") is True else "false" if r.get("valueBoolean") is False else None,
            )
            if text is not None:
                values["value_text"] = text
            if q is not None and not observation_only:
                rows.append(("measurement", values))
            else:
                values.pop("referenceRange.low"), values.pop("referenceRange.high")
                values.pop("extension.cost")
                rows.append(("observation", values))
        return rows

    def medication_request(self, r: dict) -> list[tuple[str, dict]]:
        dispense = r.get("dispenseRequest")
        supply = _get(dispense, "expectedSupplyDuration")
        values = {
            **self._clinical(r),
            **self.coding(r.get("medicationCodeableConcept")),
            "authoredOn": _str(r.get("authoredOn")),
            "validityPeriod.end": _str(_get(dispense, "validityPeriod", "end")),
            "quantity.value": _str(_get(dispense, "quantity", "value")),
            "dose_unit": _first_str(_get(dispense, "quantity", "unit"), _get(dispense, "quantity", "code")),
            "expectedSupplyDuration": _str(_get(supply, "value")),
            "route": _concept_text(_get(r, "dosageInstruction", 0, "route")),
            "extension.cost": _ext_value(r, self.ext["cost"]),
        }
        return [("drug", values)]

    def immunization(self, r: dict) -> list[tuple[str, dict]]:
        values = {
            **self._clinical(r, "patient"),
            **self.coding(r.get("vaccineCode")),
            "authoredOn": _first_str(r.get("occurrenceDateTime"), r.get("recorded")),
            "route": _concept_text(r.get("route")),
        }
        return [("drug", values)]

    def procedure(self, r: dict) -> list[tuple[str, dict]]:
        values = {
            **self._clinical(r),
            **self.coding(r.get("code")),
            "performedDateTime": _first_str(r.get("performedDateTime"), _get(r, "performedPeriod", "start")),
            "extension.cost": _ext_value(r, self.ext["cost"]),
        }
        return [("procedure", values)]

    def allergy_intolerance(self, r: dict) -> list[tuple[str, dict]]:
        coded = self.coding(r.get("code"))
        if coded["code"] is None:
            substance = self.coding(_get(r, "reaction", 0, "substance"))
            coded = substance if substance["code"] is not None else coded
        values = {
            **self._clinical(r, "patient"),
            **coded,
            "effectiveDateTime": _first_str(r.get("onsetDateTime"), _get(r, "onsetPeriod", "start"),
                                            r.get("recordedDate")),
        }
        values["value_text"] = values["description"]
        return [("observation", values)]

    def document_reference(self, r: dict) -> list[tuple[str, dict]]:
        values = {
            "site_patient_id": self.ref(r.get("subject")),
            "site_visit_id": self.ref(_get(r, "context", "encounter", 0)),
            "date.raw": _first_str(r.get("date"), _get(r, "context", "period", "start")),
            "title": _first_str(r.get("description"), _concept_text(r.get("type")),
                                _get(r, "content", 0, "attachment", "title")),
        }
        data = _get(r, "content", 0, "attachment", "data")
        if isinstance(data, str):
            try:
                values["text"] = base64.b64decode(data, validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                values["_reject"] = str(RejectReason.MALFORMED_ROW)
                values["_reject_column"] = "content.attachment.data"
        return [("note", values)]

    def organization(self, r: dict) -> list[tuple[str, dict]]:
        address = _get(r, "address", 0)
        region = (_ext_value(r, self.ext["region_code"]) or _ext_value(address, self.ext["region_code"])
                  or _str(_get(address, "district")))
        values = {
            "care_site_id": _str(r.get("id")),
            "name": _str(r.get("name")),
            "level": _ext_value(r, self.ext["level"]),
            "region_code": region if region and _SIX_DIGITS.match(region) else None,
        }
        return [("care_site", values)]

    def practitioner(self, r: dict) -> list[tuple[str, dict]]:
        values = {
            "provider_id": _str(r.get("id")),
            "name": _human_name(r.get("name")),
            "specialty": _concept_text(_get(r, "qualification", 0, "code")),
            "care_site_id": self.ref(_get(_extension(r, self.ext["care_site"]), "valueReference")),
        }
        return [("provider", values)]

    def extract(self, resource: dict) -> list[tuple[str, dict]]:
        handler = {
            "Patient": self.patient, "Encounter": self.encounter, "Condition": self.condition,
            "Observation": self.observation, "MedicationRequest": self.medication_request,
            "Immunization": self.immunization, "Procedure": self.procedure,
            "AllergyIntolerance": self.allergy_intolerance, "DocumentReference": self.document_reference, "Organization": self.organization,
            "Practitioner": self.practitioner,
        }[resource["resourceType"]]
        return handler(resource)


# --------------------------------------------------------------------------------------------
# reading files


def _records(data: bytes, name: str, encoding: str) -> tuple[list[tuple[int, Any]], bool]:
    """(record number, parsed JSON or an exception marker) per record; True when a bundle."""
    if name.endswith((".ndjson", ".jsonl")):
        lines = data.split(b"\n")
        while lines and not lines[-1].strip():
            lines.pop()
        out = []
        for i, line in enumerate(lines, start=1):
            out.append((i, _decode_json(line, encoding)))
        return out, False
    doc = _decode_json(data, encoding)
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle" and "entry" in doc:
        entries = doc.get("entry")
        if not isinstance(entries, list):
            return [(1, _BAD)], True
        return [(i, e) for i, e in enumerate(entries, start=1)], True
    if doc is _BAD and not data.strip():
        return [], False
    return [(1, doc)], False


class _Bad:
    pass


_BAD = _Bad()


def _decode_json(raw: bytes, encoding: str) -> Any:
    try:
        text = raw.decode(encoding)
        return json.loads(text.lstrip("\ufeff"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _BAD


def stage(path: Path, mapping: SiteMapping) -> StagedBatch:
    """Stage every FHIR file under ``path`` (see the module docstring)."""
    options = mapping.options
    batch = StagedBatch(site=mapping.site_id)
    rows = Rows()
    for file in source_files(path, options.get("patterns", ["*.json", "*.ndjson"])):
        name = str(file)
        records, is_bundle = _records(file.read_bytes(), file.name.lower(), mapping.encoding)
        batch.read_counts[name] = len(records)
        extractor = _Extractor(options)
        if is_bundle:
            for _, entry in records:
                rid, url = _str(_get(entry, "resource", "id")), _str(_get(entry, "fullUrl"))
                if rid and url:
                    extractor.refs[url] = rid
        for number, record in records:
            resource = _get(record, "resource") if is_bundle else record
            rtype = _get(resource, "resourceType")
            if not isinstance(rtype, str):
                rows.reject(name, number, RejectReason.MALFORMED_ROW, None)
            elif rtype not in SUPPORTED:
                rows.reject(name, number, RejectReason.UNSUPPORTED_RECORD, "resourceType")
            else:
                try:
                    produced = extractor.extract(resource)
                except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
                        RecursionError):
                    produced = []
                if not produced:
                    rows.reject(name, number, RejectReason.MALFORMED_ROW, rtype)
                for kind, values in produced:
                    rows.add(kind, name, number, values)
    classes = {**VISIT_CLASSES, **{str(k).upper(): v for k, v in (options.get("visit_classes") or {}).items()}}
    return stage_rows(batch, rows, {**_FINISHERS, "visit": _finish_visit_factory(classes)})


# --------------------------------------------------------------------------------------------
# vectorized normalization per kind


def fhir_date(raw: str) -> pl.Expr:
    s = pl.col(raw).str.strip_chars()
    return pl.when(s.str.contains(_FHIR_DT)).then(parse_date(s.str.slice(0, 10), [ISO_DATE]))


def fhir_datetime(raw: str) -> pl.Expr:
    s = pl.col(raw).str.strip_chars()
    hm = s.str.extract(r"T(\d{2}:\d{2})", 1)
    sec = s.str.extract(r"T\d{2}:\d{2}:(\d{2})", 1).fill_null("00")
    text = s.str.slice(0, 10) + pl.lit(" ") + hm + pl.lit(":") + sec
    return pl.when(s.str.contains(_FHIR_DT) & hm.is_not_null()).then(
        parse_datetime(text, ["%Y-%m-%d %H:%M:%S"])
    )


def _number(raw: str) -> pl.Expr:
    return parse_number(pl.col(raw))


def _integer(raw: str) -> pl.Expr:
    n = parse_number(pl.col(raw))
    return pl.when(n.is_finite() & (n == n.round(0)) & (n.abs() < 1e15)).then(n).cast(pl.Int64)


_D, _N = RejectReason.INVALID_DATE, RejectReason.INVALID_NUMBER


def _clinical_finish(kind: str, date_raw: str, extra: dict) -> Any:
    def run(frame: pl.DataFrame) -> pl.DataFrame:
        target = "start_date" if kind in ("condition", "drug") else "date"
        parsed = {target: (date_raw, fhir_date(date_raw), _D), **extra}
        if kind == "measurement":
            parsed["datetime"] = (date_raw, fhir_datetime(date_raw), None)
        return finish(kind, frame, parsed)

    return run


def _finish_person(frame: pl.DataFrame) -> pl.DataFrame:
    return finish("person", frame, {
        "birth_date": ("birthDate", fhir_date("birthDate"), _D),
        "death_date": ("deceasedDateTime", fhir_date("deceasedDateTime"), _D),
        "sex": ("gender", parse_sex(pl.col("gender"), FHIR_GENDER), RejectReason.INVALID_SEX),
    })


def finish_visit(frame: pl.DataFrame, classes: dict[str, str], cls: str, start: str, end: str,
                 date: Callable[[str], pl.Expr], datetime: Callable[[str], pl.Expr],
                 costs: dict[str, tuple[str, pl.Expr, RejectReason | None]]) -> pl.DataFrame:
    """:func:`finish` of visits (FHIR Encounters, HL7 PV1 segments): the visit type from the class
    column ``cls`` (its code upper-cased, mapped by ``classes``), the period from the ``start`` and
    ``end`` columns as ``date`` and ``datetime`` read them, then the ``costs``."""
    code = pl.col(cls).str.strip_chars().str.to_uppercase()
    visit_type = code.replace_strict(list(classes), list(classes.values()), default=None,
                                     return_dtype=pl.Utf8)
    return finish("visit", frame, {
        "visit_type": (cls, visit_type, None),
        "start_date": (start, date(start), _D),
        "start_datetime": (start, datetime(start), None),
        "end_date": (end, date(end), _D),
        "end_datetime": (end, datetime(end), None),
        **costs,
    })


def _finish_visit_factory(classes: dict[str, str]) -> Any:
    def run(frame: pl.DataFrame) -> pl.DataFrame:
        costs = {
            "total_cost": ("extension.total_cost", _number("extension.total_cost"), _N),
            "paid_by_patient": ("extension.paid_by_patient", _number("extension.paid_by_patient"), _N),
        }
        return finish_visit(frame, classes, "class", "period.start", "period.end", fhir_date,
                            fhir_datetime, costs)

    return run


def _finish_note(frame: pl.DataFrame) -> pl.DataFrame:
    return finish("note", frame, {"date": ("date.raw", fhir_date("date.raw"), _D)})


def _passthrough(kind: str) -> Any:
    return lambda frame: finish(kind, frame, {})


_FINISHERS: dict[str, Any] = {
    "person": _finish_person,
    "visit": _finish_visit_factory(VISIT_CLASSES),
    "condition": _clinical_finish("condition", "onsetDateTime", {
        "end_date": ("abatementDateTime", fhir_date("abatementDateTime"), _D)}),
    "drug": _clinical_finish("drug", "authoredOn", {
        "end_date": ("validityPeriod.end", fhir_date("validityPeriod.end"), _D),
        "quantity": ("quantity.value", _number("quantity.value"), _N),
        "days_supply": ("expectedSupplyDuration", _integer("expectedSupplyDuration"), _N),
        "cost": ("extension.cost", _number("extension.cost"), _N)}),
    "measurement": _clinical_finish("measurement", "effectiveDateTime", {
        "value": ("valueQuantity.value", _number("valueQuantity.value"), _N),
        "range_low": ("referenceRange.low", _number("referenceRange.low"), _N),
        "range_high": ("referenceRange.high", _number("referenceRange.high"), _N),
        "cost": ("extension.cost", _number("extension.cost"), _N)}),
    "observation": _clinical_finish("observation", "effectiveDateTime", {
        "value": ("valueQuantity.value", _number("valueQuantity.value"), _N)}),
    "procedure": _clinical_finish("procedure", "performedDateTime", {
        "cost": ("extension.cost", _number("extension.cost"), _N)}),
    "note": _finish_note,
    "care_site": _passthrough("care_site"),
    "provider": _passthrough("provider"),
}
