"""Synthetic twins (issue 4): built through the CLI from a small real desensitized release.

The release is made once per module (``enclave up`` + project + ``release build``, 3,000 patients: at 1,500 the
DCR overfitting protection of diagnoses sat within 0.02 of the bar);
the twin is built with small evaluation subsamples (``[synthetic]`` in settings.toml) to stay fast.
Integrity, identical records and schema are recomputed here in SQL, not read from the manifest.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from enclave.cli import main
from enclave.core.errors import ConfigurationError
from enclave.core.settings import SynthSettings, load_settings
from enclave.io import db
from synthetic.model import TableModel
from tests.enclave_cli import run_enclave

TABLES = ["person", "visit_occurrence", "condition_occurrence", "drug_exposure", "measurement", "cost",
          "observation_period", "care_site", "concept", "note"]
FAST = """[synthetic]
eval_patients = 600
"""


def enclave(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_enclave(home, *args, check=check, timeout=600)


def synth_build(home: Path, toml: str = FAST) -> tuple[int, str, str]:
    """``enclave synth build`` in this process (sdv is imported once per test run).

    ``toml`` is the home's settings.toml during this build only (other tests use the defaults).
    """
    out, err = io.StringIO(), io.StringIO()
    (home / "settings.toml").write_text(toml, encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["--home", str(home), "synth", "build", "--release", "alpha/v1", "--json"])
    finally:
        (home / "settings.toml").unlink()
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("synth") / "home"
    enclave(home, "up", "--patients", "3000", "--hospitals", "3", "--seed", "11", "--data-only")
    args = ["project", "create", "--id", "alpha", "--title", "T", "--purpose", "P", "--pi", "alice",
            "--member", "bob", "--tier", "desensitized", "--sharing", "enclave", "--expires", "2099-12-31"]
    for t in TABLES:
        args += ["--table", t]
    enclave(home, *args)
    enclave(home, "release", "build", "--project", "alpha")
    return home


@pytest.fixture(scope="module")
def twin(home) -> dict:
    rc, out, err = synth_build(home)
    assert rc == 0, err[-3000:]
    return json.loads(out)


def _con(home: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    db.run(con, f"ATTACH '{home}/releases/desensitized/alpha/v1/release.duckdb' AS real (READ_ONLY)")
    db.run(con, f"ATTACH '{home}/releases/synthetic/alpha/v1/release.duckdb' AS syn (READ_ONLY)")
    return con


def test_the_twin_is_published_as_a_synthetic_release(home, twin):
    assert twin["tier"] == "synthetic" and twin["release"] == "synthetic/alpha/v1"
    assert twin["source_release"] == "alpha/v1"
    folder = home / "releases" / "synthetic" / "alpha" / "v1"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "release.duckdb"]
    assert not list(folder.parent.glob(".build-*"))
    proc = enclave(home, "release", "verify", "synthetic/alpha/v1")
    assert proc.stdout.strip().endswith("ok")
    # fitted synthesizers stay in the restricted zone
    model = home / "restricted" / "synth-models" / "alpha" / "v1.pkl"
    assert model.exists() and (model.stat().st_mode & 0o077) == 0
    assert "note" in twin["not_synthesized"]


def test_same_schema_as_the_source_release_and_reference_tables_whole(home, twin):
    con = _con(home)
    q = ("SELECT table_name, column_name, data_type FROM information_schema.columns "
         "WHERE table_catalog = ? AND table_name <> 'note' ORDER BY ALL")
    assert db.rows(con, q, ["syn"]) == db.rows(con, q, ["real"])
    assert db.scalar(con, "SELECT count(*) FROM (SELECT * FROM real.concept EXCEPT SELECT * FROM syn.concept)") == 0
    n_real = db.scalar(con, "SELECT count(*) FROM real.person")
    assert db.scalar(con, "SELECT count(*) FROM syn.person") == n_real
    for t in ("visit_occurrence", "condition_occurrence", "drug_exposure", "measurement", "cost"):
        real, syn = (db.scalar(con, f"SELECT count(*) FROM {s}.{t}") for s in ("real", "syn"))
        assert 0.7 * real <= syn <= 1.3 * real, t


def test_no_orphans_and_no_date_order_violations(home, twin):
    con = _con(home)
    orphans = {
        "visit": "SELECT count(*) FROM syn.visit_occurrence v ANTI JOIN syn.person p USING (person_id)",
        "op": "SELECT count(*) FROM syn.observation_period o ANTI JOIN syn.person p USING (person_id)",
        **{t: f"SELECT count(*) FROM syn.{t} e LEFT JOIN syn.visit_occurrence v USING (visit_occurrence_id) "
              "WHERE v.visit_occurrence_id IS NULL OR v.person_id <> e.person_id"
           for t in ("condition_occurrence", "drug_exposure", "measurement")},
        "cost": "SELECT count(*) FROM syn.cost c WHERE NOT EXISTS (SELECT 1 FROM syn.visit_occurrence v "
                "WHERE c.cost_domain_id = 'Visit' AND v.visit_occurrence_id = c.cost_event_id) "
                "AND NOT EXISTS (SELECT 1 FROM syn.drug_exposure d WHERE c.cost_domain_id = 'Drug' "
                "AND d.drug_exposure_id = c.cost_event_id) AND NOT EXISTS (SELECT 1 FROM syn.measurement m "
                "WHERE c.cost_domain_id = 'Measurement' AND m.measurement_id = c.cost_event_id)",
    }
    for name, sql in orphans.items():
        assert db.scalar(con, sql) == 0, name
    order = {
        "visit": "SELECT count(*) FROM syn.visit_occurrence WHERE visit_end_date < visit_start_date",
        "drug": "SELECT count(*) FROM syn.drug_exposure WHERE drug_exposure_end_date < drug_exposure_start_date",
        "op": "SELECT count(*) FROM syn.observation_period WHERE observation_period_end_date < observation_period_start_date",
        **{t: f"SELECT count(*) FROM syn.{t} e JOIN syn.visit_occurrence v USING (visit_occurrence_id) "
              f"WHERE e.{d} NOT BETWEEN v.visit_start_date AND v.visit_end_date"
           for t, d in (("condition_occurrence", "condition_start_date"),
                        ("drug_exposure", "drug_exposure_start_date"), ("measurement", "measurement_date"))},
    }
    for name, sql in order.items():
        assert db.scalar(con, sql) == 0, name
    assert all(v == 0 for v in twin["integrity"].values())


def test_quality_and_diagnostic_reach_the_acceptance_bar(twin):
    assert twin["quality"]["score"] >= 0.85
    assert set(twin["quality"]["properties"]) == {"Column Shapes", "Column Pair Trends", "Cardinality",
                                                  "Intertable Trends"}
    assert twin["diagnostic"]["properties"]["Data Validity"] == 1.0
    assert twin["diagnostic"]["properties"]["Relationship Validity"] == 1.0


def test_privacy_bar_met_and_records_not_copied(home, twin):
    bar = SynthSettings()  # FAST changes no bar
    for table, r in twin["privacy"].items():
        assert r["dcr_overfitting_protection"] >= bar.min_dcr_overfitting_protection, table
    con = _con(home)
    # identical measurement records (patient QIs + analyte, date, value), counted here independently
    rec = "p.age_band, p.sex, p.region, m.measurement_concept_id, m.measurement_date, m.value_as_number"
    n = db.scalar(con, "SELECT count(*) FROM syn.measurement")
    same = db.scalar(con, f"""SELECT count(*) FROM (SELECT {rec} FROM syn.measurement m JOIN syn.person p
                              USING (person_id) INTERSECT ALL SELECT {rec} FROM real.measurement m
                              JOIN real.person p USING (person_id))""")
    assert same / n <= bar.max_identical_share


def test_a_twin_missing_the_privacy_bar_is_refused(home, twin):
    strict = FAST + "min_dcr_overfitting_protection = 1.01\nfit_max_patients = 200\nsize_ratio = 0.2\n"
    rc, _, err = synth_build(home, strict)
    assert rc == 5 and "refused" in err and "DCR overfitting protection" in err
    folder = home / "releases" / "synthetic" / "alpha"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".lock")) == ["v1"]
    assert not (home / "restricted" / "synth-models" / "alpha" / "v2.pkl").exists()


def test_only_desensitized_releases_are_fitted_on(home, twin):
    proc = enclave(home, "synth", "build", "--release", "synthetic/alpha/v1", check=False)
    assert proc.returncode == 2 and "desensitized releases only" in proc.stderr


def test_code_tuples_are_never_mixed():
    """Dependent columns (concept ↔ source value) come out only in pairs seen in the data."""
    frame = pl.DataFrame({
        "concept": [1, 1, 2, 2, 3, 3] * 20,
        "source": ["a", "b", "c", "c", "d", "e"] * 20,
        "value": [float(i % 17) for i in range(120)],
    })
    model = TableModel.fit("t", frame, (), "concept", SynthSettings())
    out = model.sample(300)
    pairs = set(zip(frame["concept"], frame["source"]))
    assert set(zip(out["concept"], out["source"])) <= pairs
    assert out["value"].min() >= frame["value"].min() and out["value"].max() <= frame["value"].max()


def test_settings_from_toml(tmp_path):
    (tmp_path / "settings.toml").write_text("[synthetic]\nmax_identical_share = 0.01\n", encoding="utf-8")
    assert load_settings(tmp_path).synthetic.max_identical_share == 0.01
    (tmp_path / "settings.toml").write_text("[synthetic]\nmax_identical = 0.01\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="unknown setting"):
        load_settings(tmp_path)
    (tmp_path / "settings.toml").write_text("[synthetic]\nseed = 'x'\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="wrong type"):
        load_settings(tmp_path)


def test_the_cli_lists_the_plugin_command():
    proc = subprocess.run([sys.executable, "-m", "enclave", "--help"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0 and "synth" in proc.stdout and "warning" not in proc.stderr
