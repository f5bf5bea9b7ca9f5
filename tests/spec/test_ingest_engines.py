"""The ingest on every engine: the row-level transforms after parsing (checks, duplicates,
concepts, units) and the derived tables (observation periods)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from enclave.io.ingest import cdm_rows, transforms
from enclave.io.ingest.derived import EVENT_DATES, observation_periods
from enclave.logic.codes.units import UNIT_SYNONYMS
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


# --- row-level transforms after parsing: checks, duplicates, concepts, units -------------------
ROWS = """
    _i | site_patient_id | site_visit_id | code_system | code  | start_date | end_date   | _reject      | _reject_column
    0  | p1              | v1            | ICD10       | E11.9 | 2021-01-01 | 2021-01-05 |              |
    1  | p1              | v1            | ICD10       | E11.9 | 2021-01-01 | 2021-01-05 |              |
    2  | p9              |               | ICD10       | E11.9 | 2021-01-01 |            |              |
    3  | p2              | v9            | ICD10       | I10   | 2021-02-01 |            |              |
    4  | p2              |               | ICD10       | I10   | 2021-03-01 | 2021-02-01 |              |
    5  | p2              |               | ICD10       | XX    | 2021-03-01 |            |              |
    6  | p2              |               | FOO         | 123   | 2021-03-01 |            |              |
    7  | p9              | v9            | ICD10       | XX    | 2021-03-01 | 2021-01-01 | invalid_date | start_date
    8  | p2              |               | ICD10       | I10   | 2021-03-05 |            |              |
    9  | p2              |               | ICD10       | I10   | 2021-03-05 |            |              |
    10 | p9              |               | ICD10       | E11.9 | 2021-01-01 |            |              |
    11 | p1              |               | ICD10       | E11.9 | 2021-01-01 | 2021-01-05 |              |
"""
PATIENTS = """
    site_patient_id | person_id
    p1              | 101
    p2              | 102
"""
VISITS = """
    site_visit_id | visit_occurrence_id
    v1            | 501
"""
CODE_CHECKS = """
    code_system | code | _why         | _why_column
    ICD10       | XX   | invalid_code | code
    FOO         | 123  | invalid_code | code_system
"""
#: (_i, person_id, visit_occurrence_id, _reject, _reject_column, _dup)
CHECKED = [
    (0, 101, 501, None, None, False),
    (1, 101, 501, None, None, True),  # exact duplicate of row 0: merged
    (2, None, None, "unknown_patient", "site_patient_id", False),
    (3, 102, None, None, None, False),  # an unknown visit: loaded without it, under a warning
    (4, 102, None, "date_order", "end_date", False),
    (5, 102, None, "invalid_code", "code", False),
    (6, 102, None, "invalid_code", "code_system", False),
    (7, None, None, "invalid_date", "start_date", False),  # the adapter's reason stays first
    (8, 102, None, None, None, False),
    (9, 102, None, None, None, True),
    (10, None, None, "unknown_patient", "site_patient_id", False),  # rejected rows never merge
    (11, 101, None, None, None, False),  # same as row 0 but without the visit: not a duplicate
]


def _staged(engine, text: str = ROWS, name: str = "_rows") -> object:
    frame = text_table(text).with_columns(
        pl.col("_i").cast(pl.Int64),
        *[pl.col(c).cast(pl.String) for c in ("site_patient_id", "site_visit_id", "code_system",
                                                "code", "_reject", "_reject_column")],
        *[pl.col(c).cast(pl.String).str.to_date() for c in ("start_date", "end_date")],
        pl.lit(False).alias("_dup"))
    return engine.put(name, frame)


def _check(engine, known_deaths=None):
    checks = text_table(CODE_CHECKS).with_columns(pl.col("code").cast(pl.String))
    return transforms.check_events(
        _staged(engine), engine.put("_patients", text_table(PATIENTS)),
        engine.put("_visits", text_table(VISITS)), engine.put("_checks", checks), known_deaths)


def test_check_events_quarantines_in_order_and_merges_duplicates(engine):
    got = engine.to_polars(_check(engine)).sort("_i")
    assert got.select("_i", "person_id", "visit_occurrence_id", "_reject", "_reject_column",
                      "_dup").rows() == CHECKED
    warned = got.filter(pl.col("_warning").is_not_null())
    assert warned.select("_i", "_warning", "_warning_column").rows() == [
        (3, "unknown_visit", "site_visit_id")]


def test_check_events_merges_a_second_death_of_a_person(engine):
    deaths = """
        _i | site_patient_id | date       | cause_code | _reject | _reject_column
        0  | p1              | 2022-01-01 | I21        |         |
        1  | p1              | 2022-01-02 | I22        |         |
        2  | p2              | 2022-03-01 | C34        |         |
        3  | p3              | 2022-03-01 | C34        |         |
    """
    frame = text_table(deaths).with_columns(
        pl.col("date").cast(pl.String).str.to_date(),
        *[pl.col(c).cast(pl.String) for c in ("_reject", "_reject_column")],
        pl.lit(False).alias("_dup"))
    patients = text_table(PATIENTS + "    p3 | 103\n")
    got = engine.to_polars(transforms.check_events(
        engine.put("_deaths_rows", frame), engine.put("_patients", patients),
        known_deaths=engine.put("_known", pl.DataFrame({"person_id": [102]})))).sort("_i")
    # p1's second death merges into the first; p2 has a death in the store already
    assert got.select("_i", "person_id", "_dup").rows() == [
        (0, 101, False), (1, 101, True), (2, 102, True), (3, 103, False)]


def test_later_rows_are_exactly_the_repeats_a_group_by_finds(engine):
    """The hashed pre-bucketing loses nothing: the repeats equal those of a plain grouping of
    every pending row, with nulls equal to nulls and -0.0 equal to 0.0."""
    n = 3000
    i = pl.int_range(0, n, eager=True)
    frame = pl.DataFrame({"_i": i.cast(pl.Int64)}).with_columns(code=(i * 7 % 5).cast(pl.String).replace({"4": None}), value=(i * 11 % 4).replace_strict({0: 0.0, 1: -0.0, 2: 1.5, 3: None},
                                             return_dtype=pl.Float64), n=(i * 13 % 9).cast(pl.Int64), _reject=pl.when(i % 17 == 0).then(pl.lit("invalid_code")).otherwise(None), _dup=i % 23 == 0)
    got = engine.to_polars(transforms.later_rows(engine.put("_later_src", frame),
                                                 ["code", "value", "n"]))
    live = frame.filter(pl.col("_reject").is_null() & ~pl.col("_dup")).with_columns(
        pl.col("value") + 0.0)
    first = live.group_by("code", "value", "n").agg(pl.col("_i").min().alias("_first"))
    expected = live.join(first, on=["code", "value", "n"], nulls_equal=True).filter(
        pl.col("_i") != pl.col("_first"))["_i"].sort()
    assert 0 < expected.len() < live.height
    assert got["_later"].sort().to_list() == expected.to_list()


CODE_MAP = """
    code_system | code  | std_system | std_code | _target | source_concept_id
    ICD10       | E11.9 | ICD10      | E11.9    | 201826  | 2000000001
    LOCAL       | GLU   | LOINC      | 14749-6  | 3004501 | 3004501
"""


def test_map_concepts_joins_each_code_and_keeps_a_staged_concept(engine):
    rows = """
        _i | code_system | code  | concept_id
        0  | ICD10       | E11.9 |
        1  | LOCAL       | GLU   |
        2  | LOCAL       | GLU   | 3000963
        3  | SNOMED      | 1234  |
    """
    frame = text_table(rows).with_columns(pl.col("concept_id").cast(pl.Int64))
    code_map = text_table(CODE_MAP).with_columns(pl.col("code").cast(pl.String))
    got = engine.to_polars(transforms.map_concepts(
        engine.put("_rows", frame), engine.put("_map", code_map))).sort("_i")
    assert got.select("_i", "std_system", "std_code", "source_concept_id",
                      "target_concept_id").rows() == [
        (0, "ICD10", "E11.9", 2000000001, 201826),
        (1, "LOINC", "14749-6", 3004501, 3004501),
        (2, "LOINC", "14749-6", 3004501, 3000963),  # the source's own concept id wins
        (3, None, None, None, None),  # not pending when the map was made: nothing mapped
    ]


MEASUREMENTS = """
    _i | std_system | std_code | unit     | value | range_low | range_high | _reject      | _reject_column
    0  | LOINC      | 14749-6  | mg/dL    | 180   | 70        | 100        |              |
    1  | LOINC      | 14749-6  |  MMOL/L  | 6.5   | 3.9       | 6.1        |              |
    2  | LOINC      | 14749-6  | g        | 1     |           |            |              |
    3  | LOINC      | 14749-6  |          | 5     |           |            |              |
    4  | LOINC      | 99999-9  | mm[Hg]   | 120   |           |            |              |
    5  | LOCAL      | XYZ      | furlongs | 2     |           |            |              |
    6  | LOINC      | 14749-6  | g        | 1     |           |            | invalid_date | date
"""
CONVERSIONS = """
    loinc   | unit   | factor  | unit_concept_id
    14749-6 | mmol/L | 1.0     | 8753
    14749-6 | mg/dL  | 0.0555  | 8753
"""
UCUM = """
    concept_code | concept_id
    mmol/L       | 8753
    mm[Hg]       | 8876
"""


def test_convert_units_per_analyte(engine):
    frame = text_table(MEASUREMENTS).with_columns(
        pl.col("unit").cast(pl.String), pl.col("_reject").cast(pl.String),
        pl.col("_reject_column").cast(pl.String), pl.col("range_low").cast(pl.Float64),
        pl.col("range_high").cast(pl.Float64), pl.col("value").cast(pl.Float64),
        pl.lit(False).alias("_dup"))
    got = engine.to_polars(transforms.convert_units(
        engine.put("_m", frame), engine.put("_conv", text_table(CONVERSIONS)),
        engine.put("_ucum", text_table(UCUM)), UNIT_SYNONYMS)).sort("_i")
    rows = got.select("_i", "value_converted", "range_low", "range_high", "unit_concept_id",
                      "_reject", "_reject_column").rows()
    assert rows[0][1:5] == pytest.approx((9.99, 3.885, 5.55, 8753))  # mg/dL → mmol/L
    assert rows[0][5:] == (None, None)
    assert rows[1] == (1, 6.5, 3.9, 6.1, 8753, None, None)  # spelling normalized, factor 1
    assert rows[2][5:] == ("unknown_unit", "unit")  # glucose cannot be given in grams
    assert rows[3] == (3, 5.0, None, None, 0, None, None)  # no unit: kept as given
    assert rows[4] == (4, 120.0, None, None, 8876, None, None)  # unknown analyte: UCUM unit
    assert rows[5] == (5, 2.0, None, None, 0, None, None)  # local code: kept, unit unknown
    assert rows[6][5:] == ("invalid_date", "date")  # an earlier reason is kept


def test_transforms_agree_row_for_row(engines):
    results = [e.to_polars(_check(e)).drop("start_date", "end_date") for e in engines.values()]
    assert_same_rows(results[0], results[1], ["_i"])


# --- OMOP rows of the pending events: projection, costs, lineage -------------------------------
DRUGS = """
    _i | _fid | _row | _id | _cost_id | person_id | visit_occurrence_id | code    | route                                                       | start_date | end_date   | cost
    0  | 1    | 2    | 10  | 70       | 101       | 501                 | 1191    | oral                                                        | 2021-01-01 | 2021-01-05 | 12.5
    1  | 1    | 3    |     |          | 101       |                     | 1191    | oral                                                        | 2021-01-01 |            |
    2  | 1    | 4    | 11  |          | 102       |                     | 197361  | intravenous-drip-through-a-central-line-over-six-hours-x | 2021-02-01 |            |
"""
DRUG_MAP = """
    code_system | code   | std_system | std_code | _target | source_concept_id
    RxNorm      | 1191   | RxNorm     | 1191     | 1112807 | 1112807
    RxNorm      | 197361 | RxNorm     | 197361   | 0       | 0
"""


def _drugs(engine):
    frame = text_table(DRUGS).with_columns(
        pl.col("code").cast(pl.String), pl.lit("RxNorm").alias("code_system"),
        *[pl.col(c).cast(pl.String).str.to_date() for c in ("start_date", "end_date")],
        pl.col("cost").cast(pl.Float64), pl.lit(None, pl.Float64).alias("quantity"),
        pl.lit(None, pl.Int64).alias("days_supply"), pl.lit(None, pl.String).alias("dose_unit"))
    rows = engine.put("_drug_rows", frame)
    code_map = text_table(DRUG_MAP).with_columns(pl.col("code").cast(pl.String))
    done = rows.filter(rows._id.notnull())
    return transforms.map_concepts(done, engine.put("_drug_map", code_map))


def test_cdm_rows_of_the_pending_events(engine):
    done = _drugs(engine)
    drugs = engine.to_polars(cdm_rows.event_rows("drug", done)).sort("drug_exposure_id")
    assert drugs.select("drug_exposure_id", "person_id", "drug_concept_id",
                        "drug_exposure_end_date", "route_source_value", "visit_occurrence_id",
                        "drug_source_concept_id").rows() == [
        (10, 101, 1112807, dt.date(2021, 1, 5), "oral", 501, 1112807),
        # no end date: the start; the route is cut to the CDM's 50 characters
        (11, 102, 0, dt.date(2021, 2, 1), "intravenous-drip-through-a-central-line-over-six-h",
         None, 0),
    ]
    costs = engine.to_polars(cdm_rows.cost_rows("drug", done))
    assert costs.select("cost_id", "cost_event_id", "cost_domain_id", "total_cost").rows() == [
        (70, 10, "Drug", 12.5)]
    lineage = engine.to_polars(cdm_rows.lineage_rows("drug", done)).sort("row_id")
    assert lineage.rows() == [("drug_exposure", 10, 1, 2), ("drug_exposure", 11, 1, 4)]


def test_cdm_rows_agree_row_for_row(engines):
    got = [e.to_polars(cdm_rows.event_rows("drug", _drugs(e))) for e in engines.values()]
    assert_same_rows(got[0], got[1], ["drug_exposure_id"])
