"""The engine setting and the DuckDB side of the engine layer (Spark: tests/spec)."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from enclave.core.errors import ConfigurationError
from enclave.core.settings import EngineSettings, load_settings
from enclave.io.engine import duckdb_engine, export_parquet, open_engine, open_release, spark_conf


def test_spark_runs_locked_down_by_default_and_takes_extra_properties(tmp_path):
    conf = spark_conf(EngineSettings(spark_conf=("spark.executor.memory=8g",)), tmp_path)
    assert conf["spark.ui.enabled"] == "false"  # no web UI port on the driver
    assert conf["spark.driver.bindAddress"] == conf["spark.driver.host"] == "127.0.0.1"
    assert conf["spark.local.dir"] == str(tmp_path)  # shuffle files stay in the given folder
    assert conf["spark.executor.memory"] == "8g"
    with pytest.raises(ConfigurationError, match="key=value"):
        spark_conf(EngineSettings(spark_conf=("spark.executor.memory",)))


def test_the_backend_is_a_setting(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "settings.toml").write_text(
        '[engine]\nbackend = "pyspark"\nspark_master = "spark://10.0.0.5:7077"\n'
        'spark_conf = ["spark.executor.cores=4"]\n')
    s = load_settings(home)
    assert (s.engine.backend, s.engine.spark_master) == ("pyspark", "spark://10.0.0.5:7077")
    assert s.engine.spark_conf == ("spark.executor.cores=4",)
    assert load_settings(tmp_path / "other").engine.backend == "duckdb"
    (home / "settings.toml").write_text('[engine]\nbackend = "oracle"\n')
    with pytest.raises(ConfigurationError, match="engine.backend"):
        open_engine(load_settings(home))


def test_duckdb_engine_moves_tables_in_and_out(tmp_path):
    e = open_engine(load_settings(tmp_path / "home"))
    assert e.name == "duckdb"
    t = e.put("rows", pl.DataFrame({"g": ["a", "a", "b"], "x": [1, 2, 3]}))
    out = e.to_polars(t.group_by("g").aggregate(total=t.x.sum()).order_by("g"))
    assert out.rows() == [("a", 3), ("b", 3)]
    m = e.materialize("twice", t.mutate(y=t.x * 2))
    assert e.to_polars(m.y.sum().name("s").as_table())["s"][0] == 12
    e.drop("twice")
    e.close()


def test_a_database_file_opens_read_only_and_exports_to_parquet(tmp_path):
    path = tmp_path / "release.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE person AS SELECT range AS person_id FROM range(5)").fetchall()
    con.execute("CREATE TABLE other AS SELECT 1 AS x").fetchall()
    con.close()
    settings = load_settings(tmp_path / "home")
    with open_release(settings, path) as e:
        assert e.to_polars(e.table("person").count().name("n").as_table())["n"][0] == 5
        with pytest.raises(duckdb.Error):
            e.raw.execute("CREATE TABLE nope AS SELECT 1").fetchall()
    assert export_parquet(path, tmp_path, ["person"]) == ["person"]
    e = duckdb_engine()
    assert e.to_polars(e.read_parquet("p", tmp_path / "person.parquet"))["person_id"].sum() == 10
    e.close()
