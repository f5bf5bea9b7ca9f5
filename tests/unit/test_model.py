"""The store's CDM tables match the OMOP CDM 5.4 specification, column for column."""

from __future__ import annotations

import csv

import duckdb

from enclave.core.model.omop import CDM_TABLES
from enclave.io.store import create_schema
from tests.conftest import SHARED

SPEC = SHARED / "reference" / "omop-cdm-5.4" / "OMOP_CDMv5.4_Field_Level.csv"
DUCK_TYPE = {"integer": "INTEGER", "float": "DOUBLE", "date": "DATE", "datetime": "TIMESTAMP"}


def spec_columns() -> dict[str, list[tuple[str, str, bool]]]:
    out: dict[str, list[tuple[str, str, bool]]] = {}
    with open(SPEC, encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            t = row["cdmTableName"].lower()
            dtype = row["cdmDatatype"].lower()
            duck = "VARCHAR" if dtype.startswith("varchar") else DUCK_TYPE[dtype]
            out.setdefault(t, []).append((row["cdmFieldName"].lower(), duck, row["isRequired"].lower() == "yes"))
    return out


def assert_tables_match_the_specification(tables) -> None:
    """Each of ``tables``, as the store's schema creates it, has the specification's columns, in
    its order, with its types and nullability."""
    con = duckdb.connect()
    create_schema(con)
    spec = spec_columns()
    for table in tables:
        got = con.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position", [table]
        ).fetchall()
        expected = [(name, duck, "NO" if req else "YES") for name, duck, req in spec[table]]
        assert got == expected, table


def test_every_cdm_table_matches_the_specification():
    assert_tables_match_the_specification(CDM_TABLES)


def test_the_required_tables_are_all_there():
    required = {"person", "observation_period", "visit_occurrence", "condition_occurrence",
                "drug_exposure", "procedure_occurrence", "measurement", "observation", "death",
                "location", "care_site", "provider", "cdm_source", "concept", "source_to_concept_map"}
    assert required <= set(CDM_TABLES)
    con = duckdb.connect()
    create_schema(con)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert required | {"etl_lineage", "etl_reject", "site_registry"} <= tables
