"""The disclosure evidence on every engine: the spec on DuckDB and Spark, and generated tables on
which every way of running the one expression (its statement on a DuckDB connection, DuckDB with
either second-largest step, Spark) gives what a plain Python reference computes
(:func:`tests.spec.reference.evidence`).

Generated values are integers, so every sum is exact whatever the order of addition and every
float compares exactly.
"""

from __future__ import annotations

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.core.errors import BadInputError
from enclave.io.engine import duckdb_engine
from enclave.logic.disclosure.evidence import compute_evidence, evidence_expr, evidence_frame
from tests.spec import reference
from tests.spec.conftest import text_table

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


SCHEMA = {"pid": pl.Int64, "a": pl.String, "b": pl.Int64, "v": pl.Float64, "s": pl.String}
ROWS = st.lists(st.tuples(st.one_of(st.none(), st.integers(1, 6)),
                          st.sampled_from([None, "x", "y"]), st.integers(0, 2),
                          st.one_of(st.none(), st.integers(-20, 50).map(float)),
                          st.sampled_from([None, "p", "q"])), min_size=1, max_size=30)
CASE = st.fixed_dictionaries({
    "groups": st.sampled_from([[], ["a"], ["b"], ["a", "b"]]),
    "value": st.sampled_from([None, "v"]), "sensitive": st.sampled_from([None, "s"]),
    "extremes": st.booleans(), "bounds": st.booleans()})


def _frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def _expected(rows: list[tuple], case: dict) -> list[dict]:
    return reference.evidence([dict(zip(SCHEMA, r, strict=True)) for r in rows], "pid", **case)


@settings(max_examples=40, deadline=None)
@given(rows=ROWS, case=CASE)
def test_the_statement_and_both_ways_on_duckdb_match_the_reference(rows, case):
    """The compiled statement on a connection (what outputs and the airlock run) and the
    expression through the engine, with DuckDB's ``max(x, 2)`` and with the argmax join."""
    want = _expected(rows, case)
    con = duckdb.connect()
    con.register("t", _frame(rows).to_arrow())
    engine = duckdb_engine(con)
    try:
        assert compute_evidence(con, "t", "pid", **case).to_dicts() == want
        t = engine.table("t")
        for how in ("list", "join"):
            assert evidence_frame(engine, t, "pid", **case, top_two=how).to_dicts() == want, how
    finally:
        engine.close()
        con.close()


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, case=CASE)
def test_every_engine_matches_the_reference(engine, rows, case):
    t = engine.put("ev_generated", _frame(rows))
    assert evidence_frame(engine, t, "pid", **case).to_dicts() == _expected(rows, case)


def test_a_query_and_the_per_patient_table_give_the_same_evidence_as_the_table():
    """``compute_evidence`` reads a table name, a query, or the per-patient table of
    :func:`enclave.io.outputs.membership.member_sql` (``per_patient``)."""
    from enclave.io.outputs.membership import member_sql

    rows = [(1, "x", 0, 5.0, "p"), (1, "x", 0, -2.0, "p"), (2, "x", 1, None, "q"),
            (None, "y", 1, 7.0, None), (None, "y", 1, 1.0, "q"), (3, None, 2, 4.0, "p")]
    con = duckdb.connect()
    con.register("t", _frame(rows).to_arrow())
    for value in (None, "v"):
        case = {"groups": ["a", "b"], "value": value}
        want = _expected(rows, case | {"extremes": True})
        assert compute_evidence(con, "t", "pid", **case).to_dicts() == want
        assert compute_evidence(con, "SELECT * FROM t WHERE b >= 0", "pid",
                                **case).to_dicts() == want
        sql = member_sql("SELECT * FROM t", "pid", ["a", "b"], value)
        con.sql(f"CREATE OR REPLACE TEMP TABLE pp AS {sql}")
        per = compute_evidence(con, "pp", "_person", **case, per_patient=True)
        assert per.to_dicts() == want
    con.close()
