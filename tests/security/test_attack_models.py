"""Issue 17: isolating one patient (or a few) with a regression, in the kernel and in the airlock.

The attacker holds a release where a column singles out one patient (``victim`` 1 for them, 0 for
everyone else) and fits ``value ~ victim``: ``Intercept + victim`` would be that patient's mean.
Likewise ``value ~ C(region)`` with a reference region of three patients publishes their mean as
the intercept. Both must fail in the researcher's kernel with no coefficient left in the record,
and the airlock's own sandboxed re-run of the record (:func:`enclave.io.airlock.checks.run_checks`)
must come to the same verdict — also when the attacker forges the record to claim ``pass`` with
the values filled back in.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import polars as pl
import pytest

from enclave.core.settings import load_settings
from enclave.io.airlock.checks import run_checks
from enclave.io.airlock.workflow import CheckStatus
from enclave.research import ols, record_hash, workspace
from tests.unit.test_research_api import make_release, pid

N = 120
VICTIM = 7
VICTIM_VALUE = 87.654321  # nobody else comes near it
REF_VALUES = [71.13579, 72.24681, 73.97531]  # the three patients of reference region A


@pytest.fixture(scope="module")
def attack(tmp_path_factory, user_home):
    rng = np.random.default_rng(23)
    value = rng.normal(40, 5, N)
    value[VICTIM] = VICTIM_VALUE
    value[:3] = REF_VALUES
    df = pl.DataFrame({"person_id": [pid(i) for i in range(N)], "value": value,
                       "victim": [int(i == VICTIM) for i in range(N)],
                       "region": ["A"] * 3 + ["B"] * 60 + ["C"] * (N - 63)})
    home = tmp_path_factory.mktemp("models") / "home"
    make_release(home, {"cohort": df})
    return workspace(home), load_settings(home)


def _secrets() -> list[str]:
    """Every way the isolated means could be written (full precision and rounded)."""
    ref = float(np.mean(REF_VALUES))
    out = []
    for v in (VICTIM_VALUE, ref):
        out += [repr(v), f"{v:.6f}", f"{v:.4f}", f"{v:.2f}"]
    return out


def _leaks(blob: str) -> list[str]:
    return [s for s in _secrets() if s in blob] + (["a pseudonym"] if "pz0" in blob else [])


def _recoverable(cells: list[dict]) -> bool:
    """Whether a published number, or the sum of two (``Intercept + victim``), is a secret."""
    nums = [v for c in cells for v in [c["value"], *c["extra"].values()]
            if isinstance(v, (int, float))]
    sums = nums + [a + b for i, a in enumerate(nums) for b in nums[i + 1:]]
    return any(abs(s - v) < 1e-6 for s in sums for v in (VICTIM_VALUE, float(np.mean(REF_VALUES))))


def _assert_refused(out, term: str, patients: int) -> None:
    rec = out.record
    assert out.status == "fail" and rec["status"] == "fail"
    assert rec["cells"] and all(c["outcome"] == "fail" and c["value"] is None and
                                c["extra"] == {} for c in rec["cells"])
    for col in ("coef", "std_err", "p_value", "ci_low", "ci_high"):
        assert out.result[col].null_count() == out.result.height
    assert any(f"term {term}: {patients} patient(s)" in r for r in rec["reasons"])
    assert _leaks(json.dumps(rec)) == [] and not _recoverable(rec["cells"])


def _assert_airlock_refuses(record: dict, settings, *, verified: bool) -> None:
    outcome = run_checks(record, settings)
    assert outcome.ok is verified, outcome.problems
    assert outcome.status is CheckStatus.FAIL
    assert outcome.detail["sandbox"]["uid"] == 65534  # the re-run ran in the sandbox
    cells = outcome.detail["cells"]
    assert cells and all(c["outcome"] == "fail" and c["value"] is None for c in cells)
    assert _leaks(json.dumps(outcome.as_dict(), default=str)) == []
    assert not _recoverable(cells)


def _forged_as_pass(record: dict) -> dict:
    """The attacker's rewrite: every cell passed with the true coefficient, re-hashed with the
    public function (the hash protects nothing against its own author)."""
    rec = copy.deepcopy(record)
    for c in rec["cells"]:
        c["outcome"], c["value"], c["reasons"] = "pass", VICTIM_VALUE, []
    rec["status"], rec["reasons"] = "pass", []
    rec["record_sha256"] = record_hash(rec)
    return rec


def test_a_one_patient_dummy_is_refused_in_the_kernel_and_in_the_airlock(attack):
    ws, settings = attack
    out = ols("value ~ victim", ws.table("cohort"))
    _assert_refused(out, "victim", 1)
    _assert_airlock_refuses(out.record, settings, verified=True)
    _assert_airlock_refuses(_forged_as_pass(out.record), settings, verified=False)


def test_a_one_patient_dummy_hidden_among_other_terms_is_refused(attack):
    ws, _ = attack
    for formula in ("value ~ I(1 - victim)", "value ~ victim + C(region, Treatment('B'))",
                    "value ~ I(victim * 3) + victim:C(region, Treatment('B'))"):
        out = ols(formula, ws.table("cohort"))
        assert out.status == "fail", formula
        assert _leaks(json.dumps(out.record)) == [] and not _recoverable(out.record["cells"])


def test_a_three_patient_reference_region_is_refused_in_the_kernel_and_in_the_airlock(attack):
    ws, settings = attack
    out = ols("value ~ C(region)", ws.table("cohort"))
    _assert_refused(out, "C(region)", 3)
    assert any("reference level" in r for r in out.record["reasons"])
    _assert_airlock_refuses(out.record, settings, verified=True)
    _assert_airlock_refuses(_forged_as_pass(out.record), settings, verified=False)
