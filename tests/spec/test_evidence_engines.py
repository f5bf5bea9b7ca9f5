"""The disclosure evidence on every engine: the spec on DuckDB and Spark, and the hand-written
DuckDB statement (the fast path of outputs and the airlock) against the ibis expression.

Floats: ``sum``, ``mean``, ``top1``/``top2`` and ``abs_total`` add per-patient sums, whose order
differs between engines (and between DuckDB threads), so they compare with a relative tolerance of
1e-9; every count and every min / max compares exactly.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest

from enclave.disclosure.evidence import compute_evidence
from enclave.disclosure.portable import evidence_expr, evidence_frame
from enclave.errors import BadInputError
from tests.spec.conftest import assert_same_rows, text_table

SPEC = text_table("""
    patient | dept | value | dx
    1       | A    | 10    | I10
    1       | A    | -4    | I10
    2       | A    |       | E11
    3       | A    | 6     | I10
    3       | A    | 10    | I10
    4       | B    | 2     | E11
""")


def test_evidence_spec(engine):
    t = engine.put("spec_ev", SPEC)
    ev = evidence_frame(engine, t, "patient", ["dept"], "value", "dx")
    a, b = ev.to_dicts()
    # A: 5 rows, 3 patients, 4 values from 2 patients; sum 22; per-patient |.| sums 14, 0, 16
    assert (a["dept"], a["rows"], a["patients"], a["values"], a["value_patients"]) == (
        "A", 5, 3, 4, 2)
    assert (a["sum"], a["mean"], a["min"], a["max"]) == (22, 5.5, -4, 10)
    assert (a["top1"], a["top2"], a["abs_total"], a["negatives"]) == (16, 30, 30, 1)
    assert (a["patients_at_min"], a["patients_at_max"]) == (1, 2)
    assert (a["modal_rows"], a["modal_patients"]) == (4, 2)
    assert (b["rows"], b["patients"], b["top1"], b["top2"], b["modal_patients"]) == (1, 1, 2, 2, 1)


def test_second_largest_contribution_on_ties_and_rows_without_a_patient(engine):
    """top2 is the two largest per-patient contributions: a real tie counts twice, one patient
    once, and the rows without a patient id are one contributor (possibly the largest)."""
    t = engine.put("spec_top2", text_table("""
        patient | dept | value
        1       | A    | 5
        1       | A    | 5
        2       | A    | 10
        3       | A    | 4
                | B    | 9
                | B    | 8
        4       | B    | 6
        5       | B    | 2
        6       | C    | 3
                | D    | 3
                | D    | 4
        7       | D    | 7
    """))
    ev = evidence_frame(engine, t, "patient", ["dept"], "value", extremes=False)
    assert ev.select("dept", "top1", "top2", "abs_total").rows() == [
        ("A", 10, 20, 24), ("B", 17, 23, 25), ("C", 3, 3, 3), ("D", 7, 14, 14)]


def test_bounds_give_min_and_max_without_the_rest_of_the_extremes_evidence(engine):
    """``bounds`` (the class-disclosure rules of a sum or mean) computes the cell's min and max
    over every row, rows without a patient included, and nothing else of the extremes."""
    t = engine.put("spec_bounds", text_table("""
        patient | dept | value
        1       | A    | 0
        1       | A    | 0
        2       | A    | 0
        3       | B    | 1
        4       | B    | 0
        5       | B    |
                | B    | 7
        6       | C    |
    """))
    ev = evidence_frame(engine, t, "patient", ["dept"], "value", extremes=False, bounds=True)
    assert ev.select("dept", "min", "max").rows() == [("A", 0, 0), ("B", 0, 7), ("C", None, None)]
    assert ev["negatives"].null_count() == ev["patients_at_min"].null_count() == 3
    plain = evidence_frame(engine, t, "patient", ["dept"], "value", extremes=False)
    assert plain["min"].null_count() == plain["max"].null_count() == 3
    full = evidence_frame(engine, t, "patient", ["dept"], "value")
    assert full.select("min", "max").equals(ev.select("min", "max"))


def test_count_evidence_counts_rows_without_a_patient_as_one_patient(engine):
    t = engine.put("spec_count", text_table("""
        patient | dept
        1       | A
        1       | A
                | A
                | A
        2       | B
    """))
    ev = evidence_frame(engine, t, "patient", ["dept"])
    assert ev.select("dept", "rows", "patients").rows() == [("A", 4, 2), ("B", 1, 1)]
    assert ev["top1"].to_list() == [0.0, 0.0] and ev["sum"].null_count() == 2


def test_empty_cells_are_completed_with_zero_counts(engine):
    t = engine.put("spec_complete", text_table("""
        patient | dept | sex | value
        1       | A    | F   | 1
        2       | A    | M   | 2
        3       | B    | F   | 3
    """))
    ev = evidence_frame(engine, t, "patient", ["dept", "sex"], "value", complete=True)
    assert {(r["dept"], r["sex"]): r["patients"] for r in ev.to_dicts()} == {
        ("A", "F"): 1, ("A", "M"): 1, ("B", "F"): 1, ("B", "M"): 0}


def test_the_expression_refuses_clashing_and_missing_columns():
    import ibis

    t = ibis.table({"patient": "int64", "rows": "string", "value": "float64"}, name="t")
    with pytest.raises(BadInputError, match="clash"):
        evidence_expr(t, "patient", ["rows"], "value")
    with pytest.raises(BadInputError, match="not in the relation"):
        evidence_expr(t, "patient", ["dept"], "value")


def random_rows(seed: int, n: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    value = pl.Series("v", rng.normal(5, 20, n)).round(2)
    return pl.DataFrame({
        "pid": pl.Series(rng.integers(0, n // 3, n)).scatter(
            np.flatnonzero(rng.random(n) < 0.02), None),
        "a": rng.choice(["x", "y", "z", None], n).tolist(),
        "b": rng.integers(0, 4, n),
        "v": value.scatter(np.flatnonzero(rng.random(n) < 0.1), None),
        "s": rng.choice(["p", "q", "r", None], n).tolist(),
    })


CASES = [
    {"groups": ["a", "b"]},
    {"groups": ["a", "b"], "value": "v"},
    {"groups": ["a"], "value": "v", "sensitive": "s"},
    {"groups": ["b"], "value": "v", "extremes": False},
    {"groups": [], "value": "v", "sensitive": "s"},
    {"groups": ["a", "b"], "value": "v", "extremes": False, "bounds": True},
    {"groups": ["a"], "value": "v", "sensitive": "s", "extremes": False, "bounds": True},
    {"groups": [], "value": "v", "extremes": False, "bounds": True},
]


@pytest.mark.parametrize("seed", [1])
def test_engines_agree_row_for_row(engines, seed):
    rows = random_rows(seed, 3000)
    tables = {name: e.put(f"ev_rand_{seed}", rows) for name, e in engines.items()}
    for case in CASES:
        duck = evidence_frame(engines["duckdb"], tables["duckdb"], "pid", **case)
        spark = evidence_frame(engines["pyspark"], tables["pyspark"], "pid", **case)
        assert duck.height > 0
        assert_same_rows(duck, spark, case["groups"], rel_tol=1e-9)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_the_duckdb_statement_and_the_ibis_expression_agree(engines, seed):
    """The hand-written statement stays DuckDB's fast path only because it gives the same rows."""
    rows = random_rows(seed, 5000)
    con = duckdb.connect()
    con.register("t", rows.to_arrow())
    e = engines["duckdb"]
    t = e.put("ev_sql", rows)
    for case in CASES + [{"groups": ["a", "b"], "value": "v", "sensitive": "s",
                          "complete": True}]:
        case = dict(case)
        done = case.pop("complete", False)
        sql = compute_evidence(con, "t", "pid", case["groups"], case.get("value"),
                               case.get("sensitive"), complete=done,
                               extremes=case.get("extremes", True),
                               bounds=case.get("bounds", False))
        ours = evidence_frame(e, t, "pid", case["groups"], case.get("value"),
                              case.get("sensitive"), complete=done,
                              extremes=case.get("extremes", True),
                              bounds=case.get("bounds", False))
        assert_same_rows(sql, ours, case["groups"], rel_tol=1e-12)
    con.close()
