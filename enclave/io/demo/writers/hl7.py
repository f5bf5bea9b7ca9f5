"""Demo writer: one Chinese demo hospital as HL7 v2.5 batch files (``adt.hl7`` and ``oru.hl7``).

``adt.hl7`` holds one ADT^A04 per visit: the patient's first message carries the full PID
(PID-3 ``MR`` / ``NNCHN`` resident ID / ``HC`` insurance number, PID-5 name, PID-7 birth date,
PID-8 sex, PID-11 address with the GB/T 2260 code in XAD.9, PID-13 phone, PID-22 ethnicity, PID-29
death), later ones a PID with identifiers only; then PV1 (PV1-2 class, PV1-3 department^^^care
site, PV1-7 provider, PV1-19 visit number, PV1-44/45 admit/discharge, PV1-47 total charges, PV1-49
paid by the patient) and one DG1 per condition (DG1-3 code^text^I10CN, DG1-5 date, DG1-15 priority
1 = primary). A patient without visits gets an ADT^A04 with the PID only. ``oru.hl7`` holds one
ORU^R01 per patient and visit: identifiers-only PID and PV1, an OBR, and one OBX per measurement
(NM, or ST for a text-only result, which the adapter stages as an observation).

Not expressed in HL7 (ignored): drug, procedure, observation, note, care_site and provider frames,
condition end dates and measurement costs.

Defects: value-level ones via :func:`enclave.io.demo.writers.fhir.apply_defect` (impossible date
``20230230``); DUPLICATE_ROW writes the segment (DG1, OBX) twice, or for a person/visit an extra
message with its PID/PV1; TRUNCATED_LINE moves the row's own message to the end of its file and cuts
it inside the MSH, before the message type (one per file).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from enclave.io.demo.writers import Defect, DefectKind, HospitalSpec, WriteResult
from enclave.io.demo.writers.fhir import (
    apply_defect,
    codes_section,
    defect_plan,
    site_header,
    toml_str,
)
from enclave.io.ingest.staging import CodeSystem

SYSTEM_NAME = {str(CodeSystem.ICD10_CN): "I10CN", str(CodeSystem.ICD10): "I10",
               str(CodeSystem.LOINC): "LN", str(CodeSystem.SNOMED): "SCT", str(CodeSystem.LOCAL): "L"}
CLASS_CODE = {"outpatient": "O", "inpatient": "I", "emergency": "E"}
MESSAGE_TIME = "20240101000000"


def escape(value: Any) -> str:
    """ER7 text of a value with the standard separators ``|^~\\&`` escaped."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, dt.datetime):
        text = value.strftime("%Y%m%d%H%M%S")
    elif isinstance(value, dt.date):
        text = value.strftime("%Y%m%d")
    else:
        text = str(value)
    text = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    text = text.replace("~", "\\R\\").replace("&", "\\T\\")
    return text.replace("\r", " ").replace("\n", "\\.br\\")


def segment(name: str, fields: dict[int, str]) -> str:
    last = max(fields) if fields else 0
    return "|".join([name, *(fields.get(i, "") for i in range(1, last + 1))])


def _ts(datetime_value: Any, date_value: Any) -> Any:
    if isinstance(datetime_value, dt.datetime) and isinstance(date_value, dt.date):
        return datetime_value
    return date_value


class _Writer:
    def __init__(self, hospital: HospitalSpec) -> None:
        self.site = hospital.site_id
        self.control = 0

    def msh(self, mtype: str) -> str:
        self.control += 1
        return segment("MSH", {1: "^~\\&", 2: escape(self.site), 3: escape(self.site), 4: "ENCLAVE",
                               5: "ENCLAVE", 6: MESSAGE_TIME, 8: mtype,
                               9: f"{self.site}-{self.control:08d}", 10: "P", 11: "2.5",
                               16: "CHN", 17: "UNICODE UTF-8"})

    def pid(self, p: dict, full: bool) -> str:
        ids = []
        if p.get("site_patient_id") is not None:
            ids.append(f"{escape(p['site_patient_id'])}^^^{escape(self.site)}^MR")
        if p.get("resident_id") is not None:
            ids.append(f"{escape(p['resident_id'])}^^^CHN^NNCHN")
        if p.get("insurance_no") is not None:
            ids.append(f"{escape(p['insurance_no'])}^^^^HC")
        fields = {1: "1", 3: "~".join(ids)}
        if full:
            address = escape(p.get("address"))
            if p.get("region_code"):
                address += f"^^^^^^H^^{escape(p['region_code'])}"
            fields.update({5: escape(p.get("name")), 7: escape(p.get("birth_date")),
                           8: escape(p.get("sex")), 11: address, 13: escape(p.get("phone")),
                           22: escape(p.get("ethnicity")), 29: escape(p.get("death_date"))})
            if p.get("death_date") is not None:
                fields[30] = "Y"
        return segment("PID", fields)

    def pv1(self, v: dict, full: bool) -> str:
        fields = {1: "1", 19: escape(v.get("site_visit_id"))}
        if full:
            location = escape(v.get("department"))
            if v.get("care_site_id"):
                location += f"^^^{escape(v['care_site_id'])}"
            fields.update({2: CLASS_CODE.get(v.get("visit_type") or "", ""), 3: location,
                           7: escape(v.get("provider_id")),
                           44: escape(_ts(v.get("start_datetime"), v.get("start_date"))),
                           45: escape(_ts(v.get("end_datetime"), v.get("end_date"))),
                           47: escape(v.get("total_cost")), 49: escape(v.get("paid_by_patient"))})
        return segment("PV1", fields)

    def code(self, r: dict) -> str:
        if r.get("code") is None:
            return ""
        system = SYSTEM_NAME.get(r.get("code_system") or "", escape(r.get("code_system")))
        return f"{escape(r['code'])}^{escape(r.get('description'))}^{system}"

    def dg1(self, c: dict, n: int) -> str:
        primary = c.get("primary")
        return segment("DG1", {1: str(n), 3: self.code(c), 4: escape(c.get("description")),
                               5: escape(c.get("start_date")), 6: "F",
                               15: "" if primary is None else ("1" if primary else "2")})

    def obx(self, m: dict, n: int) -> str:
        numeric = m.get("value") is not None or m.get("value_text") is None
        low, high = m.get("range_low"), m.get("range_high")
        if low is not None and high is not None:
            ref = f"{escape(low)}-{escape(high)}"
        elif low is not None:
            ref = f">{escape(low)}"
        elif high is not None:
            ref = f"<{escape(high)}"
        else:
            ref = ""
        return segment("OBX", {1: str(n), 2: "NM" if numeric else "ST", 3: self.code(m),
                               5: escape(m.get("value") if numeric else m.get("value_text")),
                               6: escape(m.get("unit")), 7: ref, 11: "F",
                               14: escape(_ts(m.get("datetime"), m.get("date")))})


def _rows(frames: dict[str, pl.DataFrame], kind: str) -> list[dict]:
    frame = frames.get(kind)
    return [] if frame is None else list(frame.iter_rows(named=True))


def _planted_rows(
    frames: dict[str, pl.DataFrame], defects: list[Defect], planted: Counter[str],
) -> tuple[dict[str, list[dict]], dict[str, list[set[DefectKind]]]]:
    """The rows of the kinds HL7 carries, with their value-level defects planted (counted in
    ``planted``), and the defects each row wants (the writer plants the record-level ones)."""
    plan = defect_plan(defects)
    rows: dict[str, list[dict]] = {}
    flags: dict[str, list[set[DefectKind]]] = {}
    for kind in ("person", "visit", "condition", "measurement"):
        rows[kind] = _rows(frames, kind)
        flags[kind] = []
        for n, row in enumerate(rows[kind]):
            wanted = set(plan.get((kind, n), []))
            for d in wanted:
                if apply_defect(kind, row, d, "{year}0230", n):
                    planted[str(d)] += 1
            flags[kind].append(wanted)
    return rows, flags


def _by_message(rows: list[dict], flags: list[set[DefectKind]]) -> dict[tuple, list[int]]:
    """The numbers of ``rows`` grouped by (patient, visit), one message a group; a row whose line
    is to be truncated gets a message of its own (its key adds its number)."""
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        key = (row.get("site_patient_id"), row.get("site_visit_id"))
        if DefectKind.TRUNCATED_LINE in flags[i]:
            key = (*key, i)  # a message of its own
        groups.setdefault(key, []).append(i)
    return groups


def write(out_dir: Path, hospital: HospitalSpec, frames: dict[str, pl.DataFrame],
          defects: list[Defect]) -> WriteResult:
    """Write ``frames`` as ``adt.hl7`` and ``oru.hl7`` under ``out_dir``; see the module docstring."""
    out_dir.mkdir(parents=True, exist_ok=True)
    w = _Writer(hospital)
    planted: Counter[str] = Counter()
    rows, flags = _planted_rows(frames, defects, planted)

    adt: list[list[str]] = []
    oru: list[list[str]] = []
    tail: dict[str, list[str]] = {}  # file → the message to truncate

    def emit(target: list[list[str]], name: str, message: list[str], wanted: set[DefectKind]) -> None:
        if DefectKind.TRUNCATED_LINE in wanted and name not in tail:
            tail[name] = message
            planted[str(DefectKind.TRUNCATED_LINE)] += 1
        else:
            target.append(message)

    persons = {p["site_patient_id"]: p for p in rows["person"] if p.get("site_patient_id") is not None}
    conditions = _by_message(rows["condition"], flags["condition"])

    def dg1s(key: tuple) -> list[str]:
        out: list[str] = []
        for i in conditions.pop(key, []):
            out.append(w.dg1(rows["condition"][i], len(out) + 1))
            if DefectKind.DUPLICATE_ROW in flags["condition"][i]:
                out.append(w.dg1(rows["condition"][i], len(out) + 1))
                planted[str(DefectKind.DUPLICATE_ROW)] += 1
        return out

    seen_full: set = set()
    visits_by_patient: dict[Any, list[int]] = {}
    for i, v in enumerate(rows["visit"]):
        visits_by_patient.setdefault(v.get("site_patient_id"), []).append(i)
    for n, p in enumerate(rows["person"]):
        wanted = flags["person"][n]
        pid = p.get("site_patient_id")
        has_visits = pid is not None and pid in visits_by_patient and pid not in seen_full
        if not has_visits or DefectKind.TRUNCATED_LINE in wanted:
            # else the full PID travels with the patient's first visit below
            emit(adt, "adt", [w.msh("ADT^A04^ADT_A01"), w.pid(p, True)], wanted)
            seen_full.add(pid)
        if DefectKind.DUPLICATE_ROW in wanted:
            adt.append([w.msh("ADT^A04^ADT_A01"), w.pid(p, True)])
            planted[str(DefectKind.DUPLICATE_ROW)] += 1
    for i, v in enumerate(rows["visit"]):
        wanted = flags["visit"][i]
        pid = v.get("site_patient_id")
        person = persons.get(pid, {"site_patient_id": pid})
        full = pid in persons and pid not in seen_full
        seen_full.add(pid)
        key = (pid, v.get("site_visit_id"))
        message = [w.msh("ADT^A04^ADT_A01"), w.pid(person, full), w.pv1(v, True), *dg1s(key)]
        emit(adt, "adt", message, wanted)
        if DefectKind.DUPLICATE_ROW in wanted:
            adt.append([w.msh("ADT^A04^ADT_A01"), w.pid(person, False), w.pv1(v, True)])
            planted[str(DefectKind.DUPLICATE_ROW)] += 1
    for key, indexes in list(conditions.items()):
        pid, vid = key[0], key[1]
        head = [w.msh("ADT^A04^ADT_A01"), w.pid({"site_patient_id": pid}, False)]
        if vid is not None:
            head.append(w.pv1({"site_visit_id": vid}, False))
        emit(adt, "adt", head + dg1s(key), flags["condition"][indexes[0]] if len(key) == 3 else set())

    labs = _by_message(rows["measurement"], flags["measurement"])
    for key, indexes in labs.items():
        pid, vid = key[0], key[1]
        message = [w.msh("ORU^R01^ORU_R01"), w.pid({"site_patient_id": pid}, False)]
        if vid is not None:
            message.append(w.pv1({"site_visit_id": vid}, False))
        message.append(segment("OBR", {1: "1", 4: "LAB^检验^L"}))
        for i in indexes:
            message.append(w.obx(rows["measurement"][i], len(message)))
            if DefectKind.DUPLICATE_ROW in flags["measurement"][i]:
                message.append(w.obx(rows["measurement"][i], len(message)))
                planted[str(DefectKind.DUPLICATE_ROW)] += 1
        emit(oru, "oru", message, flags["measurement"][indexes[0]] if len(key) == 3 else set())

    files = []
    for name, messages in (("adt", adt), ("oru", oru)):
        if not messages and name not in tail:
            continue
        parts = [segment("FHS", {1: "^~\\&", 2: escape(hospital.site_id), 6: MESSAGE_TIME}),
                 segment("BHS", {1: "^~\\&", 2: escape(hospital.site_id), 6: MESSAGE_TIME})]
        for message in messages:
            parts.extend(message)
        if name in tail:
            msh = tail[name][0]
            parts.append(msh[: msh.index("|ADT^") if "|ADT^" in msh else msh.index("|ORU^")].rsplit("|", 2)[0])
        else:
            parts += [f"BTS|{len(messages)}", "FTS|1"]
        path = out_dir / f"{name}.hl7"
        path.write_bytes(("\r".join(parts) + "\r").encode("utf-8"))
        files.append(path)
    return WriteResult(files=files, site_toml=site_toml(hospital, frames), planted=dict(planted))


def site_toml(hospital: HospitalSpec, frames: dict[str, pl.DataFrame]) -> str:
    lines = site_header(hospital, "hl7v2", [
        'patterns = ["*.hl7"]',
        'adt_events = ["A01", "A04", "A08"]',
        'resident_id_types = ["NNCHN"]',
        'insurance_types = ["HC"]',
        'mrn_type = "MR"',
    ]) + [
        "[code_systems]",
        *(f"{toml_str(name)} = {toml_str(cs)}" for cs, name in SYSTEM_NAME.items()),
    ] + codes_section(frames)
    return "\n".join(lines) + "\n"
