"""What each indicator counts: ibis expressions over the tables of one release.

Every indicator is described, not executed, here: :func:`relation` returns an ibis table with one
row per contributing event (``person_id``, the indicator's axes as strings, and the value for sums
and means). :mod:`enclave.io.indicators.build` compiles it to SQL (the SQL is published with the
indicator) and :mod:`enclave.io.indicators.cube` checks it.

What the demo release holds and what it lacks (see ``docs/dashboards.md``):

* ``person`` carries the generalized ``region`` / ``age_band`` / ``sex``; regions are published by
  province (first two digits of the GB/T 2260 code).
* hospitals: ``care_site.care_site_source_value`` is ``<site>`` or ``<site>:<unit>``, the hospital
  level (三级甲等 ...) sits in ``place_of_service_source_value``; a visit's hospital is the site of
  its care site. There is no standard OMOP field for the level: the release builder should carry it
  in a named column (or a concept) so other sources fill it too.
* every date of a patient is shifted (±``release.date_shift_days``) in a desensitized release, so
  years are approximate; intervals (30-day windows) are exact because the shift is per patient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import ibis
import ibis.expr.types as ir
from ibis.backends.sql.datatypes import DuckDBType

from enclave.io import db
from enclave.logic.disclosure import Statistic

#: chronic conditions by ICD-10 three-character category (of ``condition_source_value``)
CHRONIC_CONDITIONS: dict[str, tuple[str, ...]] = {
    "hypertension": ("I10", "I11", "I12", "I13", "I15"),
    "diabetes": ("E10", "E11", "E12", "E13", "E14"),
    "hyperlipidaemia": ("E78",),
    "coronary heart disease": ("I20", "I21", "I22", "I23", "I24", "I25"),
    "chronic kidney disease": ("N18",),
    "asthma": ("J45",),
    "COPD": ("J44",),
    "stroke": ("I60", "I61", "I62", "I63", "I64"),
    "atrial fibrillation": ("I48",),
    "heart failure": ("I50",),
}
#: medicine groups by ingredient found in the drug concept's name (lower case)
MEDICINE_GROUPS: dict[str, tuple[str, ...]] = {
    "antidiabetics": ("metformin", "insulin", "glipizide", "gliclazide", "acarbose"),
    "antihypertensives": ("amlodipine", "lisinopril", "hydrochlorothiazide", "losartan",
                          "nifedipine", "valsartan", "metoprolol"),
    "statins": ("simvastatin", "atorvastatin", "rosuvastatin"),
    "antiplatelets": ("aspirin", "clopidogrel"),
    "antibiotics": ("amoxicillin", "cefuroxime", "azithromycin", "levofloxacin"),
    "analgesics": ("acetaminophen", "ibuprofen"),
    "bronchodilators": ("albuterol", "salbutamol", "budesonide"),
    "nitrates": ("nitroglycerin", "isosorbide"),
}
VISIT_TYPES = {9201: "inpatient", 9202: "outpatient", 9203: "emergency", 262: "emergency"}
READMISSION_DAYS = 30  # the indicator's definition, not a tunable limit
REPEAT_TEST_DAYS = 30
PAIR_SEPARATOR = ">"  # hospital codes hold no ">"
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Indicator:
    """One published indicator: its axes (``margins`` get an ``All`` total), statistic, and the
    ibis relation it is computed from."""

    id: str
    title: str
    page: str
    unit: str
    statistic: Statistic
    axes: tuple[str, ...]
    margins: tuple[str, ...]
    needs: tuple[str, ...]
    relation: Callable[[Sources], ir.Table]
    value: str | None = None
    decimals: int = 0
    description: str = ""
    levels_from: str | None = None  # complete the grid with the axis levels of this indicator


class Sources:
    """The release's tables as unbound ibis tables (schemas read from the release), plus the
    derived frames several indicators share. Expressions are only compiled here, never executed
    through an ibis backend: :mod:`.build` runs the compiled SQL on its own read-only connection.
    """

    def __init__(self, schemas: dict[str, list[tuple[str, str]]]) -> None:
        self.schemas = schemas
        self.names = set(schemas)

    @classmethod
    def from_duckdb(cls, con: duckdb.DuckDBPyConnection) -> Sources:
        out: dict[str, list[tuple[str, str]]] = {}
        for table, column, typ in db.rows(
                con, "SELECT table_name, column_name, data_type FROM information_schema.columns "
                     "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"):
            out.setdefault(table, []).append((column, typ))
        return cls(out)

    def t(self, name: str) -> ir.Table:
        schema = ibis.schema({c: DuckDBType.from_string(t) for c, t in self.schemas[name]})
        return ibis.table(schema, name=name)

    def persons(self) -> ir.Table:
        p = self.t("person")
        region = p.region.cast("string")
        province = ibis.ifelse(region.re_search(r"^[0-9]{2}"), region.substr(0, 2) + "0000",
                               region.fill_null("*"))
        return p.select(
            "person_id",
            region=ibis.ifelse(province == "000000", UNKNOWN, province),
            age_band=p.age_band.cast("string").fill_null(UNKNOWN),
            sex=p.sex.cast("string").fill_null(UNKNOWN),
        )

    def care_sites(self) -> ir.Table:
        cs = self.t("care_site")
        src = cs.care_site_source_value.cast("string")
        return cs.select(
            "care_site_id",
            hospital=src.split(":")[0].fill_null(UNKNOWN),
            level=cs.place_of_service_source_value.cast("string").fill_null(UNKNOWN),
        )

    def hospitals(self) -> ir.Table:
        """Hospital code, name and level (institutions, not people: published as labels)."""
        cs = self.t("care_site")
        src = cs.care_site_source_value.cast("string")
        sites = cs.filter(~src.contains(":"))
        return sites.select(hospital=sites.care_site_source_value.cast("string"),
                            name=sites.care_site_name.cast("string"),
                            level=sites.place_of_service_source_value.cast("string")
                            .fill_null(UNKNOWN)).distinct(on="hospital", keep="first")

    def visits(self) -> ir.Table:
        v = self.t("visit_occurrence")
        cs = self.care_sites()
        p = self.persons()
        vt = v.visit_concept_id.cases(*VISIT_TYPES.items(), else_="other")
        j = v.left_join(cs, v.care_site_id == cs.care_site_id).inner_join(
            p, v.person_id == p.person_id)
        return j.select(
            person_id=v.person_id, visit_occurrence_id=v.visit_occurrence_id,
            start=v.visit_start_date, end=v.visit_end_date.fill_null(v.visit_start_date),
            year=v.visit_start_date.year().cast("string"), visit_type=vt,
            hospital=cs.hospital.fill_null(UNKNOWN), level=cs.level.fill_null(UNKNOWN),
            region=p.region, age_band=p.age_band, sex=p.sex,
        )


# --- relations ---------------------------------------------------------------------------------
def people(s: Sources) -> ir.Table:
    return s.persons()


def people_seen(s: Sources) -> ir.Table:
    v = s.visits()
    return v.select("person_id", "year", "region", "age_band", "sex").distinct()


def condition_patients(s: Sources) -> ir.Table:
    c = s.t("condition_occurrence")
    p = s.persons()
    code3 = c.condition_source_value.cast("string").upper().substr(0, 3)
    cond = ibis.cases(*[(code3.isin(codes), name) for name, codes in CHRONIC_CONDITIONS.items()])
    j = c.inner_join(p, c.person_id == p.person_id)
    rel = j.select(person_id=c.person_id, condition=cond,
                   year=c.condition_start_date.year().cast("string"),
                   region=p.region, age_band=p.age_band, sex=p.sex)
    return rel.filter(rel.condition.notnull()).distinct()


def visits(s: Sources) -> ir.Table:
    return s.visits().select("person_id", "year", "region", "level", "visit_type")


def visit_costs(s: Sources) -> ir.Table:
    v = s.visits()
    c = s.t("cost")
    c = c.filter(c.cost_domain_id == "Visit")
    per_visit = c.group_by("cost_event_id").agg(cost=c.total_cost.sum())
    j = v.inner_join(per_visit, v.visit_occurrence_id == per_visit.cost_event_id)
    return j.select("person_id", "year", "region", "level", "visit_type", "cost")


def inpatient_stays(s: Sources) -> ir.Table:
    v = s.visits()
    stays = v.filter(v.visit_type == "inpatient")
    w = ibis.window(group_by="person_id", order_by=["start", "visit_occurrence_id"])
    stays = stays.mutate(next_start=stays.start.lead().over(w))
    gap = stays.next_start.delta(stays.end, unit="day")
    readmitted = gap.between(0, READMISSION_DAYS).fill_null(False)
    return stays.select("person_id", "hospital", "year", "region", readmitted=readmitted)


def readmissions(s: Sources) -> ir.Table:
    st = inpatient_stays(s)
    return st.filter(st.readmitted).select("person_id", "hospital", "year", "region")


def _tests(s: Sources) -> ir.Table:
    m = s.t("measurement")
    v = s.visits()
    concept = s.t("concept").select("concept_id", "concept_name")
    j = m.inner_join(v, m.visit_occurrence_id == v.visit_occurrence_id).left_join(
        concept, m.measurement_concept_id == concept.concept_id)
    return j.select(
        measurement_id=m.measurement_id, person_id=m.person_id,
        concept=m.measurement_concept_id, date=m.measurement_date,
        test=concept.concept_name.fill_null("unmapped test"),
        hospital=v.hospital, level=v.level, region=v.region,
        year=m.measurement_date.year().cast("string"))


def lab_tests(s: Sources) -> ir.Table:
    """Every lab result with a visit at a pooled hospital (the denominator of the repeat share)."""
    return _tests(s).select("person_id", "test", "year", "region", "level")


def _repeats(s: Sources) -> ir.Table:
    """Results repeating a result of the same test for the same person at a different hospital
    1–30 days earlier, one row per repeated result, with the hospital of the earlier result."""
    t1 = _tests(s)
    t2 = _tests(s).view()
    days = t2.date.delta(t1.date, unit="day")
    j = t2.inner_join(t1, [t2.person_id == t1.person_id, t2.concept == t1.concept,
                           t2.hospital != t1.hospital, days.between(1, REPEAT_TEST_DAYS)])
    rep = j.select(t2.measurement_id, t2.person_id, t2.test, t2.year, t2.region, t2.level,
                   t2.hospital, earlier=t1.hospital)
    # a result repeating several earlier ones counts once, paired with the nearest hospital code
    w = ibis.window(group_by="measurement_id", order_by="earlier")
    rep = rep.mutate(_n=ibis.row_number().over(w))
    return rep.filter(rep._n == 0).drop("_n")


def repeat_tests(s: Sources) -> ir.Table:
    """Results that repeat a result of the same test for the same person at a different hospital
    1–30 days earlier (the information-island cost), with the repeat's own cost."""
    rep = _repeats(s)
    c = s.t("cost")
    c = c.filter(c.cost_domain_id == "Measurement")
    per = c.group_by("cost_event_id").agg(cost=c.total_cost.sum())
    out = rep.left_join(per, rep.measurement_id == per.cost_event_id)
    return out.select("person_id", "test", "year", "region", "level",
                      cost=out.cost.fill_null(0.0))


def repeat_test_pairs(s: Sources) -> ir.Table:
    """The same repeats by hospital pair: ``<earlier hospital>><repeating hospital>``."""
    rep = _repeats(s)
    return rep.select("person_id", "year", pair=rep.earlier + PAIR_SEPARATOR + rep.hospital)


def medicine_patients(s: Sources) -> ir.Table:
    d = s.t("drug_exposure")
    concept = s.t("concept").select("concept_id", "concept_name")
    v = s.visits().select("visit_occurrence_id", "level")
    p = s.persons()
    name = concept.concept_name.lower()
    group = ibis.cases(*[(ibis.or_(*[name.contains(k) for k in keys]), g)
                         for g, keys in MEDICINE_GROUPS.items()], else_="other medicines")
    j = d.left_join(concept, d.drug_concept_id == concept.concept_id).left_join(
        v, d.visit_occurrence_id == v.visit_occurrence_id).inner_join(
        p, d.person_id == p.person_id)
    return j.select(person_id=d.person_id, medicine=group.fill_null("other medicines"),
                    year=d.drug_exposure_start_date.year().cast("string"),
                    region=p.region, level=v.level.fill_null(UNKNOWN)).distinct()


INDICATORS: tuple[Indicator, ...] = (
    Indicator("people", "People in the pooled records", "overview", "people", Statistic.PATIENTS,
              ("region", "age_band", "sex"), ("region", "age_band", "sex"), ("person",), people,
              description="Distinct people in the release, by province, age band and sex."),
    Indicator("people_seen", "People with a visit", "overview", "people", Statistic.PATIENTS,
              ("year", "region", "age_band", "sex"), ("year", "region", "age_band", "sex"),
              ("person", "visit_occurrence", "care_site"), people_seen,
              description="Distinct people with at least one visit in the year."),
    Indicator("condition_patients", "People with a chronic condition", "prevalence", "people",
              Statistic.PATIENTS, ("condition", "year", "region", "age_band", "sex"),
              ("year", "region", "age_band", "sex"), ("person", "condition_occurrence"),
              condition_patients,
              description="Distinct people with the condition recorded (ICD-10 category of the "
              "diagnosis) in the year, or ever for All years."),
    Indicator("visits", "Visits", "visits", "visits", Statistic.COUNT,
              ("year", "region", "level", "visit_type"), ("year", "region", "level", "visit_type"),
              ("person", "visit_occurrence", "care_site"), visits,
              description="Visits by year of admission, patient's province, hospital level and "
              "visit type."),
    Indicator("cost_per_visit", "Average cost per visit", "costs", "CNY", Statistic.MEAN,
              ("year", "region", "level", "visit_type"), ("year", "region", "level", "visit_type"),
              ("person", "visit_occurrence", "care_site", "cost"), visit_costs, value="cost",
              description="Mean total cost of a visit (cost rows of the Visit domain)."),
    Indicator("inpatient_stays", "Inpatient stays", "readmission", "stays", Statistic.COUNT,
              ("hospital", "year", "region"), ("hospital", "year", "region"),
              ("person", "visit_occurrence", "care_site"), inpatient_stays,
              description="Inpatient stays by discharging hospital and year of admission."),
    Indicator("readmissions_30d", "Readmitted within 30 days", "readmission", "stays",
              Statistic.COUNT, ("hospital", "year", "region"), ("hospital", "year", "region"),
              ("person", "visit_occurrence", "care_site"), readmissions,
              description="Inpatient stays followed by another inpatient admission, at any "
              "hospital of the pooled records, 0–30 days after discharge.",
              levels_from="inpatient_stays"),
    Indicator("lab_tests", "Lab results", "repeat_tests", "tests", Statistic.COUNT,
              ("test", "year", "region", "level"), ("test", "year", "region", "level"),
              ("person", "visit_occurrence", "care_site", "measurement", "concept"), lab_tests,
              description="Lab results of a visit at a pooled hospital (the denominator of the "
              "share of repeats)."),
    Indicator("repeat_tests", "Repeat tests at another hospital within 30 days", "repeat_tests",
              "tests", Statistic.COUNT, ("test", "year", "region", "level"),
              ("test", "year", "region", "level"),
              ("person", "visit_occurrence", "care_site", "measurement", "concept"), repeat_tests,
              description="Lab results that repeat the same test (concept) for the same person "
              "at a different hospital 1–30 days after an earlier result.",
              levels_from="lab_tests"),
    Indicator("repeat_tests_cost", "Avoidable cost of repeat tests", "repeat_tests", "CNY",
              Statistic.SUM, ("test", "year", "region", "level"), ("test", "year", "region", "level"),
              ("person", "visit_occurrence", "care_site", "measurement", "concept", "cost"),
              repeat_tests, value="cost",
              description="Sum of the costs of those repeated results (Measurement cost rows).",
              levels_from="lab_tests"),
    Indicator("repeat_test_pairs", "Repeat tests by hospital pair", "repeat_tests", "tests",
              Statistic.COUNT, ("pair", "year"), ("pair", "year"),
              ("person", "visit_occurrence", "care_site", "measurement", "concept"),
              repeat_test_pairs,
              description="The same repeats by the hospital of the earlier result and the "
              "hospital that repeated it."),
    Indicator("medicine_patients", "People using a medicine group", "medicines", "people",
              Statistic.PATIENTS, ("medicine", "year", "region", "level"),
              ("year", "region", "level"),
              ("person", "drug_exposure", "concept", "visit_occurrence", "care_site"),
              medicine_patients,
              description="Distinct people with a prescription of the group in the year."),
)

#: every table some indicator reads: a release for the dashboards must hold all of them
INDICATOR_TABLES: tuple[str, ...] = tuple(sorted({t for i in INDICATORS for t in i.needs}))
