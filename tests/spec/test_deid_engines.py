"""Equivalence classes, k-anonymity violations and re-identification risk on every engine, and
the release builder's one-row-per-patient table. The risk is checked against a plain Python
reference on generated releases (:func:`tests.spec.reference.risk`); risk ratios are sums of f/F
in an engine-chosen order: tolerance 1e-12."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.io.engine import duckdb_engine
from enclave.logic.deid.metrics import risk_report
from enclave.logic.deid.sets import (
    class_sizes_expr,
    k_violations_expr,
    measure_risk,
    patient_expr,
)
from tests.spec import reference
from tests.spec.conftest import text_table

RELEASED = text_table("""
    pid | age   | sex | region
    1   | 30-39 | F   | 110000
    1   | 30-39 | F   | 110000
    2   | 30-39 | F   | 110000
    3   | 30-39 | M   | 110000
    4   | 30-39 | M   | 110000
    5   | 30-39 | M   | 110000
    6   | 40-49 | F   |
    7   | 40-49 | F   |
""").with_columns(pl.col("region").cast(pl.String))
POPULATION = text_table("""
    pid | age   | sex | region
    1   | 30-39 | F   | 110000
    2   | 30-39 | F   | 110000
    11  | 30-39 | F   | 110000
    12  | 30-39 | F   | 110000
    3   | 30-39 | M   | 110000
    4   | 30-39 | M   | 110000
    5   | 30-39 | M   | 110000
    6   | 40-49 | F   |
    7   | 40-49 | F   |
    13  | 40-49 | F   |
""").with_columns(pl.col("region").cast(pl.String))
QIS = ["age", "sex", "region"]


def test_classes_count_distinct_patients(engine):
    t = engine.put("released", RELEASED)
    sizes = engine.to_polars(class_sizes_expr(t, QIS, "pid")).sort(QIS, nulls_last=True)
    assert sizes.rows() == [("30-39", "F", "110000", 2), ("30-39", "M", "110000", 3),
                            ("40-49", "F", None, 2)]
    bad = engine.to_polars(k_violations_expr(t, QIS, "pid", 3)).sort(QIS, nulls_last=True)
    assert bad["size"].to_list() == [2, 2]


def test_risk_spec_with_and_without_a_population(engine):
    t, pop = engine.put("released", RELEASED), engine.put("population", POPULATION)
    alone = measure_risk(engine, t, QIS, "pid", suppressed=1)
    assert alone == risk_report(np.array([2, 3, 2]), 1)
    assert (alone.smallest_class, alone.prosecutor_max, alone.class_size_counts) == (
        2, 0.5, ((2, 2), (3, 1)))
    against = measure_risk(engine, t, QIS, "pid", population=pop)
    expected = risk_report(np.array([2, 3, 2]), 0, np.array([4, 3, 3]))
    assert against.journalist_max == pytest.approx(1 / 3)
    assert against.marketer == pytest.approx((2 / 4 + 3 / 3 + 2 / 3) / 7)
    assert against.class_size_counts == expected.class_size_counts
    assert against.journalist_max == expected.journalist_max  # 1 / min F: no sum, exact
    assert math.isclose(against.marketer, expected.marketer, rel_tol=1e-12)  # a sum of ratios


PATIENTS = st.lists(st.tuples(st.integers(1, 12), st.sampled_from(["30-39", "40-49"]),
                              st.sampled_from(["F", "M"]),
                              st.sampled_from([None, "110000", "120000"])), max_size=25)
PSCHEMA = {"pid": pl.Int64, "age": pl.String, "sex": pl.String, "region": pl.String}


def _check_risk(engine, released, population, suppressed):
    t = engine.put("r_released", pl.DataFrame(released, schema=PSCHEMA, orient="row"))
    pop = None
    if population is not None:
        pop = engine.put("r_population", pl.DataFrame(population, schema=PSCHEMA, orient="row"))
    got = measure_risk(engine, t, QIS, "pid", population=pop, suppressed=suppressed)

    def dicts(rows):
        return None if rows is None else [dict(zip(PSCHEMA, r, strict=True)) for r in rows]
    want = reference.risk(dicts(released), QIS, "pid", dicts(population))
    assert got.suppressed == suppressed
    for name, expected in want.items():
        actual = getattr(got, name)
        if isinstance(expected, float):  # a sum of ratios, in an engine-chosen order
            assert math.isclose(actual, expected, rel_tol=1e-12), name
        else:
            assert actual == expected, name


@settings(max_examples=60, deadline=None)
@given(released=PATIENTS, others=PATIENTS, with_population=st.booleans(),
       suppressed=st.integers(0, 3))
def test_the_risk_on_duckdb_matches_the_reference(released, others, with_population, suppressed):
    """Classes count distinct patients (a patient's second row adds nothing), null QI values
    form their own class, and the population holds the release and other patients."""
    e = duckdb_engine()
    try:
        _check_risk(e, released, released + others if with_population else None, suppressed)
    finally:
        e.close()


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(released=PATIENTS, others=PATIENTS)
def test_the_risk_on_every_engine_matches_the_reference(engine, released, others):
    _check_risk(engine, released, released + others, 0)


STORE = {
    "person": text_table("""
        person_id | year_of_birth | gender_concept_id | location_id
        1         | 1980          | 8507              | 10
        2         | 1900          | 8532              | 11
        3         | 2030          | 0                 |
        4         | 1990          | 8532              | 12
    """),
    "location": text_table("""
        location_id | county
        10          | 110105
        11          | 11010x
        12          |
    """).with_columns(pl.col("county").cast(pl.String)),
    "condition_occurrence": text_table("""
        person_id | condition_concept_id
        1         | 201826
        1         | 201826
        1         | 320128
        2         | 320128
        2         | 201826
        4         | 4329847
    """),
}


def test_patient_table_spec(engine):
    t = {name: engine.put(f"store_{name}", frame) for name, frame in STORE.items()}
    out = engine.to_polars(patient_expr(t["person"], t["location"], t["condition_occurrence"],
                                        2026))
    # age clipped to 0..120; unknown sex U; malformed or missing county 000000; main condition
    # the most frequent, the smallest concept id on a tie, "none" without any
    assert out.rows() == [
        (1, 46, "M", "110105", "201826"),
        (2, 120, "F", "000000", "201826"),
        (3, 0, "U", "000000", "none"),
        (4, 36, "F", "000000", "4329847"),
    ]
