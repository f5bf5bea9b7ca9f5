"""The ingest's derived tables on every engine: observation periods from the loaded events."""

from __future__ import annotations

import datetime as dt

import polars as pl

from enclave.ingest.derived import EVENT_DATES, observation_periods
from tests.spec.conftest import assert_same_rows, text_table

EVENTS = {
    "visit_occurrence": ("""
        person_id | visit_start_date | visit_end_date
        1         | 2021-03-01       | 2021-03-04
        2         | 2020-01-10       |
        3         |                  |
    """, ("visit_start_date", "visit_end_date")),
    "condition_occurrence": ("""
        person_id | condition_start_date
        1         | 2019-12-31
        4         | 2022-06-01
    """, ("condition_start_date",)),
    "drug_exposure": ("""
        person_id | drug_exposure_start_date
        2         | 2023-05-05
    """, ("drug_exposure_start_date",)),
    "measurement": ("""
        person_id | measurement_date
        1         | 2021-03-02
        3         |
    """, ("measurement_date",)),
    "procedure_occurrence": ("""
        person_id | procedure_date
        4         | 2022-05-31
    """, ("procedure_date",)),
    "observation": ("""
        person_id | observation_date
        2         | 2019-07-07
    """, ("observation_date",)),
}


def _tables(engine) -> dict:
    out = {}
    for name, (text, dates) in EVENTS.items():
        frame = text_table(text).with_columns(pl.col(d).cast(pl.String).str.to_date() for d in dates)
        out[name] = engine.put(name, frame)
    return out


def test_every_event_table_is_covered():
    assert {t for t, _ in EVENT_DATES} == set(EVENTS)


def test_observation_periods_span_each_persons_dated_events(engine):
    got = engine.to_polars(observation_periods(_tables(engine))).sort("person_id")
    assert got.rows() == [
        (1, dt.date(2019, 12, 31), dt.date(2021, 3, 4)),
        (2, dt.date(2019, 7, 7), dt.date(2023, 5, 5)),
        (4, dt.date(2022, 5, 31), dt.date(2022, 6, 1)),
    ]  # person 3 has no dated event: no period


def test_observation_periods_only_for_the_touched_persons(engine):
    touched = engine.put("_touched", pl.DataFrame({"person_id": [2, 3, 9]}))
    got = engine.to_polars(observation_periods(_tables(engine), touched))
    assert got.rows() == [(2, dt.date(2019, 7, 7), dt.date(2023, 5, 5))]


def test_engines_agree_row_for_row(engines):
    results = [e.to_polars(observation_periods(_tables(e))) for e in engines.values()]
    assert_same_rows(results[0], results[1], ["person_id"])
