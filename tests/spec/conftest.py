"""Spec tests of the set-based work, run on every engine (DuckDB and Spark through ibis).

One Spark session serves the whole test run (local[2], UI off, driver on 127.0.0.1, two shuffle
partitions): starting Spark takes tens of seconds on a 2-core machine, running a small query a
second or two. Each test gets a fresh DuckDB engine and a Spark engine on the shared session; both
drop their views afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl
import pytest

from enclave.core.settings import EngineSettings
from enclave.io.engine import Engine, duckdb_engine, spark_engine, spark_session

ENGINES = ("duckdb", "pyspark")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    session = spark_session(EngineSettings(spark_master="local[2]", spark_shuffle_partitions=2,
                                           spark_driver_memory="1g"),
                            scratch=tmp_path_factory.mktemp("spark"), app="enclave-spec")
    yield session
    session.stop()


def make_engine(name: str, request) -> Engine:
    if name == "duckdb":
        return duckdb_engine()
    return spark_engine(session=request.getfixturevalue("spark"))


@pytest.fixture(params=ENGINES)
def engine(request):
    """One engine per test run of the spec (the test runs once per engine)."""
    e = make_engine(request.param, request)
    yield e
    e.close()


@pytest.fixture
def engines(request):
    """Both engines, for tests that compare them row for row."""
    made = {name: make_engine(name, request) for name in ENGINES}
    yield made
    for e in made.values():
        e.close()


def text_table(text: str) -> pl.DataFrame:
    """A small table written as ``a | b`` lines (header first); empty cells are null, integer
    and decimal columns are typed as such (ehrQL-style spec data)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    header = [h.strip() for h in lines[0].split("|")]
    rows = [[c.strip() or None for c in ln.split("|")] for ln in lines[1:]]
    data = {h: [r[i] for r in rows] for i, h in enumerate(header)}
    out = {}
    for h, vals in data.items():
        s = pl.Series(h, vals, dtype=pl.String)
        for dtype in (pl.Int64, pl.Float64):
            cast = s.cast(dtype, strict=False)
            if cast.null_count() == s.null_count():
                s = cast
                break
        out[h] = s
    return pl.DataFrame(out)


def assert_same_rows(a: pl.DataFrame, b: pl.DataFrame, keys: Sequence[str],
                     rel_tol: float = 0.0) -> None:
    """Row-for-row equality after sorting both on ``keys`` (nulls last). Floats compare exactly
    unless ``rel_tol`` is given (only where the engines legitimately add in different orders)."""
    assert a.columns == b.columns, (a.columns, b.columns)
    assert a.height == b.height, (a.height, b.height)
    a = a.sort(list(keys), nulls_last=True) if keys else a
    b = b.sort(list(keys), nulls_last=True) if keys else b
    for col in a.columns:
        x, y = a[col].to_list(), b[col].to_list()
        if a.schema[col].is_float() or b.schema[col].is_float():
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                assert (u is None) == (v is None), (col, i, u, v)
                if u is not None:
                    assert math.isclose(u, v, rel_tol=rel_tol, abs_tol=rel_tol * 1e-6), \
                        (col, i, u, v)
        else:
            assert x == y, (col, [(i, u, v) for i, (u, v) in enumerate(zip(x, y)) if u != v][:5])
