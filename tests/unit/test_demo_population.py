"""Invariants of the demo population (enclave.io.demo.population)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import polars as pl
import pytest

from enclave.io.demo import clinical
from enclave.io.demo.population import build_population, hospital_specs
from enclave.io.demo.writers import WRITERS, DefectKind
from enclave.logic.codes import icd10, resident_id

N_PATIENTS = 1500


@pytest.fixture(scope="module")
def pop():
    return build_population(N_PATIENTS, 5, seed=11)


def _real(pop, site, kind) -> pl.DataFrame:
    """Rows of a site's frame that are not extra rows added for defects."""
    frame = pop.frames[site][kind]
    extra = {d.row for d in pop.defects[site] if d.frame_kind == kind and d.kind != DefectKind.DUPLICATE_ROW}
    return frame.with_row_index("i").filter(~pl.col("i").is_in(sorted(extra))).drop("i")


def _persons(pop) -> pl.DataFrame:
    parts = []
    for spec in pop.hospitals:
        p = _real(pop, spec.site_id, "person")
        parts.append(p.with_columns(pl.lit(spec.site_id).alias("site"),
                                    resident_id.normalize_expr(pl.col("resident_id")).alias("norm")))
    return pl.concat(parts)


def test_hospitals_cycle_dialects_and_units():
    specs = hospital_specs(7)
    assert [s.dialect for s in specs] == [*WRITERS, *list(WRITERS)[:2]]
    assert [s.site_id for s in specs] == [f"h{i}" for i in range(1, 8)]
    assert [s.glucose_unit for s in specs[:4]] == ["mmol/L", "mg/dL", "mmol/L", "mg/dL"]
    assert all(len(s.region_code) == 6 and s.name and s.level for s in specs)


def test_resident_ids_agree_with_persons(pop):
    persons = _persons(pop)
    assert persons["norm"].null_count() == 0  # every written spelling is a valid number
    checked = persons.with_columns(
        resident_id.birth_date_expr(pl.col("norm")).alias("id_birth"),
        resident_id.sex_expr(pl.col("norm")).alias("id_sex"),
        resident_id.region_expr(pl.col("norm")).alias("id_region"),
    )
    assert (checked["id_birth"] == checked["birth_date"]).all()
    assert (checked["id_sex"] == checked["sex"]).all()
    assert (checked["id_region"] == checked["region_code"]).all()
    for rid in persons["norm"].head(50).to_list():
        assert resident_id.check_char(rid[:17]) == rid[17]
    raw = persons["resident_id"]
    assert raw.str.contains("x").any() and raw.str.contains(" ").any()
    assert (raw.str.len_chars() == 15).any()
    assert persons["birth_date"].min() >= dt.date(1930, 1, 1)
    assert persons["birth_date"].max() <= dt.date(2020, 12, 31)
    assert persons["phone"].str.contains(r"^1[3-9]\d{9}$").all()
    assert persons["address"].str.contains("号").all()


def test_linkage_truth(pop):
    persons = _persons(pop)
    assert persons["norm"].n_unique() == pop.truth["persons"] == N_PATIENTS
    per_person = persons.group_by("norm").agg(pl.col("site").n_unique().alias("k"))
    assert int((per_person["k"] >= 2).sum()) == pop.truth["linked_persons"]
    share = pop.truth["linked_persons"] / N_PATIENTS
    assert 0.2 < share < 0.4
    for spec in pop.hospitals:
        real = _real(pop, spec.site_id, "person")
        assert real.height == pop.truth["patients_per_hospital"][spec.site_id]
        assert real["site_patient_id"].n_unique() == real.height


def test_namesakes_are_distinct_persons(pop):
    persons = _persons(pop).unique("norm")
    groups = persons.group_by("name", "birth_date").agg(pl.col("norm").n_unique().alias("ids"))
    shared = groups.filter(pl.col("ids") >= 2)
    assert shared.height >= 2
    assert int(shared["ids"].sum()) == pop.truth["namesakes"]


def test_repeat_tests_count_matches_records(pop):
    """Recount repeats independently from the written frames (LOCAL codes mapped to LOINC)."""
    events = defaultdict(list)
    for spec in pop.hospitals:
        ids = dict(zip(*_persons(pop).filter(pl.col("site") == spec.site_id)
                       .select("site_patient_id", "norm").to_dict(as_series=False).values()))
        local = {k: v.split(":")[1] for k, v in clinical.code_maps(spec.dialect).get("measurement", {}).items()}
        meas = _real(pop, spec.site_id, "measurement")
        for pid, code, day in meas.select("site_patient_id", "code", "date").iter_rows():
            events[(ids[pid], local.get(code, code))].append((day, spec.site_id))
    count = 0
    for items in events.values():
        for day, site in items:
            if any(s != site and 1 <= (day - d).days <= 30 for d, s in items):
                count += 1
    assert count == pop.truth["repeat_tests_30d"] > 0


def test_clinical_records_are_plausible(pop):
    for spec in pop.hospitals:
        visits = _real(pop, spec.site_id, "visit")
        inp = visits.filter(pl.col("visit_type") == "inpatient")
        assert (inp["end_date"] >= inp["start_date"]).all()
        assert visits["start_date"].min() >= dt.date(2019, 1, 1)
        assert visits["start_date"].max() <= dt.date(2024, 12, 31)
        assert visits["site_visit_id"].n_unique() == visits.height
        cond = _real(pop, spec.site_id, "condition")
        assert cond.select(icd10.is_valid_clinical(pl.col("code")).all()).item()
        assert (cond["code_system"] == "ICD10CN").all()
        assert cond.group_by("site_visit_id").agg(pl.col("primary").sum())["primary"].max() == 1
        assert set(cond["site_visit_id"]) <= set(visits["site_visit_id"])
        drugs = _real(pop, spec.site_id, "drug")
        assert (drugs["cost"] > 0).all() and (drugs["end_date"] >= drugs["start_date"]).all()
        meas = _real(pop, spec.site_id, "measurement")
        lab_system, drug_system = clinical.CODE_SYSTEMS[spec.dialect]
        assert set(meas["code_system"]) == {lab_system} and set(drugs["code_system"]) == {drug_system}
        glucose = meas.filter(pl.col("description") == "空腹血糖")
        assert set(glucose["unit"]) == {spec.glucose_unit}
    codes = pl.concat([pop.frames[s.site_id]["condition"]["code"] for s in pop.hospitals])
    assert {"E11.900", "I10.x00x002", "I63.900", "J18.900"} <= set(codes)


def test_diabetics_have_higher_glucose(pop):
    diffs = []
    for spec in pop.hospitals:
        cond = _real(pop, spec.site_id, "condition")
        diabetic = set(cond.filter(pl.col("code") == "E11.900")["site_patient_id"])
        glu = _real(pop, spec.site_id, "measurement").filter(pl.col("description") == "空腹血糖")
        factor = 0.0555 if spec.glucose_unit == "mg/dL" else 1.0
        mmol = glu.with_columns((pl.col("value") * factor).alias("v"),
                                pl.col("site_patient_id").is_in(sorted(diabetic)).alias("dm"))
        means = dict(mmol.group_by("dm").agg(pl.col("v").mean()).iter_rows())
        if True in means and False in means:
            diffs.append(means[True] - means[False])
    assert diffs and min(diffs) > 1.0


def test_defects_target_extra_rows_only(pop):
    for spec in pop.hospitals:
        kinds = {d.kind for d in pop.defects[spec.site_id]}
        assert kinds == set(DefectKind)
        for d in pop.defects[spec.site_id]:
            real = _real(pop, spec.site_id, d.frame_kind).height
            if d.kind == DefectKind.DUPLICATE_ROW:
                assert d.row < real
            else:
                assert d.row >= real
        persons = pop.frames[spec.site_id]["person"]
        assert persons["site_patient_id"].n_unique() == persons.height


def test_deterministic_and_identifiers(pop):
    again = build_population(N_PATIENTS, 5, seed=11)
    assert again.truth == pop.truth
    assert again.frames["h3"]["note"].equals(pop.frames["h3"]["note"])
    ids = pop.identifiers
    assert len(ids["resident_ids"]) == N_PATIENTS and len(ids["phones"]) == N_PATIENTS
    notes = pl.concat([pop.frames[s.site_id]["note"]["text"] for s in pop.hospitals])
    assert notes.str.contains("身份证号").any() and notes.str.contains("病案号").any()


def test_large_build_runs():
    small = build_population(20_000, 8, seed=3)
    assert small.truth["persons"] == 20_000
    assert sum(small.truth["patients_per_hospital"].values()) >= 20_000
