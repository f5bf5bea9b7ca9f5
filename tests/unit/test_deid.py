"""Tests of the anonymization engine (enclave.logic.deid): hierarchies, criteria, search, reports."""

from __future__ import annotations

import datetime as dt
import doctest
import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycanon import anonymity

import enclave.logic.deid
from enclave.core.errors import BadInputError, ConfigurationError, DisclosureRiskError
from enclave.logic.deid import (
    AnonymizationPolicy,
    LDiversity,
    QuasiIdentifier,
    TCloseness,
    anonymize,
    per_patient,
)
from enclave.logic.deid.hierarchy import (
    Hierarchy,
    age_bands,
    date_granularity,
    interval_bands,
    read_hierarchy,
    region_codes,
)
from enclave.logic.deid.lattice import Lattice, NodeCheck, search
from enclave.logic.deid.metrics import risk_report
from enclave.logic.deid.privacy import emd, l_diverse

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
ADULT = SHARED / "benchmarks" / "adult"
ADULT_QIS = ["sex", "age", "race", "marital-status", "education", "native-country", "workclass",
             "salary-class"]

SEX = Hierarchy("sex", (("M", "F"), ("*", "*")))
AGE = interval_bands("age", 0, 99, (5, 10))  # levels: year, 5 years, 10 years, *

# 8 patients worked by hand below
AGES = [23, 24, 27, 28, 31, 33, 36, 38]
SEXES = ["M", "M", "F", "F", "M", "M", "F", "F"]


def small(extra: list[tuple[int, str]] = ()) -> pl.DataFrame:
    ages = AGES + [a for a, _ in extra]
    sexes = SEXES + [s for _, s in extra]
    return pl.DataFrame({"age": ages, "sex": sexes})


# --- hierarchies -----------------------------------------------------------------------------


def test_read_arx_hierarchy_from_adult() -> None:
    h = read_hierarchy(ADULT / "adult_hierarchy_age.csv", "age")
    assert h.height == 4
    i = h.leaves.index("39")
    assert [h.levels[j][i] for j in range(5)] == ["39", "35-39", "30-39", "20-39", "*"]
    assert h.cardinality(4) == 1


def test_read_hierarchy_rejects_ragged_rows(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("a;x;*\nb;x\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="row 2"):
        read_hierarchy(path)


def test_hierarchy_with_two_parents_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="not a generalization"):
        Hierarchy("bad", (("a", "b", "c"), ("x", "x", "y"), ("p", "q", "q")))


def test_generators() -> None:
    ages = age_bands(max_age=100)
    i = ages.leaves.index("47")
    assert [ages.levels[j][i] for j in range(ages.height + 1)] == ["47", "45-49", "40-49",
                                                                  "40-59", "*"]
    reg = region_codes("region", ["110105", "110108", "320102", "320211"])
    i = reg.leaves.index("320211")
    assert [reg.levels[j][i] for j in range(4)] == ["320211", "320200", "320000", "*"]
    assert reg.cardinality(2) == 2
    dates = date_granularity("d", dt.date(2023, 1, 1), dt.date(2024, 12, 31))
    i = dates.leaves.index("2023-05-17")
    assert [dates.levels[j][i] for j in range(5)] == ["2023-05-17", "2023-05", "2023-Q2", "2023",
                                                     "*"]
    assert dates.cardinality(2) == 8
    with pytest.raises(ConfigurationError):
        interval_bands("x", 0, 10, (3, 5))
    with pytest.raises(ConfigurationError):
        region_codes("r", ["1101"])


def test_encode_dates_and_unknown_values() -> None:
    dates = date_granularity("d", dt.date(2023, 1, 1), dt.date(2023, 12, 31))
    col = pl.Series("visit", [dt.date(2023, 3, 1), dt.date(2023, 1, 1)])
    codes = dates.encode(col)
    assert [dates.leaves[c] for c in codes] == ["2023-03-01", "2023-01-01"]
    with pytest.raises(BadInputError) as err:
        AGE.encode(pl.Series("age", [30, 130]))
    assert "'age'" in str(err.value) and "130" not in str(err.value)


# --- criteria on hand-made histograms ----------------------------------------------------------


def test_l_diversity_by_hand() -> None:
    hist = np.array([[3, 1, 1], [2, 2, 0], [5, 0, 0]], dtype=float)
    assert l_diverse(hist, LDiversity("dx", 2)).tolist() == [True, True, False]
    assert l_diverse(hist, LDiversity("dx", 3)).tolist() == [True, False, False]
    # recursive (2,2): r1 < 2 (r2 + r3): 3 < 4, 2 < 4, 5 < 0
    assert l_diverse(hist, LDiversity("dx", 2, "recursive", c=2)).tolist() == [True, True, False]
    # recursive (1,2): 3 < 2, 2 < 2, 5 < 0
    assert l_diverse(hist, LDiversity("dx", 2, "recursive", c=1)).tolist() == [False] * 3
    # entropy: 0.950 ≥ ln 2, ln 2 ≥ ln 2, 0
    assert l_diverse(hist, LDiversity("dx", 2, "entropy")).tolist() == [True, True, False]


def test_t_closeness_by_hand() -> None:
    assert emd(np.array([[2.0, 0.0]]), np.array([0.5, 0.5]), "equal").tolist() == [0.5]
    q = np.full(3, 1 / 3)
    hist = np.array([[1.0, 0, 0], [0, 0, 4.0], [0, 2.0, 0]])
    # ordered: |cumsum(p - q)| summed over the first m-1 positions, / (m-1)
    assert np.allclose(emd(hist, q, "ordered"), [0.5, 0.5, 1 / 3])
    assert np.allclose(emd(hist, q, "equal"), [2 / 3] * 3)


def test_hierarchical_t_closeness_by_hand() -> None:
    tree = Hierarchy("dx", (("a", "b", "c", "d"), ("ab", "ab", "cd", "cd"), ("*",) * 4))
    q = np.full(4, 0.25)
    hist = np.array([[4.0, 0, 0, 0], [1.0, 1, 0, 0], [1.0, 0, 1, 0], [1.0, 1, 1, 1]])
    # (1,0,0,0): move .25 to b inside "ab" (cost ½ each) + .5 across the root (cost 1) = .625
    # (½,½,0,0): .5 across the root = .5; (½,0,½,0): .25 inside each pair at cost ½ = .25
    assert np.allclose(emd(hist, q, "hierarchical", tree), [0.625, 0.5, 0.25, 0.0])
    table = small().with_columns(dx=pl.Series(["a", "a", "b", "c", "a", "b", "c", "d"]))
    with pytest.raises(ConfigurationError):
        TCloseness("dx", 0.2, "hierarchical")
    res = anonymize(table, AnonymizationPolicy(
        {"age": AGE, "sex": SEX}, t_closeness=TCloseness("dx", 0.3, "hierarchical", hierarchy=tree)))
    # whole table (3,2,2,1)/8. (3,0): M = (3,1,0,0)/4, surplus (3,0,-2,-1)/8: nothing moves
    # inside ab or cd, 3/8 crosses the root → 0.375 > 0.3. (2,1): 20-29 = (2,1,1,0)/4, surplus
    # (1,0,0,-1)/8 → 1/8 across the root; 30-39 = (1,1,1,1)/4 → 1/8: both ≤ 0.3. Cheaper nodes
    # all have a class {a,a}: surplus (5,-2,-2,-1)/8 → 2/8 · ½ + 3/8 = 0.5.
    assert res.node == {"age": 2, "sex": 1}


# --- the search on tables worked out by hand -----------------------------------------------------


def test_k2_table_by_hand() -> None:
    # (age 5-year, sex): 20-24 M ×2, 25-29 F ×2, 30-34 M ×2, 35-39 F ×2 → k = 2
    res = anonymize(small(), AnonymizationPolicy({"age": AGE, "sex": SEX}, k=2))
    assert res.node == {"age": 1, "sex": 0}
    assert res.risk.smallest_class == 2 and res.risk.classes == 4
    assert res.risk.prosecutor_max == 0.5 and res.risk.prosecutor_avg == 0.5
    assert res.risk.marketer == 0.5 and res.risk.journalist_max == 0.5
    assert res.utility.loss == pytest.approx((4 / 99) / 2)
    assert res.utility.height == pytest.approx((1 / 3) / 2)
    assert res.utility.discernibility == 16
    assert res.utility.average_class_size == 2
    assert res.frame["age"].to_list() == ["20-24", "20-24", "25-29", "25-29", "30-34", "30-34",
                                          "35-39", "35-39"]
    assert res.frame["sex"].to_list() == SEXES


def test_k3_prefers_suppressing_age_over_generalizing_both() -> None:
    # anonymous candidates: (2,1) loss (9/99 + 1)/2 = 0.545 and (3,0) loss (1 + 0)/2 = 0.5
    res = anonymize(small(), AnonymizationPolicy({"age": AGE, "sex": SEX}, k=3))
    assert res.node == {"age": 3, "sex": 0}
    assert res.utility.loss == pytest.approx(0.5)
    assert res.risk.smallest_class == 4


def test_suppression_by_hand() -> None:
    table = small([(70, "M")])
    no_supp = anonymize(table, AnonymizationPolicy({"age": AGE, "sex": SEX}, k=2))
    assert no_supp.node == {"age": 3, "sex": 0} and no_supp.suppressed == 0
    res = anonymize(table, AnonymizationPolicy({"age": AGE, "sex": SEX}, k=2, max_suppression=0.12))
    assert res.node == {"age": 1, "sex": 0}
    assert res.suppressed == 1 and res.frame.height == 8
    assert res.risk.suppressed == 1
    # 8 records at 5-year bands (4/99 each) + one suppressed record costing 1 per QI, over 9 × 2
    assert res.utility.loss == pytest.approx((8 * 4 / 99 + 2) / 18)
    assert res.utility.discernibility == 16 + 9


def test_l_diversity_and_t_closeness_by_hand() -> None:
    table = small().with_columns(dx=pl.Series(["a", "a", "b", "c", "a", "b", "c", "c"]))
    # (3,0): M = {a,a,a,b}, F = {b,c,c,c}, 2 distinct values each, loss 0.5; the only cheaper
    # candidates (1,0), (2,0), (1,1) have a class {a,a}; (2,1) qualifies but costs 0.545
    res = anonymize(table, AnonymizationPolicy({"age": AGE, "sex": SEX}, k=1,
                                               l_diversity=LDiversity("dx", 2)))
    assert res.node == {"age": 3, "sex": 0}
    # t-closeness: whole table (a, b, c) = (3, 2, 3)/8. (3,0): M = (3,1,0)/4, EMD ½(3/8+0+3/8) =
    # 3/8; F likewise. (2,1): 20-29 = (2,1,1)/4 and 30-39 = (1,1,2)/4, EMD 1/8 each, loss 0.545.
    # (3,1): one class, EMD 0.
    res = anonymize(table, AnonymizationPolicy({"age": AGE, "sex": SEX},
                                               t_closeness=TCloseness("dx", 0.4)))
    assert res.node == {"age": 3, "sex": 0}
    res = anonymize(table, AnonymizationPolicy({"age": AGE, "sex": SEX},
                                               t_closeness=TCloseness("dx", 0.35)))
    assert res.node == {"age": 2, "sex": 1}
    res = anonymize(table, AnonymizationPolicy({"age": AGE, "sex": SEX},
                                               t_closeness=TCloseness("dx", 0.1)))
    assert res.node == {"age": 3, "sex": 1}


def test_refusal_names_the_driving_quasi_identifier() -> None:
    capped = {"age": QuasiIdentifier(AGE, highest=1), "sex": SEX}
    with pytest.raises(DisclosureRiskError) as err:
        anonymize(small(), AnonymizationPolicy(capped, k=3))
    message = str(err.value)
    assert "'age'" in message and "23" not in message
    with pytest.raises(DisclosureRiskError, match="fully generalized"):
        anonymize(small(), AnonymizationPolicy({"age": AGE, "sex": SEX}, k=9))


def test_policy_validation() -> None:
    with pytest.raises(ConfigurationError):
        AnonymizationPolicy({"age": AGE}, k=0)
    with pytest.raises(ConfigurationError):
        AnonymizationPolicy({"age": AGE}, max_suppression=1.5)
    with pytest.raises(ConfigurationError):
        AnonymizationPolicy({"age": AGE}, l_diversity=LDiversity("age", 2))
    with pytest.raises(BadInputError, match="'dx'"):
        anonymize(small(), AnonymizationPolicy({"age": AGE}, l_diversity=LDiversity("dx", 2)))


def test_lattice_larger_than_the_setting_is_refused_naming_it() -> None:
    # AGE × SEX: (height + 1) × 2 nodes; a limit just below refuses, naming the setting
    size = (AGE.height + 1) * (SEX.height + 1)
    policy = AnonymizationPolicy({"age": AGE, "sex": SEX}, k=2, max_lattice_nodes=size - 1)
    with pytest.raises(ConfigurationError, match=rf"release\.max_lattice_nodes.*\({size - 1}\)"):
        anonymize(small(), policy)
    at_limit = AnonymizationPolicy({"age": AGE, "sex": SEX}, k=2, max_lattice_nodes=size)
    assert anonymize(small(), at_limit).lattice_size == size
    with pytest.raises(ConfigurationError, match="max_lattice_nodes"):
        AnonymizationPolicy({"age": AGE}, max_lattice_nodes=0)


def test_population_gives_journalist_and_marketer_risk() -> None:
    release = small()
    population = pl.concat([small(), small().head(2)])  # the 20-24 M class has 4 in the population
    res = anonymize(release, AnonymizationPolicy({"age": AGE, "sex": SEX}, k=2), population)
    assert res.risk.prosecutor_max == 0.5
    assert res.risk.journalist_max == 0.5  # other classes still have 2 in the population
    # marketer: (2/4 + 2/2 + 2/2 + 2/2) / 8
    assert res.risk.marketer == pytest.approx(3.5 / 8)


def test_risk_report_records_above_threshold() -> None:
    report = risk_report(np.array([2, 5, 5, 10]), suppressed=3)
    assert report.smallest_class == 2 and report.records == 22 and report.classes == 4
    assert report.records_above(0.33) == pytest.approx(2 / 22)
    assert report.records_above(0.1) == pytest.approx(12 / 22)


# --- patient level ------------------------------------------------------------------------------


def test_per_patient_rules() -> None:
    rows = pl.DataFrame({"pid": [1, 1, 2, 2, 3], "sex": ["M", "M", "F", "F", "M"],
                         "region": ["110105", "110108", "320102", "320102", "110105"]})
    with pytest.raises(BadInputError) as err:
        per_patient(rows, "pid", ["sex", "region"])
    assert "'region' (1 patients)" in str(err.value) and "110108" not in str(err.value)
    assert "'sex'" not in str(err.value)
    first = per_patient(rows, "pid", ["sex", "region"], rule="first")
    assert first.rows() == [(1, "M", "110105"), (2, "F", "320102"), (3, "M", "110105")]
    assert per_patient(rows, "pid", ["sex"]).height == 3
    hier = {"sex": SEX}
    with pytest.raises(BadInputError, match="2 rows repeat a patient"):
        anonymize(rows, AnonymizationPolicy(hier, k=1), patient_id="pid")
    patients = per_patient(rows, "pid", ["sex"])
    res = anonymize(patients, AnonymizationPolicy(hier, k=2), patient_id="pid")
    assert res.node == {"sex": 1} and res.risk.records == 3  # counts patients, not rows
    assert res.frame["pid"].to_list() == [1, 2, 3]


# --- search against brute force ---------------------------------------------------------------


def _generalize(h: Hierarchy, value: str, level: int) -> str:
    return h.levels[level][h.levels[0].index(value)]


def _brute_force(rows, hierarchies, k, limit, l_distinct=None, t=None, recursive=None):
    """Every node by plain Python: (loss, node) of the cheapest node that qualifies, or None."""
    names = list(hierarchies)
    n = len(rows)
    dx_all = Counter(r["dx"] for r in rows)
    best = None
    for node in itertools.product(*(range(h.height + 1) for h in hierarchies.values())):
        keys = [tuple(_generalize(hierarchies[q], str(r[q]), lv) for q, lv in zip(names, node))
                for r in rows]
        sizes = Counter(keys)
        members: dict = {}
        for key, r in zip(keys, rows):
            members.setdefault(key, []).append(r["dx"])
        bad = set()
        for key, size in sizes.items():
            if size < k:
                bad.add(key)
            if l_distinct and len(set(members[key])) < l_distinct:
                bad.add(key)
            if recursive is not None:
                c, ell = recursive
                r = sorted(Counter(members[key]).values(), reverse=True)
                if not r[0] < c * sum(r[ell - 1:]):
                    bad.add(key)
            if t is not None:
                cnt = Counter(members[key])
                dist = 0.5 * sum(abs(cnt[v] / size - dx_all[v] / n) for v in dx_all)
                if dist > t + 1e-12:
                    bad.add(key)
        suppressed = sum(sizes[key] for key in bad)
        if suppressed > limit:
            continue
        loss = 0.0
        for key, r in zip(keys, rows):
            for q, lv in zip(names, node):
                h = hierarchies[q]
                if key in bad:
                    loss += 1.0
                else:
                    label = h.levels[lv][h.levels[0].index(str(r[q]))]
                    group = sum(1 for x in h.levels[lv] if x == label)
                    loss += (group - 1) / (len(h.levels[0]) - 1)
        loss /= n * len(names)
        if best is None or loss < best[0] - 1e-12:
            best = (loss, node)
    return best


H_A = interval_bands("a", 0, 11, (2, 4))  # 4 levels
H_B = Hierarchy("b", (("p", "q", "r", "s"), ("pq", "pq", "rs", "rs"), ("*",) * 4))
H_C = Hierarchy("c", (("u", "v", "w"), ("*",) * 3))

tables = st.lists(
    st.fixed_dictionaries({
        "a": st.integers(0, 11), "b": st.sampled_from("pqrs"), "c": st.sampled_from("uvw"),
        "dx": st.sampled_from(["x", "y", "z"]),
    }),
    min_size=1, max_size=40,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=tables, k=st.integers(1, 5), supp=st.sampled_from([0.0, 0.1, 0.25]),
       extra=st.sampled_from(["none", "l", "t", "recursive"]))
def test_search_matches_brute_force(rows, k, supp, extra) -> None:
    hierarchies = {"a": H_A, "b": H_B, "c": H_C}
    frame = pl.DataFrame(rows)
    ldiv = {"l": LDiversity("dx", 2), "recursive": LDiversity("dx", 2, "recursive", c=2)}.get(extra)
    tclose = TCloseness("dx", 0.3) if extra == "t" else None
    policy = AnonymizationPolicy(hierarchies, k=k, l_diversity=ldiv, t_closeness=tclose,
                                 max_suppression=supp)
    limit = math.floor(supp * len(rows) + 1e-9)
    expected = _brute_force(rows, hierarchies, k, limit, 2 if extra == "l" else None,
                            0.3 if tclose else None, (2, 2) if extra == "recursive" else None)
    if expected is None:
        with pytest.raises(DisclosureRiskError):
            anonymize(frame, policy)
        return
    res = anonymize(frame, policy)
    assert res.utility.loss == pytest.approx(expected[0], abs=1e-9)
    # the chosen node really satisfies k: recount the released QI tuples independently
    counts = Counter(zip(*(res.frame[q].to_list() for q in hierarchies)))
    assert res.frame.height + res.suppressed == len(rows) and res.suppressed <= limit
    if res.frame.height:
        assert min(counts.values()) >= k
        assert min(counts.values()) == res.risk.smallest_class
        assert anonymity.k_anonymity(res.frame.to_pandas(), list(hierarchies)) == min(
            counts.values())


def test_search_prunes_but_stays_optimal_on_a_synthetic_lattice() -> None:
    lattice = Lattice(("x", "y", "z"), (0, 0, 0), (3, 2, 4))
    nodes = lattice.nodes()
    lb = nodes @ np.array([0.3, 0.5, 0.2])
    anonymous = nodes.sum(axis=1) >= 5  # monotone
    checked = []

    def check(i: int) -> NodeCheck:
        checked.append(i)
        return NodeCheck(bool(anonymous[i]), float(lb[i]), not anonymous[i])

    found = search(lattice, lb, check, monotone=True, exact=True)
    assert found.loss == pytest.approx(lb[anonymous].min())
    assert found.checked == len(checked) < lattice.size


# --- real data ---------------------------------------------------------------------------------


def test_adult_k5_agrees_with_pycanon() -> None:
    frame = pl.read_csv(ADULT / "adult.csv", separator=";", infer_schema=False)
    hierarchies = {q: read_hierarchy(ADULT / f"adult_hierarchy_{q}.csv", q) for q in ADULT_QIS}
    res = anonymize(frame, AnonymizationPolicy(hierarchies, k=5, max_suppression=0.05))
    assert res.suppressed <= 0.05 * frame.height
    assert res.frame.height == frame.height - res.suppressed
    k = anonymity.k_anonymity(res.frame.to_pandas(), ADULT_QIS)
    assert k >= 5 and k == res.risk.smallest_class
    assert anonymity.k_anonymity(pd.read_csv(ADULT / "adult.csv", sep=";", dtype=str),
                                 ADULT_QIS) == 1
    assert res.nodes_checked < res.lattice_size


def test_empty_and_single_patient_tables() -> None:
    empty = pl.DataFrame({"age": pl.Series([], dtype=pl.Int64),
                          "sex": pl.Series([], dtype=pl.String)})
    res = anonymize(empty, AnonymizationPolicy({"age": AGE, "sex": SEX}, k=5))
    assert res.frame.height == 0 and res.risk.records == 0
    with pytest.raises(DisclosureRiskError):
        anonymize(small().head(1), AnonymizationPolicy({"age": AGE, "sex": SEX}, k=2))
    one = anonymize(small().head(1), AnonymizationPolicy({"age": AGE, "sex": SEX}, k=1))
    assert one.node == {"age": 0, "sex": 0} and one.utility.loss == 0


def test_docstring_examples() -> None:
    assert doctest.testmod(enclave.logic.deid).failed == 0
