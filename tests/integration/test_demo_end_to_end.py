"""Issue 2 acceptance on the demo: 5 hospitals, every dialect, through ``enclave up`` (the README path).

The person count equals truth.json with zero false merges and zero missed links, every planted
defect is quarantined under its reason, and planted duplicates are merged.
"""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import polars as pl
import pytest

PATIENTS = 10_000


@pytest.fixture(scope="module")
def enclave_up(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-home")
    proc = subprocess.run(
        [sys.executable, "-m", "enclave", "--home", str(home), "up", "--patients", str(PATIENTS),
         "--hospitals", "5", "--seed", "11", "--data-only"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    extracts = home / "restricted" / "demo-extracts"
    truth = json.loads((extracts / "truth.json").read_text(encoding="utf-8"))
    con = duckdb.connect(str(home / "restricted" / "cdm.duckdb"), read_only=True)
    yield home, extracts, truth, con, proc.stdout
    con.close()


def test_person_count_and_linkage_are_exact(enclave_up):
    _, extracts, truth, con, stdout = enclave_up
    links = pl.read_csv(extracts / "links.csv", schema_overrides={"site_patient_id": pl.Utf8})
    loaded = pl.from_arrow(
        con.sql("SELECT site_id, site_patient_id, person_id FROM identity.site_patient").to_arrow_table()
    )
    joined = links.join(loaded, on=["site_id", "site_patient_id"], how="left")
    assert joined["person_id"].null_count() == 0, "a real registration was not loaded"
    false_merges = joined.group_by("person_id").agg(pl.col("person").n_unique()).filter(pl.col("person") > 1)
    missed = joined.group_by("person").agg(pl.col("person_id").n_unique()).filter(pl.col("person_id") > 1)
    assert false_merges.height == 0
    assert missed.height == 0
    persons = con.execute("SELECT count(*) FROM person").fetchall()[0][0]
    assert persons == truth["persons"] == PATIENTS
    assert json.loads(stdout[stdout.index("{"):])["persons"] == PATIENTS
    assert truth["linked_persons"] > 0 and truth["namesakes"] > 0  # the test is not vacuous


def test_every_planted_defect_is_quarantined_under_its_reason(enclave_up):
    _, _, truth, con, _ = enclave_up
    got: dict[str, dict[str, int]] = {}
    for site, reason, n in con.execute(
        "SELECT f.site_id, r.reason, count(*) FROM etl_reject r JOIN etl_file f USING (file_id) GROUP BY ALL"
    ).fetchall():
        got.setdefault(site, {})[reason] = n
    assert got == truth["expected_rejects"]
    merged = dict(con.execute(
        "SELECT site_id, sum(merged_duplicates)::INTEGER FROM etl_file GROUP BY site_id").fetchall())
    assert merged == truth["expected_merged_duplicates"]
    for site, kinds in truth["defects"].items():
        assert len(kinds) >= 8, f"{site} planted only {sorted(kinds)}"


def test_every_file_balances_and_every_dialect_loaded(enclave_up):
    _, _, truth, con, _ = enclave_up
    rows = con.execute(
        "SELECT site_id, path, read, loaded, rejected, merged_duplicates FROM etl_file").fetchall()
    for site, path, read, loaded, rejected, merged in rows:
        assert read == loaded + rejected + merged, path
    assert {r[0] for r in rows} == set(truth["sites"])
    dialects = dict(con.execute("SELECT site_id, dialect FROM site_registry").fetchall())
    assert set(dialects.values()) == {"csv", "frontsheet", "fhir", "hl7v2"}


def test_units_codes_and_costs_are_harmonized(enclave_up):
    _, _, _, con, _ = enclave_up
    # glucose is mmol/L everywhere, whichever unit the hospital reported
    units = con.execute(
        "SELECT DISTINCT unit_concept_id FROM measurement WHERE measurement_concept_id = 3004501").fetchall()
    assert units == [(8753,)]
    by_site = con.execute("""
        SELECT sv.site_id, avg(m.value_as_number)
        FROM measurement m JOIN identity.site_visit sv USING (visit_occurrence_id)
        WHERE m.measurement_concept_id = 3004501 GROUP BY 1""").fetchall()
    assert len(by_site) >= 4
    means = [m for _, m in by_site]
    assert means and max(means) / min(means) < 1.5, by_site  # no site left in mg/dL (factor 18)
    # clinical-version ICD-10 codes keep their verbatim code and map to the standard concept
    t2dm = con.execute("""
        SELECT count(*) FROM condition_occurrence
        WHERE condition_source_value LIKE 'E11.%' AND condition_concept_id = 201826
          AND condition_source_concept_id > 2000000000""").fetchall()[0][0]
    assert t2dm > 0
    assert con.execute("SELECT count(*) FROM cost WHERE cost_domain_id = 'Visit'").fetchall()[0][0] > 0


def test_no_raw_identifier_outside_the_identity_schema(enclave_up):
    _, extracts, _, con, stdout = enclave_up
    ids = json.loads((extracts / "identifiers.json").read_text(encoding="utf-8"))
    sample = set(ids["resident_ids"][:200])
    hits = con.execute(
        "SELECT count(*) FROM person WHERE person_source_value IN (SELECT unnest(?))", [list(sample)]
    ).fetchall()[0][0]
    assert hits == 0
    assert not any(i in stdout for i in sample)
    assert not any(n in stdout for n in ids["names"][:500] if len(n) >= 2)


def test_store_integrity_check_passes_and_catches_a_duplicate(enclave_up, tmp_path):
    import shutil

    home, _, _, _, _ = enclave_up
    proc = subprocess.run([sys.executable, "-m", "enclave", "--home", str(home), "store", "check", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    copy = tmp_path / "copy"
    (copy / "restricted").mkdir(parents=True)
    shutil.copy(home / "restricted" / "cdm.duckdb", copy / "restricted" / "cdm.duckdb")
    con = duckdb.connect(str(copy / "restricted" / "cdm.duckdb"))
    con.execute("INSERT INTO identity.site_patient SELECT * FROM identity.site_patient LIMIT 1")
    con.close()
    proc = subprocess.run([sys.executable, "-m", "enclave", "--home", str(copy), "store", "check", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["violations"]["duplicate (site, patient id) registrations"] == 1


def test_running_up_again_changes_nothing_and_other_sizes_are_refused(enclave_up):
    home, _, _, con, _ = enclave_up
    before = con.execute("SELECT count(*) FROM measurement").fetchall()
    args = [sys.executable, "-m", "enclave", "--home", str(home), "up", "--data-only"]
    again = subprocess.run(args + ["--patients", str(PATIENTS), "--hospitals", "5", "--seed", "11"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("already ingested") == 5
    other = subprocess.run(args + ["--patients", "10"], capture_output=True, text=True, timeout=600)
    assert other.returncode == 2 and "another size or seed" in other.stderr
    assert con.execute("SELECT count(*) FROM measurement").fetchall() == before
