"""Adapter for the 病案首页 (inpatient front sheet) wide layout (dialect ``frontsheet``).

Each line of a front-sheet file is one inpatient stay carrying the patient's fields, the stay, its
diagnoses and its procedures in numbered columns. The adapter stages per line: one ``visit`` row
(``visit_type`` = ``inpatient`` unless mapped), one ``condition`` row per non-empty diagnosis slot
(``primary`` = true for the 主要诊断 slot, ``start_date`` = the admission date), one ``procedure``
row per non-empty procedure slot, and a ``person`` row; identical person rows of one patient
(several stays) are staged once, at the first line. A line counts once in ``read_counts``.

Options (besides ``[site]``)::

    [frontsheet]
    pattern = "病案首页*.csv"              # (required) glob inside the extract folder
    date_formats = ["%Y-%m-%d", "%Y-%m-%d %H:%M"]   # as in the csv dialect; other [csv] keys
    datetime_formats = ["%Y-%m-%d %H:%M"]           # (delimiter, quote, sex_codes ...) apply too
    [frontsheet.person]                   # contract column = header (person kind)
    [frontsheet.visit]                    # contract column = header (visit kind)
    [frontsheet.diagnosis]
    primary_code = "主要诊断编码"
    primary_name = "主要诊断名称"
    other_code = "其他诊断编码{n}"          # {n} = 1, 2, ... (columns found from the header)
    other_name = "其他诊断名称{n}"
    code_system = "ICD10CN"
    [frontsheet.procedure]
    code = "手术及操作编码{n}"
    name = "手术及操作名称{n}"
    date = "手术及操作日期{n}"              # optional; the admission date when absent or empty
    code_system = "ICD9Proc"

Side files of the same hospital (outpatient visits, labs, drugs, notes ...) are described with
``[files.<kind>]`` tables exactly as in ``enclave.io.ingest.adapters.csv_dialect`` and read by it.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from enclave.core.errors import BadInputError, ConfigurationError
from enclave.io.ingest import normalize as nz
from enclave.io.ingest.adapters import csv_dialect as cd
from enclave.io.ingest.mapping import SiteMapping
from enclave.io.ingest.staging import RejectReason, StagedBatch, column_names


def stage(path: Path, mapping: SiteMapping) -> StagedBatch:
    spec = mapping.options.get("frontsheet")
    if not isinstance(spec, dict) or not spec.get("pattern"):
        raise ConfigurationError(f"{mapping.source}: the frontsheet dialect needs [frontsheet] pattern")
    batch = StagedBatch(site=mapping.site_id)
    for file in cd.find_files(path, "visit", spec, mapping.source):
        stage_frontsheet(batch, file, spec, mapping)
    for kind, side in (mapping.options.get("files") or {}).items():
        for file in cd.find_files(path, kind, side, mapping.source):
            cd.stage_file(batch, file, kind, side, mapping)
    return batch


def stage_frontsheet(batch: StagedBatch, file: Path, spec: dict, mapping: SiteMapping) -> None:
    opts = cd.options(mapping, spec)
    table = cd.read_table(file, mapping.encoding, opts["delimiter"], opts["quote"])
    person_cols = dict(spec.get("person") or {})
    visit_cols = dict(spec.get("visit") or {})
    missing = sorted({h for h in [*person_cols.values(), *visit_cols.values()] if h not in table.header})
    if missing:
        raise BadInputError(f"{file}: header lacks the mapped columns {missing} (see {mapping.source})")
    raw = table.data
    constants = {} if "visit_type" in visit_cols else {"visit_type": "inpatient"}
    visit = cd.to_contract("visit", raw, visit_cols, constants, {}, opts)
    person = cd.to_contract("person", raw, person_cols, {}, {}, opts)
    person = person.unique([c for c in person.columns if c != cd.ROW], keep="first", maintain_order=True)
    cd.add_with_file(batch, "person", person, file)
    cd.add_with_file(batch, "visit", visit, file)
    keys = {c: visit_cols[c] for c in ("site_patient_id", "site_visit_id") if c in visit_cols}
    admission = visit_cols.get("start_date")
    dx = spec.get("diagnosis") or {}
    slots = []
    if dx.get("primary_code") in table.header:
        slots.append((dx["primary_code"], dx.get("primary_name"), None, True))
    for n, code_h in _numbered(table.header, dx.get("other_code")):
        slots.append((code_h, _fill(dx.get("other_name"), n), None, False))
    _stage_slots(batch, file, "condition", raw, slots, keys, admission, dx.get("code_system"), opts,
                 table.header)
    px = spec.get("procedure") or {}
    slots = [(code_h, _fill(px.get("name"), n), _fill(px.get("date"), n), None)
             for n, code_h in _numbered(table.header, px.get("code"))]
    _stage_slots(batch, file, "procedure", raw, slots, keys, admission, px.get("code_system"), opts,
                 table.header)
    cd.add_unparsed(batch, file, table.bad_rows)
    batch.read_counts[str(file)] = batch.read_counts.get(str(file), 0) + table.count


def _numbered(header: list[str], template: str | None) -> list[tuple[int, str]]:
    if not template or "{n}" not in template:
        return []
    pattern = re.compile("^" + re.escape(template).replace(re.escape("{n}"), r"(\d+)") + "$")
    found = [(int(m.group(1)), h) for h in header if (m := pattern.match(h))]
    return sorted(found)


def _fill(template: str | None, n: int) -> str | None:
    return template.replace("{n}", str(n)) if template else None


def _stage_slots(batch, file, kind, raw, slots, keys, admission, code_system, opts, header) -> None:
    """Melt numbered code columns into rows of ``kind`` (one per non-empty slot)."""
    if not slots:
        return
    src = lambda h: pl.col(cd.SRC + h) if h in header else pl.lit(None, pl.Utf8)
    date_name = "start_date" if kind == "condition" else "date"
    parts = []
    for code_h, name_h, date_h, primary in slots:
        date_raw = src(admission) if admission else pl.lit(None, pl.Utf8)
        if date_h and date_h in header:
            date_raw = pl.coalesce(nz.clean_text(src(date_h)), date_raw)
        part = raw.select(
            cd.ROW,
            *[nz.clean_text(src(h)).alias(c) for c, h in keys.items()],
            nz.clean_text(src(code_h)).alias("code"),
            nz.clean_text(src(name_h) if name_h else pl.lit(None, pl.Utf8)).alias("description"),
            date_raw.alias("__date_raw"),
        )
        if primary is not None:
            part = part.with_columns(pl.lit(primary).alias("primary"))
        parts.append(part.filter(pl.col("code").is_not_null() | pl.col("description").is_not_null()))
    rows = pl.concat(parts, how="diagonal").sort(cd.ROW, maintain_order=True)
    rows = rows.with_columns(nz.parse_date(pl.col("__date_raw"), opts["date_formats"]).alias(date_name))
    rows = nz.flag_failures(rows, [("__date_raw", date_name, RejectReason.INVALID_DATE)])
    rows = rows.with_columns(
        pl.when(pl.col("_reject_column") == "__date_raw").then(pl.lit(admission))
        .otherwise(pl.col("_reject_column")).alias("_reject_column"),
        pl.lit(code_system).alias("code_system"),
    ).drop("__date_raw")
    keep = [c for c in rows.columns if c in column_names(kind) or c.startswith("_")]
    cd.add_with_file(batch, kind, rows.select(keep), file)
