"""Equivalence classes and re-identification risk as ibis expressions (DuckDB or Spark).

The lattice search (:mod:`enclave.logic.deid.lattice`) works on encoded numpy arrays of one row per
patient; what scales with the data is around it: building that one-row-per-patient table from the
store (:func:`patient_expr`), and measuring a released table — its equivalence classes (patients per
combination of quasi-identifier values), the classes below k, and the classes' sizes in an optional
population (:func:`class_pairs_expr`). These are written once in ibis and run unchanged on the
configured engine (:mod:`enclave.io.engine`); what comes back is one small row per class, and the
prosecutor / journalist / marketer risk is computed from it by the one set of formulas,
:func:`enclave.logic.deid.metrics.risk_report` (:func:`measure_risk`).

Class sizes count **distinct patients**, so a table with several rows per patient is measured at
the patient level; a row whose quasi-identifier is null forms its own class with the other nulls
(both engines group nulls together).
"""

from __future__ import annotations

from collections.abc import Sequence

import ibis
import ibis.expr.types as ir

from enclave.core.errors import BadInputError
from enclave.logic.deid.metrics import RiskReport, risk_report

#: the sensitive attribute of the release builder's patient table (most frequent condition)
MAIN_CONDITION = "main_condition"
_SPAN = 1 << 32


def _need(t: ir.Table, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in t.columns]
    if missing:
        raise BadInputError(f"{what}: column(s) not in the table: {', '.join(missing)}")


def class_sizes_expr(t: ir.Table, qis: Sequence[str], patient: str) -> ir.Table:
    """One row per equivalence class: the QI values and ``size`` (distinct patients)."""
    qis = list(qis)
    _need(t, [*qis, patient], "equivalence classes")
    return t.group_by(qis).aggregate(size=t[patient].nunique().cast("int64"))


def k_violations_expr(t: ir.Table, qis: Sequence[str], patient: str, k: int) -> ir.Table:
    """The classes with fewer than ``k`` patients (what k-anonymity must suppress)."""
    sizes = class_sizes_expr(t, qis, patient)
    return sizes.filter(sizes.size < k)


def class_pairs_expr(released: ir.Table, qis: Sequence[str], patient: str,
                     population: ir.Table | None = None) -> ir.Table:
    """One row per class of the release: ``size`` (its distinct patients) and, given a
    ``population`` (same QIs, same generalization), ``population_size`` (that class's patients in
    the population; 0 where none). Nulls match nulls."""
    qis = list(qis)
    f = class_sizes_expr(released, qis, patient)
    if population is None:
        return f.select("size")
    _need(population, [*qis, patient], "population")
    pop = class_sizes_expr(population, qis, patient)
    pop = pop.rename({f"_p_{q}": q for q in qis}).rename(_pop="size")
    joined = f.left_join(pop, [f[q].identical_to(pop[f"_p_{q}"]) for q in qis])
    return joined.select("size", population_size=joined._pop.fill_null(0))


def measure_risk(engine, released: ir.Table, qis: Sequence[str], patient: str,
                 population: ir.Table | None = None, suppressed: int = 0) -> RiskReport:
    """The risk of a released table on ``engine``: its classes (and their population sizes)
    computed by the engine (:func:`class_pairs_expr`), one small row per class, and the formulas
    of :func:`enclave.logic.deid.metrics.risk_report`, the ones the lattice search uses."""
    pairs = engine.to_polars(class_pairs_expr(released, qis, patient, population))
    return risk_report(pairs["size"].to_numpy(), suppressed,
                       None if population is None else pairs["population_size"].to_numpy())


def patient_expr(person: ir.Table, location: ir.Table, conditions: ir.Table,
                 reference_year: int) -> ir.Table:
    """One row per patient of the store: ``person_id``, ``age`` at the reference year (0–120),
    ``sex`` (M/F/U), ``region`` (the county code, ``000000`` when missing or malformed) and the
    main condition (the patient's most frequent condition concept, the smallest id on a tie;
    ``none`` without one) — the input of the lattice search."""
    per = conditions.group_by(["person_id", "condition_concept_id"]).aggregate(
        _n=conditions.count())
    # one plain maximum per patient (no sort; ibis's argmax is an ordered aggregate): the key
    # n·2³² − concept orders by more rows first, then the smaller concept id, for every concept
    # id of the vocabulary (local ids lie above 2·10⁹, below 2³²), and gives the id back
    key = per._n.cast("int64") * _SPAN - per.condition_concept_id.cast("int64")
    top = per.group_by("person_id").aggregate(_key=key.max())
    main = top.select(_mp=top.person_id, _concept=(_SPAN - top._key % _SPAN) % _SPAN)
    loc = location.select(_lid=location.location_id, _county=location.county)
    county = loc._county.cast("string")
    loc = loc.mutate(_county=ibis.ifelse(county.re_search(r"^[0-9]{6}$"), county,
                                         ibis.null("string")))
    j = person.left_join(loc, person.location_id == loc._lid)
    j = j.left_join(main, j.person_id == main._mp)
    age = ibis.greatest(0, ibis.least(120, reference_year - j.year_of_birth))
    sex = j.gender_concept_id.cases((8507, "M"), (8532, "F"), else_="U")
    return j.select(
        person_id=j.person_id.cast("int64"),
        age=age.cast("int32"),
        sex=sex,
        region=j._county.fill_null("000000"),
        **{MAIN_CONDITION: j._concept.cast("string").fill_null("none")},
    ).order_by("person_id")
