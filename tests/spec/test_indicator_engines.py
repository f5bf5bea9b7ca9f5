"""Indicator cubes on every engine: the cells of a cube (evidence per grouping set and cell keys)
computed on a DuckDB connection (what ``check_cube`` runs: the compiled statements) and on every
engine (``check_cube_on``) equal a plain Python reference on generated tables; the rules,
secondary suppression and rounding after them are the same in-memory code for every engine."""

from __future__ import annotations

import duckdb
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.io.indicators.cells import cell_keys_expr, cube_frames
from enclave.io.indicators.cube import ALL, cube_frames_on
from tests.spec import reference

SCHEMA = {"person_id": pl.Int64, "region": pl.String, "year": pl.String, "sex": pl.String,
          "cost": pl.Float64}
ROWS = st.lists(st.tuples(st.integers(1, 8), st.sampled_from([None, "r1", "r2", "r3"]),
                          st.sampled_from(["2020", "2021"]), st.sampled_from(["F", "M"]),
                          st.one_of(st.none(), st.integers(0, 500).map(float))),
                min_size=1, max_size=30)
RKEYS = st.lists(st.integers(0, (1 << 32) - 1), min_size=8, max_size=8)
CUBE = st.sampled_from([  # axes, margins, value
    (["region", "year"], ["region", "year"], None),
    (["region", "year", "sex"], ["region", "sex"], None),
    (["region"], ["region"], "cost"),
    (["year", "sex"], ["year", "sex"], "cost"),
    ([], [], "cost"),
])


def _inputs(rows, rkeys):
    rel = pl.DataFrame(rows, schema=SCHEMA, orient="row")
    keys = pl.DataFrame({"person_id": range(1, 9), "rkey": rkeys},
                        schema={"person_id": pl.Int64, "rkey": pl.Int64})
    return rel, keys


def _expected(rows, rkeys, axes, margins, value):
    dicts = [dict(zip(SCHEMA, r, strict=True)) for r in rows]
    key = {p: k for p, k in enumerate(rkeys, start=1)}

    def order(d):
        return tuple(d[a] for a in axes)
    return (sorted(reference.cube_evidence(dicts, axes, margins, value), key=order),
            sorted(reference.cell_keys(dicts, axes, margins, key), key=order))


def _got(ev, keys, axes):
    return (ev.sort(axes).to_dicts() if axes else ev.to_dicts(),
            keys.sort(axes).to_dicts() if axes else keys.to_dicts())


@settings(max_examples=40, deadline=None)
@given(rows=ROWS, rkeys=RKEYS, cube=CUBE)
def test_the_cube_on_a_duckdb_connection_matches_the_reference(rows, rkeys, cube):
    axes, margins, value = cube
    rel, keys = _inputs(rows, rkeys)
    con = duckdb.connect()
    con.register("rel", rel.to_arrow())
    con.register("rk", keys.with_columns(pl.col("rkey").cast(pl.UInt64)).to_arrow())
    try:
        got = _got(*cube_frames_on(con, "rel", axes, margins, value, "rk"), axes)
    finally:
        con.close()
    assert got == _expected(rows, rkeys, axes, margins, value)


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, rkeys=RKEYS, cube=CUBE)
def test_the_cube_on_every_engine_matches_the_reference(engine, rows, rkeys, cube):
    axes, margins, value = cube
    rel, keys = _inputs(rows, rkeys)
    t, k = engine.put("cube_rel", rel), engine.put("cube_rk", keys)
    got = _got(*cube_frames(engine, t, axes, margins, value, k), axes)
    assert got == _expected(rows, rkeys, axes, margins, value)


def test_cell_keys_spec(engine):
    """A cell's key is the sum of its distinct patients' keys mod 2³², totals included (here
    every patient is in one finest cell)."""
    rel = pl.DataFrame({"person_id": [1, 1, 2, 3], "g": ["a", "a", "a", "b"]})
    keys = pl.DataFrame({"person_id": [1, 2, 3], "rkey": [(1 << 32) - 1, 5, 7]})
    t, k = engine.put("ck_rel", rel), engine.put("ck_rk", keys)
    out = engine.to_polars(cell_keys_expr(t, ["g"], ["g"], k)).sort("g")
    assert out.rows() == [("All", 11), ("a", 4), ("b", 7)]
    assert ALL == "All"
