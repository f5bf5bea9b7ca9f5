"""Equivalence classes, k-anonymity violations and re-identification risk on every engine, and
the release builder's one-row-per-patient table; checked against the numpy risk report that the
lattice search uses. Risk ratios are sums of f/F in an engine-chosen order: tolerance 1e-12."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from enclave.deid.metrics import risk_report
from enclave.deid.sets import (
    class_sizes_expr,
    k_violations_expr,
    measure_risk,
    patient_expr,
)
from tests.spec.conftest import assert_same_rows, text_table

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


def random_patients(seed: int, n: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "pid": np.arange(n),
        "age": rng.choice(["0-9", "10-19", "20-29", "30-39", "40-49", "50-59"], n).tolist(),
        "sex": rng.choice(["F", "M", "U"], n, p=[0.5, 0.49, 0.01]).tolist(),
        "region": rng.choice(["110000", "120000", "130000", None], n, p=[.5, .3, .19, .01])
        .tolist(),
    })


def test_engines_agree_on_classes_and_risk(engines):
    released = random_patients(1, 2000)
    population = pl.concat([released, random_patients(2, 6000).with_columns(
        pl.col("pid") + 10_000)])
    sizes, risks = {}, {}
    for name, e in engines.items():
        t, pop = e.put("r_released", released), e.put("r_population", population)
        sizes[name] = e.to_polars(class_sizes_expr(t, QIS, "pid"))
        risks[name] = measure_risk(e, t, QIS, "pid", population=pop)
    assert_same_rows(sizes["duckdb"], sizes["pyspark"], QIS)
    a, b = risks["duckdb"], risks["pyspark"]
    assert a.class_size_counts == b.class_size_counts and a.classes == b.classes
    for field in ("prosecutor_max", "prosecutor_avg", "journalist_max", "marketer"):
        assert math.isclose(getattr(a, field), getattr(b, field), rel_tol=1e-12), field
    # and both equal the numpy report the lattice search uses
    f = released.group_by(QIS).len("f")
    both = f.join(population.group_by(QIS).len("F"), on=QIS, how="left", nulls_equal=True)
    numpy = risk_report(both["f"].to_numpy(), 0, both["F"].to_numpy())
    assert numpy.class_size_counts == a.class_size_counts
    assert math.isclose(numpy.marketer, a.marketer, rel_tol=1e-12)


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
