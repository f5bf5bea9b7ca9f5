"""HL7 v2 adapter: files of ER7 messages (single messages or FHS/BHS batches) → staged kinds.

Segments are separated by ``\\r``, ``\\n`` or ``\\r\\n`` (MLLP framing bytes are ignored). The field
separator and encoding characters are read from each MSH, and escape sequences (``\\F\\`` ``\\S\\``
``\\T\\`` ``\\R\\`` ``\\E\\`` ``\\Xhh\\``) are decoded in every value.

Unit of counting (``read_counts``): one message = one record (``_row`` = 1-based message number in
the file). Batch envelope segments (FHS, BHS, BTS, FTS) are not records. Segments that stand outside
any message (no MSH before them) form one record per run and are rejected as ``malformed_row``, as are
messages whose MSH is broken (no field separator or encoding characters, no message type) or that
cannot be decoded. Messages of types not stored → ``unsupported_record``.

Staged rows: one per data segment of a stored message — PID → person, PV1 → visit, DG1 → condition,
PR1 → procedure, OBX → measurement (value types NM and SN) or observation (any other type). A PID
that carries nothing but identifiers (PID-3), and a PV1 without patient class and admit time, only
give their identifiers to the segments after them; they are staged themselves only when the message
has no other data row. A stored message without any data segment → ``missing_required`` (``PID``).

Code systems: the coded fields read (DG1-3, PR1-3, OBX-3; CE/CWE) stage their declared coding
system as an OMOP vocabulary id: component 3 names the system of the identifier in component 1.
When component 1 is empty, or its system is not one the enclave maps to standard concepts
(:data:`~enclave.io.ingest.adapters.code_systems.MAPPABLE`) but the alternate's is, the alternate
identifier (component 4) is staged with its alternate coding system (component 6) and text
(component 5, else component 2). Names follow HL7 table 0396
(:data:`enclave.io.ingest.adapters.code_systems.HL7_NAMES`): ``LN`` → LOINC, ``SCT``/``SNM`` → SNOMED,
``I10`` → ICD10 (WHO), ``I10C`` → ICD10CM, ``I10P`` → ICD10PCS, ``I9C`` → ICD9CM, ``RXNORM``,
``CVX``, ``NDC``, ``C4`` → CPT4, ``I10CN`` → ICD10CN, ``I9CCN`` → ICD9Proc, OMOP spellings as
themselves. A local system (``L``, ``99zzz``) or any name not known → LOCAL; a code without a
coding system → LOCAL (DG1/PR1: ``diagnosis_default_system`` when set).

Options (``SiteMapping.options``; all optional):

``patterns``                 file globs when PATH is a folder (default ``["*.hl7", "*.txt", "*.er7"]``)
``adt_events``               ADT trigger events stored (default A01, A04, A08)
``resident_id_types``        PID-3 identifier type codes (CX.5) of the resident ID (default ``["NNCHN"]``)
``insurance_types``          PID-3 identifier type codes of the insurance number (default ``["HC"]``)
``mrn_type``                 identifier type code of the MRN (default ``"MR"``); without one the first
                             identifier that is neither a resident ID nor an insurance number is used
``diagnosis_default_system`` vocabulary id for DG1-3/PR1-3 codes without a coding system
                             (default none: ``LOCAL``)
``[code_systems]``           coding system name (CE.3/CE.6) → vocabulary id, merged over
                             :data:`DEFAULT_CODE_SYSTEMS`
``[patient_classes]``        PV1-2 → visit type, merged over :data:`PATIENT_CLASSES`
``[sex_codes]``              PID-8 → M/F/U, replacing :data:`HL7_SEX` (table 0001)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from enclave.io.ingest.adapters.code_systems import HL7_NAMES, MAPPABLE
from enclave.io.ingest.adapters.fhir import Rows, finish, finish_visit, source_files, stage_rows
from enclave.io.ingest.mapping import SiteMapping
from enclave.io.ingest.normalize import D8, parse_date, parse_datetime, parse_number, parse_sex
from enclave.io.ingest.staging import CodeSystem, RejectReason, StagedBatch

#: coding system name (upper-case) → vocabulary id
DEFAULT_CODE_SYSTEMS: dict[str, str] = HL7_NAMES
PATIENT_CLASSES = {"I": "inpatient", "O": "outpatient", "E": "emergency"}
HL7_SEX = {"M": "M", "F": "F", "U": "U", "O": "U", "A": "U", "N": "U"}
NUMERIC_TYPES = ("NM", "SN")

_TS = r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,4})?)?)?)?)?)?([+-]\d{4})?$"
_SEGMENT_SPLIT = re.compile(rb"\r\n|\r|\n")
_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass(frozen=True, slots=True)
class Encoding:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


def read_encoding(msh: str) -> Encoding | None:
    """Separators of one MSH segment, or ``None`` when they are unusable."""
    if len(msh) < 5 or not msh.startswith("MSH"):
        return None
    fs = msh[3]
    chars = msh[4:].split(fs, 1)[0]
    if fs.isalnum() or fs.isspace() or not chars or len(chars) > 4:
        return None
    if len(set(chars + fs)) != len(chars) + 1 or any(c.isalnum() or c.isspace() for c in chars):
        return None
    defaults = "^~\\&"
    chars = chars + "".join(d for d in defaults[len(chars):])
    if len(set(chars + fs)) != 5:
        return None
    return Encoding(fs, chars[0], chars[1], chars[2], chars[3])


def unescape(text: str, enc: Encoding) -> str:
    """Decode HL7 escape sequences; unknown sequences are dropped."""
    if enc.escape not in text:
        return text
    e = re.escape(enc.escape)
    simple = {"F": enc.field, "S": enc.component, "T": enc.subcomponent, "R": enc.repetition,
              "E": enc.escape, ".br": "\n"}

    def replace(match: re.Match) -> str:
        code = match.group(1)
        if code in simple:
            return simple[code]
        if code[:1] == "X" and re.fullmatch(r"X([0-9A-Fa-f]{2})+", code):
            return bytes.fromhex(code[1:]).decode("utf-8", errors="replace")
        return ""

    return re.sub(e + "(.*?)" + e, replace, text)


class _Segment:
    __slots__ = ("enc", "fields")

    def __init__(self, text: str, enc: Encoding) -> None:
        self.fields = text.split(enc.field)
        self.enc = enc

    def raw(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[str]:
        return [r for r in self.raw(n).split(self.enc.repetition)]

    def comps(self, n: int, rep: str | None = None) -> list[str]:
        field = self.reps(n)[0] if rep is None else rep
        return field.split(self.enc.component)

    def get(self, n: int, comp: int = 0) -> str | None:
        parts = self.comps(n)
        value = parts[comp].split(self.enc.subcomponent)[0] if comp < len(parts) else ""
        value = unescape(value, self.enc).strip()
        return value or None


def _comp(seg: _Segment, parts: list[str], i: int) -> str | None:
    if i >= len(parts):
        return None
    value = unescape(parts[i].split(seg.enc.subcomponent)[0], seg.enc).strip()
    return value or None


def _join(pieces: list[str | None]) -> str | None:
    present = [p for p in pieces if p]
    if not present:
        return None
    sep = "" if any(_CJK.search(p) for p in present) else " "
    return sep.join(present) or None


class _Message:
    """Turns the segments of one stored message into raw rows."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.resident_types = set(options.get("resident_id_types", ["NNCHN"]))
        self.insurance_types = set(options.get("insurance_types", ["HC"]))
        self.mrn_type = options.get("mrn_type", "MR")
        self.systems = {**DEFAULT_CODE_SYSTEMS,
                        **{str(k).upper(): str(v) for k, v in (options.get("code_systems") or {}).items()}}
        self.default_dx = options.get("diagnosis_default_system")

    def code(self, seg: _Segment, n: int, *, default: str | None = None) -> dict[str, str | None]:
        """A CE/CWE field as (code_system, code, description); see "Code systems" above."""
        parts = seg.comps(n)
        triplets = [(_comp(seg, parts, i), _comp(seg, parts, i + 1), _comp(seg, parts, i + 2))
                    for i in (0, 3)]
        coded = [(code, text, self._system(system, default)) for code, text, system in triplets if code]
        if not coded:
            return {"code_system": None, "code": None, "description": triplets[0][1] or triplets[1][1]}
        code, text, system = next((c for c in coded if c[2] in MAPPABLE), coded[0])
        return {"code_system": system, "code": code, "description": text or triplets[0][1]}

    def _system(self, name: str | None, default: str | None) -> str:
        if name is None:
            return default or str(CodeSystem.LOCAL)
        return self.systems.get(name.upper(), str(CodeSystem.LOCAL))

    def pid(self, seg: _Segment) -> tuple[dict, bool]:
        resident = insurance = mrn = other = None
        for rep in seg.reps(3):
            parts = seg.comps(3, rep)
            value, kind = _comp(seg, parts, 0), _comp(seg, parts, 4)
            if value is None:
                continue
            if kind in self.resident_types:
                resident = resident or value
            elif kind in self.insurance_types:
                insurance = insurance or value
            elif kind == self.mrn_type:
                mrn = mrn or value
            else:
                other = other or value
        name = seg.comps(5)
        family, given, middle = (_comp(seg, name, i) for i in (0, 1, 2))
        if family and _CJK.search(family):
            full = _join([family, given, middle])
        else:
            full = _join([given, middle, family])
        addr = seg.comps(11)
        county = _comp(seg, addr, 8)
        phone = seg.comps(13)
        values = {
            "site_patient_id": mrn or other,
            "resident_id": resident,
            "insurance_no": insurance,
            "name": full,
            "PID-7": seg.get(7),
            "PID-8": seg.get(8),
            "address": _join([_comp(seg, addr, i) for i in range(6)]),
            "region_code": county if county and re.fullmatch(r"\d{6}", county) else None,
            "phone": _comp(seg, phone, 0) or _comp(seg, phone, 11),
            "ethnicity": seg.get(22),
            "PID-29": seg.get(29),
        }
        ids_only = all(values[k] is None for k in values if k not in ("site_patient_id", "resident_id",
                                                                       "insurance_no"))
        return values, ids_only

    def pv1(self, seg: _Segment, patient: str | None, pid_account: str | None) -> tuple[dict, bool]:
        location = seg.comps(3)
        values = {
            "site_visit_id": seg.get(19) or pid_account,
            "site_patient_id": patient,
            "PV1-2": seg.get(2),
            "department": _comp(seg, location, 0),
            "care_site_id": _comp(seg, location, 3),
            "provider_id": seg.get(7),
            "PV1-44": seg.get(44),
            "PV1-45": seg.get(45),
            "PV1-47": seg.get(47),
            "PV1-49": seg.get(49),
        }
        return values, values["PV1-2"] is None and values["PV1-44"] is None

    def dg1(self, seg: _Segment, ctx: dict) -> dict:
        priority = seg.get(15)
        return {
            "site_patient_id": ctx["patient"], "site_visit_id": ctx["visit"],
            **self.code(seg, 3, default=self.default_dx),
            "DG1-5": seg.get(5) or ctx["admit"],
            "primary": None if priority is None else priority == "1",
        }

    def pr1(self, seg: _Segment, ctx: dict) -> dict:
        return {
            "site_patient_id": ctx["patient"], "site_visit_id": ctx["visit"],
            **self.code(seg, 3, default=self.default_dx),
            "PR1-5": seg.get(5) or ctx["admit"],
        }

    def obx(self, seg: _Segment, ctx: dict) -> tuple[str, dict]:
        vtype = (seg.get(2) or "").upper()
        values = {
            "site_patient_id": ctx["patient"], "site_visit_id": ctx["visit"],
            **self.code(seg, 3),
            "unit": seg.get(6),
            "OBX-7": seg.get(7),
            "OBX-14": seg.get(14) or ctx["observed"],
        }
        first = seg.reps(5)[0]
        if vtype == "NM":
            values["OBX-5"] = seg.get(5)
        elif vtype == "SN":
            parts = seg.comps(5, first)
            comparator, num = _comp(seg, parts, 0), _comp(seg, parts, 1)
            if comparator in (None, "=") and len([p for p in parts[2:] if p]) == 0:
                values["OBX-5"] = num
            else:
                values["value_text"] = "".join(p for p in (_comp(seg, parts, i) for i in range(4)) if p)
        else:
            parts = seg.comps(5, first)
            if vtype in ("CE", "CWE", "CNE"):
                values["value_text"] = _comp(seg, parts, 1) or _comp(seg, parts, 0)
            else:
                values["value_text"] = _join([_comp(seg, parts, i) for i in range(len(parts))])
        return ("measurement" if vtype in NUMERIC_TYPES else "observation"), values


def _records(data: bytes) -> list[list[bytes]]:
    """Group segments into records: a message from MSH on, or a run of stray segments."""
    records: list[list[bytes]] = []
    current: list[bytes] | None = None
    for raw in _SEGMENT_SPLIT.split(data):
        seg = raw.strip(b"\x0b\x1c\x00").lstrip()
        if not seg.strip():
            continue
        head = seg[:3]
        if head in (b"FHS", b"BHS", b"BTS", b"FTS") and (len(seg) == 3 or not seg[3:4].isalnum()):
            current = None
        elif head == b"MSH":
            current = [seg]
            records.append(current)
        else:
            if current is None:
                current = []
                records.append(current)
            current.append(seg)
    return records


def stage(path: Path, mapping: SiteMapping) -> StagedBatch:
    """Stage every HL7 v2 file under ``path`` (see the module docstring)."""
    options = mapping.options
    adt_events = set(options.get("adt_events", ["A01", "A04", "A08"]))
    batch = StagedBatch(site=mapping.site_id)
    rows = Rows()
    parser = _Message(options)
    for file in source_files(path, options.get("patterns", ["*.hl7", "*.txt", "*.er7"])):
        name = str(file)
        records = _records(file.read_bytes())
        batch.read_counts[name] = len(records)
        for number, segments in enumerate(records, start=1):
            _stage_message(rows, parser, name, number, segments, mapping.encoding, adt_events)
    classes = {**PATIENT_CLASSES,
               **{str(k).upper(): v for k, v in (options.get("patient_classes") or {}).items()}}
    sex = {str(k): str(v) for k, v in (options.get("sex_codes") or HL7_SEX).items()}
    return stage_rows(batch, rows, _finishers(classes, sex))


def _stage_message(rows: Rows, parser: _Message, name: str, number: int, segments: list[bytes],
                   encoding: str, adt_events: set[str]) -> None:
    try:
        texts = [s.decode(encoding) for s in segments]
    except (UnicodeDecodeError, LookupError):
        rows.reject(name, number, RejectReason.MALFORMED_ROW, None)
        return
    enc = read_encoding(texts[0]) if texts and texts[0].startswith("MSH") else None
    if enc is None:
        rows.reject(name, number, RejectReason.MALFORMED_ROW, "MSH" if texts[0].startswith("MSH") else None)
        return
    msh = _Segment(texts[0], enc)
    # MSH-1 is the separator itself, so MSH-n is fields[n - 1]
    mtype, trigger = msh.get(8, 0), msh.get(8, 1)
    if mtype is None:
        rows.reject(name, number, RejectReason.MALFORMED_ROW, "MSH-9")
        return
    stored = (mtype.upper() == "ADT" and (trigger or "").upper() in adt_events) or (
        mtype.upper() == "ORU" and (trigger or "").upper() == "R01"
    )
    if not stored:
        rows.reject(name, number, RejectReason.UNSUPPORTED_RECORD, "MSH-9")
        return
    produced: list[tuple[str, dict]] = []
    context_only: list[tuple[str, dict]] = []
    ctx: dict[str, str | None] = {"patient": None, "visit": None, "admit": None,
                                  "observed": None, "account": None}
    for text in texts[1:]:
        seg = _Segment(text, enc)
        sid = seg.fields[0]
        if sid == "PID":
            values, ids_only = parser.pid(seg)
            ctx.update(patient=values["site_patient_id"], account=seg.get(18), visit=None)
            (context_only if ids_only else produced).append(("person", values))
        elif sid == "PV1":
            values, ids_only = parser.pv1(seg, ctx["patient"], ctx["account"])
            ctx.update(visit=values["site_visit_id"], admit=values["PV1-44"])
            (context_only if ids_only else produced).append(("visit", values))
        elif sid == "DG1":
            produced.append(("condition", parser.dg1(seg, ctx)))
        elif sid == "PR1":
            produced.append(("procedure", parser.pr1(seg, ctx)))
        elif sid == "OBR":
            ctx["observed"] = seg.get(7)
        elif sid == "OBX":
            produced.append(parser.obx(seg, ctx))
    if not produced:
        produced = context_only
    if not produced:
        rows.reject(name, number, RejectReason.MISSING_REQUIRED, "PID")
    for kind, values in produced:
        rows.add(kind, name, number, values)


# --------------------------------------------------------------------------------------------
# vectorized normalization per kind


def hl7_date(raw: str) -> pl.Expr:
    s = pl.col(raw).str.strip_chars()
    return pl.when(s.str.contains(_TS) & (s.str.len_chars() >= 8)).then(parse_date(s.str.slice(0, 8), [D8]))


def hl7_datetime(raw: str) -> pl.Expr:
    s = pl.col(raw).str.strip_chars()
    digits = s.str.extract(r"^(\d{12,14})", 1).str.pad_end(14, "0")
    return pl.when(s.str.contains(_TS)).then(parse_datetime(digits, ["%Y%m%d%H%M%S"]))


_NUM = r"([-+]?\d*\.?\d+)"


def _range(raw: str) -> tuple[pl.Expr, pl.Expr]:
    s = pl.col(raw).str.strip_chars()
    pair = s.str.extract_groups(rf"^{_NUM}\s*[-_~–]\s*{_NUM}$")
    low = pl.coalesce(pair.struct.field("1"), s.str.extract(rf"^[>≥]=?\s*{_NUM}$", 1))
    high = pl.coalesce(pair.struct.field("2"), s.str.extract(rf"^[<≤]=?\s*{_NUM}$", 1))
    return low.cast(pl.Float64, strict=False), high.cast(pl.Float64, strict=False)


_D, _N = RejectReason.INVALID_DATE, RejectReason.INVALID_NUMBER


def _finishers(classes: dict[str, str], sex: dict[str, str]) -> dict[str, Any]:
    def person(f: pl.DataFrame) -> pl.DataFrame:
        return finish("person", f, {
            "birth_date": ("PID-7", hl7_date("PID-7"), _D),
            "death_date": ("PID-29", hl7_date("PID-29"), _D),
            "sex": ("PID-8", parse_sex(pl.col("PID-8"), sex), RejectReason.INVALID_SEX),
        })

    def visit(f: pl.DataFrame) -> pl.DataFrame:
        return finish_visit(f, classes, "PV1-2", "PV1-44", "PV1-45", hl7_date, hl7_datetime, {
            "total_cost": ("PV1-47", parse_number(pl.col("PV1-47")), _N),
            "paid_by_patient": ("PV1-49", parse_number(pl.col("PV1-49")), _N),
        })

    def condition(f: pl.DataFrame) -> pl.DataFrame:
        return finish("condition", f, {"start_date": ("DG1-5", hl7_date("DG1-5"), _D)})

    def procedure(f: pl.DataFrame) -> pl.DataFrame:
        return finish("procedure", f, {"date": ("PR1-5", hl7_date("PR1-5"), _D)})

    def measurement(f: pl.DataFrame) -> pl.DataFrame:
        if "OBX-7" not in f.columns:
            f = f.with_columns(pl.lit(None, pl.Utf8).alias("OBX-7"))
        low, high = _range("OBX-7")
        return finish("measurement", f, {
            "date": ("OBX-14", hl7_date("OBX-14"), _D),
            "datetime": ("OBX-14", hl7_datetime("OBX-14"), None),
            "value": ("OBX-5", parse_number(pl.col("OBX-5")), _N),
            "range_low": ("OBX-7", low, None),
            "range_high": ("OBX-7", high, None),
        })

    def observation(f: pl.DataFrame) -> pl.DataFrame:
        return finish("observation", f, {"date": ("OBX-14", hl7_date("OBX-14"), _D)})

    return {"person": person, "visit": visit, "condition": condition, "procedure": procedure,
            "measurement": measurement, "observation": observation}
