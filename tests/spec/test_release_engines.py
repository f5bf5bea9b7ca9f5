"""A DuckDB release file on every engine: Spark reads it as Parquet (types kept), DuckDB in place."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb

from enclave.core.settings import load_settings
from enclave.io.engine import open_release
from tests.spec.conftest import assert_same_rows


def test_a_release_reads_the_same_on_both_engines(tmp_path, spark):
    path = tmp_path / "release.duckdb"
    con = duckdb.connect(str(path))
    con.execute("""CREATE TABLE visit AS SELECT range::BIGINT AS person_id,
                   DATE '2020-01-01' + (range % 40)::INTEGER AS visit_start_date,
                   CASE WHEN range % 3 = 0 THEN NULL ELSE 'H' || (range % 4) END AS hospital,
                   (range * 1.5)::DOUBLE AS cost FROM range(200)""").fetchall()
    con.close()
    base = load_settings(tmp_path / "home")
    out = {}
    for backend in ("duckdb", "pyspark"):
        settings = dataclasses.replace(base, engine=dataclasses.replace(base.engine,
                                                                        backend=backend))
        with open_release(settings, path) as e:
            v = e.table("visit")
            expr = v.group_by("hospital").aggregate(
                n=v.count(), first=v.visit_start_date.min(), cost=v.cost.sum())
            out[backend] = e.to_polars(expr)
    assert out["duckdb"].filter(out["duckdb"]["hospital"].is_null())["n"][0] == 67
    assert out["pyspark"]["first"].min() == dt.date(2020, 1, 1)
    assert_same_rows(out["duckdb"], out["pyspark"], ["hospital"], rel_tol=1e-12)
    assert spark.sparkContext._jsc is not None  # the shared session is still running
    assert not list((tmp_path / "home" / "restricted" / "spark").glob("parquet-*"))
