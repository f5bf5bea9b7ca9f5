"""The loader on small inline batches: linkage, rejects, duplicates, idempotence, atomicity."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pytest

from enclave.codes.resident_id import check_char
from enclave.ingest.linkage import load_or_create_key
from enclave.ingest.loader import load_batch
from enclave.ingest.mapping import SiteMapping
from enclave.ingest.staging import StagedBatch
from enclave.store import open_store, store_stats


def rid(region: str, birth: str, seq: str) -> str:
    body = region + birth + seq
    return body + check_char(body)


ALICE = rid("110105", "19600101", "002")  # female (even)
BOB = rid("310104", "19751231", "013")  # male (odd)


def batch(site: str, file: str, **kinds: list[dict]) -> StagedBatch:
    b = StagedBatch(site=site)
    rows = 0
    for kind, records in kinds.items():
        frame = pl.DataFrame(records)
        if "_row" not in frame.columns:
            frame = frame.with_columns(pl.int_range(rows + 1, rows + 1 + frame.height).alias("_row"))
        frame = frame.with_columns(pl.lit(file).alias("_file"))
        rows += frame.height
        b.add(kind, frame)
    b.read_counts[file] = rows
    return b


def mapping(site: str, **options) -> SiteMapping:
    return SiteMapping(site_id=site, dialect="csv", linkage="resident_id", name=site,
                       region_code="110105", options=options)


D = dt.date


def test_links_one_person_across_sites_and_quarantines_bad_rows(settings):
    with open_store(settings) as con:
        key = load_or_create_key(settings.keys_dir)
        r1 = load_batch(con, key, mapping("h1", codes={"measurement": {"GLU": "LOINC:2345-7"}}), batch(
            "h1", "h1.csv",
            person=[
                {"site_patient_id": "A1", "resident_id": ALICE, "sex": "F", "birth_date": D(1960, 1, 1)},
                {"site_patient_id": "B1", "resident_id": BOB},
                {"site_patient_id": "X1", "resident_id": ALICE[:-1] + ("0" if ALICE[-1] != "0" else "1")},
                {"site_patient_id": "X2", "resident_id": BOB, "sex": "F"},  # ID says male
                {"site_patient_id": "A1", "resident_id": ALICE, "sex": "F", "birth_date": D(1960, 1, 1)},
            ],
            visit=[
                {"site_visit_id": "V1", "site_patient_id": "A1", "visit_type": "outpatient", "start_date": D(2023, 1, 5)},
                {"site_visit_id": "V2", "site_patient_id": "ZZ", "visit_type": "outpatient", "start_date": D(2023, 1, 5)},
                {"site_visit_id": "V3", "site_patient_id": "B1", "visit_type": "inpatient",
                 "start_date": D(2023, 3, 5), "end_date": D(2023, 3, 1)},
                {"site_visit_id": "V4", "site_patient_id": None, "visit_type": "outpatient", "start_date": D(2023, 1, 5)},
            ],
            condition=[
                {"site_patient_id": "A1", "site_visit_id": "V1", "code_system": "ICD10CN", "code": "E11.900", "start_date": D(2023, 1, 5)},
                {"site_patient_id": "A1", "site_visit_id": "V1", "code_system": "ICD10CN", "code": "E11.9OO", "start_date": D(2023, 1, 5)},
                {"site_patient_id": "A1", "site_visit_id": "V9", "code_system": "ICD10CN", "code": "I10.x00x002", "start_date": D(2023, 1, 5)},
            ],
            measurement=[
                {"site_patient_id": "A1", "site_visit_id": "V1", "code_system": "LOCAL", "code": "GLU",
                 "date": D(2023, 1, 5), "value": 126.0, "unit": "mg/dl"},
                {"site_patient_id": "A1", "site_visit_id": "V1", "code_system": "LOCAL", "code": "GLU",
                 "date": D(2023, 1, 6), "value": 7.0, "unit": "furlongs"},
            ],
        ), {"h1.csv": "sha-h1"})
        r2 = load_batch(con, key, mapping("h2"), batch(
            "h2", "h2.csv",
            person=[{"site_patient_id": "9001", "resident_id": ALICE.lower() if ALICE[-1] == "X" else " " + ALICE}],
            visit=[{"site_visit_id": "Z1", "site_patient_id": "9001", "visit_type": "inpatient",
                    "start_date": D(2023, 1, 20), "end_date": D(2023, 1, 25), "total_cost": 5200.5}],
        ), {"h2.csv": "sha-h2"})
        stats = store_stats(con)
        glucose = con.execute(
            "SELECT value_as_number, unit_concept_id, measurement_concept_id FROM measurement"
        ).fetchall()
        cond = con.execute(
            "SELECT condition_concept_id, condition_source_value, condition_source_concept_id FROM condition_occurrence"
        ).fetchall()
        stcm = con.execute("SELECT source_code, source_vocabulary_id, target_concept_id FROM source_to_concept_map").fetchall()
        raw_ids_outside_identity = con.execute(
            "SELECT count(*) FROM person WHERE person_source_value IN (?, ?)", [ALICE, BOB]
        ).fetchone()[0]

    (h1,) = r1
    assert h1.read == 14
    assert h1.rejected == {
        "invalid_resident_id": 1, "identity_conflict": 1, "unknown_patient": 1, "date_order": 1,
        "missing_required": 1, "invalid_code": 1, "unknown_visit": 1, "unknown_unit": 1,
    }
    assert h1.merged_duplicates == 1
    assert h1.loaded == 14 - 8 - 1
    (h2,) = r2
    assert (h2.read, h2.loaded) == (2, 2)
    assert stats["persons"] == 2  # Alice at h1 and h2 is one person
    assert stats["tables"]["etl_reject"] == 8
    assert stats["tables"]["etl_lineage"] == 5 + 2
    assert glucose == [(pytest.approx(126 * 0.0555), 8753, 3004501)]
    assert cond == [(201826, "E11.900", cond[0][2])] and cond[0][2] > 2_000_000_000
    assert ("E11.900", "ICD10CN", 201826) in stcm
    assert raw_ids_outside_identity == 0


def test_local_codes_translate_through_the_site_mapping(settings):
    m = mapping("h1", codes={"measurement": {"GLU": "LOINC:2345-7"}})
    with open_store(settings) as con:
        key = load_or_create_key(settings.keys_dir)
        load_batch(con, key, m, batch(
            "h1", "f.csv",
            person=[{"site_patient_id": "A1", "resident_id": ALICE}],
            measurement=[{"site_patient_id": "A1", "code_system": "LOCAL", "code": "GLU",
                          "date": D(2023, 1, 5), "value": 90.0, "unit": "mg/dL"}],
        ), {"f.csv": "sha"})
        row = con.execute(
            "SELECT measurement_concept_id, value_as_number, unit_concept_id, measurement_source_value, unit_source_value FROM measurement"
        ).fetchone()
    assert row[0] == 3004501 and row[1] == pytest.approx(90 * 0.0555) and row[2] == 8753
    assert row[3:] == ("GLU", "mg/dL")


def test_reingesting_the_same_file_changes_nothing(settings):
    b = lambda: batch("h1", "f.csv",
                      person=[{"site_patient_id": "A1", "resident_id": ALICE}],
                      visit=[{"site_visit_id": "V1", "site_patient_id": "A1", "visit_type": "outpatient",
                              "start_date": D(2023, 1, 5)}])
    with open_store(settings) as con:
        key = load_or_create_key(settings.keys_dir)
        load_batch(con, key, mapping("h1"), b(), {"f.csv": "same"})
        before = store_stats(con)["tables"]
        (again,) = load_batch(con, key, mapping("h1"), b(), {"f.csv": "same"})
        after = store_stats(con)["tables"]
        # a different file with the same records: natural keys merge them
        (copy,) = load_batch(con, key, mapping("h1"), b(), {"f.csv": "other-hash"})
        after_copy = store_stats(con)["tables"]
    assert again.already_ingested and again.loaded == 0 and again.merged_duplicates == again.read == 2
    assert before == after
    assert copy.merged_duplicates == 2 and copy.loaded == 0
    assert {k: v for k, v in after_copy.items() if k != "etl_file"} == {k: v for k, v in after.items() if k != "etl_file"}


def test_a_failing_load_leaves_the_store_as_it_was(settings, monkeypatch):
    from enclave.ingest import loader

    with open_store(settings) as con:
        key = load_or_create_key(settings.keys_dir)
        load_batch(con, key, mapping("h1"), batch(
            "h1", "a.csv", person=[{"site_patient_id": "A1", "resident_id": ALICE}]), {"a.csv": "a"})
        before = store_stats(con)

        insert = loader.BatchLoader._insert

        def boom(self, table, *args):  # persons and visits are in by then; conditions fail
            if table == "condition_occurrence":
                raise RuntimeError("disk full")
            insert(self, table, *args)

        monkeypatch.setattr(loader.BatchLoader, "_insert", boom)
        with pytest.raises(RuntimeError):
            load_batch(con, key, mapping("h1"), batch(
                "h1", "b.csv",
                person=[{"site_patient_id": "B1", "resident_id": BOB}],
                condition=[{"site_patient_id": "B1", "code_system": "ICD10CN", "code": "I10.x00x002",
                            "start_date": D(2023, 1, 5)}]), {"b.csv": "b"})
        assert store_stats(con) == before


def test_store_is_in_a_0700_restricted_zone(settings):
    with open_store(settings):
        pass
    assert settings.restricted_dir.stat().st_mode & 0o777 == 0o700
    assert settings.store_path.stat().st_mode & 0o777 == 0o600
    con = duckdb.connect(str(settings.store_path), read_only=True)
    assert con.execute("SELECT count(*) FROM concept WHERE concept_id = 201826").fetchone()[0] == 1
    con.close()
