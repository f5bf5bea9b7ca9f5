"""Demo writer: GB18030-encoded CSV files with pinyin column names (a common HIS export).

Dates are WS 363 ``D8`` (``20230105``), times ``DT15`` (``20230105T143000``), sex is the GB/T 2261.1
code (``1`` male, ``2`` female, ``0``/``9`` unknown), visit type ``1`` outpatient / ``2`` emergency /
``3`` inpatient, one file per record kind (``huanzhe.csv``, ``jiuzhen.csv``, ``zhenduan.csv``,
``chufang.csv``, ``jianyan.csv``, ``shoushu.csv``, ``bingli.csv``, ``keshi.csv``, ``yisheng.csv``).
Lab and drug codes are the hospital's own (LOCAL); the site.toml maps them to LOINC / RxNorm under
``[codes.measurement]`` and ``[codes.drug]``. Read back by ``enclave.io.ingest.adapters.csv_dialect``.
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
from enclave.io.ingest.normalize import D8, DT15

DIALECT = CsvDialect(
    encoding="gb18030", date_format=D8, datetime_format=DT15,
    sex={"M": "1", "F": "2", "U": "0"},
    visit_types={"outpatient": "1", "emergency": "2", "inpatient": "3"},
    booleans=("1", "0"),
    files=(
        FileLayout("person", "huanzhe.csv", (
            ("site_patient_id", "binglihao"), ("name", "xingming"), ("sex", "xingbie"),
            ("birth_date", "chushengriqi"), ("resident_id", "shenfenzhenghao"),
            ("phone", "lianxidianhua"), ("address", "xianzhuzhi"), ("region_code", "xingzhengquhua"),
            ("ethnicity", "minzu"), ("insurance_no", "yibaokahao"), ("death_date", "siwangriqi"))),
        FileLayout("visit", "jiuzhen.csv", (
            ("site_visit_id", "jiuzhenhao"), ("site_patient_id", "binglihao"),
            ("visit_type", "jiuzhenleixing"), ("start_date", "jiuzhenriqi"),
            ("start_datetime", "jiuzhenshijian"), ("end_date", "chuyuanriqi"),
            ("end_datetime", "chuyuanshijian"), ("department", "keshimingcheng"),
            ("care_site_id", "keshidaima"), ("provider_id", "yishenggonghao"),
            ("total_cost", "zongfeiyong"), ("paid_by_patient", "gerenzifu"))),
        FileLayout("condition", "zhenduan.csv", (
            ("site_patient_id", "binglihao"), ("site_visit_id", "jiuzhenhao"),
            ("code", "zhenduanbianma"), ("description", "zhenduanmingcheng"),
            ("start_date", "zhenduanriqi"), ("end_date", "jieshuriqi"),
            ("primary", "zhuyaozhenduanbiaozhi"), ("code_system", "bianmatixi"))),
        FileLayout("drug", "chufang.csv", (
            ("site_patient_id", "binglihao"), ("site_visit_id", "jiuzhenhao"),
            ("code", "yaopinbianma"), ("description", "yaopinmingcheng"),
            ("start_date", "kaishiriqi"), ("end_date", "jieshuriqi"), ("quantity", "shuliang"),
            ("days_supply", "tianshu"), ("dose_unit", "danwei"), ("route", "yongyaotujing"),
            ("cost", "jine"), ("code_system", "bianmatixi"))),
        FileLayout("measurement", "jianyan.csv", (
            ("site_patient_id", "binglihao"), ("site_visit_id", "jiuzhenhao"),
            ("code", "xiangmudaima"), ("description", "xiangmumingcheng"),
            ("date", "baogaoriqi"), ("datetime", "baogaoshijian"), ("value", "jieguo"),
            ("value_text", "jieguowenben"), ("unit", "danwei"), ("range_low", "cankaoxiaxian"),
            ("range_high", "cankaoshangxian"), ("cost", "feiyong"), ("code_system", "bianmatixi"))),
        FileLayout("procedure", "shoushu.csv", (
            ("site_patient_id", "binglihao"), ("site_visit_id", "jiuzhenhao"),
            ("code", "shoushubianma"), ("description", "shoushumingcheng"), ("date", "shoushuriqi"),
            ("cost", "feiyong"), ("code_system", "bianmatixi"))),
        FileLayout("note", "bingli.csv", (
            ("site_patient_id", "binglihao"), ("site_visit_id", "jiuzhenhao"),
            ("date", "jiluriqi"), ("title", "wenshumingcheng"), ("text", "neirong"))),
        FileLayout("care_site", "keshi.csv", (
            ("care_site_id", "jigoudaima"), ("name", "mingcheng"), ("level", "dengji"),
            ("region_code", "xingzhengquhua"))),
        FileLayout("provider", "yisheng.csv", (
            ("provider_id", "gonghao"), ("name", "xingming"), ("specialty", "zhuanke"),
            ("care_site_id", "keshidaima"))),
    ),
)


def write(out_dir: Path, hospital: HospitalSpec, frames: dict[str, pl.DataFrame],
          defects: list[Defect]) -> WriteResult:
    return write_csv_dialect(out_dir, hospital, frames, defects, DIALECT)
