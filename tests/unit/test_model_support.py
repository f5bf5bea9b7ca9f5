"""Model support and class disclosure (issue 17, parts 3 and 4) on a small real release.

Every column and factor level of a model's design matrix needs ``min_patients`` (10 here, the
``acro`` preset) distinct patients, else the whole model fails with a reason that names the term;
a level whose patients all share one outcome, and a survival step where everyone at risk has the
event, go to review (class disclosure).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import polars as pl
import pytest

from enclave.io.outputs.evaluation import evaluate
from enclave.logic.disclosure import ACRO, DisclosurePolicy
from enclave.research import logit, ols, recheck, survival, workspace
from tests.conftest import researcher_home
from tests.unit.test_research_api import make_release, pid

N = 200


@pytest.fixture(autouse=True)
def user_home(tmp_path, monkeypatch):
    return researcher_home(tmp_path, monkeypatch, "ENCLAVE_HOME")


def _flag(n: int, ones: list[int]) -> list[int]:
    return [1 if i in ones else 0 for i in range(n)]


@pytest.fixture
def ws(tmp_path):
    rng = np.random.default_rng(17)
    spike = np.zeros(N)
    spike[[5, 50, 150]] = [1.5, 2.5, 3.5]  # 0 except for three patients
    a = np.arange(N) % 2
    b = (np.arange(N) // 2) % 2
    b[(a == 1) & (b == 1)] = 0
    b[[1, 3, 5, 7]] = 1  # a = b = 1 for four patients only
    cohort = pl.DataFrame({
        "person_id": [pid(i) for i in range(N)],
        "value": rng.normal(50, 10, N), "x": rng.normal(0, 1, N),
        "victim": _flag(N, [7]), "b9": _flag(N, list(range(9))),
        "b10": _flag(N, list(range(10))), "a": a, "b": b, "spike": spike,
        "c": _flag(N, list(range(53))), "d": _flag(N, list(range(3, 120))),
        "region_s": ["A"] * 100 + ["B"] * 95 + ["C"] * 5,  # small non-reference level
        "region_r": ["A"] * 5 + ["B"] * 100 + ["C"] * 95,  # small reference level
        "sex": ["F"] * 60 + ["M"] * (N - 60),
        # every F has z = 1; among M, z depends on x only
        "z": [1] * 60 + [int(v) for v in rng.integers(0, 2, N - 60)],
    })
    # survival: 15 patients die in (0, 10], the 15 still at risk all die in (10, 20]
    surv = pl.DataFrame({"person_id": [pid(1000 + i) for i in range(30)],
                         "days": [3 + i % 7 for i in range(15)] + [12 + i % 8 for i in range(15)],
                         "event": [1] * 30})
    make_release(tmp_path / "home", {"cohort": cohort, "surv": surv})
    return workspace(tmp_path / "home")


def _reasons(out) -> list[str]:
    return sorted({r for c in out.record["cells"] for r in c["reasons"]})


def _failed(out) -> bool:
    cells = out.record["cells"]
    return (out.status == "fail" and all(c["outcome"] == "fail" and c["value"] is None
                                         for c in cells)
            and out.result["coef"].null_count() == out.result.height)


def test_a_binary_regressor_with_one_patient_at_a_level_fails_naming_the_term(ws):
    out = ols("value ~ victim + x", ws.table("cohort"))
    assert _failed(out)
    assert "term victim: 1 patient(s) at victim=1; at least 10 are needed at each of its values" \
        in _reasons(out)


def test_nine_patients_fail_and_ten_pass(ws):
    t = ws.table("cohort")
    nine = ols("value ~ b9", t)
    assert _failed(nine)
    assert any(r.startswith("term b9: 9 patient(s) at b9=1") for r in _reasons(nine))
    ten = ols("value ~ b10", t)
    assert ten.status == "pass", ten.reasons
    assert ten.result["coef"].null_count() == 0


def test_a_small_non_reference_level_of_a_factor_fails(ws):
    out = ols("value ~ C(region_s)", ws.table("cohort"))
    assert _failed(out)
    assert ("term C(region_s): 5 patient(s) where C(region_s)[T.C]=1 and its other columns 0; "
            "at least 10 are needed in each of its cells") in _reasons(out)


def test_a_small_reference_level_of_a_factor_fails(ws):
    out = ols("value ~ C(region_r) + x", ws.table("cohort"))
    assert _failed(out)
    assert any(r.startswith("term C(region_r): 5 patient(s) at its reference level (rows where "
                            "C(region_r)[T.B], C(region_r)[T.C] are all 0)")
               for r in _reasons(out))


def test_an_interaction_with_few_patients_fails(ws):
    t = ws.table("cohort")
    out = ols("value ~ a * b", t)
    assert _failed(out)
    assert any(r.startswith("term a:b: 4 patient(s) where a=1, b=1, a:b=1;")
               for r in _reasons(out))
    alone = ols("value ~ a:b", t)  # the product column alone
    assert _failed(alone)
    assert any(r.startswith("term a:b: 4 patient(s) at a:b=1;") for r in _reasons(alone))


def test_a_small_cell_of_a_saturated_interaction_fails_though_every_column_passes(ws):
    """In ``c * d`` the cell c=1, d=0 (3 patients) is ``Intercept + c``, though c=1 has 53
    patients, d=0 and c:d=0 far more."""
    out = ols("value ~ c * d", ws.table("cohort"))
    assert _failed(out)
    assert ("term c:d: 3 patient(s) where c=1 and its other columns 0; at least 10 are needed "
            "in each of its cells") in _reasons(out)
    assert ols("value ~ c + d", ws.table("cohort")).status == "pass"  # no cell means


def test_a_column_that_is_zero_except_for_three_patients_fails(ws):
    out = ols("value ~ spike", ws.table("cohort"))
    assert _failed(out)
    assert ("term spike: 3 patient(s) have a value other than its most common one; at least 10 "
            "are needed (the fit could isolate them)") in _reasons(out)
    assert "1.5" not in str(out.record) and "3.5" not in str(out.record)


def test_an_ordinary_continuous_regressor_passes(ws):
    out = ols("value ~ x + I(x ** 2) + C(sex)", ws.table("cohort"))
    assert out.status == "pass", out.reasons
    assert all(c["outcome"] == "pass" and c["value"] is not None for c in out.record["cells"])


def test_a_perfectly_separated_level_in_a_logit_goes_to_review(ws):
    out = logit("z ~ sex + x", ws.table("cohort"))
    assert out.status == "review"
    assert all(c["outcome"] == "review" and c["value"] is not None for c in out.record["cells"])
    assert "every patient at sex[T.M]=0 has the same z value: class disclosure" in _reasons(out)


def test_a_separating_continuous_regressor_in_a_logit_goes_to_review(ws):
    t = ws.table("cohort")
    out = logit("b10 ~ I(-b10 + 0.001 * x)", t)  # a threshold on the column splits b10
    assert out.status == "review", out.reasons
    assert any("splits the b10 values" in r for r in _reasons(out))


def test_survival_where_everyone_at_risk_dies_at_a_step_goes_to_review(ws):
    out = survival(ws.table("surv"), "days", "event", interval=10)
    cells = {c["cell"]["time"]: c for c in out.record["cells"]}
    assert cells[10.0]["outcome"] == "pass"
    last = cells[20.0]
    assert last["outcome"] == "review" and last["value"] == 0.0
    assert last["reasons"] == [("every patient at risk has the event in this interval "
                                "(survival drops to 0): class disclosure")]
    assert out.status == "review"


def test_the_sandboxed_recheck_reproduces_every_verdict(ws):
    """The airlock's re-run (another process, in the sandbox) gives the same cells: fail on
    support, review on class disclosure."""
    t = ws.table("cohort")
    for out in (ols("value ~ C(region_r) + x", t), ols("value ~ c * d", t),
                logit("z ~ sex + x", t), survival(ws.table("surv"), "days", "event", interval=10)):
        res = recheck(out.record, settings=ws.settings)
        assert res["verified"], res["problems"]
        assert res["status"] == out.status and res["cells"] == out.record["cells"]


def _policy_with(**changes) -> DisclosurePolicy:
    if all(name in {f.name for f in fields(DisclosurePolicy)} for name in changes):
        return replace(ACRO, **changes)

    @dataclass(frozen=True, slots=True)
    class Strict(DisclosurePolicy):  # until the policy has the field itself
        class_disclosure_fails: bool = False

    return Strict(**{f.name: getattr(ACRO, f.name) for f in fields(DisclosurePolicy)}, **changes)


def _again(ws, out, policy):
    """The output re-evaluated from its record under another policy."""
    rec = out.record
    return evaluate(ws.backend().con, rec["sql"], rec["spec"], policy)


def test_the_policy_switches_class_flags_off_or_makes_them_fail(ws):
    lg = logit("z ~ sex + x", ws.table("cohort"))
    km = survival(ws.table("surv"), "days", "event", interval=10)
    off = replace(ACRO, class_disclosure=False)
    for out in (lg, km):
        ev = _again(ws, out, off)
        assert ev.status == "pass"
        assert not any("class disclosure" in r for c in ev.cells for r in c["reasons"])
    strict = _policy_with(class_disclosure_fails=True)
    ev = _again(ws, lg, strict)
    assert ev.status == "fail" and all(c["value"] is None for c in ev.cells)
    assert ev.result["coef"].null_count() == ev.result.height
    ev = _again(ws, km, strict)
    assert {c["cell"]["time"]: c["outcome"] for c in ev.cells} == {10.0: "pass", 20.0: "fail"}
    assert ev.result["time"].to_list() == [10.0]
    # support failures do not depend on the class flag
    assert _again(ws, ols("value ~ victim", ws.table("cohort")), off).status == "fail"
