"""Indicator cubes on every engine: the cells (evidence per grouping set and cell keys) computed
by ibis on DuckDB and on Spark, checked by the same rules, publish the same values as the DuckDB
fast path (``check_cube`` on a connection). Published values are rounded or suppressed, so they
compare exactly."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest

from enclave.disclosure import ACRO
from enclave.indicators.cells import cell_keys_expr
from enclave.indicators.cube import ALL, check_cube, check_cube_on
from tests.spec.conftest import assert_same_rows


def people(seed: int = 7) -> pl.DataFrame:
    """Patients in regions of very different sizes, some with two years, costs with one
    dominant patient, and a few rows without a region."""
    rng = np.random.default_rng(seed)
    rows = []
    pid = 0
    for region, n in (("r1", 60), ("r2", 4), ("r3", 25), ("r4", 9)):
        for _ in range(n):
            pid += 1
            year = str(rng.choice(["2020", "2021", "2022"]))
            sex = str(rng.choice(["F", "M"]))
            rows.append((pid, region, year, sex, float(rng.integers(10, 500))))
            if pid % 3 == 0:
                rows.append((pid, None if pid % 9 == 0 else region, "2022", sex, 50.0))
    rows.append((1, "r1", "2020", "F", 1e6))  # dominates r1's costs
    return pl.DataFrame(rows, schema=["person_id", "region", "year", "sex", "cost"],
                        orient="row")


def record_keys(rel: pl.DataFrame) -> pl.DataFrame:
    ids = rel["person_id"].unique().sort()
    return pl.DataFrame({"person_id": ids,
                         "rkey": (ids.hash(seed=11) % (1 << 32)).cast(pl.Int64)})


CUBES = [  # axes, margins, statistic, value
    (["region", "year"], ["region", "year"], "patients", None),
    (["region", "year", "sex"], ["region", "sex"], "count", None),
    (["region"], ["region"], "mean", "cost"),
    (["year", "sex"], ["year", "sex"], "sum", "cost"),
]


@pytest.mark.parametrize(("axes", "margins", "stat", "value"), CUBES)
def test_cubes_agree_with_the_duckdb_fast_path(engines, axes, margins, stat, value):
    rel, keys = people(), record_keys(people())
    con = duckdb.connect()
    con.register("rel", rel.to_arrow())
    con.register("rk", keys.with_columns(pl.col("rkey").cast(pl.UInt64)).to_arrow())
    fast = check_cube(con, "rel", axes, margins, stat, ACRO, value=value, record_keys="rk",
                      decimals=1)
    con.close()
    assert fast.cells["suppressed"].any() and not fast.cells["suppressed"].all()
    for name, e in engines.items():
        t, k = e.put("cube_rel", rel), e.put("cube_rk", keys)
        cube = check_cube_on(e, t, axes, margins, stat, ACRO, value=value, record_keys=k,
                             decimals=1)
        assert_same_rows(fast.cells, cube.cells, axes)
        assert (cube.primary, cube.secondary) == (fast.primary, fast.secondary), name


def test_cell_keys_spec(engine):
    """A cell's key is the sum of its distinct patients' keys mod 2³², totals included."""
    rel = pl.DataFrame({"person_id": [1, 1, 2, 3], "g": ["a", "a", "a", "b"]})
    keys = pl.DataFrame({"person_id": [1, 2, 3], "rkey": [(1 << 32) - 1, 5, 7]})
    t, k = engine.put("ck_rel", rel), engine.put("ck_rk", keys)
    out = engine.to_polars(cell_keys_expr(t, ["g"], ["g"], k)).sort("g")
    assert out.rows() == [("All", 11), ("a", 4), ("b", 7)]
    assert ALL == "All"
