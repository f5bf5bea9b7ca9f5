"""Per-analyte unit conversion (not a blind factor: each analyte has its own canonical unit).

The table ``enclave/core/model/vocabulary/analytes.csv`` lists, per LOINC analyte, the canonical unit
(the one Chinese laboratories report, e.g. mmol/L for glucose, µmol/L for creatinine) and the factor
from the alternative unit (mg/dL at some hospitals) to the canonical one.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

import polars as pl

#: Spellings seen in extracts → UCUM code.
UNIT_SYNONYMS: dict[str, str] = {
    "mmol/l": "mmol/L",
    "mg/dl": "mg/dL",
    "umol/l": "umol/L",
    "µmol/l": "umol/L",
    "μmol/l": "umol/L",
    "g/l": "g/L",
    "g/dl": "g/dL",
    "%": "%",
    "10*9/l": "10*9/L",
    "10^9/l": "10*9/L",
    "×10^9/l": "10*9/L",
    "10*3/ul": "10*3/uL",
    "10^3/ul": "10*3/uL",
    "k/ul": "10*3/uL",
    "mmhg": "mm[Hg]",
    "mm[hg]": "mm[Hg]",
    "kg/m2": "kg/m2",
    "kg/m^2": "kg/m2",
}


@dataclass(frozen=True, slots=True)
class Analyte:
    loinc: str
    concept_id: int
    name_en: str
    name_zh: str
    canonical_unit: str
    unit_concept_id: int
    alt_unit: str | None
    factor_to_canonical: float | None


@cache
def analytes() -> dict[str, Analyte]:
    text = resources.files("enclave.core.model").joinpath("vocabulary/analytes.csv").read_text("utf-8")
    out = {}
    for r in csv.DictReader(text.splitlines()):
        out[r["loinc"]] = Analyte(
            loinc=r["loinc"],
            concept_id=int(r["concept_id"]),
            name_en=r["name_en"],
            name_zh=r["name_zh"],
            canonical_unit=r["canonical_unit"],
            unit_concept_id=int(r["unit_concept_id"]),
            alt_unit=r["alt_unit"] or None,
            factor_to_canonical=float(r["factor_to_canonical"]) if r["factor_to_canonical"] else None,
        )
    return out


def conversion_table() -> pl.DataFrame:
    """(loinc, unit, factor, canonical_unit, unit_concept_id) for every accepted unit of a known analyte."""
    rows = []
    for a in analytes().values():
        rows.append((a.loinc, a.canonical_unit, 1.0, a.canonical_unit, a.unit_concept_id))
        if a.alt_unit and a.factor_to_canonical:
            rows.append((a.loinc, a.alt_unit, a.factor_to_canonical, a.canonical_unit, a.unit_concept_id))
    return pl.DataFrame(
        rows,
        schema={"loinc": pl.Utf8, "unit": pl.Utf8, "factor": pl.Float64, "canonical_unit": pl.Utf8,
                "unit_concept_id": pl.Int64},
        orient="row",
    )
