"""OMOP CDM CSV adapter on the real Eunomia Synthea27Nj export, plus corruption tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings

from enclave.io.ingest.adapters import get_adapter
from enclave.io.ingest.adapters.omop_csv import stage
from enclave.io.ingest.mapping import builtin_profile
from tests import delimited
from tests.delimited import csv_records

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "omop-synthea27nj"
MAPPING = builtin_profile("omop").with_site("o1")
STAGED_TABLES = {
    "PERSON": "person", "VISIT_OCCURRENCE": "visit", "CONDITION_OCCURRENCE": "condition",
    "DRUG_EXPOSURE": "drug", "MEASUREMENT": "measurement", "OBSERVATION": "observation",
    "PROCEDURE_OCCURRENCE": "procedure", "DEATH": "death", "NOTE": "note",
    "CARE_SITE": "care_site", "PROVIDER": "provider", "CONCEPT": "concept",
}


BATCH = stage(FIXTURE, MAPPING)


def test_registry_points_at_this_adapter():
    assert get_adapter("omop") is stage


def test_every_file_counted_and_every_row_staged_once():
    delimited.assert_every_row_staged_once(BATCH, sorted(FIXTURE.glob("*.csv")))


def test_staged_tables_land_in_their_kind_and_the_rest_is_unsupported():
    unparsed = BATCH.frames["unparsed"]
    for file in sorted(FIXTURE.glob("*.csv")):
        n = len(csv_records(file))
        table = file.stem.upper()
        if table in STAGED_TABLES:
            kind = BATCH.frames[STAGED_TABLES[table]]
            assert kind.filter(pl.col("_file") == str(file)).height == n, table
        else:
            mine = unparsed.filter(pl.col("_file") == str(file))
            assert mine.height == n, table
            assert set(mine["_reject"]) <= {"unsupported_record"}
            assert set(mine["_reject_column"]) <= {table}
    assert unparsed.filter(pl.col("_reject") != "unsupported_record").height == 0


def test_spot_checks_against_the_raw_csv():
    person = BATCH.frames["person"]
    raw_persons = csv_records(FIXTURE / "PERSON.csv")
    assert person.height == len(raw_persons) == 28
    for raw in raw_persons:
        row = person.filter(pl.col("site_patient_id") == raw["person_id"]).row(0, named=True)
        born = dt.date(int(raw["year_of_birth"]), int(raw["month_of_birth"]),
                       int(raw["day_of_birth"]))
        assert row["birth_date"] == born
        assert row["sex"] == {"8507": "M", "8532": "F"}[raw["gender_concept_id"]]
    measurement = BATCH.frames["measurement"]
    no_unit = sum(1 for r in csv_records(FIXTURE / "MEASUREMENT.csv") if not r["unit_source_value"])
    assert measurement.filter(pl.col("unit").is_null()).height == no_unit == 901
    assert measurement["_reject"].null_count() == measurement.height  # no unit is not an error
    assert BATCH.frames["concept"].height == len(csv_records(FIXTURE / "CONCEPT.csv"))
    # no rejects at all in the clean fixture
    for kind, frame in BATCH.frames.items():
        if kind != "unparsed":
            assert frame["_reject"].null_count() == frame.height, kind


def test_codes_visits_and_concepts_against_the_raw_csv():
    concepts = {r["concept_id"]: r["vocabulary_id"] for r in csv_records(FIXTURE / "CONCEPT.csv")}
    meas = BATCH.frames["measurement"].sort("_row")
    raw = csv_records(FIXTURE / "MEASUREMENT.csv")
    expected = [concepts[r["measurement_source_concept_id"]] for r in raw]
    assert meas["code_system"].to_list() == expected
    assert meas["code"].to_list() == [r["measurement_source_value"] for r in raw]
    first = meas.row(0, named=True)
    assert first["value"] == float(raw[0]["value_as_number"])
    assert first["concept_id"] == int(raw[0]["measurement_concept_id"])
    assert first["date"] == dt.date.fromisoformat(raw[0]["measurement_date"])
    visit = BATCH.frames["visit"].sort("_row")
    types = {"9201": "inpatient", "9202": "outpatient", "9203": "emergency"}
    raw_visits = csv_records(FIXTURE / "VISIT_OCCURRENCE.csv")
    assert visit["visit_type"].to_list() == [types[r["visit_concept_id"]] for r in raw_visits]
    assert visit["site_visit_id"].to_list() == [r["visit_occurrence_id"] for r in raw_visits]
    cond = BATCH.frames["condition"]
    assert set(cond["code_system"]) == {"SNOMED"}
    concept = BATCH.frames["concept"].sort("_row")
    raw_concepts = csv_records(FIXTURE / "CONCEPT.csv")
    assert concept["concept_id"].to_list() == [int(r["concept_id"]) for r in raw_concepts]
    assert concept["valid_end_date"].to_list() == [
        dt.date.fromisoformat(r["valid_end_date"]) for r in raw_concepts
    ]
    death = BATCH.frames["death"].sort("_row")
    assert death["date"].to_list() == [
        dt.date.fromisoformat(r["death_date"]) for r in csv_records(FIXTURE / "DEATH.csv")
    ]


def test_upper_case_columns_yyyymmdd_dates_and_bad_values(tmp_path):
    (tmp_path / "person.csv").write_text(
        "PERSON_ID,GENDER_CONCEPT_ID,YEAR_OF_BIRTH,MONTH_OF_BIRTH,DAY_OF_BIRTH,BIRTH_DATETIME\n"
        "1,8532,1990,2,3,\n"
        "2,8507,1990,2,30,\n"
        "3,12345,1991,1,1,\n"
        "4,8507\n",
        encoding="utf-8",
    )
    (tmp_path / "DEATH.csv").write_text("PERSON_ID,DEATH_DATE\n1,20200105\n2,2020-01-06\n",
                                        encoding="utf-8")
    batch = stage(tmp_path, MAPPING)
    person = batch.frames["person"].sort("_row")
    assert person.select("_row", "sex", "birth_date", "_reject", "_reject_column").rows() == [
        (1, "F", dt.date(1990, 2, 3), None, None),
        (2, "M", None, "invalid_date", "YEAR_OF_BIRTH"),
        (3, None, dt.date(1991, 1, 1), "invalid_sex", "GENDER_CONCEPT_ID"),
    ]
    assert batch.frames["unparsed"].select("_row", "_reject").rows() == [(4, "malformed_row")]
    assert batch.frames["death"].sort("_row")["date"].to_list() == [
        dt.date(2020, 1, 5), dt.date(2020, 1, 6)
    ]


# --- corruption (Hypothesis) ---------------------------------------------------------------------

SAMPLE = FIXTURE.joinpath("CONCEPT.csv").read_bytes().split(b"\n")[:9]  # has "" quoted fields

#: what an edit inserts (``delete`` removes two bytes)
INSERTED = {"insert": b"7z", "sep": b",", "quote": b'"', "badbyte": b"\xc3", "newline": b"\n"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=delimited.line_edits(200), truncate=delimited.TRUNCATIONS)
def test_corrupted_file_never_raises_and_accounts_for_every_record(tmp_path, edits, truncate):
    data = delimited.corrupt(SAMPLE, edits, truncate, INSERTED, deleted=2)
    batch, n = delimited.stage_accounted(stage, MAPPING, tmp_path / "CONCEPT.csv", data)
    nonblank_data_lines = sum(1 for line in data.split(b"\n")[1:] if line.strip(b"\r"))
    # a record spans one line, or several when a quoted field holds line breaks
    assert 0 < n <= nonblank_data_lines or nonblank_data_lines == 0
    if not edits and not truncate:
        assert n == len(SAMPLE) - 1 and batch.frames["concept"].height == n
