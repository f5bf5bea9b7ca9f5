"""The evidence read from the per-patient table (what an output materializes once for its counts,
values and the ledger) equals the evidence computed from the raw rows, statistic by statistic."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest

from enclave.io.outputs.membership import materialize
from enclave.logic.disclosure import ACRO, check_table, compute_evidence, margin_evidence


@pytest.fixture(scope="module")
def con():
    rng = np.random.default_rng(5)
    n = 4000
    v = rng.lognormal(2, 1, n).round(1)
    v[rng.random(n) < 0.05] *= -1          # refunds
    df = pl.DataFrame({
        "pid": [f"p{i}" for i in rng.integers(0, 600, n)],
        "r": rng.choice(["a", "b", "c", None], n, p=[0.45, 0.45, 0.08, 0.02]),
        "c": rng.integers(0, 4, n),
        "v": [None if x < 0.08 else y for x, y in zip(rng.random(n), v, strict=True)],
    }).with_columns(pl.when(pl.int_range(pl.len()) % 997 == 0).then(None).otherwise("pid")
                    .alias("pid"))  # rows without a patient: one patient together
    c = duckdb.connect()
    c.register("_df", df.to_arrow())
    c.execute("CREATE TABLE t AS SELECT * FROM _df").fetchall()
    c.execute("CREATE TABLE person AS SELECT DISTINCT pid AS person_id FROM t "
              "WHERE pid IS NOT NULL").fetchall()
    return c


def same(a: pl.DataFrame, b: pl.DataFrame, groups: list[str]) -> None:
    a, b = a.sort(groups, nulls_last=True), b.sort(groups, nulls_last=True)
    assert a.columns == b.columns and a.height == b.height
    for col in a.columns:
        x, y = a[col], b[col]
        if x.dtype.is_float() or y.dtype.is_float():
            assert np.allclose(x.cast(pl.Float64).fill_null(np.nan).to_numpy(),
                               y.cast(pl.Float64).fill_null(np.nan).to_numpy(),
                               rtol=1e-9, equal_nan=True), col
        else:
            assert x.to_list() == y.to_list(), col


@pytest.mark.parametrize("value", [None, "v"])
@pytest.mark.parametrize("extremes,bounds", [(False, False), (True, False), (False, True)])
def test_per_patient_evidence_equals_the_raw_evidence(con, value, extremes, bounds):
    groups = ["r", "c"]
    raw = compute_evidence(con, "SELECT * FROM t", "pid", groups, value, complete=True,
                           extremes=extremes, bounds=bounds)
    table = materialize(con, "SELECT * FROM t", "pid", groups, value)
    pre = compute_evidence(con, table, "_person", groups, value, complete=True,
                           extremes=extremes, bounds=bounds, per_patient=True)
    keep = [c for c in raw.columns if not (c in ("min", "max", "negatives") and not
                                           (extremes or bounds))]
    same(raw.select(keep), pre.select(keep), groups)
    m_raw = margin_evidence(con, "SELECT * FROM t", "pid", "r", "c")
    m_pre = margin_evidence(con, table, "_person", "r", "c", per_patient=True)
    same(m_raw, m_pre, ["level", "r", "c"])


@pytest.mark.parametrize("stat", ["count", "patients", "sum", "mean", "min", "max"])
def test_checked_tables_agree(con, stat):
    value = None if stat in ("count", "patients") else "v"
    raw = check_table(con, "SELECT * FROM t", "pid", ["r", "c"], stat, ACRO, value=value)
    table = materialize(con, "SELECT * FROM t", "pid", ["r", "c"], value)
    pre = check_table(con, table, "_person", ["r", "c"], stat, ACRO, value=value,
                      per_patient=True)
    same(raw.cells, pre.cells, ["r", "c"])


def test_patients_that_are_not_persons_of_the_release_are_refused(tmp_path, monkeypatch):
    """Each kind checks that every patient it counts is in ``person`` (tables on their
    per-patient table, models on the SQL)."""
    from enclave.io.outputs.sql import UnsafeQueryError
    from enclave.research import crosstab, histogram, ols, workspace
    from tests.unit.test_research_api import make_release, pid

    monkeypatch.setenv("HOME", str(tmp_path))
    person = pl.DataFrame({"person_id": [pid(i) for i in range(40)]})
    visit = pl.DataFrame({"person_id": [pid(i % 42) for i in range(200)],
                          "sex": ["F", "M"] * 100, "x": [float(i % 7) for i in range(200)]})
    make_release(tmp_path / "home", {"person": person, "visit": visit})
    t = workspace(tmp_path / "home").table("visit")
    for make in (lambda: crosstab(t, "sex", "x"), lambda: histogram(t, "x", 3),
                 lambda: ols("x ~ sex", t)):
        with pytest.raises(UnsafeQueryError, match="2 patient"):
            make()
    ok = t.filter(t.person_id.isin([pid(i) for i in range(40)]))
    assert crosstab(ok, "sex", "x").status in ("pass", "review", "fail")
