"""Issue 3 acceptance: desensitized releases on the demo population."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from enclave.core.errors import ConfigurationError
from enclave.core.settings import load_settings
from enclave.io.release.build import plan_table
from enclave.io.release.keys import project_key, pseudonyms
from tests.enclave_cli import run_enclave

TABLES = ["person", "visit_occurrence", "condition_occurrence", "drug_exposure", "measurement",
          "note", "cost", "observation_period", "care_site", "concept"]


def enclave(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_enclave(home, *args, check=check)


def create_project(home: Path, pid: str, sharing: str = "enclave") -> None:
    args = ["project", "create", "--id", pid, "--title", f"Study {pid}", "--purpose", "diabetes care",
            "--pi", "alice", "--member", "bob", "--tier", "desensitized", "--sharing", sharing,
            "--expires", "2099-12-31"]
    for t in TABLES:
        args += ["--table", t]
    enclave(home, *args)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("release-home")
    enclave(home, "up", "--patients", "3000", "--hospitals", "5", "--seed", "5", "--data-only")
    create_project(home, "alpha")
    create_project(home, "beta")
    manifests = {p: json.loads(enclave(home, "release", "build", "--project", p, "--json").stdout)
                 for p in ("alpha", "beta")}
    return home, manifests


def release_db(home: Path, pid: str, version: int = 1) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(home / "releases" / "desensitized" / pid / f"v{version}" / "release.duckdb"),
                          read_only=True)


def all_strings(con: duckdb.DuckDBPyConnection) -> pl.Series:
    parts = []
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE data_type = 'VARCHAR'"
    ).fetchall():
        parts.append(pl.from_arrow(con.sql(f'SELECT "{column}"::VARCHAR AS v FROM "{table}"').to_arrow_table())["v"])
    return pl.concat(parts).drop_nulls()


def test_no_planted_identifier_occurs_anywhere_in_a_release(built):
    home, _ = built
    ids = json.loads((home / "restricted" / "demo-extracts" / "identifiers.json").read_text("utf-8"))
    needles = sorted({v for key in ("resident_ids", "phones", "addresses", "mrns", "insurance_nos", "names")
                      for v in ids[key] if v and len(v) >= 2})
    con = release_db(home, "alpha")
    strings = all_strings(con)
    notes = con.execute("SELECT count(*) FROM note").fetchall()[0][0]
    con.close()
    assert notes > 0 and strings.len() > 10_000
    hits = strings.filter(strings.str.contains_any(needles))
    assert hits.len() == 0, f"{hits.len()} release values contain a planted identifier"


def test_pseudonyms_differ_between_projects_and_direct_identifiers_are_gone(built):
    home, manifests = built
    a, b = release_db(home, "alpha"), release_db(home, "beta")
    pa = {r[0] for r in a.execute("SELECT person_id FROM person").fetchall()}
    pb = {r[0] for r in b.execute("SELECT person_id FROM person").fetchall()}
    va = {r[0] for r in a.execute("SELECT visit_occurrence_id FROM visit_occurrence").fetchall()}
    vb = {r[0] for r in b.execute("SELECT visit_occurrence_id FROM visit_occurrence").fetchall()}
    cols = {r[0] for r in a.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'person'").fetchall()}
    a.close(), b.close()
    assert len(pa) > 2000 and pa.isdisjoint(pb) and va.isdisjoint(vb)
    assert "person_source_value" not in cols and "year_of_birth" not in cols
    assert {"age_band", "sex", "region"} <= cols
    assert "person_source_value" in manifests["alpha"]["dropped_columns"]["person"]


def test_date_intervals_within_a_patient_are_unchanged(built):
    home, _ = built
    settings = load_settings(home)
    store = duckdb.connect(str(settings.store_path), read_only=True)
    orig = pl.from_arrow(store.sql(
        "SELECT person_id::BIGINT AS person_id, visit_start_date, visit_end_date FROM visit_occurrence").to_arrow_table())
    store.close()
    key = project_key(settings.keys_dir, "alpha")
    m = pseudonyms(key, "person", orig["person_id"])
    orig = orig.join(m.rename({"id": "person_id"}), on="person_id")
    con = release_db(home, "alpha")
    rel = pl.from_arrow(con.sql(
        "SELECT person_id AS pseudo, visit_start_date, visit_end_date FROM visit_occurrence").to_arrow_table())
    con.close()

    def shape(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.sort("pseudo", "visit_start_date", "visit_end_date").group_by("pseudo", maintain_order=True).agg(
            (pl.col("visit_end_date") - pl.col("visit_start_date")).dt.total_days().alias("length"),
            (pl.col("visit_start_date") - pl.col("visit_start_date").first()).dt.total_days().alias("offset"),
            pl.col("visit_start_date").first().alias("first"),
        )

    o, r = shape(orig), shape(rel)
    joined = r.join(o, on="pseudo", suffix="_orig")
    assert joined.height == r.height > 1000
    assert (joined["length"] == joined["length_orig"]).all()
    assert (joined["offset"] == joined["offset_orig"]).all()
    shift = (joined["first"] - joined["first_orig"]).dt.total_days()
    assert (shift != 0).all() and shift.n_unique() > 50  # shifted, per patient


def test_measured_k_equals_pycanon(built):
    from pycanon import anonymity

    home, manifests = built
    con = release_db(home, "alpha")
    people = con.sql("SELECT age_band, sex, region FROM person").df()
    con.close()
    k = anonymity.k_anonymity(people, ["age_band", "sex", "region"])
    assert k == manifests["alpha"]["risk"]["k"] >= 3
    assert manifests["alpha"]["risk"]["prosecutor_max"] <= 1 / 3


def test_release_verifies_and_detects_tampering(built, tmp_path):
    home, _ = built
    assert enclave(home, "release", "verify", "alpha/v1").returncode == 0
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(home / "releases" / "desensitized" / "alpha" / "v1", copy)
    os.chmod(copy / "release.duckdb", 0o640)
    with open(copy / "release.duckdb", "r+b") as fh:
        fh.seek(5000)
        fh.write(b"tampered")
    proc = enclave(home, "release", "verify", str(copy), "--json", check=False)
    assert proc.returncode == 1 and "differs" in proc.stdout


def test_too_weak_a_policy_is_refused_naming_the_quasi_identifier(built, tmp_path):
    home, _ = built
    create_project(home, "gamma", sharing="public")
    policy = tmp_path / "weak.toml"
    policy.write_text("k = 2\nmax_suppression = 0.0\n")
    proc = enclave(home, "release", "build", "--project", "gamma", "--policy", str(policy), check=False)
    assert proc.returncode == 5, proc.stderr
    assert "quasi-identifier" in proc.stderr and "threshold" in proc.stderr
    assert not (home / "releases" / "desensitized" / "gamma" / "v1").exists()


def test_an_unclassified_column_cannot_enter_a_release():
    with pytest.raises(ConfigurationError, match="bogus"):
        plan_table("person", ("person_id", "bogus"))


def test_killing_a_build_leaves_the_previous_releases_intact(built):
    home, _ = built
    project_dir = home / "releases" / "desensitized" / "beta"
    before = sorted(p.name for p in project_dir.glob("v*"))
    killed_mid_build = 0
    for delay in (0.5, 1.0, 1.5, 2.0, 3.0):
        proc = subprocess.Popen([sys.executable, "-m", "enclave", "--home", str(home), "release", "build",
                                 "--project", "beta"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            now = sorted(p.name for p in project_dir.glob("v*"))
            if now == before:
                killed_mid_build += 1
        else:
            proc.wait()
        before = sorted(p.name for p in project_dir.glob("v*"))
        for v in before:
            assert enclave(home, "release", "verify", f"beta/{v}").returncode == 0
    assert killed_mid_build >= 1
    # the next build cleans up the stale build folder and publishes normally
    enclave(home, "release", "build", "--project", "beta")
    assert not list(project_dir.glob(".build-*"))


def test_l_diversity_and_month_granularity_from_a_policy_file(built, tmp_path):
    home, _ = built
    policy = tmp_path / "strict.toml"
    policy.write_text('k = 5\nmax_suppression = 0.1\ndate_granularity = "month"\n'
                      '[l_diversity]\nl = 2\nvariant = "distinct"\n')
    proc = enclave(home, "release", "build", "--project", "alpha", "--policy", str(policy), "--json")
    manifest = json.loads(proc.stdout)
    assert manifest["policy"]["l_diversity"] == {"l": 2, "variant": "distinct", "c": 3.0}
    assert manifest["risk"]["k"] >= 5
    con = release_db(home, "alpha", manifest["version"])
    days = {r[0] for r in con.execute("SELECT DISTINCT day(visit_start_date) FROM visit_occurrence").fetchall()}
    # every class of patients holds at least two distinct main conditions (recomputed here)
    least_l = con.execute("""
        WITH mc AS (
            SELECT person_id, arg_max(condition_concept_id, n) AS c FROM (
                SELECT person_id, condition_concept_id,
                       count(*) * 1000000000 - condition_concept_id AS n
                FROM condition_occurrence GROUP BY person_id, condition_concept_id)
            GROUP BY person_id)
        SELECT min(l) FROM (
            SELECT age_band, sex, region, count(DISTINCT coalesce(c::VARCHAR, 'none')) AS l
            FROM person LEFT JOIN mc USING (person_id) GROUP BY age_band, sex, region)
    """).fetchall()[0][0]
    con.close()
    assert days == {1}
    assert least_l >= 2
    assert manifest["policy_sha256"] != json.loads(
        (home / "releases" / "desensitized" / "alpha" / "v1" / "manifest.json").read_text())["policy_sha256"]
