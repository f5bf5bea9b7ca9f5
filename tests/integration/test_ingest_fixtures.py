"""Every real public sample under ../shared/fixtures ingests through the real CLI without losing a row."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.conftest import FIXTURES

CASES = [
    ("synthea-csv", "synthea", "synthea"),
    ("fhir-r4", "fhir", "fhir"),
    ("hl7v2", "hl7", "hl7v2"),
    ("omop-synthea27nj", "eunomia", "omop"),
]


def enclave(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "enclave", "--home", str(home), *args],
        capture_output=True, text=True, timeout=600,
    )


#: fixture folders holding files that load nothing on purpose (malformed samples, or messages
#: about patients the folder does not hold)
EMPTY_HANDED = {"hl7v2"}


def ingest(home: Path, folder: str, site: str, dialect: str) -> dict:
    args = ["ingest", str(FIXTURES / folder), "--site", site, "--dialect", dialect, "--json"]
    proc = enclave(home, *args)
    if folder not in EMPTY_HANDED:
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    # a file that loads nothing ends the run with exit code 7 and a warning naming it ...
    assert proc.returncode == 7, proc.stderr
    out = json.loads(proc.stdout)
    empty = {f["file"] for f in out["files"] if f["loaded"] == 0 and not f["already_ingested"]}
    assert empty and {w.split(": ")[0] for w in out["warnings"]} == empty
    assert all(f"warning: {w}" in proc.stderr for w in out["warnings"])
    # ... and the run is kept: --allow-empty on the same files then finds them ingested or retried
    return out


def data_rows(path: Path) -> int:
    with open(path, encoding="utf-8", newline="") as fh:
        return sum(1 for _ in csv.reader(fh)) - 1


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    home = tmp_path_factory.mktemp("fixtures-home")
    reports = {folder: ingest(home, folder, site, dialect) for folder, site, dialect in CASES}
    return home, reports


@pytest.mark.parametrize("folder", [c[0] for c in CASES])
def test_every_record_is_loaded_rejected_or_merged(loaded, folder):
    _, reports = loaded
    files = reports[folder]["files"]
    assert files, folder
    for f in files:
        assert f["read"] == f["loaded"] + f["rejected_total"] + f["merged_duplicates"], f["file"]
        assert f["read"] >= f["source_records"] or f["source_records"] == 0, f["file"]
    # every file of the fixture folder is accounted for
    on_disk = {p.name for p in (FIXTURES / folder).iterdir() if p.is_file() and p.suffix in {".csv", ".json", ".hl7", ".ndjson"}}
    assert on_disk <= {Path(f["file"]).name for f in files}


def by_name(report: dict) -> dict[str, dict]:
    return {Path(f["file"]).name: f for f in report["files"]}


def test_synthea_loads_every_clinical_row(loaded):
    _, reports = loaded
    files = by_name(reports["synthea-csv"])
    for name in ("patients.csv", "encounters.csv", "conditions.csv", "medications.csv",
                 "observations.csv", "procedures.csv", "immunizations.csv", "allergies.csv"):
        f = files[name]
        assert f["loaded"] + f["merged_duplicates"] == data_rows(FIXTURES / "synthea-csv" / name), name
        assert f["rejected_total"] == 0, (name, f["rejected"])


def test_omop_persons_and_events_load(loaded):
    home, reports = loaded
    files = by_name(reports["omop-synthea27nj"])
    for name in ("PERSON.csv", "VISIT_OCCURRENCE.csv", "CONDITION_OCCURRENCE.csv", "DRUG_EXPOSURE.csv",
                 "MEASUREMENT.csv", "PROCEDURE_OCCURRENCE.csv", "OBSERVATION.csv", "DEATH.csv"):
        f = files[name]
        # exact repeats (same person, visit, date, code, value under another row id) are merged
        assert f["loaded"] + f["merged_duplicates"] == data_rows(FIXTURES / "omop-synthea27nj" / name), (name, f)
        assert f["rejected_total"] == 0 and f["merged_duplicates"] <= 20, (name, f)
    # derived/vocabulary tables are counted and quarantined as unsupported, never silently dropped
    era = files["CONDITION_ERA.csv"]
    assert era["rejected"] == {"unsupported_record": data_rows(FIXTURES / "omop-synthea27nj" / "CONDITION_ERA.csv")}


def test_store_counts_after_all_fixtures(loaded):
    home, _ = loaded
    proc = enclave(home, "store", "stats", "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    synthea_patients = data_rows(FIXTURES / "synthea-csv" / "patients.csv")
    omop_persons = data_rows(FIXTURES / "omop-synthea27nj" / "PERSON.csv")
    fhir_patients = sum(
        1 for p in (FIXTURES / "fhir-r4").glob("*.json")
        for e in json.loads(p.read_text())["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    # site-local linkage: no person is merged across these unrelated sources
    assert stats["persons"] >= synthea_patients + omop_persons + fhir_patients
    con = duckdb.connect(str(home / "restricted" / "cdm.duckdb"), read_only=True)
    try:
        orphans = con.execute(
            "SELECT count(*) FROM measurement m LEFT JOIN person p USING (person_id) WHERE p.person_id IS NULL"
        ).fetchall()[0][0]
        lineage = con.execute("SELECT count(*) FROM etl_lineage").fetchall()[0][0]
        mapped = con.execute(
            "SELECT count(*) FROM condition_occurrence WHERE condition_concept_id <> 0"
        ).fetchall()[0][0]
    finally:
        con.close()
    assert orphans == 0
    assert lineage > 0 and mapped > 0


def test_reingesting_changes_nothing(loaded):
    home, _ = loaded
    before = json.loads(enclave(home, "store", "stats", "--json").stdout)
    again = ingest(home, "synthea-csv", "synthea", "synthea")
    after = json.loads(enclave(home, "store", "stats", "--json").stdout)
    assert all(f["loaded"] == 0 and f["already_ingested"] for f in again["files"])
    assert before == after
