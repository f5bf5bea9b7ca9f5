"""The loader on small inline batches: linkage, rejects, duplicates, idempotence, atomicity."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pytest

from enclave.core.errors import BadInputError
from enclave.core.keystore import load_or_create_key
from enclave.io.ingest.loader import load_batch
from enclave.io.ingest.mapping import SiteMapping
from enclave.io.ingest.staging import StagedBatch
from enclave.io.store import open_store, store_stats
from enclave.logic.codes.resident_id import check_char


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
        "missing_required": 1, "invalid_code": 1, "unknown_unit": 1,
    }
    assert h1.merged_duplicates == 1
    assert h1.loaded == 14 - 7 - 1
    # a condition of a visit the extract lacks is a fact: loaded without a visit, counted
    assert h1.warnings == {"unknown_visit": 1}
    (h2,) = r2
    assert (h2.read, h2.loaded) == (2, 2)
    assert stats["persons"] == 2  # Alice at h1 and h2 is one person
    assert stats["tables"]["etl_reject"] == 7
    assert stats["tables"]["etl_lineage"] == 6 + 2
    assert glucose == [(pytest.approx(126 * 0.0555), 8753, 3004501)]
    assert sorted(c[:2] for c in cond) == [(201826, "E11.900"), (320128, "I10.x00x002")]
    assert all(c[2] > 2_000_000_000 for c in cond)
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
            "SELECT measurement_concept_id, value_as_number, unit_concept_id, measurement_source_value, "
            "unit_source_value, value_source_value FROM measurement"
        ).fetchone()
    assert row[0] == 3004501 and row[1] == pytest.approx(90 * 0.0555) and row[2] == 8753
    # the converted value keeps what the source said beside the source unit
    assert row[3:] == ("GLU", "mg/dL", "90.0")


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
    from enclave.io.ingest import loader

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


def test_codes_keep_their_declared_vocabulary_and_load_when_the_vocabulary_lacks_them(settings):
    """Issue 18: a code outside the store's vocabulary is a fact (concept 0, its vocabulary and code
    recorded in a local source concept, counted under ``unmapped_code``); only a code impossible in
    its declared vocabulary is rejected; a known code follows ``Maps to`` to its standard concept."""
    with open_store(settings) as con:
        key = load_or_create_key(settings.keys_dir)
        con.execute("INSERT INTO concept VALUES (35208414, 'GI hemorrhage', 'Condition', 'ICD10CM', "
                    "'4-char billing code', NULL, 'K92.2', DATE '2007-01-01', DATE '2099-12-31', NULL)")
        con.execute("INSERT INTO concept VALUES (192671, 'GI hemorrhage', 'Condition', 'SNOMED', "
                    "'Clinical Finding', 'S', '74474003', DATE '1970-01-01', DATE '2099-12-31', NULL)")
        con.execute("INSERT INTO concept_relationship VALUES (35208414, 192671, 'Maps to', "
                    "DATE '1970-01-01', DATE '2099-12-31', NULL)")
        (r,) = load_batch(con, key, mapping("h1"), batch(
            "h1", "f.csv",
            person=[{"site_patient_id": "A1", "resident_id": ALICE}],
            condition=[
                {"site_patient_id": "A1", "code_system": "ICD10CM", "code": "K92.2", "start_date": D(2020, 1, 1)},
                {"site_patient_id": "A1", "code_system": "ICD10CM", "code": "S72.001A", "start_date": D(2020, 1, 2)},
                {"site_patient_id": "A1", "code_system": "CPT4", "code": "99213", "start_date": D(2020, 1, 3)},
                {"site_patient_id": "A1", "code_system": "NDC", "code": "not-an-ndc", "start_date": D(2020, 1, 4)},
            ],
            drug=[{"site_patient_id": "A1", "code_system": "NDC", "code": "00025152531", "start_date": D(2020, 1, 5)}],
        ), {"f.csv": "sha"})
        rows = con.execute(
            "SELECT condition_source_value, condition_concept_id, condition_source_concept_id, c.vocabulary_id "
            "FROM condition_occurrence o LEFT JOIN concept c ON c.concept_id = o.condition_source_concept_id "
            "ORDER BY condition_start_date").fetchall()
        drug = con.execute("SELECT drug_concept_id, c.vocabulary_id, c.concept_code FROM drug_exposure d "
                           "JOIN concept c ON c.concept_id = d.drug_source_concept_id").fetchall()
    assert r.rejected == {"invalid_code": 1} and r.loaded == 1 + 3 + 1
    assert rows[0][:3] == ("K92.2", 192671, 35208414)  # through Maps to
    assert rows[1][1] == 0 and rows[1][2] > 2_000_000_000 and rows[1][3] == "ICD10CM"
    assert rows[2][1] == 0 and rows[2][3] == "CPT4"  # a vocabulary without a known syntax loads
    assert drug == [(0, "NDC", "00025152531")]
    assert r.warnings == {"unmapped_code": 3}


def test_over_long_identifiers_and_codes_are_rejected_as_value_too_long(settings):
    with open_store(settings) as con:
        key = load_or_create_key(settings.keys_dir)
        (r,) = load_batch(con, key, mapping("h1"), batch(
            "h1", "f.csv",
            person=[{"site_patient_id": "A1", "resident_id": ALICE},
                    {"site_patient_id": "P" * 300, "resident_id": BOB}],
            measurement=[{"site_patient_id": "A1", "code_system": "LOINC", "code": "2345-7",
                          "date": D(2023, 1, 5), "value": 5.0, "unit": "u" * 60},
                         {"site_patient_id": "A1", "code_system": "LOINC", "code": "2345-7",
                          "date": D(2023, 1, 6), "value": 5.0, "value_text": "long text " * 10}],
        ), {"f.csv": "sha"})
        ids = con.execute("SELECT max(length(site_patient_id)) FROM identity.site_patient").fetchone()[0]
        rejects = con.execute("SELECT source_row, column_name FROM etl_reject ORDER BY 1").fetchall()
    assert r.rejected == {"value_too_long": 2} and r.loaded == 2
    assert rejects == [(2, "site_patient_id"), (3, "unit")]
    assert ids == 2
    assert r.warnings == {"value_truncated": 1}


def test_a_file_that_loaded_nothing_is_not_ingested_and_the_next_run_loads_it(settings):
    bad = batch("h1", "f.csv", person=[{"site_patient_id": "A1", "resident_id": "not-an-id"}])
    good = batch("h1", "f.csv", person=[{"site_patient_id": "A1", "resident_id": ALICE}])
    with open_store(settings) as con:
        key = load_or_create_key(settings.keys_dir)
        (first,) = load_batch(con, key, mapping("h1"), bad, {"f.csv": "same-bytes"})
        (second,) = load_batch(con, key, mapping("h1"), good, {"f.csv": "same-bytes"})
        files = con.execute("SELECT loaded, rejected FROM etl_file").fetchall()
        rejects = con.execute("SELECT count(*) FROM etl_reject").fetchone()[0]
    assert first.loaded == 0 and first.rejected == {"invalid_resident_id": 1}
    assert second.retried and not second.already_ingested and second.loaded == 1
    assert files == [(1, 0)] and rejects == 0  # the failed run's record is replaced, not kept twice


def test_identical_files_in_one_run_are_twins(settings):
    b = batch("h1", "a.csv", person=[{"site_patient_id": "A1", "resident_id": ALICE}])
    b2 = batch("h1", "b.csv", person=[{"site_patient_id": "A1", "resident_id": ALICE}])
    b.add("person", b2.frames["person"])
    b.read_counts.update(b2.read_counts)
    with open_store(settings) as con:
        key = load_or_create_key(settings.keys_dir)
        a, twin = load_batch(con, key, mapping("h1"), b, {"a.csv": "same", "b.csv": "same"})
        files = con.execute("SELECT path FROM etl_file").fetchall()
    assert (a.loaded, twin.loaded, twin.merged_duplicates, twin.duplicate_of) == (1, 0, 1, "a.csv")
    assert files == [("a.csv",)]


def test_a_file_rejecting_more_than_the_allowed_share_refuses_the_whole_ingest(settings):
    """ingest.max_reject_share: one file over it refuses the batch, naming the file, its counts and
    the setting (never row contents), and nothing is loaded or quarantined; at or under it, the
    rejected rows are quarantined as usual."""
    people = [{"site_patient_id": "A1", "resident_id": ALICE},
              {"site_patient_id": "B1", "resident_id": "not-an-id"},
              {"site_patient_id": "C1", "resident_id": "12345"}]
    with open_store(settings) as con:
        key = load_or_create_key(settings.keys_dir)
        before = store_stats(con)
        with pytest.raises(BadInputError) as refused:
            load_batch(con, key, mapping("h1"), batch("h1", "people.csv", person=people),
                       {"people.csv": "p"}, max_reject_share=0.5)
        message = str(refused.value)
        assert "people.csv: 2 of 3 rows rejected" in message
        assert "ingest.max_reject_share" in message and "not-an-id" not in message
        assert store_stats(con) == before
        assert con.execute("SELECT count(*) FROM etl_reject").fetchone()[0] == 0
        (r,) = load_batch(con, key, mapping("h1"), batch("h1", "people.csv", person=people),
                          {"people.csv": "p"}, max_reject_share=0.7)
    assert r.loaded == 1 and r.rejected_total == 2
