"""Indicator cubes: rules on every cell, secondary suppression across faces, cell-key rounding."""

from __future__ import annotations

import itertools

import duckdb
import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from enclave.io.indicators.cube import (
    ALL,
    SECONDARY_REASON,
    WITHHELD_REASON,
    cell_key_round,
    check_cube,
    public_reasons,
    suppress_cube,
)
from enclave.logic.disclosure import ACRO, OPENSAFELY, recoverable


def rounded(counts, keys, policy=ACRO) -> list[int]:
    df = pl.DataFrame({"x": counts, "k": keys}, schema={"x": pl.Int64, "k": pl.UInt64})
    return df.select(cell_key_round(pl.col("x"), pl.col("k"), policy).alias("r"))["r"].to_list()


def test_cell_key_rounding_is_consistent_unbiased_and_never_below_the_threshold():
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 1 << 32, 20_000, dtype=np.uint64)
    out = rounded([23] * len(keys), keys.tolist())
    assert set(out) == {20, 25}  # a multiple of the base on either side
    assert abs(np.mean(out) - 23) < 0.1  # unbiased: 23 rounds up 3 times in 5
    # the same cell key gives the same published value, every time
    assert rounded([23] * 5, [keys[0]] * 5) == [out[0]] * 5
    # multiples stay, zero stays zero, nothing below the threshold is shown
    assert rounded([10, 15, 0], [123, 456, 789]) == [10, 15, 0]
    low = rounded([10, 11, 12, 13, 14], [0] * 5)  # key 0 → always round up (if r > 0)
    assert low == [10, 15, 15, 15, 15]
    assert min(rounded([8, 9], [1 << 31, (1 << 32) - 1], OPENSAFELY)) >= OPENSAFELY.min_patients


def test_subtracting_two_refreshes_does_not_reveal_one_patient():
    """Same contributors → same value (no averaging); one more patient → a fresh draw, so the
    difference of two refreshes is a multiple of the base, never the 1 patient."""
    rng = np.random.default_rng(2)
    base_keys = rng.integers(0, 1 << 32, (2000, 40), dtype=np.uint64)
    extra = rng.integers(0, 1 << 32, 2000, dtype=np.uint64)
    before = [(int(k.sum()) % (1 << 32)) for k in base_keys]
    after = [(b + int(e)) % (1 << 32) for b, e in zip(before, extra)]
    a = np.array(rounded([40] * 2000, before))
    b = np.array(rounded([41] * 2000, after))
    diff = b - a
    assert set(np.unique(diff)) <= {-5, 0, 5} and not (diff == 1).any()
    assert rounded([40] * 3, before[:3]) == a[:3].tolist()


def test_cell_keys_are_consistent_across_tables_with_the_same_contributors():
    con = duckdb.connect()
    rows = pl.DataFrame({"person_id": list(range(1, 24)), "g": ["a"] * 23,
                         "h": ["x"] * 12 + ["y"] * 11})
    con.register("rel", rows.to_arrow())
    con.execute("CREATE TABLE rk AS SELECT person_id, (hash(person_id) % 4294967296)::UBIGINT "
                "AS rkey FROM rel").fetchall()
    one = check_cube(con, "rel", ["g"], ["g"], "patients", ACRO, record_keys="rk").cells
    two = check_cube(con, "rel", ["h"], ["h"], "patients", ACRO, record_keys="rk").cells
    total_one = one.filter(pl.col("g") == ALL)["value"][0]
    total_two = two.filter(pl.col("h") == ALL)["value"][0]
    assert total_one == total_two  # the same 23 people → the same published total


def _faces_safe(sup: np.ndarray, margin_axes: list[int]) -> bool:
    for a, b in itertools.combinations(margin_axes, 2):
        s = np.moveaxis(sup, (a, b), (0, 1))
        flat = s.reshape(s.shape[0], s.shape[1], -1)
        for k in range(flat.shape[2]):
            face = flat[:, :, k]
            if face.any() and not face.all() and recoverable(face).any():
                return False
    return True


@hsettings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 4), st.integers(2, 4), st.integers(1, 3),
       st.floats(0.02, 0.25))
def test_no_suppressed_cell_can_be_recovered_from_any_face(seed, n0, n1, n2, share):
    rng = np.random.default_rng(seed)
    inner = rng.integers(1, 60, (n0, n1, n2)).astype(float)
    cube = np.zeros((n0 + 1, n1 + 1, n2 + 1))
    cube[:n0, :n1, :n2] = inner
    cube[-1, :, :] = cube[:-1].sum(axis=0)
    cube[:, -1, :] = cube[:, :-1].sum(axis=1)
    cube[:, :, -1] = cube[:, :, :-1].sum(axis=2)
    primary = np.zeros(cube.shape, dtype=bool)
    primary[:n0, :n1, :n2] = rng.random((n0, n1, n2)) < share
    sup = suppress_cube(cube, primary, [0, 1, 2])
    assert (sup | ~primary).all()  # primary cells stay suppressed
    assert _faces_safe(sup, [0, 1, 2])
    # and no line (with its total) holds exactly one suppressed cell
    for ax in range(3):
        assert not (sup.sum(axis=ax) == 1).any()


def test_one_margin_axis_uses_the_line_rule():
    w = np.array([30.0, 4.0, 50.0, 84.0])
    sup = suppress_cube(w, np.array([False, True, False, False]), [0])
    assert sup.tolist() == [True, True, False, False]  # the smallest other inner cell


@pytest.fixture
def relation():
    """30 people in region r1 (two rows each, some in two years), 4 in r2, 12 in r3."""
    rows = []
    pid = 0
    for region, n in (("r1", 30), ("r2", 4), ("r3", 12)):
        for _ in range(n):
            pid += 1
            rows.append((pid, region, "2020", 100.0))
            rows.append((pid, region, "2021" if pid % 2 else "2020", 50.0))
    return pl.DataFrame(rows, schema=["person_id", "region", "year", "cost"], orient="row")


def _con(rel: pl.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("rel", rel.to_arrow())
    con.execute("CREATE TABLE rk AS SELECT DISTINCT person_id, "
                "(hash(person_id) % 4294967296)::UBIGINT AS rkey FROM rel").fetchall()
    return con


def test_cube_counts_distinct_patients_suppresses_and_complements(relation):
    con = _con(relation)
    cube = check_cube(con, "rel", ["region", "year"], ["region", "year"], "patients", ACRO,
                      record_keys="rk")
    cells = cube.cells
    get = {(r, y): (v, s) for r, y, v, s in cells.select("region", "year", "value", "suppressed")
           .rows()}
    # r2 has 4 people: suppressed in every year and in its total
    assert get[("r2", "2020")][1] and get[("r2", ALL)][1]
    # the grand total counts people once although they have two rows / two years
    assert get[(ALL, ALL)] == (45.0, False) or get[(ALL, ALL)] == (50.0, False)
    assert cube.secondary > 0  # r2 alone in its column would be recoverable from the total
    for col in ("2020", "2021", ALL):
        line = [get[(r, col)][1] for r in ("r1", "r2", "r3", ALL)]
        assert sum(line) != 1
    published = cells.filter(~pl.col("suppressed"))["value"]
    assert (published % ACRO.round_base == 0).all() and published.min() >= ACRO.min_patients
    reasons = set(cells.filter(pl.col("suppressed"))["reason"].to_list())
    assert reasons == public_reasons(ACRO) == {SECONDARY_REASON}  # complements read the same
    assert not any(ch.isdigit() for r in reasons for ch in r)


def test_means_go_through_the_magnitude_rules(relation):
    dominated = relation.with_columns(
        pl.when(pl.col("person_id") == 1).then(1e7).otherwise(pl.col("cost")).alias("cost"))
    con = _con(dominated)
    cells = check_cube(con, "rel", ["region"], ["region"], "mean", ACRO, value="cost").cells
    r1 = cells.filter(pl.col("region") == "r1").row(0, named=True)
    assert r1["suppressed"] and r1["reason"] == WITHHELD_REASON  # not which rule withheld it
    total = cells.filter(pl.col("region") == ALL).row(0, named=True)
    assert total["suppressed"]  # the same person dominates it
    assert cells["suppressed"].sum() != 1
    con2 = _con(relation)
    ok = check_cube(con2, "rel", ["region"], ["region"], "mean", ACRO, value="cost").cells
    assert ok.filter(pl.col("region") == "r1")["value"][0] == 75.0


def test_extra_levels_become_checked_empty_cells(relation):
    con = _con(relation)
    cells = check_cube(con, "rel", ["region"], ["region"], "patients", ACRO, record_keys="rk",
                       levels={"region": ["r9"]}).cells
    r9 = cells.filter(pl.col("region") == "r9").row(0, named=True)
    assert r9["suppressed"] and r9["value"] is None
    assert r9["reason"] == WITHHELD_REASON  # not "empty": see below


@hsettings(max_examples=200, deadline=None)
@given(st.integers(0, 100_000), st.integers(2, 7), st.integers(2, 7), st.floats(0.05, 0.6))
def test_the_bridge_check_agrees_with_the_exact_svd_test(seed, m, n, share):
    from enclave.io.indicators.cube import pinned_cells

    rng = np.random.default_rng(seed)
    sup = rng.random((m, n)) < share
    assert (pinned_cells(sup) == recoverable(sup)).all()


def test_a_withheld_empty_cell_reads_like_any_other_small_cell(relation):
    """An empty cell (r4: nobody), a small one (r2: 4 people) and a complement are withheld with
    the same words: a reason of its own would tell the reader which withheld cells are zero, or
    which passed on their own."""
    con = _con(relation)
    cells = check_cube(con, "rel", ["region"], ["region"], "patients", ACRO, record_keys="rk",
                       levels={"region": ["r1", "r2", "r3", "r4"]}).cells
    why = dict(cells.select("region", "reason").rows())
    assert cells.filter(pl.col("region") == "r4")["suppressed"].item()
    assert why["r4"] == why["r2"] == WITHHELD_REASON
    assert set(cells.filter(pl.col("suppressed"))["reason"]) == {WITHHELD_REASON}
    assert why["r1"] is None
