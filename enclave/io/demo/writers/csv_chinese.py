"""Demo writer: UTF-8 CSV files with Chinese column names.

Dates are written the way people type them, ``2023年1月5日`` (no zero padding); times as
``2023-01-05 14:30:00``; sex ``男``/``女``/``未知``; visit type ``门诊``/``急诊``/``住院``; the
primary-diagnosis flag ``是``/``否``. Labs are LOINC-coded, drugs RxNorm-coded, so the code system
of each file is a constant in site.toml (``[files.<kind>.constants]``) instead of a column. Files:
``患者信息.csv``, ``就诊记录.csv``, ``诊断记录.csv``, ``用药记录.csv``, ``检验结果.csv``,
``手术记录.csv``, ``病历文书.csv``, ``科室.csv``, ``医生.csv``. Read back by
``enclave.io.ingest.adapters.csv_dialect``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from enclave.io.demo.writers import Defect, HospitalSpec, WriteResult
from enclave.io.demo.writers._csvutil import (
    CsvDialect,
    FileLayout,
    write_csv_dialect,
)
from enclave.io.ingest.normalize import CHINESE_DATE

PERSON = (("site_patient_id", "患者编号"), ("name", "姓名"), ("sex", "性别"), ("birth_date", "出生日期"),
          ("resident_id", "身份证号"), ("phone", "联系电话"), ("address", "家庭住址"),
          ("region_code", "行政区划代码"), ("ethnicity", "民族"), ("insurance_no", "医保卡号"),
          ("death_date", "死亡日期"))
VISIT = (("site_visit_id", "就诊流水号"), ("site_patient_id", "患者编号"), ("visit_type", "就诊类型"),
         ("start_date", "就诊日期"), ("start_datetime", "就诊时间"), ("end_date", "出院日期"),
         ("end_datetime", "出院时间"), ("department", "就诊科室"), ("care_site_id", "科室编码"),
         ("provider_id", "医生工号"), ("total_cost", "总费用"), ("paid_by_patient", "个人自付"))

DIALECT = CsvDialect(
    encoding="utf-8", date_format=CHINESE_DATE, datetime_format="%Y-%m-%d %H:%M:%S",
    sex={"M": "男", "F": "女", "U": "未知"},
    visit_types={"outpatient": "门诊", "emergency": "急诊", "inpatient": "住院"},
    booleans=("是", "否"),
    files=(
        FileLayout("person", "患者信息.csv", PERSON),
        FileLayout("visit", "就诊记录.csv", VISIT),
        FileLayout("condition", "诊断记录.csv", (
            ("site_patient_id", "患者编号"), ("site_visit_id", "就诊流水号"), ("code", "诊断编码"),
            ("description", "诊断名称"), ("start_date", "诊断日期"), ("end_date", "转归日期"),
            ("primary", "是否主要诊断"), ("code_system", "")), ("code_system",)),
        FileLayout("drug", "用药记录.csv", (
            ("site_patient_id", "患者编号"), ("site_visit_id", "就诊流水号"), ("code", "药品编码"),
            ("description", "药品名称"), ("start_date", "开始日期"), ("end_date", "结束日期"),
            ("quantity", "数量"), ("days_supply", "天数"), ("dose_unit", "单位"), ("route", "给药途径"),
            ("cost", "金额"), ("code_system", "")), ("code_system",)),
        FileLayout("measurement", "检验结果.csv", (
            ("site_patient_id", "患者编号"), ("site_visit_id", "就诊流水号"), ("code", "检验项目编码"),
            ("description", "检验项目名称"), ("date", "报告日期"), ("datetime", "报告时间"),
            ("value", "结果"), ("value_text", "结果文字"), ("unit", "单位"), ("range_low", "参考值下限"),
            ("range_high", "参考值上限"), ("cost", "费用"), ("code_system", "")), ("code_system",)),
        FileLayout("procedure", "手术记录.csv", (
            ("site_patient_id", "患者编号"), ("site_visit_id", "就诊流水号"), ("code", "手术编码"),
            ("description", "手术名称"), ("date", "手术日期"), ("cost", "费用"), ("code_system", "")),
            ("code_system",)),
        FileLayout("note", "病历文书.csv", (
            ("site_patient_id", "患者编号"), ("site_visit_id", "就诊流水号"), ("date", "书写日期"),
            ("title", "文书名称"), ("text", "文书内容"))),
        FileLayout("care_site", "科室.csv", (
            ("care_site_id", "机构编码"), ("name", "名称"), ("level", "等级"), ("region_code", "行政区划代码"))),
        FileLayout("provider", "医生.csv", (
            ("provider_id", "工号"), ("name", "姓名"), ("specialty", "专业"), ("care_site_id", "科室编码"))),
    ),
)


def write(out_dir: Path, hospital: HospitalSpec, frames: dict[str, pl.DataFrame],
          defects: list[Defect]) -> WriteResult:
    return write_csv_dialect(out_dir, hospital, frames, defects, DIALECT)
