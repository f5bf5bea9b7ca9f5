"""Spec tests of the disclosure rules: one small inline table per rule, a passing and a failing case.

Each table is text (``patient | dept | value``) loaded into a real DuckDB table; the evidence comes
from the one-statement evidence query and the outcome from the pure polars rules. Expected outcomes
and numbers are worked out by hand from the tables.
"""

from __future__ import annotations

from dataclasses import replace

import duckdb
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.core.errors import BadInputError, ConfigurationError
from enclave.core.settings import load_settings
from enclave.io.db import create_table_as, run
from enclave.logic.disclosure import (
    ABS,
    ACRO,
    OPENSAFELY,
    OPENSAFELY_MIDPOINT6,
    PRESETS,
    STRICT,
    Outcome,
    check_cells,
    check_dof,
    check_table,
    compute_evidence,
    get_preset,
    margin_evidence,
    policy_from_settings,
    policy_hash,
    presets_table,
    residual_dof,
    round_counts,
)
from tests.conftest import REPO


def _cell(text: str):
    text = text.strip()
    if text in ("", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def table(con: duckdb.DuckDBPyConnection, text: str, name: str = "t") -> str:
    """Load a text table ('a | b' header, one row per line) into DuckDB table ``name``."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    header = [h.strip() for h in lines[0].split("|")]
    rows = [[_cell(c) for c in ln.split("|")] for ln in lines[1:]]
    assert all(len(r) == len(header) for r in rows), "ragged text table"
    data = {h: [r[i] for r in rows] for i, h in enumerate(header)}
    frame = pl.DataFrame(data, strict=False)
    frame = frame.with_columns(
        pl.col(c).cast(pl.Float64) for c, t in frame.schema.items() if t == pl.Int64 and c == "value"
    )
    run(con, f"DROP TABLE IF EXISTS {name}")
    create_table_as(con, name, frame)
    return name


@pytest.fixture
def con():
    c = duckdb.connect()
    yield c
    c.close()


def check(con, text, stat, policy=ACRO, groups=("dept",), value="value", sensitive=None):
    table(con, text)
    ev = compute_evidence(con, "t", "patient", list(groups), value if stat != "count" else None,
                          sensitive)
    return check_cells(ev, stat, policy, list(groups)).sort(list(groups)).to_dicts()


def ten_patients(values: list, dept: str = "A", start: int = 1) -> str:
    return "\n".join(f"{start + i} | {dept} | {'' if v is None else v}" for i, v in enumerate(values))


SMALL = replace(ACRO, name="small", min_patients=3, min_values=3, extremes_min_patients=2,
                quantile_min_values=3)


# --- evidence ---------------------------------------------------------------------------------
def test_evidence_per_cell_counts_patients_values_and_contributions(con):
    table(con, """
        patient | dept | value | dx
        1       | A    | 10    | I10
        1       | A    | -4    | I10
        2       | A    |       | E11
        3       | A    | 6     | I10
        3       | A    | 10    | I10
        4       | B    | 2     | E11
    """)
    ev = compute_evidence(con, "t", "patient", ["dept"], "value", "dx").sort("dept")
    a, b = ev.to_dicts()
    # A: 5 rows, 3 patients, 4 values from 2 patients; sum 22; per-patient |.| sums 14, 0, 16
    assert (a["rows"], a["patients"], a["values"], a["value_patients"]) == (5, 3, 4, 2)
    assert (a["sum"], a["mean"], a["min"], a["max"]) == (22, 5.5, -4, 10)
    assert (a["top1"], a["top2"], a["abs_total"], a["negatives"]) == (16, 30, 30, 1)
    assert (a["patients_at_min"], a["patients_at_max"]) == (1, 2)
    assert (a["modal_rows"], a["modal_patients"]) == (4, 2)
    assert (b["rows"], b["patients"], b["top1"], b["top2"], b["modal_patients"]) == (1, 1, 2, 2, 1)


def test_evidence_accepts_a_subquery_and_fills_empty_cells(con):
    table(con, """
        patient | dept | sex | value
        1       | A    | F   | 1
        2       | A    | M   | 2
        3       | B    | F   | 3
        4       | C    | M   | 4
    """)
    ev = compute_evidence(con, "SELECT * FROM t WHERE patient < 4", "patient", ["dept", "sex"],
                          "value", complete=True)
    cells = {(r["dept"], r["sex"]): r["patients"] for r in ev.to_dicts()}
    assert cells == {("A", "F"): 1, ("A", "M"): 1, ("B", "F"): 1, ("B", "M"): 0}


def test_evidence_refuses_clashing_column_names(con):
    table(con, "patient | rows | value\n1 | A | 1")
    with pytest.raises(BadInputError, match="rows"):
        compute_evidence(con, "t", "patient", ["rows"], "value")


# --- minimum patients -------------------------------------------------------------------------
def test_twelve_rows_from_three_patients_fail_the_patient_threshold(con):
    rows = "\n".join(f"{1 + i % 3} | A | 1" for i in range(12))
    (cell,) = check(con, f"patient | dept | value\n{rows}", "count")
    assert cell["outcome"] == "suppress" and cell["value"] is None
    assert cell["reasons"] == ["cell has 3 patients; at least 10 are needed"]


def test_ten_distinct_patients_pass_the_patient_threshold(con):
    (cell,) = check(con, "patient | dept | value\n" + ten_patients([1] * 10), "count")
    assert (cell["outcome"], cell["value"], cell["reasons"]) == ("ok", 10, [])


# --- minimum non-missing values ---------------------------------------------------------------
def test_mean_of_three_values_in_a_ten_row_cell_fails(con):
    text = "patient | dept | value\n" + ten_patients([5, 6, 7] + [None] * 7)
    (cell,) = check(con, text, "mean")
    assert cell["outcome"] == "suppress"
    assert cell["reasons"] == [("cell has non-missing values from 3 patients (10 rows); at least 10 "
                               "are needed")]
    (count,) = check(con, text, "count")  # the count of the same cell is fine
    assert count["outcome"] == "ok"


def test_mean_of_ten_values_passes(con):
    (cell,) = check(con, "patient | dept | value\n" + ten_patients(list(range(1, 11))), "mean")
    assert (cell["outcome"], cell["value"]) == ("ok", 5.5)


# --- N-K dominance on per-patient sums --------------------------------------------------------
def test_one_patient_with_many_rows_dominates(con):
    big = "\n".join("1 | A | 100" for _ in range(10))  # patient 1: 10 rows, 1000 in all
    text = f"patient | dept | value\n{big}\n" + ten_patients([10] * 9, start=2)
    (cell,) = check(con, text, "sum")  # top 2 patients: 1010 of 1090 = 92.7 % > 90 %
    assert cell["outcome"] == "suppress"  # and the rest, 80, is under 10 % of 1000 (p %)
    assert cell["reasons"] == [("the largest 2 patient(s) contribute 92.7% of the cell total; at most "
                               "90% is allowed (N-K rule)"),
                               ("without its two largest patients the cell adds up to less than 10% "
                               "of the largest patient's contribution (p % rule)")]
    # counted per row instead, the two largest rows (200 of 1090) would not dominate
    assert check(con, text, "count")[0]["outcome"] == "ok"


def test_spread_contributions_pass_nk(con):
    (cell,) = check(con, "patient | dept | value\n" + ten_patients([9, 11] * 5), "sum")
    assert (cell["outcome"], cell["value"]) == ("ok", 100)


def test_abs_preset_applies_both_dominance_rules(con):
    # top1 = 60 of 150 (40 %, under 50 %), top2 = 110 of 150 (73 %, over 67 %)
    text = "patient | dept | value\n" + ten_patients([60, 50] + [5] * 8)
    (cell,) = check(con, text, "sum", policy=ABS)
    assert cell["outcome"] == "suppress" and len(cell["reasons"]) == 1
    assert "largest 2 patient(s) contribute 73.3%" in cell["reasons"][0]


def test_negative_values_count_as_magnitudes_in_dominance(con):
    # the sum is -1000 + 90 = -910, but patient 1 alone holds 1000 of the 1090 magnitude
    text = "patient | dept | value\n" + ten_patients([-1000] + [10] * 9)
    (cell,) = check(con, text, "sum")
    assert cell["outcome"] == "suppress" and "N-K rule" in cell["reasons"][0]


# --- p % --------------------------------------------------------------------------------------
P_ONLY = replace(ACRO, name="p-only", nk_rules=())


def test_p_percent_fails_when_the_rest_is_small(con):
    # rest without the two largest: 8 × 10 = 80 < 10 % of 1000
    (cell,) = check(con, "patient | dept | value\n" + ten_patients([1000, 900] + [10] * 8), "sum",
                    policy=P_ONLY)
    assert cell["outcome"] == "suppress" and "(p % rule)" in cell["reasons"][0]


def test_p_percent_passes_when_the_rest_is_large_enough(con):
    # rest: 8 × 20 = 160 ≥ 100
    (cell,) = check(con, "patient | dept | value\n" + ten_patients([1000, 900] + [20] * 8), "sum",
                    policy=P_ONLY)
    assert cell["outcome"] == "ok"


# --- class disclosure -------------------------------------------------------------------------
def test_group_where_all_share_a_diagnosis_is_flagged(con):
    rows = "\n".join(f"{i} | A | 1 | I10" for i in range(1, 11))
    rows += "\n" + "\n".join(f"{i} | B | 1 | {'I10' if i % 2 else 'E11'}" for i in range(11, 21))
    a, b = check(con, f"patient | dept | value | dx\n{rows}", "count", sensitive="dx")
    assert a["outcome"] == "review"
    assert a["reasons"] == [("all 10 patients in the cell share one value of the sensitive column "
                            "(100 %, every other value 0 %): class disclosure")]
    assert b["outcome"] == "ok"


# --- class disclosure of a statistic: every value of the cell the same -------------------------
SAME = ("all 10 patients with a value in the cell have the same value (its minimum equals its "
        "maximum), which the {} reveals: class disclosure")


def test_a_proportion_of_nobody_or_everybody_is_class_disclosure(con):
    rows = "\n".join([ten_patients([0] * 10, "A"), ten_patients([1] * 10, "B", 11),
                      ten_patients([0, 1] * 5, "C", 21)])
    a, b, c = check(con, f"patient | dept | value\n{rows}", "mean")
    assert (a["outcome"], a["value"], a["reasons"]) == ("review", 0.0, [SAME.format("mean")])
    assert (b["outcome"], b["value"], b["reasons"]) == ("review", 1.0, [SAME.format("mean")])
    assert (c["outcome"], c["value"], c["reasons"]) == ("ok", 0.5, [])


def test_a_sum_min_max_or_std_of_one_shared_value_is_flagged(con):
    text = "patient | dept | value\n" + ten_patients([7] * 10)
    for stat in ("sum", "min", "max"):
        (cell,) = check(con, text, stat)
        assert (cell["outcome"], cell["reasons"]) == ("review", [SAME.format(stat)]), stat
    # a std is checked as a mean; its label names it (a std of 0 is the same min = max)
    ev = compute_evidence(con, "t", "patient", ["dept"], "value", extremes=False, bounds=True)
    (cell,) = check_cells(ev, "mean", ACRO, ["dept"], label="std").to_dicts()
    assert (cell["outcome"], cell["reasons"]) == ("review", [SAME.format("std")])
    # one different value anywhere in the cell and nothing is flagged
    (cell,) = check(con, "patient | dept | value\n" + ten_patients([7] * 9 + [8]), "sum")
    assert cell["outcome"] == "ok"


def test_strict_suppresses_class_disclosure_and_the_switch_turns_it_off(con):
    text = "patient | dept | value\n" + ten_patients([0] * 10)
    (cell,) = check(con, text, "mean", policy=STRICT)
    assert (cell["outcome"], cell["value"], cell["reasons"]) == (
        "suppress", None, [SAME.format("mean")])
    off = replace(ACRO, name="off", class_disclosure=False)
    (cell,) = check(con, text, "mean", policy=off)
    assert (cell["outcome"], cell["value"], cell["reasons"]) == ("ok", 0.0, [])
    (cell,) = check(con, text, "mean", policy=replace(STRICT, class_disclosure=False))
    assert cell["outcome"] == "ok"
    # the sensitive-column rule follows the same switch
    rows = "\n".join(f"{i} | A | 1 | I10" for i in range(1, 11))
    (cell,) = check(con, f"patient | dept | value | dx\n{rows}", "count", policy=STRICT,
                    sensitive="dx")
    assert (cell["outcome"], cell["value"]) == ("suppress", None)
    assert "class disclosure" in cell["reasons"][0]


def test_class_disclosure_changes_only_cells_that_are_otherwise_ok(con):
    # (A, F): 3 patients, all 0; (C, F): 10 patients without a value; (B, M): 10 patients, all 1;
    # (A, M), (B, F), (C, M): empty
    rows = ([f"{i} | A | F | 0" for i in range(1, 4)] + [f"{i} | C | F | " for i in range(4, 14)]
            + [f"{i} | B | M | 1" for i in range(14, 24)])
    table(con, "patient | dept | sex | value\n" + "\n".join(rows))
    ev = compute_evidence(con, "t", "patient", ["dept", "sex"], "value", extremes=False,
                          bounds=True, complete=True)
    out = {(r["dept"], r["sex"]): r for r in check_cells(ev, "mean", ACRO,
                                                         ["dept", "sex"]).to_dicts()}
    small = out[("A", "F")]  # stays suppressed; the class reason is added
    assert small["outcome"] == "suppress" and small["reasons"][0].startswith("cell has 3 patients")
    assert small["reasons"][-1] == SAME.replace("10", "3").format("mean")
    assert out[("B", "F")]["reasons"] == [
        "cell is empty; empty cells are disclosive under this policy"]
    assert out[("C", "F")]["outcome"] == "suppress"
    assert not any("class disclosure" in r for r in out[("C", "F")]["reasons"])
    assert (out[("B", "M")]["outcome"], out[("B", "M")]["value"]) == ("review", 1.0)
    lenient = replace(ACRO, name="lenient", zeros_disclosive=False, class_disclosure_fails=True)
    out = {(r["dept"], r["sex"]): r for r in check_cells(ev, "mean", lenient,
                                                         ["dept", "sex"]).to_dicts()}
    assert (out[("B", "F")]["outcome"], out[("B", "F")]["reasons"]) == ("ok", [])
    assert out[("B", "M")]["outcome"] == "suppress"


def test_the_rule_needs_bounds_and_check_table_computes_them(con):
    table(con, "patient | dept | value\n" + ten_patients([1] * 10))
    ev = compute_evidence(con, "t", "patient", ["dept"], "value", extremes=False)
    assert ev["min"].to_list() == [None]  # neither extremes nor bounds: no min, no max
    with pytest.raises(BadInputError, match="min, max"):
        check_cells(ev.drop("min", "max"), "mean", ACRO, ["dept"])
    (cell,) = check_table(con, "t", "patient", ["dept"], "mean", ACRO,
                          value="value").cells.to_dicts()
    assert (cell["outcome"], cell["reasons"]) == ("review", [SAME.format("mean")])
    # bounds alone: min and max, not the patients at them nor the negatives
    ev = compute_evidence(con, "t", "patient", ["dept"], "value", extremes=False, bounds=True)
    assert ev.select("min", "max", "negatives", "patients_at_min").row(0) == (1, 1, None, None)


# --- class disclosure in tables: quantiles, crosstab rows, histograms --------------------------
def evaluate(con, spec: dict, policy=ACRO, where: str = "") -> dict:
    from enclave.io.outputs.tables import evaluate_groups, evaluate_histogram

    kind = evaluate_histogram if spec["kind"] == "histogram" else evaluate_groups
    ev = kind(con, f"SELECT * FROM t {where}", {"patient": "patient", **spec}, policy)
    return {(tuple(c["cell"].values()), c["statistic"]): c for c in ev.cells} | {"_": ev}


def test_a_quantile_at_the_cell_minimum_or_maximum_is_flagged(con):
    # A: 6 of 10 values are the minimum 1; B: 6 of 10 the maximum 9; C: spread out
    table(con, "patient | dept | value\n" + "\n".join([
        ten_patients([1] * 6 + [2, 3, 4, 5], "A"), ten_patients([1, 2, 3, 4] + [9] * 6, "B", 11),
        ten_patients(list(range(1, 11)), "C", 21)]))
    out = evaluate(con, {"kind": "pivot_table", "groups": ["dept"], "value": "value",
                         "aggfuncs": ["median", "q10", "q90", "mean"]})
    a, b = out[(("A",), "median")], out[(("B",), "median")]
    assert (a["outcome"], a["value"]) == ("review", 1.0)
    assert a["reasons"] == [("the median equals the cell's minimum (over 10 rows): it publishes "
                            "the value that every row at or below the median shares; class "
                            "disclosure")]
    assert b["outcome"] == "review" and "the median equals the cell's maximum" in b["reasons"][0]
    assert out[(("A",), "q10")]["outcome"] == "review"
    assert out[(("C",), "q90")]["outcome"] == out[(("C",), "median")]["outcome"] == "pass"
    # C's q10 (1.9) is not its minimum (1); its mean is fine; A's mean is no min = max
    assert out[(("C",), "q10")]["outcome"] == out[(("A",), "mean")]["outcome"] == "pass"
    strict = evaluate(con, {"kind": "pivot_table", "groups": ["dept"], "value": "value",
                            "aggfuncs": ["median"]}, STRICT)
    assert (strict[(("A",), "median")]["outcome"], strict[(("A",), "median")]["value"]) == (
        "fail", None)
    assert strict["_"].result["median"].to_list() == [None, None, 5.5]


def test_a_std_of_zero_is_flagged_with_its_name(con):
    table(con, "patient | dept | value\n" + ten_patients([4] * 10))
    out = evaluate(con, {"kind": "pivot_table", "groups": ["dept"], "value": "value",
                         "aggfuncs": ["std"]})
    cell = out[(("A",), "std")]
    assert (cell["outcome"], cell["value"], cell["reasons"]) == ("review", 0.0,
                                                                 [SAME.format("std")])


def test_a_crosstab_row_in_one_column_follows_the_strict_switch(con):
    rows = [f"{i} | {'N' if i <= 12 else 'S'} | {'E11' if i <= 22 else 'I10'}" for i in range(1, 33)]
    table(con, "patient | region | dx\n" + "\n".join(rows))
    spec = {"kind": "crosstab", "groups": ["region", "dx"], "value": None, "aggfuncs": ["count"]}
    lenient = replace(ACRO, name="lenient", zeros_disclosive=False)
    cell = evaluate(con, spec, lenient)[(("N", "E11"), "count")]
    assert (cell["outcome"], cell["value"]) == ("review", 12)
    assert cell["reasons"] == [("every patient of this region falls in one dx value (100 %, the "
                               "other values 0 %): class disclosure")]
    cell = evaluate(con, spec, replace(lenient, class_disclosure_fails=True))[(("N", "E11"),
                                                                              "count")]
    assert (cell["outcome"], cell["value"]) == ("fail", None)
    assert evaluate(con, spec, lenient)[(("S", "I10"), "count")]["outcome"] == "pass"


def test_a_histogram_with_one_non_empty_bin_is_flagged(con):
    table(con, "patient | dept | value\n" + ten_patients([3, 4, 5, 6, 7] * 2)
          + "\n" + ten_patients([13, 14, 15, 16, 17] * 2, "B", 11))
    spec = {"kind": "histogram", "value": "value", "edges": [0, 10, 20], "range_given": True}
    out = evaluate(con, spec, where="WHERE dept = 'A'")
    cell = out[((0, 0.0, 10.0), "count")]
    assert (cell["outcome"], cell["value"]) == ("review", 10)
    assert cell["reasons"] == [("all 10 rows fall in this one bin (every other bin is empty), so "
                               "every patient's value lies in its range: class disclosure")]
    out = evaluate(con, spec, STRICT, where="WHERE dept = 'A'")
    assert out[((0, 0.0, 10.0), "count")]["outcome"] == "fail"
    assert out["_"].result["count"].to_list() == [None, None]
    # two non-empty bins: no class disclosure; one bin of edges the researcher chose: a count
    both = evaluate(con, spec)
    assert [c["outcome"] for c in both["_"].cells] == ["pass", "pass"]
    one = evaluate(con, {**spec, "edges": [0, 10]}, where="WHERE dept = 'A'")
    assert one[((0, 0.0, 10.0), "count")]["outcome"] == "pass"
    # one bin of edges derived from the data (range not given) is flagged
    auto = evaluate(con, {**spec, "edges": [0, 10], "range_given": False},
                    where="WHERE dept = 'A'")
    assert auto[((0, 0.0, 10.0), "count")]["outcome"] == "review"


# --- extremes and quantiles -------------------------------------------------------------------
def test_maximum_contributed_by_one_patient_fails(con):
    (cell,) = check(con, "patient | dept | value\n" + ten_patients([99] + [5] * 9), "max")
    assert cell["outcome"] == "suppress"
    assert cell["reasons"] == ["the maximum is held by 1 patient(s); at least 10 must share it"]


def test_maximum_shared_by_enough_patients_passes(con):
    (cell,) = check(con, "patient | dept | value\n" + ten_patients([7, 7, 3]), "max", policy=SMALL)
    assert (cell["outcome"], cell["value"]) == ("ok", 7)
    (low,) = check(con, "patient | dept | value\n" + ten_patients([7, 7, 3]), "min", policy=SMALL)
    assert low["outcome"] == "suppress" and "minimum is held by 1" in low["reasons"][0]


def test_quantiles_need_enough_values(con):
    fail = check(con, "patient | dept | value\n" + ten_patients([1, 2, None]), "quantile",
                 policy=SMALL)[0]
    ok = check(con, "patient | dept | value\n" + ten_patients([1, 2, 3]), "quantile",
               policy=SMALL)[0]
    assert fail["outcome"] == "suppress" and ok["outcome"] == "ok"
    assert any("quantile over values from 2 patients" in r for r in fail["reasons"])


# --- zeros --------------------------------------------------------------------------------------
def test_empty_cells_are_suppressed_only_when_zeros_are_disclosive(con):
    rows = "\n".join(f"{i} | A | {'F' if i <= 10 else 'M'} | 1" for i in range(1, 21))
    rows += "\n" + "\n".join(f"{i} | B | F | 1" for i in range(21, 31))
    table(con, f"patient | dept | sex | value\n{rows}")
    ev = compute_evidence(con, "t", "patient", ["dept", "sex"], complete=True)
    out = {(r["dept"], r["sex"]): r for r in check_cells(ev, "count", ACRO, ["dept", "sex"]).to_dicts()}
    assert out[("B", "M")]["outcome"] == "suppress"
    assert out[("B", "M")]["reasons"] == ["cell is empty; empty cells are disclosive under this policy"]
    lenient = replace(ACRO, name="lenient", zeros_disclosive=False)
    out = {(r["dept"], r["sex"]): r for r in check_cells(ev, "count", lenient, ["dept", "sex"]).to_dicts()}
    assert (out[("B", "M")]["outcome"], out[("B", "M")]["value"]) == ("ok", 0)


# --- OpenSAFELY redaction and rounding --------------------------------------------------------
def test_opensafely_redacts_seven_and_rounds_to_five(con):
    rows = "\n".join(f"{i} | A | 1" for i in range(1, 8))  # 7 patients
    rows += "\n" + "\n".join(f"{i} | B | 1" for i in range(8, 16))  # 8 patients
    rows += "\n" + "\n".join(f"{i} | C | 1" for i in range(16, 29))  # 13 patients
    a, b, c = check(con, f"patient | dept | value\n{rows}", "patients", policy=OPENSAFELY)
    assert (a["outcome"], a["value"]) == ("suppress", None)
    assert a["reasons"] == ["cell has 7 patients; at least 8 are needed"]
    assert (b["value"], c["value"]) == (10, 15)
    b6, c6 = check(con, f"patient | dept | value\n{rows}", "patients",
                   policy=OPENSAFELY_MIDPOINT6)[1:]
    assert (b6["value"], c6["value"]) == (9, 15)


def test_rounding_functions_by_hand():
    x = pl.Series("x", [0, 1, 2, 3, 6, 7, 12, 13])
    near = pl.select(round_counts(pl.lit(x), OPENSAFELY)).to_series().to_list()
    mid = pl.select(round_counts(pl.lit(x), OPENSAFELY_MIDPOINT6)).to_series().to_list()
    assert near == [0, 0, 0, 5, 5, 5, 10, 15]
    assert mid == [0, 3, 3, 3, 3, 9, 9, 15]


# --- degrees of freedom -----------------------------------------------------------------------
def test_residual_degrees_of_freedom():
    assert residual_dof(20, 5) == 15
    assert check_dof(20, 10, ACRO) == (Outcome.OK, [])
    outcome, reasons = check_dof(15, 6, ACRO)
    assert outcome is Outcome.SUPPRESS
    assert reasons == [("model has 9 residual degrees of freedom (15 observations, 6 parameters); "
                       "at least 10 are needed")]
    with pytest.raises(BadInputError):
        residual_dof(-1, 2)


# --- policies, settings, docs -----------------------------------------------------------------
def test_presets_carry_the_published_numbers():
    assert (ACRO.min_patients, ACRO.nk_rules, ACRO.p_ratio, ACRO.min_dof, ACRO.zeros_disclosive) \
        == (10, ((2, 0.9),), 0.1, 10, True)
    assert (OPENSAFELY.min_patients, OPENSAFELY.rounding.value, OPENSAFELY.round_base) \
        == (8, "nearest", 5)
    assert (ABS.min_patients, ABS.nk_rules) == (10, ((1, 0.5), (2, 0.67)))
    hashes = {policy_hash(p) for p in PRESETS.values()}
    assert len(hashes) == len(PRESETS)
    assert policy_hash(replace(ACRO)) == policy_hash(ACRO)
    assert policy_hash(replace(ACRO, min_patients=11)) != policy_hash(ACRO)
    with pytest.raises(ConfigurationError):
        replace(ACRO, nk_rules=((3, 0.5),))
    with pytest.raises(ConfigurationError, match="unknown disclosure preset"):
        get_preset("nope")


def test_the_strict_preset_is_acro_with_class_disclosure_suppressed(tmp_path):
    assert PRESETS["strict"] is STRICT and STRICT.class_disclosure_fails
    assert not any(p.class_disclosure_fails for p in PRESETS.values() if p is not STRICT)
    assert replace(STRICT, name="acro", notes=ACRO.notes, class_disclosure_fails=False) == ACRO
    assert "suppressed" in STRICT.notes
    home = tmp_path / "h"
    home.mkdir()
    (home / "settings.toml").write_text("[disclosure]\npreset = 'strict'\n")
    assert policy_from_settings(load_settings(home).disclosure) == STRICT


def test_policy_from_settings_applies_overrides(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    assert policy_from_settings(load_settings(home).disclosure) == ACRO
    (home / "settings.toml").write_text("[disclosure]\npreset = 'abs'\nmin_patients = 20\n")
    policy = policy_from_settings(load_settings(home).disclosure)
    assert (policy.min_patients, policy.nk_rules, policy.name) == (20, ABS.nk_rules, "abs+overrides")


def test_check_table_runs_the_whole_chain(con):
    rows = "\n".join(f"{i} | {'A' if i <= 20 else 'B'} | {'F' if i % 2 else 'M'} | 1"
                     for i in range(1, 41))
    rows += "\n41 | C | F | 1\n" + "\n".join(f"{i} | C | M | 1" for i in range(42, 62))
    table(con, f"patient | dept | sex | value\n{rows}")
    checked = check_table(con, "t", "patient", ["dept", "sex"], "count", ACRO)
    out = {(r["dept"], r["sex"]): r for r in checked.cells.to_dicts()}
    assert out[("C", "F")]["outcome"] == "suppress"
    suppressed_f = [k for k, r in out.items() if k[1] == "F" and r["outcome"] == "suppress"]
    assert len(suppressed_f) >= 2  # the F column cannot hold one suppressed cell alone
    assert out[("C", "M")]["outcome"] == "suppress"  # nor can row C
    assert not checked.table.suppressed[:, -1].any()  # every row total has ≥ 10 patients


def test_a_margin_of_few_patients_is_suppressed_itself(con):
    # row C: 3 + 4 patients, both cells fail, and the row total (7 patients) fails as well
    rows = "\n".join(f"{i} | {'A' if i <= 20 else 'B'} | {'F' if i % 2 else 'M'} | 1"
                     for i in range(1, 41))
    rows += "\n" + "\n".join(f"{i} | C | F | 1" for i in range(41, 44))
    rows += "\n" + "\n".join(f"{i} | C | M | 1" for i in range(44, 48))
    table(con, f"patient | dept | sex | value\n{rows}")
    checked = check_table(con, "t", "patient", ["dept", "sex"], "count", ACRO)
    assert checked.table.row_labels == ("A", "B", "C")
    assert checked.table.primary[2, 2] and checked.table.suppressed[2, 2]
    assert checked.table.suppressed[2, :2].all()


def test_margins_count_a_patient_in_two_cells_once(con):
    # row C: F has patients 41-45, M has 41-46: 11 cell-patients, but only 6 distinct patients
    rows = "\n".join(f"{i} | {'A' if i <= 20 else 'B'} | {'F' if i % 2 else 'M'} | 1"
                     for i in range(1, 41))
    rows += "\n" + "\n".join(f"{i} | C | F | 1" for i in range(41, 46))
    rows += "\n" + "\n".join(f"{i} | C | M | 1" for i in range(41, 47))
    table(con, f"patient | dept | sex | value\n{rows}")
    full = margin_evidence(con, "t", "patient", "dept", "sex")
    got = {(r["level"], r["dept"], r["sex"]): r["patients"] for r in full.to_dicts()}
    assert got == {("row", "A", None): 20, ("row", "B", None): 20, ("row", "C", None): 6,
                   ("column", None, "F"): 25, ("column", None, "M"): 26, ("total", None, None): 46}
    only_c = margin_evidence(con, "t", "patient", "dept", "sex", row_levels=["C"])
    assert only_c.select("level", "dept", "patients").rows() == [("row", "C", 6)]
    checked = check_table(con, "t", "patient", ["dept", "sex"], "count", ACRO)
    assert checked.table.primary[2, 2]  # the row C total is suppressed in its own right


def test_disclosure_doc_table_is_generated_from_code():
    doc = (REPO / "docs" / "disclosure.md").read_text(encoding="utf-8")
    assert presets_table() in doc, (
        "docs/disclosure.md is stale: paste the output of "
        "python -c 'from enclave.logic.disclosure import presets_table; print(presets_table())' "
        "between the preset markers"
    )


def test_extremes_rule_fails_closed_without_extremes_evidence(con):
    table(con, "patient | dept | value\n" + ten_patients([7] * 10 + [3]))
    ev = compute_evidence(con, "t", "patient", ["dept"], "value", extremes=False)
    assert ev["patients_at_max"].to_list() == [None]
    (cell,) = check_cells(ev, "max", ACRO, ["dept"]).to_dicts()
    assert cell["outcome"] == "suppress"
    ev = compute_evidence(con, "t", "patient", ["dept"], "value")
    assert check_cells(ev, "max", ACRO, ["dept"])["outcome"].to_list() == ["ok"]


# --- evidence against a plain polars computation, on generated tables ---------------------------
@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.sampled_from("AB"), st.sampled_from("xyz"),
                          st.one_of(st.none(), st.integers(-20, 50))), min_size=1, max_size=40))
def test_evidence_matches_a_plain_polars_computation(data):
    con = duckdb.connect()
    rows = pl.DataFrame(data, schema={"patient": pl.Int64, "dept": pl.String, "dx": pl.String,
                                      "value": pl.Int64}, orient="row").with_columns(
        pl.col("value").cast(pl.Float64))
    create_table_as(con, "t", rows)
    ev = compute_evidence(con, "t", "patient", ["dept"], "value", "dx").sort("dept")
    per_patient = rows.group_by("dept", "patient").agg(
        pl.col("value").abs().sum().alias("contrib"), pl.col("value").min().alias("pmin"),
        pl.col("value").max().alias("pmax"))
    expect = []
    for dept in sorted(rows["dept"].unique()):
        cell = rows.filter(pl.col("dept") == dept)
        pp = per_patient.filter(pl.col("dept") == dept)
        contrib = sorted(pp["contrib"].to_list(), reverse=True)
        vmin, vmax = cell["value"].min(), cell["value"].max()
        modal = cell.drop_nulls("dx").group_by("dx").agg(pl.col("patient").n_unique())
        expect.append({
            "rows": cell.height, "patients": cell["patient"].n_unique(),
            "values": cell["value"].count(),
            "value_patients": cell.drop_nulls("value")["patient"].n_unique(),
            "top1": contrib[0], "top2": sum(contrib[:2]), "abs_total": sum(contrib),
            "negatives": cell.filter(pl.col("value") < 0).height,
            "patients_at_min": 0 if vmin is None else pp.filter(pl.col("pmin") == vmin).height,
            "patients_at_max": 0 if vmax is None else pp.filter(pl.col("pmax") == vmax).height,
            "modal_patients": modal["patient"].max(),
        })
    got = ev.select(list(expect[0])).with_columns(
        pl.col("patients_at_min", "patients_at_max").fill_null(0)).to_dicts()
    assert got == expect
    # bounds alone (a sum or mean's class-disclosure rule): the same sum, min and max, from the
    # statement's second, cell-level read of the relation
    bounds = compute_evidence(con, "t", "patient", ["dept"], "value", "dx", extremes=False,
                              bounds=True).sort("dept")
    plain = rows.group_by("dept").agg(pl.col("value").min().alias("min"),
                                      pl.col("value").max().alias("max")).sort("dept")
    assert bounds.select("min", "max").rows() == plain.select("min", "max").rows()
    assert bounds.select("rows", "patients", "values", "top2").rows() == ev.select(
        "rows", "patients", "values", "top2").rows()
    for b, e in zip(bounds["sum"], ev["sum"], strict=True):  # integers: exact in any order
        assert b == e
    con.close()
