"""Demo writer: the 病案首页 (inpatient front sheet) wide layout, plus simple side files.

``病案首页.csv`` has one line per inpatient stay: the patient's fields (病案号, 姓名, 性别 as GB/T 2261.1
code, 出生日期, 身份证号 ...), admission and discharge times, department, 总费用 with its breakdown
(西药费, 检查费, 化验费, 手术费, 床位费, 其他费用 — they add up to 总费用), 主要诊断编码/名称,
其他诊断编码1..N/名称1..N and 手术及操作编码1..K/名称1..K/日期1..K. Everything else of the hospital
goes to simple side files with Chinese headers and ISO dates: persons without an inpatient stay
(``患者信息.csv``), outpatient visits and their diagnoses (``门诊就诊.csv``, ``门诊诊断.csv``),
``医嘱.csv`` (drugs, LOCAL codes), ``检验结果.csv`` (labs, LOCAL codes), ``病历文书.csv``,
``科室.csv``, ``医生.csv``. All files are GB18030. Read back by
``enclave.io.ingest.adapters.frontsheet`` (which reads the side files like the csv dialect).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from enclave.io.demo.clinical import code_maps
from enclave.io.demo.writers import Defect, HospitalSpec, WriteResult
from enclave.io.demo.writers._csvutil import (
    ROW,
    CsvDialect,
    FileLayout,
    apply_typed_defects,
    code_tables,
    csv_tables,
    date_expr,
    site_header,
    toml_table,
    write_csv,
    write_files,
)
from enclave.io.demo.writers.csv_chinese import DIALECT as ZH
from enclave.io.ingest.normalize import ISO_DATE

WIDE_FILE = "病案首页.csv"
DATETIME = "%Y-%m-%d %H:%M"
PERSON = (("site_patient_id", "病案号"), ("name", "姓名"), ("sex", "性别"), ("birth_date", "出生日期"),
          ("resident_id", "身份证号"), ("phone", "联系电话"), ("address", "现住址"),
          ("region_code", "行政区划代码"), ("ethnicity", "民族"), ("insurance_no", "医保卡号"))
VISIT = (("site_visit_id", "住院号"), ("site_patient_id", "病案号"), ("start_date", "入院时间"),
         ("start_datetime", "入院时间"), ("end_date", "出院时间"), ("end_datetime", "出院时间"),
         ("department", "入院科室"), ("care_site_id", "科室编码"), ("provider_id", "主治医师工号"),
         ("total_cost", "总费用"), ("paid_by_patient", "自付金额"))
COST_PARTS = (("西药费", 0.35), ("检查费", 0.15), ("化验费", 0.12), ("手术费", 0.10), ("床位费", 0.08))
DIAGNOSIS = {"primary_code": "主要诊断编码", "primary_name": "主要诊断名称",
             "other_code": "其他诊断编码{n}", "other_name": "其他诊断名称{n}", "code_system": "ICD10CN"}
PROCEDURE = {"code": "手术及操作编码{n}", "name": "手术及操作名称{n}", "date": "手术及操作日期{n}",
             "code_system": "ICD9Proc"}


def _layout(kind: str, file: str) -> FileLayout:
    base = next(lay for lay in ZH.files if lay.kind == kind)
    return FileLayout(kind, file, base.columns, base.constants)


SIDE = CsvDialect(
    encoding="gb18030", date_format=ISO_DATE, datetime_format=DATETIME,
    sex={"M": "1", "F": "2", "U": "9"},
    visit_types={"outpatient": "门诊", "emergency": "急诊", "inpatient": "住院"},
    booleans=("是", "否"),
    files=(_layout("person", "患者信息.csv"), _layout("visit", "门诊就诊.csv"),
           _layout("condition", "门诊诊断.csv"), _layout("drug", "医嘱.csv"),
           _layout("measurement", "检验结果.csv"), _layout("note", "病历文书.csv"),
           _layout("care_site", "科室.csv"), _layout("provider", "医生.csv")),
)


def write(out_dir: Path, hospital: HospitalSpec, frames: dict[str, pl.DataFrame],
          defects: list[Defect]) -> WriteResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    typed, planted, rest = apply_typed_defects(frames, defects)
    inpatient = typed["visit"].filter(pl.col("visit_type") == "inpatient")
    stay_ids = inpatient["site_visit_id"].drop_nulls()
    stay_patients = inpatient["site_patient_id"].drop_nulls()
    filters = {
        "患者信息.csv": ~pl.col("site_patient_id").is_in(stay_patients.implode()),
        "门诊就诊.csv": pl.col("visit_type") != "inpatient",
        "门诊诊断.csv": ~pl.col("site_visit_id").is_in(stay_ids.implode()) | pl.col("site_visit_id").is_null(),
    }
    files, planted = write_files(out_dir, frames, defects, SIDE, filters=filters,
                                 typed=(typed, planted, rest))
    wide, _n_dx, _n_px = _wide(typed, inpatient)
    files.append(write_csv(out_dir / WIDE_FILE, wide, SIDE.encoding))
    toml = "\n".join([
        site_header(hospital, "frontsheet", SIDE.encoding),
        toml_table("frontsheet", {"pattern": WIDE_FILE, "date_formats": [ISO_DATE, DATETIME],
                                  "datetime_formats": [DATETIME]}),
        toml_table("frontsheet.person", dict(PERSON)),
        toml_table("frontsheet.visit", dict(VISIT)),
        toml_table("frontsheet.diagnosis", DIAGNOSIS),
        toml_table("frontsheet.procedure", PROCEDURE),
        csv_tables(SIDE, frames),
        code_tables(code_maps(hospital.dialect)),
    ])
    return WriteResult(files=files, site_toml=toml, planted=planted)


def _wide(typed: dict[str, pl.DataFrame], stays: pl.DataFrame) -> tuple[pl.DataFrame, int, int]:
    person = typed["person"].unique("site_patient_id", keep="first", maintain_order=True)
    person_text = person.select([_text(c, typed["person"].schema[c]).alias(h) for c, h in PERSON])
    visit_cols = [(c, h) for c, h in VISIT if c not in ("start_date", "end_date")]
    visits = stays.select(ROW, *[_text(c, stays.schema[c]).alias(h) for c, h in visit_cols])
    total = stays["total_cost"]
    parts = [(total * share).round(2).alias(name) for name, share in COST_PARTS]
    other = total - sum(p for p in parts)
    visits = visits.with_columns([p.cast(pl.Utf8) for p in parts] + [other.round(2).cast(pl.Utf8).alias("其他费用")])
    ids = stays.select("site_visit_id")
    cond = typed["condition"].join(ids, on="site_visit_id", how="semi").sort(
        ["site_visit_id", "primary", ROW], descending=[False, True, False])
    main = cond.filter(pl.col("primary")).unique("site_visit_id", keep="first")
    others = cond.join(main.select(ROW), on=ROW, how="anti").with_columns(
        (pl.int_range(pl.len()).over("site_visit_id") + 1).alias("n"))
    n_dx = int(others["n"].max() or 0)
    proc = typed["procedure"].join(ids, on="site_visit_id", how="semi").sort(ROW).with_columns(
        (pl.int_range(pl.len()).over("site_visit_id") + 1).alias("n"))
    n_px = int(proc["n"].max() or 0)
    wide = visits.join(main.select("site_visit_id", pl.col("code").alias(DIAGNOSIS["primary_code"]),
                                   pl.col("description").alias(DIAGNOSIS["primary_name"])),
                       left_on="住院号", right_on="site_visit_id", how="left")
    for n in range(1, n_dx + 1):
        slot = others.filter(pl.col("n") == n).select(
            "site_visit_id", pl.col("code").alias(f"其他诊断编码{n}"), pl.col("description").alias(f"其他诊断名称{n}"))
        wide = wide.join(slot, left_on="住院号", right_on="site_visit_id", how="left")
    for n in range(1, n_px + 1):
        slot = proc.filter(pl.col("n") == n).select(
            "site_visit_id", pl.col("code").alias(f"手术及操作编码{n}"),
            pl.col("description").alias(f"手术及操作名称{n}"),
            pl.col("date").dt.strftime(ISO_DATE).alias(f"手术及操作日期{n}"))
        wide = wide.join(slot, left_on="住院号", right_on="site_visit_id", how="left")
    wide = wide.join(person_text, on="病案号", how="left").sort(ROW)
    heads = [h for _, h in PERSON]
    wide = wide.select(ROW, *heads, *[c for c in wide.columns if c not in heads and c != ROW])
    return wide, n_dx, n_px


def _text(column: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(column)
    if column == "sex":
        return col.replace_strict(SIDE.sex, default=col)
    if dtype == pl.Date:
        return date_expr(col, ISO_DATE)
    if isinstance(dtype, pl.Datetime):
        return col.dt.strftime(DATETIME)
    return col.cast(pl.Utf8)
