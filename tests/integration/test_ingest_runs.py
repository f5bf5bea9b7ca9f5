"""Files and runs, through the real CLI (issue 18): identical files, a wrong run that must not
poison its files, runs that load nothing end with a warning and exit code 7, ``--redo``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from enclave.core import audit
from enclave.core.settings import load_settings
from enclave.io.ingest import diagnose
from enclave.io.ingest.mapping import SiteMapping
from enclave.io.ingest.reports import FileReport
from tests.conftest import FIXTURES
from tests.enclave_cli import run_enclave

BUNDLE = next(p for p in sorted((FIXTURES / "fhir-r4").glob("*.json")) if "Information" not in p.name)


def _json(proc) -> dict:
    return json.loads(proc.stdout)


def _counts(home: Path) -> dict:
    con = duckdb.connect(str(home / "restricted" / "cdm.duckdb"), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("person", "visit_occurrence", "condition_occurrence", "measurement",
                          "drug_exposure", "observation", "etl_file", "etl_reject", "etl_lineage")}
    finally:
        con.close()


def test_two_identical_files_in_one_folder_load_once_and_name_the_twin(tmp_path):
    folder = tmp_path / "extract"
    folder.mkdir()
    shutil.copy(BUNDLE, folder / "a.json")
    shutil.copy(BUNDLE, folder / "b.json")
    proc = run_enclave(tmp_path / "home", "ingest", str(folder), "--site", "f", "--dialect", "fhir", "--json")
    a, b = sorted(_json(proc)["files"], key=lambda f: f["file"])
    assert a["loaded"] > 0 and a["duplicate_of"] is None
    assert b["duplicate_of"] == str(folder / "a.json")
    assert b["loaded"] == 0 and b["merged_duplicates"] == b["read"] == a["read"]
    # the same as ingesting one copy
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(BUNDLE, single / "a.json")
    run_enclave(tmp_path / "home1", "ingest", str(single), "--site", "f", "--dialect", "fhir")
    one, two = _counts(tmp_path / "home1"), _counts(tmp_path / "home")
    assert {k: v for k, v in one.items() if k != "etl_file"} == {k: v for k, v in two.items() if k != "etl_file"}


def test_a_wrong_run_warns_exits_7_and_does_not_poison_the_files(tmp_path):
    home = tmp_path / "home"
    synthea = FIXTURES / "synthea-csv"
    wrong = run_enclave(home, "ingest", str(synthea), "--site", "s", "--dialect", "omop", "--json", check=False)
    assert wrong.returncode == 7, wrong.stderr
    out = _json(wrong)
    assert sum(f["loaded"] for f in out["files"]) == 0
    assert len(out["warnings"]) == len(out["files"])
    assert "layout does not match the omop dialect" in out["warnings"][0]
    assert "error: nothing loaded" in wrong.stderr and "--allow-empty" in wrong.stderr
    right = run_enclave(home, "ingest", str(synthea), "--site", "s", "--dialect", "synthea", "--json")
    files = _json(right)["files"]
    assert all(f["retried"] and not f["already_ingested"] for f in files)
    assert sum(f["loaded"] for f in files) > 1000
    counts = _counts(home)
    assert counts["etl_file"] == len(files)
    # the wrong run's rejects were replaced with the right run's (none)
    assert counts["etl_reject"] == sum(f["rejected_total"] for f in files)


@pytest.mark.parametrize("case", ["empty folder", "no matching file", "0-byte file", "binary file"])
def test_a_run_that_loads_nothing_says_why_and_exits_7(tmp_path, case):
    folder = tmp_path / "extract"
    folder.mkdir()
    if case == "no matching file":
        (folder / "readme.txt").write_text("nothing here\n")
    elif case == "0-byte file":
        (folder / "patients.csv").write_bytes(b"")
    elif case == "binary file":
        (folder / "patients.csv").write_bytes(bytes(range(256)) * 64)
    proc = run_enclave(tmp_path / "home", "ingest", str(folder), "--site", "s", "--dialect", "synthea",
                       "--json", check=False)
    assert proc.returncode == 7, (case, proc.stderr)
    (warning,) = _json(proc)["warnings"]
    expected = {"empty folder": "holds no file", "no matching file": "none of its 1 files matched",
                "0-byte file": "empty (0 bytes)", "binary file": "binary, not text"}[case]
    assert expected in warning and f"warning: {warning}" in proc.stderr
    allowed = run_enclave(tmp_path / "home", "ingest", str(folder), "--site", "s", "--dialect",
                          "synthea", "--allow-empty", check=False)
    assert allowed.returncode == 0 and expected in allowed.stderr


def test_the_warning_names_an_encoding_mismatch(tmp_path):
    """A UTF-8 file read as GB18030 (or GB18030 bytes read as UTF-8) that loaded nothing."""
    text = "姓名,性别\n张三,男\n".encode()
    utf8 = tmp_path / "u.csv"
    utf8.write_bytes(text)
    gbk = tmp_path / "g.csv"
    gbk.write_bytes(text.decode().encode("gb18030"))
    report = lambda f: FileReport(file=str(f), site="s", dialect="csv", read=1, rejected={"missing_required": 1})
    as_gbk = SiteMapping(site_id="s", dialect="csv", encoding="gb18030")
    as_utf8 = SiteMapping(site_id="s", dialect="csv", encoding="utf-8")
    (w,) = diagnose.warnings([report(utf8)], tmp_path, as_gbk)
    assert "looks like UTF-8 while the site's encoding is gb18030" in w
    (w,) = diagnose.warnings([report(gbk)], tmp_path, as_utf8)
    assert "not valid utf-8 text" in w
    assert "张三" not in w  # names the cause, never the contents


def test_redo_forgets_what_a_file_loaded_and_loads_it_afresh(tmp_path):
    home = tmp_path / "home"
    synthea = FIXTURES / "synthea-csv"
    run_enclave(home, "ingest", str(synthea), "--site", "s", "--dialect", "synthea")
    before = _counts(home)
    again = run_enclave(home, "ingest", str(synthea), "--site", "s", "--dialect", "synthea", "--json")
    assert all(f["already_ingested"] for f in _json(again)["files"])
    redo = run_enclave(home, "ingest", str(synthea), "--site", "s", "--dialect", "synthea", "--redo", "--json")
    files = _json(redo)["files"]
    assert all(f["redone"] and f["loaded"] + f["rejected_total"] + f["merged_duplicates"] == f["read"]
               for f in files)
    assert _counts(home) == before  # every row removed and loaded again, nothing twice
    con = duckdb.connect(str(home / "restricted" / "cdm.duckdb"), read_only=True)
    try:
        orphans = con.execute("SELECT count(*) FROM condition_occurrence ANTI JOIN person USING (person_id)"
                              ).fetchone()[0]
        periods = con.execute("SELECT count(*) FROM person ANTI JOIN observation_period USING (person_id)"
                              ).fetchone()[0]
    finally:
        con.close()
    assert orphans == 0 and periods == 0
    con = audit.connect(load_settings(str(home)))
    try:
        events = [e for e in audit.events(con, "site:s") if e["action"] == "ingest.redo"]
    finally:
        con.close()
    assert len(events) == 1 and len(events[0]["detail"]["files"]) == len(files)
