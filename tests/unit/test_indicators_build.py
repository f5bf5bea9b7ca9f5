"""Building and publishing the indicator table from a real demo release (CLI, DuckDB, ibis)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import polars as pl
import pytest

from enclave.core.crypto import file_sha256
from enclave.core.manifest import load_manifest, verify_release
from enclave.core.settings import load_settings
from enclave.io.indicators.cube import public_reasons
from enclave.logic.disclosure import policy_from_settings, policy_hash
from tests.enclave_cli import run_enclave

TABLES = ("person", "visit_occurrence", "condition_occurrence", "drug_exposure", "measurement",
          "cost", "care_site", "concept", "observation_period", "location")
COUNT_INDICATORS = ("people", "people_seen", "condition_patients", "visits", "inpatient_stays",
                    "readmissions_30d", "lab_tests", "repeat_tests", "repeat_test_pairs",
                    "medicine_patients")


def enclave(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_enclave(home, *args, check=check)


def demo_indicators(home: Path, tables: tuple[str, ...] = TABLES, pid: str = "alpha",
                    patients: int = 1500, hospitals: int = 3, *extra: str) -> dict:
    """A demo enclave with one desensitized release and its published indicators (manifest);
    ``extra``: further arguments of ``enclave indicators build``."""
    if not (home / "restricted").exists():
        enclave(home, "up", "--patients", str(patients), "--hospitals", str(hospitals), "--seed",
                "11", "--data-only")
    args = ["project", "create", "--id", pid, "--title", "Dashboards", "--purpose", "indicators",
            "--pi", "alice", "--member", "bob", "--tier", "desensitized", "--sharing", "enclave",
            "--expires", "2099-12-31"]
    for t in tables:
        args += ["--table", t]
    enclave(home, *args)
    enclave(home, "release", "build", "--project", pid)
    return json.loads(enclave(home, "indicators", "build", "--release", f"{pid}/v1",
                              "--json", *extra).stdout)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("indicators-home")
    return home, demo_indicators(home)


def table(home: Path, version: int = 1) -> pl.DataFrame:
    con = duckdb.connect(str(home / "releases" / "indicators" / f"v{version}" /
                             "indicators.duckdb"), read_only=True)
    try:
        return pl.from_arrow(con.sql("SELECT * FROM indicators").to_arrow_table())
    finally:
        con.close()


def test_publication_is_complete_verifiable_and_records_its_provenance(built):
    home, manifest = built
    settings = load_settings(home)
    path = home / "releases" / "indicators" / "v1"
    assert verify_release(path) == []
    assert oct((path / "indicators.duckdb").stat().st_mode & 0o777) == "0o440"
    src = load_manifest(home / "releases" / "desensitized" / "alpha" / "v1")
    policy = policy_from_settings(settings.disclosure)
    assert manifest["source_release"] == "alpha/v1"
    assert manifest["source_release_sha256"] == src["files"]["release.duckdb"]["sha256"]
    assert manifest["policy_sha256"] == policy_hash(policy)
    assert manifest["skipped"] == {}
    con = duckdb.connect(str(path / "indicators.duckdb"), read_only=True)
    tiles = pl.from_arrow(con.sql("SELECT * FROM tiles").to_arrow_table())
    build = pl.from_arrow(con.sql("SELECT * FROM build").to_arrow_table())
    con.close()
    assert set(COUNT_INDICATORS) <= set(tiles["indicator"])
    assert (tiles["policy_sha256"] == policy_hash(policy)).all()
    assert (tiles["source_sha256"] == src["files"]["release.duckdb"]["sha256"]).all()
    assert build["source_release"][0] == "alpha/v1" and build["built_at"][0]
    computed = tiles.filter(pl.col("statistic") != "rate")
    assert computed["query_sql"].str.contains(r"^(SELECT|WITH)\b").all()
    assert computed["query_sql"].str.contains("person_id").all()


def test_each_recorded_query_reruns_on_the_release(built):
    """The SQL a tile records (compiled by ibis) gives the people count it published."""
    home, _ = built
    con = duckdb.connect(str(home / "releases" / "indicators" / "v1" / "indicators.duckdb"),
                         read_only=True)
    sql = con.sql("SELECT query_sql FROM tiles WHERE indicator = 'people'").fetchall()[0][0]
    con.close()
    rel = duckdb.connect(str(home / "releases" / "desensitized" / "alpha" / "v1" /
                             "release.duckdb"), read_only=True)
    n = rel.sql(f"SELECT count(DISTINCT person_id) FROM ({sql})").fetchall()[0][0]
    raw = rel.sql("SELECT count(DISTINCT person_id) FROM person").fetchall()[0][0]
    rel.close()
    assert n == raw
    cells = table(home)
    total = cells.filter((pl.col("indicator") == "people") & (pl.col("region") == "All")
                         & (pl.col("age_band") == "All") & (pl.col("sex") == "All"))["value"][0]
    assert abs(total - raw) < 5 and total % 5 == 0


def test_no_published_count_is_below_the_threshold_and_reasons_say_nothing(built):
    home, _ = built
    policy = policy_from_settings(load_settings(home).disclosure)
    cells = table(home)
    counts = cells.filter(pl.col("indicator").is_in(COUNT_INDICATORS) & ~pl.col("suppressed"))
    assert counts.height > 100
    assert counts["value"].min() >= policy.min_patients
    assert (counts["value"] % policy.round_base == 0).all()
    assert cells.filter(pl.col("suppressed"))["value"].null_count() == \
        cells.filter(pl.col("suppressed")).height
    # one wording for every withheld cell: small, empty, dominated, complement or derived
    assert set(cells.filter(pl.col("suppressed"))["reason"].unique()) == public_reasons(policy)
    assert cells.filter(~pl.col("suppressed"))["reason"].null_count() == \
        cells.filter(~pl.col("suppressed")).height


def test_rates_are_computed_from_published_values_only(built):
    home, _ = built
    cells = table(home)
    dims = ["condition", "year", "region", "age_band", "sex"]
    num = cells.filter(pl.col("indicator") == "condition_patients").select(
        *dims, pl.col("value").alias("n"))
    den = cells.filter(pl.col("indicator") == "people").select(
        "region", "age_band", "sex", pl.col("value").alias("d"))
    rate = cells.filter((pl.col("indicator") == "prevalence_per_1000") & (pl.col("year") == "All")
                        & ~pl.col("suppressed"))
    j = rate.join(num, on=dims).join(den, on=["region", "age_band", "sex"])
    assert j.height > 5
    assert (j["value"] - (j["n"] / j["d"] * 1000).round(1)).abs().max() < 1e-9


def test_a_refresh_republishes_the_same_values(built):
    home, _ = built
    second = json.loads(enclave(home, "indicators", "build", "--release", "alpha/v1",
                                "--json").stdout)
    assert second["version"] == 2
    a = table(home, 1).sort("indicator", "year", "region", "level", "hospital", "age_band", "sex",
                            "visit_type", "condition", "test", "medicine", nulls_last=True)
    b = table(home, 2).sort(a.columns[:11], nulls_last=True)
    assert a.equals(b)  # consistent rounding: nothing to average or subtract
    listed = json.loads(enclave(home, "indicators", "list", "--json").stdout)
    assert [r["release"] for r in listed] == ["indicators/v1", "indicators/v2"]


def test_a_release_lacking_a_table_is_refused_unless_skipping_is_asked_for(built, tmp_path):
    home, _ = built
    small = ("person", "visit_occurrence", "care_site")
    enclave(home, "project", "create", "--id", "beta", "--title", "D", "--purpose", "i", "--pi",
            "alice", "--tier", "desensitized", "--sharing", "enclave", "--expires", "2099-12-31",
            *[a for t in small for a in ("--table", t)])
    enclave(home, "release", "build", "--project", "beta")
    before = sorted(p.name for p in (home / "releases" / "indicators").iterdir())
    proc = enclave(home, "indicators", "build", "--release", "beta/v1", check=False)
    assert proc.returncode == 2 and "lacks table(s)" in proc.stderr
    assert "concept" in proc.stderr and "--skip-missing" in proc.stderr
    assert sorted(p.name for p in (home / "releases" / "indicators").iterdir()) == before
    manifest = json.loads(enclave(home, "indicators", "build", "--release", "beta/v1", "--json",
                                  "--skip-missing").stdout)
    assert "condition_patients" in manifest["skipped"] and "visits" in manifest["indicators"]
    assert "care_site" not in manifest["skipped"].get("visits", "")
    copy = tmp_path / "rel"
    shutil.copytree(home / "releases" / "desensitized" / "alpha" / "v1", copy)
    os.chmod(copy / "release.duckdb", 0o640)
    with open(copy / "release.duckdb", "ab") as fh:
        fh.write(b"x")
    proc = enclave(home, "indicators", "build", "--release", str(copy), check=False)
    assert proc.returncode == 2 and "failed verification" in proc.stderr
    assert file_sha256(copy / "release.duckdb") != manifest["source_release_sha256"]


def test_every_indicator_is_built_from_the_demo_project_release():
    """``enclave up``'s demo release holds every table an indicator reads, so ``enclave up``
    builds them all (the build refuses a release that lacks one)."""
    from enclave.io.indicators.definitions import INDICATOR_TABLES
    from enclave.workflows.enclave_up import DEMO_TABLES

    assert set(INDICATOR_TABLES) <= set(DEMO_TABLES)
    assert set(INDICATOR_TABLES) <= set(TABLES)


def test_partial_years_are_published_and_pairs_labelled(built):
    home, _ = built
    con = duckdb.connect(str(home / "releases" / "indicators" / "v1" / "indicators.duckdb"),
                         read_only=True)
    periods = dict(con.sql("SELECT year, partial FROM periods").fetchall())
    pairs = con.sql("SELECT code, label FROM labels WHERE dimension = 'pair'").fetchall()
    con.close()
    years = sorted(periods)
    # the demo covers 2019-2024; shifted dates spill into the years around it, partly covered
    assert periods[years[0]] and periods[years[-1]] and not periods["2021"]
    assert pairs and all(">" in code and " → " in label for code, label in pairs)
