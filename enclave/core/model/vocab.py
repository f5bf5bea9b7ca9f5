"""The vocabulary subset shipped with the package (see vocabulary/SOURCES.md)."""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources

import polars as pl

#: local source concepts (codes no loaded vocabulary holds) get ids above this; a vocabulary load
#: never inserts, changes or removes them (OMOP reserves ids above 2,000,000,000 for local use)
LOCAL_CONCEPT_BASE = 2_000_000_000


def _text(name: str) -> str:
    return resources.files("enclave.core.model").joinpath(f"vocabulary/{name}").read_text("utf-8")


def shipped_concepts() -> pl.DataFrame:
    """Rows for the ``concept`` table, in CDM column order."""
    return pl.read_csv(
        _text("concept.csv").encode("utf-8"),
        schema_overrides={"concept_id": pl.Int64, "concept_code": pl.Utf8,
                          "standard_concept": pl.Utf8, "invalid_reason": pl.Utf8},
        try_parse_dates=True,
    )


@cache
def icd10_standard() -> pl.DataFrame:
    """WHO ICD-10 code → standard (SNOMED) concept id."""
    rows = [(r["icd10_code"], int(r["target_concept_id"])) for r in csv.DictReader(_text("icd10_to_standard.csv").splitlines())]
    return pl.DataFrame(rows, schema={"who": pl.Utf8, "icd_target": pl.Int64}, orient="row")


@cache
def drugs() -> list[dict]:
    return list(csv.DictReader(_text("drugs.csv").splitlines()))
