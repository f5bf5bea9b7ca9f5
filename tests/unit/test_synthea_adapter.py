"""Synthea CSV adapter on the real fixture folder, plus corruption tests of the delimited reader."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings

from enclave.io.ingest.adapters import get_adapter
from enclave.io.ingest.adapters._delimited import read_delimited
from enclave.io.ingest.adapters.synthea import stage
from enclave.io.ingest.mapping import builtin_profile
from tests import delimited
from tests.delimited import csv_records

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "synthea-csv"
MAPPING = builtin_profile("synthea").with_site("s1")


def test_registry_points_at_this_adapter():
    assert get_adapter("synthea") is stage


def test_every_file_counted_and_every_row_staged_once():
    delimited.assert_every_row_staged_once(stage(FIXTURE, MAPPING), sorted(FIXTURE.glob("*.csv")))


def test_kinds_and_counts_match_the_fixture():
    batch = stage(FIXTURE, MAPPING)
    f = batch.frames
    assert f["person"].height == len(csv_records(FIXTURE / "patients.csv"))
    assert f["visit"].height == len(csv_records(FIXTURE / "encounters.csv"))
    obs = csv_records(FIXTURE / "observations.csv")
    numeric = sum(r["TYPE"] == "numeric" for r in obs)
    allergies = len(csv_records(FIXTURE / "allergies.csv"))
    assert f["measurement"].height == numeric
    assert f["observation"].height == len(obs) - numeric + allergies
    drugs = len(csv_records(FIXTURE / "medications.csv")) + len(
        csv_records(FIXTURE / "immunizations.csv")
    )
    assert f["drug"].height == drugs
    assert set(f["drug"]["code_system"].unique()) == {"RxNorm", "CVX"}
    # this export predates the SYSTEM column of conditions/procedures: the files' defaults apply
    assert set(f["condition"]["code_system"]) == set(f["procedure"]["code_system"]) == {"SNOMED"}
    allergy = f["observation"].filter(pl.col("_file").str.ends_with("allergies.csv"))
    systems = [r["SYSTEM"] for r in csv_records(FIXTURE / "allergies.csv")]
    assert allergy.sort("_row")["code_system"].to_list() == [
        {"SNOMED-CT": "SNOMED", "RxNorm": "RxNorm"}[s] for s in systems]
    assert f["care_site"].height == len(csv_records(FIXTURE / "organizations.csv"))
    assert f["provider"].height == len(csv_records(FIXTURE / "providers.csv"))
    # the clean fixture has no rejects at all
    for kind, frame in f.items():
        assert frame["_reject"].null_count() == frame.height, kind


def test_person_fields_against_the_raw_csv():
    batch = stage(FIXTURE, MAPPING)
    person = batch.frames["person"]
    for raw in csv_records(FIXTURE / "patients.csv"):
        row = person.filter(pl.col("site_patient_id") == raw["Id"]).row(0, named=True)
        assert row["birth_date"] == dt.date.fromisoformat(raw["BIRTHDATE"])
        death = dt.date.fromisoformat(raw["DEATHDATE"]) if raw["DEATHDATE"] else None
        assert row["death_date"] == death
        assert row["sex"] == raw["GENDER"]
        assert row["name"] == f"{raw['FIRST']} {raw['LAST']}"
        assert row["address"].startswith(raw["ADDRESS"])
        assert row["resident_id"] is None and row["insurance_no"] is None


def test_visit_types_costs_and_times_against_the_raw_csv():
    batch = stage(FIXTURE, MAPPING)
    visits = batch.frames["visit"]
    expected_type = {
        "ambulatory": "outpatient", "wellness": "outpatient", "outpatient": "outpatient",
        "urgentcare": "outpatient", "inpatient": "inpatient", "emergency": "emergency",
    }
    for raw in csv_records(FIXTURE / "encounters.csv")[:80]:
        row = visits.filter(pl.col("site_visit_id") == raw["Id"]).row(0, named=True)
        assert row["visit_type"] == expected_type[raw["ENCOUNTERCLASS"]]
        start = dt.datetime.strptime(raw["START"], "%Y-%m-%dT%H:%M:%SZ")
        assert row["start_datetime"] == start and row["start_date"] == start.date()
        total, cover = float(raw["TOTAL_CLAIM_COST"]), float(raw["PAYER_COVERAGE"])
        assert row["total_cost"] == total
        assert abs(row["paid_by_patient"] - (total - cover)) < 1e-9
        assert row["care_site_id"] == raw["ORGANIZATION"]


def test_unknown_file_is_staged_as_unsupported(tmp_path):
    shutil.copy(FIXTURE / "patients.csv", tmp_path / "patients.csv")
    (tmp_path / "payers.csv").write_text("Id,NAME\n1,a\n2,b\n3,c\n", encoding="utf-8")
    (tmp_path / "site.toml").write_text("[site]\n", encoding="utf-8")
    batch = stage(tmp_path, MAPPING)
    assert str(tmp_path / "site.toml") not in batch.read_counts
    unparsed = batch.frames["unparsed"].filter(pl.col("_file") == str(tmp_path / "payers.csv"))
    assert unparsed["_row"].to_list() == [1, 2, 3]
    assert set(unparsed["_reject"]) == {"unsupported_record"}
    assert set(unparsed["_reject_column"]) == {"payers"}


def test_bad_values_are_flagged_not_dropped(tmp_path):
    header = FIXTURE.joinpath("patients.csv").read_text(encoding="utf-8").splitlines()[0]
    rows = [
        "p1,2001-02-30,,999-00-0000,,,,A,B,,,,white,nonhispanic,M,x,1 St,C,MA,X,02155,1,1,0,0",
        "p2,2001-02-03,,999-00-0000,,,,A,B,,,,white,nonhispanic,Q,x,1 St,C,MA,X,02155,1,1,0,0",
        "p3,2001-02-03,,999-00-0000",
    ]
    (tmp_path / "patients.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    batch = stage(tmp_path, MAPPING)
    person = batch.frames["person"].sort("_row")
    assert person.select("_row", "_reject", "_reject_column").rows() == [
        (1, "invalid_date", "BIRTHDATE"), (2, "invalid_sex", "GENDER")
    ]
    unparsed = batch.frames["unparsed"]
    assert unparsed.select("_row", "_reject").rows() == [(3, "malformed_row")]


def test_system_column_decides_the_code_system(tmp_path):
    """Synthea 3 writes SYSTEM in conditions/procedures/allergies; the file default is a fallback."""
    (tmp_path / "conditions.csv").write_text(
        "START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION\n"
        "2020-01-01,,p1,e1,SNOMED-CT,44054006,Diabetes\n"
        "2020-01-01,,p1,e1,ICD-10,E11.9,Type 2 diabetes\n"
        "2020-01-01,,p1,e1,ICD-10-CM,I10,Hypertension\n"
        "2020-01-01,,p1,e1,http://snomed.info/sct,38341003,Hypertension\n"
        "2020-01-01,,p1,e1,,59621000,Essential hypertension\n"
        "2020-01-01,,p1,e1,Unknown,X1,Something\n"
        "2020-01-01,,p1,e1,icd10cm,E78.5,Hyperlipidemia\n",
        encoding="utf-8",
    )
    (tmp_path / "procedures.csv").write_text(
        "START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION,BASE_COST,REASONCODE,REASONDESCRIPTION\n"
        "2020-01-01T00:00:00Z,,p1,e1,SNOMED-CT,430193006,Medication reconciliation,100.0,,\n"
        "2020-01-01T00:00:00Z,,p1,e1,CPT,99213,Office visit,100.0,,\n",
        encoding="utf-8",
    )
    (tmp_path / "allergies.csv").write_text(
        "START,STOP,PATIENT,ENCOUNTER,CODE,SYSTEM,DESCRIPTION,TYPE,CATEGORY\n"
        "2020-01-01,,p1,e1,7980,RxNorm,Penicillin G,allergy,medication\n"
        "2020-01-01,,p1,e1,X9,Unknown,Something,allergy,food\n",
        encoding="utf-8",
    )
    (tmp_path / "medications.csv").write_text(
        "START,STOP,PATIENT,PAYER,ENCOUNTER,CODE,DESCRIPTION,BASE_COST,PAYER_COVERAGE,DISPENSES,TOTALCOST,"
        "REASONCODE,REASONDESCRIPTION\n2020-01-01T00:00:00Z,,p1,x,e1,860975,Metformin,1,0,1,1,,\n",
        encoding="utf-8",
    )
    batch = stage(tmp_path, MAPPING)
    f = batch.frames
    assert f["condition"].sort("_row").select("code_system", "code").rows() == [
        ("SNOMED", "44054006"), ("ICD10CM", "E11.9"), ("ICD10CM", "I10"), ("SNOMED", "38341003"),
        ("SNOMED", "59621000"), ("LOCAL", "X1"), ("ICD10CM", "E78.5"),
    ]
    assert f["procedure"].sort("_row")["code_system"].to_list() == ["SNOMED", "CPT4"]
    assert f["observation"].sort("_row")["code_system"].to_list() == ["RxNorm", "LOCAL"]
    assert f["drug"]["code_system"].to_list() == ["RxNorm"]
    for frame in f.values():
        assert frame["_reject"].null_count() == frame.height


# --- corruption (Hypothesis) ---------------------------------------------------------------------

SAMPLE_LINES = FIXTURE.joinpath("encounters.csv").read_bytes().split(b"\n")[:9]

#: what an edit inserts (``delete`` removes three bytes)
INSERTED = {"insert": b"xyz", "sep": b",,", "quote": b'"', "badbyte": b"\xff\xfe", "newline": b"\n"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=delimited.line_edits(400), truncate=delimited.TRUNCATIONS)
def test_corrupted_file_never_raises_and_accounts_for_every_record(tmp_path, edits, truncate):
    data = delimited.corrupt(SAMPLE_LINES, edits, truncate, INSERTED, deleted=3)
    file = tmp_path / "encounters.csv"
    _, n = delimited.stage_accounted(stage, MAPPING, file, data)
    # every non-blank physical data line lies inside exactly one staged record
    table = read_delimited(file)
    starts = sorted(pl.concat([table.rows.select("_line"), table.malformed.select("_line")])
                    ["_line"].to_list())
    physical = data.split(b"\n")
    nonblank = [i + 1 for i, line in enumerate(physical) if line.strip(b"\r")]
    assert nonblank[0] == 1 and set(starts) <= set(nonblank[1:])
    assert starts[:1] == nonblank[1:2]  # the first data line starts a record
    assert len(starts) == n
