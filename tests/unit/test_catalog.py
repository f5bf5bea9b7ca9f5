"""The classification catalog: complete, consistent, enforced, documented."""

from __future__ import annotations

import csv
import doctest
import json
import subprocess
import sys
from importlib import resources

import pytest

import enclave.core.model.catalog
from enclave.core.errors import BadInputError, ConfigurationError
from enclave.core.model.catalog import (
    Category,
    ColumnClass,
    IdentifierRole,
    Level,
    ValueKind,
    can_release,
    catalog,
    check_classified,
    classify,
    dataset_level,
    parse_catalog,
    render_catalog_doc,
    table_level,
)
from enclave.core.model.omop import CDM_TABLES, cdm_columns
from tests.conftest import REPO


def _csv_rows() -> list[dict[str, str]]:
    file = resources.files("enclave.core.model").joinpath("classification.csv")
    text = file.read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def test_every_column_of_every_cdm_table_is_classified():
    model = {(t, c.name) for t in CDM_TABLES for c in cdm_columns()[t]}
    classified = {(c.table, c.column) for cols in catalog().values() for c in cols}
    missing = sorted(model - classified)
    assert not missing, f"unclassified columns: {missing}"
    for t in CDM_TABLES:
        check_classified(t, [c.name for c in cdm_columns()[t]])  # the release gate passes


def test_csv_has_no_rows_for_unknown_tables_or_columns_and_no_duplicates():
    model = {(t, c.name) for t in CDM_TABLES for c in cdm_columns()[t]}
    rows = [(r["table"], r["column"]) for r in _csv_rows()]
    assert [r for r in rows if r not in model] == []
    assert len(rows) == len(set(rows)) == len(model)


def test_csv_values_are_closed_sets_and_every_row_has_a_rationale():
    for r in _csv_rows():
        assert r["category"] in {c.value for c in Category}, r
        assert 1 <= int(r["level"]) <= 5, r
        assert r["role"] in {x.value for x in IdentifierRole}, r
        assert r["kind"] in {k.value for k in ValueKind}, r
        assert r["free_text"] in {"yes", "no"}, r
        assert r["rationale"].strip(), r


@pytest.mark.parametrize(
    ("table", "column", "role", "category"),
    [
        ("person", "person_id", IdentifierRole.DIRECT, Category.PERSONAL_ATTRIBUTES),
        ("person", "person_source_value", IdentifierRole.DIRECT, Category.PERSONAL_ATTRIBUTES),
        ("person", "year_of_birth", IdentifierRole.QUASI, Category.PERSONAL_ATTRIBUTES),
        ("person", "birth_datetime", IdentifierRole.QUASI, Category.PERSONAL_ATTRIBUTES),
        ("person", "gender_concept_id", IdentifierRole.QUASI, Category.PERSONAL_ATTRIBUTES),
        ("person", "location_id", IdentifierRole.QUASI, Category.PERSONAL_ATTRIBUTES),
        ("condition_occurrence", "condition_concept_id", IdentifierRole.SENSITIVE,
         Category.HEALTH_STATUS),
        ("measurement", "value_as_number", IdentifierRole.SENSITIVE, Category.HEALTH_STATUS),
        ("drug_exposure", "drug_concept_id", IdentifierRole.SENSITIVE,
         Category.MEDICAL_APPLICATION),
        ("cost", "total_cost", IdentifierRole.SENSITIVE, Category.MEDICAL_PAYMENT),
        ("provider", "provider_name", IdentifierRole.DIRECT, Category.HEALTH_RESOURCES),
        ("care_site", "care_site_name", IdentifierRole.NONE, Category.HEALTH_RESOURCES),
        ("concept", "concept_name", IdentifierRole.NONE, Category.PUBLIC_HEALTH),
        ("source_to_concept_map", "source_code", IdentifierRole.NONE, Category.PUBLIC_HEALTH),
    ],
)
def test_key_columns_carry_the_expected_role_and_category(table, column, role, category):
    cls = classify(table, column)
    assert cls is not None and cls.role is role and cls.category is category


def test_person_keys_are_direct_identifiers_in_every_table():
    for t in CDM_TABLES:
        if any(c.name == "person_id" for c in cdm_columns()[t]):
            cls = classify(t, "person_id")
            assert cls.role is IdentifierRole.DIRECT and cls.kind is ValueKind.ID, t


def test_every_date_column_is_a_quasi_identifier_or_reference_data():
    for t in CDM_TABLES:
        for col in cdm_columns()[t]:
            if col.cdm_type in ("date", "datetime"):
                cls = classify(t, col.name)
                assert cls.kind is ValueKind.DATE, (t, col.name)
                assert cls.role is IdentifierRole.QUASI or cls.level == Level.L1, (t, col.name)


def test_free_text_is_flagged_and_note_text_is_level_5():
    note_text = classify("note", "note_text")
    assert note_text.level == Level.L5 and note_text.free_text
    assert note_text.role is IdentifierRole.SENSITIVE
    for cols in catalog().values():
        for c in cols:
            if c.free_text:
                assert c.kind is ValueKind.TEXT and c.level >= Level.L3, c


def test_dataset_level_is_the_level_of_its_most_sensitive_column():
    for t, cols in catalog().items():
        assert table_level(t) == max(int(c.level) for c in cols)
    person = {c.column: c for c in catalog()["person"]}
    # a cut of the person table without the day of birth and the keys
    cut = [person["gender_concept_id"], person["year_of_birth"]]
    expected = max(person["gender_concept_id"].level, person["year_of_birth"].level)
    assert dataset_level(cut) == expected
    assert dataset_level([person["gender_concept_id"]]) == person["gender_concept_id"].level
    assert table_level("note") == Level.L5 and table_level("concept") == Level.L1
    with pytest.raises(BadInputError):
        dataset_level([])


def _fake(level: int, column: str = "x") -> ColumnClass:
    return ColumnClass("t", column, Category.HEALTH_STATUS, Level(level), IdentifierRole.NONE,
                       ValueKind.NUMBER, False, "test")


def test_dataset_level_on_built_columns():
    assert dataset_level([_fake(2, "a"), _fake(4, "b"), _fake(1, "c")]) == Level.L4
    assert dataset_level([_fake(1)]) == Level.L1


def test_check_classified_names_the_unclassified_columns():
    cols = [c.name for c in cdm_columns()["visit_occurrence"]] + ["patient_name", "phone"]
    with pytest.raises(ConfigurationError) as err:
        check_classified("visit_occurrence", cols)
    msg = str(err.value)
    assert "patient_name" in msg and "phone" in msg and "visit_occurrence" in msg
    assert "visit_start_date" not in msg
    assert not can_release("visit_occurrence", cols)
    assert can_release("visit_occurrence", ["visit_start_date"])
    with pytest.raises(ConfigurationError, match="etl_lineage"):
        check_classified("etl_lineage", ["source_file"])
    got = check_classified("person", ["year_of_birth", "person_id"])
    assert [c.column for c in got] == ["year_of_birth", "person_id"]


def test_check_classified_against_a_catalog_missing_a_column():
    header = "table,column,category,level,role,kind,free_text,rationale\n"
    row = "person,person_id,personal_attributes,4,direct_identifier,id,no,key\n"
    classes = parse_catalog(header + row)
    check_classified("person", ["person_id"], classes)
    with pytest.raises(ConfigurationError, match="year_of_birth"):
        check_classified("person", ["person_id", "year_of_birth"], classes)


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("person,person_id,personal,4,direct_identifier,id,no,key", "personal"),
        ("person,person_id,personal_attributes,6,direct_identifier,id,no,key", "6"),
        ("person,person_id,personal_attributes,4,identifier,id,no,key", "identifier"),
        ("person,person_id,personal_attributes,4,direct_identifier,uuid,no,key", "uuid"),
        ("person,person_id,personal_attributes,4,direct_identifier,id,maybe,key", "free_text"),
        ("person,person_id,personal_attributes,4,direct_identifier,id,no,", "rationale"),
    ],
)
def test_malformed_catalog_rows_are_refused_with_their_line(row, fragment):
    header = "table,column,category,level,role,kind,free_text,rationale\n"
    with pytest.raises(ConfigurationError) as err:
        parse_catalog(header + row + "\n")
    assert "line 2" in str(err.value) and fragment in str(err.value)


def test_duplicate_catalog_rows_are_refused():
    header = "table,column,category,level,role,kind,free_text,rationale\n"
    row = "person,person_id,personal_attributes,4,direct_identifier,id,no,key\n"
    with pytest.raises(ConfigurationError, match="twice"):
        parse_catalog(header + row + row)


def test_catalog_doc_is_generated_from_the_csv():
    doc = REPO / "docs" / "catalog.md"
    assert doc.read_text(encoding="utf-8") == render_catalog_doc(), (
        "docs/catalog.md is stale: regenerate with python -c 'from enclave.core.model.catalog import "
        "render_catalog_doc as r; print(r(), end=\"\")' > docs/catalog.md"
    )


def test_catalog_doc_lists_every_classified_column():
    doc = render_catalog_doc()
    for t, cols in catalog().items():
        assert f"### {t}" in doc
        for c in cols:
            assert f"| `{c.column}` |" in doc


def test_module_doctests():
    assert doctest.testmod(enclave.core.model.catalog).failed == 0


def _cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "enclave", "--home", str(tmp_path), *args],
                          check=False, capture_output=True, text=True, cwd=REPO)


def test_cli_catalog_json_matches_the_catalog(tmp_path):
    res = _cli(tmp_path, "catalog", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [t["table"] for t in data["tables"]] == list(CDM_TABLES)
    for entry in data["tables"]:
        cols = catalog()[entry["table"]]
        assert entry["level"] == max(int(c.level) for c in cols)
        assert [c["column"] for c in entry["columns"]] == [c.column for c in cols]
        assert {c["role"] for c in entry["columns"]} <= {r.value for r in IdentifierRole}


def test_cli_catalog_one_table_as_text(tmp_path):
    res = _cli(tmp_path, "catalog", "--table", "note")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "note (level 5)"
    text_line = next(line for line in lines if line.split()[0] == "note_text")
    assert "sensitive_attribute" in text_line and "free text" in text_line
    assert len(lines) == 1 + len(cdm_columns()["note"])


def test_cli_catalog_unknown_table(tmp_path):
    res = _cli(tmp_path, "catalog", "--table", "patients")
    assert res.returncode == 2
    assert "unknown table(s) patients" in res.stderr
