"""Equivalence classes and re-identification risk as ibis expressions (DuckDB or Spark).

The lattice search (:mod:`enclave.deid.lattice`) works on encoded numpy arrays of one row per
patient; what scales with the data is around it: building that one-row-per-patient table from the
store (:func:`patient_expr`), and measuring a released table — its equivalence classes (patients per
combination of quasi-identifier values), the classes below k, and the prosecutor / journalist /
marketer risk against an optional population (:func:`risk_expr`, the same formulas as
:func:`enclave.deid.metrics.risk_report`). These are written once in ibis and run unchanged on
the configured engine (:mod:`enclave.engine`).

Class sizes count **distinct patients**, so a table with several rows per patient is measured at
the patient level; a row whose quasi-identifier is null forms its own class with the other nulls
(both engines group nulls together).
"""

from __future__ import annotations

from collections.abc import Sequence

import ibis
import ibis.expr.types as ir

from enclave.deid.metrics import RiskReport
from enclave.errors import BadInputError

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


def size_counts_expr(t: ir.Table, qis: Sequence[str], patient: str) -> ir.Table:
    """``(size, classes)``: how many classes have each size (the risk profile of a release)."""
    sizes = class_sizes_expr(t, qis, patient)
    return sizes.group_by("size").aggregate(classes=sizes.count().cast("int64"))


def risk_expr(released: ir.Table, qis: Sequence[str], patient: str,
              population: ir.Table | None = None) -> ir.Table:
    """One row: ``records, classes, smallest_class, prosecutor_max, prosecutor_avg,
    journalist_max, marketer`` of the release (population: same QIs, same generalization)."""
    qis = list(qis)
    f = class_sizes_expr(released, qis, patient)
    if population is None:
        both = f.mutate(_F=f.size)
    else:
        _need(population, [*qis, patient], "population")
        pop = class_sizes_expr(population, qis, patient)
        pop = pop.rename({f"_p_{q}": q for q in qis}).rename(_pop="size")
        joined = f.left_join(pop, [f[q].identical_to(pop[f"_p_{q}"]) for q in qis])
        both = joined.select(*qis, "size", _F=ibis.greatest(joined._pop.fill_null(0),
                                                             joined.size))
    n = both.size.sum()
    c = both.count()
    return both.aggregate(
        records=n.cast("int64"),
        classes=c.cast("int64"),
        smallest_class=both.size.min().cast("int64"),
        prosecutor_max=1.0 / both.size.min().cast("float64"),
        prosecutor_avg=c.cast("float64") / n.cast("float64"),
        journalist_max=1.0 / both._F.min().cast("float64"),
        marketer=(both.size.cast("float64") / both._F.cast("float64")).sum() / n.cast("float64"),
    )


def measure_risk(engine, released: ir.Table, qis: Sequence[str], patient: str,
                 population: ir.Table | None = None, suppressed: int = 0) -> RiskReport:
    """:func:`risk_expr` and :func:`size_counts_expr` run on ``engine``, as a
    :class:`RiskReport` (equal to :func:`enclave.deid.metrics.risk_report` of the same classes)."""
    row = engine.to_polars(risk_expr(released, qis, patient, population)).row(0, named=True)
    if not row["records"]:
        return RiskReport(0, 0, 0, suppressed, 0.0, 0.0, 0.0, 0.0, ())
    counts = engine.to_polars(size_counts_expr(released, qis, patient)).sort("size")
    return RiskReport(
        records=int(row["records"]), classes=int(row["classes"]),
        smallest_class=int(row["smallest_class"]), suppressed=suppressed,
        prosecutor_max=float(row["prosecutor_max"]), prosecutor_avg=float(row["prosecutor_avg"]),
        journalist_max=float(row["journalist_max"]), marketer=float(row["marketer"]),
        class_size_counts=tuple((int(s), int(k)) for s, k in counts.select("size", "classes")
                                .iter_rows()),
    )


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
