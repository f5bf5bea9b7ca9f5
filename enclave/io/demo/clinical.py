"""Clinical reference tables of the demo population: diseases, prescriptions, lab panels, procedures.

Diagnosis codes are ICD-10 national clinical version 2.0 codes built from the WHO codes shipped in
``enclave/core/model/vocabulary/icd10_to_standard.csv`` plus clinical suffixes; ``I63.900`` (cerebral
infarction) is deliberately *not* in that table, so it stays unmapped (concept 0).

Lab values are generated in the canonical unit of ``analytes.csv``; hospitals that report in mg/dL
get them converted with that file's factor. Local lab and drug codes are per dialect (see
:func:`local_lab_code`, :func:`local_drug_code`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class Disease:
    key: str
    code: str  # ICD-10 clinical version 2.0
    name: str
    department: str  # department code (see DEPARTMENTS)
    drugs: tuple[str, ...]  # RxNorm codes from drugs.csv
    labs: tuple[str, ...]  # LOINC codes from analytes.csv
    chronic: bool


#: department code → name
DEPARTMENTS: dict[str, str] = {
    "NFM": "内分泌科", "XNK": "心血管内科", "HXK": "呼吸内科", "SNK": "肾内科", "SJK": "神经内科",
    "GK": "骨科", "QK": "全科医学科", "EK": "儿科",
}

GLU, HBA1C, TC, TG, LDL, HDL, CREA, BUN = (
    "2345-7", "4548-4", "2093-3", "2571-8", "18262-6", "2085-9", "2160-0", "3094-0")
HGB, WBC, K, NA, SBP, DBP, BMI = "718-7", "6690-2", "2823-3", "2951-2", "8480-6", "8462-4", "39156-5"

CHRONIC: tuple[Disease, ...] = (
    Disease("htn", "I10.x00x002", "高血压", "XNK", ("197361", "314076", "310798"), (SBP, DBP, K, NA), True),
    Disease("dm", "E11.900", "2型糖尿病", "NFM", ("860975", "106892"), (GLU, HBA1C, BMI), True),
    Disease("lipid", "E78.500", "高脂血症", "NFM", ("259255", "312961"), (TC, TG, LDL, HDL), True),
    Disease("chd", "I25.103", "冠状动脉粥样硬化性心脏病", "XNK", ("243670", "309362", "705129"),
            (TC, LDL, SBP, DBP), True),
    Disease("ckd", "N18.300", "慢性肾脏病3期", "SNK", ("197361",), (CREA, BUN, K, HGB), True),
    Disease("asthma", "J45.900", "哮喘", "HXK", ("2123111",), (WBC,), True),
    Disease("stroke", "I63.900", "脑梗死", "SJK", ("243670", "309362"), (GLU, TC), True),
    Disease("af", "I48.x00x001", "心房颤动", "XNK", ("309362",), (K, NA), True),
    Disease("hf", "I50.900", "心力衰竭", "XNK", ("310798",), (NA, K, CREA), True),
)

ACUTE: tuple[Disease, ...] = (
    Disease("bronchitis", "J20.900", "急性支气管炎", "HXK", ("308192", "313782"), (WBC,), False),
    Disease("pharyngitis", "J02.900", "急性咽炎", "QK", ("308192", "310965"), (WBC,), False),
    Disease("sinusitis", "J01.900", "急性鼻窦炎", "QK", ("308192",), (), False),
    Disease("pneumonia", "J18.900", "肺炎", "HXK", ("308192", "313782"), (WBC, HGB), False),
    Disease("knee", "M17.900", "膝关节病", "GK", ("310965",), (), False),
    Disease("anaemia", "D64.900", "贫血", "QK", (), (HGB,), False),
)

#: (ICD-9-CM-3 code, name, disease keys it follows, probability)
PROCEDURES: tuple[tuple[str, str, tuple[str, ...], float], ...] = (
    ("88.56", "冠状动脉造影术", ("chd",), 0.8),
    ("36.07", "药物洗脱冠状动脉支架置入术", ("chd",), 0.4),
    ("87.44", "常规胸部X线检查", ("pneumonia", "bronchitis", "asthma", "hf"), 0.7),
    ("88.91", "脑磁共振成像", ("stroke",), 0.8),
    ("39.95", "血液透析", ("ckd",), 0.3),
    ("81.54", "全膝关节置换术", ("knee",), 0.5),
    ("99.04", "红细胞输注", ("anaemia",), 0.4),
)

#: LOINC → (local code at LOCAL-coding hospitals, mean, sd, mean if diseased, disease key, decimals,
#: reference low, reference high, cost CNY) — in the canonical unit of analytes.csv
LABS: dict[str, tuple[str, float, float, float, str, int, float, float, float]] = {
    GLU: ("GLU", 5.2, 0.5, 8.6, "dm", 2, 3.9, 6.1, 8.0),
    HBA1C: ("HBA1C", 5.4, 0.3, 7.9, "dm", 1, 4.0, 6.0, 60.0),
    TC: ("TC", 4.6, 0.7, 6.2, "lipid", 2, 2.8, 5.2, 6.0),
    TG: ("TG", 1.3, 0.4, 2.6, "lipid", 2, 0.56, 1.7, 6.0),
    LDL: ("LDL-C", 2.7, 0.5, 4.0, "lipid", 2, 1.5, 3.4, 10.0),
    HDL: ("HDL-C", 1.3, 0.25, 1.0, "lipid", 2, 1.0, 1.9, 10.0),
    CREA: ("CREA", 75.0, 12.0, 190.0, "ckd", 0, 44.0, 133.0, 8.0),
    BUN: ("BUN", 5.0, 1.0, 11.0, "ckd", 2, 2.9, 8.2, 8.0),
    HGB: ("HGB", 138.0, 12.0, 100.0, "anaemia", 0, 115.0, 175.0, 5.0),
    WBC: ("WBC", 6.5, 1.5, 12.5, "pneumonia", 2, 3.5, 9.5, 5.0),
    K: ("K", 4.2, 0.3, 5.1, "ckd", 2, 3.5, 5.3, 4.0),
    NA: ("NA", 140.0, 2.5, 136.0, "hf", 1, 137.0, 147.0, 4.0),
    SBP: ("SBP", 122.0, 10.0, 152.0, "htn", 0, 90.0, 139.0, 0.0),
    DBP: ("DBP", 78.0, 7.0, 94.0, "htn", 0, 60.0, 89.0, 0.0),
    BMI: ("BMI", 23.5, 3.0, 27.5, "dm", 1, 18.5, 23.9, 0.0),
}

#: analytes that hospitals with ``glucose_unit == "mg/dL"`` report in mg/dL
MG_DL_ANALYTES = frozenset({GLU, TC, TG, LDL, HDL, CREA})
#: unit strings as written by hospitals (the loader normalizes spellings)
UNIT_TEXT = {"umol/L": "µmol/L", "10*9/L": "10^9/L", "mm[Hg]": "mmHg"}

#: code systems per writer dialect: (measurement, drug)
CODE_SYSTEMS: dict[str, tuple[str, str]] = {
    "csv_gb18030": ("LOCAL", "LOCAL"),
    "csv_zh": ("LOINC", "RxNorm"),
    "frontsheet": ("LOCAL", "LOCAL"),
    "fhir_ndjson": ("LOINC", "RxNorm"),
    "hl7v2": ("LOINC", "RxNorm"),
}
_LAB_PREFIX = {"csv_gb18030": "", "frontsheet": "JY-"}
_DRUG_PREFIX = {"csv_gb18030": "YP", "frontsheet": "XY"}


@cache
def analytes() -> list[dict[str, str]]:
    text = resources.files("enclave.core.model").joinpath("vocabulary/analytes.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def drugs() -> list[dict[str, str]]:
    text = resources.files("enclave.core.model").joinpath("vocabulary/drugs.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


def local_lab_code(dialect: str, loinc: str) -> str:
    return _LAB_PREFIX.get(dialect, "") + LABS[loinc][0]


def local_drug_code(dialect: str, rxnorm: str) -> str:
    index = [d["rxnorm"] for d in drugs()].index(rxnorm)
    return f"{_DRUG_PREFIX.get(dialect, 'YP')}{index + 1:04d}"


def code_maps(dialect: str) -> dict[str, dict[str, str]]:
    """The ``[codes.<kind>]`` tables of a site.toml: local code → ``SYSTEM:code``."""
    lab_system, drug_system = CODE_SYSTEMS[dialect]
    out: dict[str, dict[str, str]] = {}
    if lab_system == "LOCAL":
        out["measurement"] = {local_lab_code(dialect, lo): f"LOINC:{lo}" for lo in LABS}
    if drug_system == "LOCAL":
        out["drug"] = {local_drug_code(dialect, d["rxnorm"]): f"RxNorm:{d['rxnorm']}" for d in drugs()}
    return out
