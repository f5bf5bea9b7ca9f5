"""Issue 17: class disclosure through a statistic, in the kernel and in the airlock.

The attacker holds a release with a 0/1 column (``has_condition``) and asks for its mean per
group with ``pivot_table``. In group ``none`` nobody has the condition, in group ``all`` everybody
has it: the published means 0.0 and 1.0 say so for every patient of the group, although each
group has 20 patients and passes every threshold. The same data as a crosstab was already
flagged (a row in one column); the mean must be flagged too — ``review`` under the default
preset, suppressed (no value in the result or the record) under ``strict`` — and the airlock's
own sandboxed re-run of the record (:func:`enclave.io.airlock.checks.run_checks`) must reproduce the
verdict, also when the attacker forges the record to claim ``pass``. The same holds for a min
equal to the max (every patient's value) and a median equal to the minimum.
"""

from __future__ import annotations

import copy
import json

import polars as pl
import pytest

from enclave.core.settings import load_settings
from enclave.io.airlock.checks import run_checks
from enclave.io.airlock.workflow import CheckStatus
from enclave.research import crosstab, pivot_table, record_hash, workspace
from tests.unit.test_research_api import make_release, pid

GROUP = 20  # patients per group: every count threshold passes
SHARED_SCORE = 4.25  # every patient of group none has it
MEDIAN_AT_MIN = 2.75  # 12 of the 20 patients of group all have it, the others more


def _cohort() -> pl.DataFrame:
    groups = ["none"] * GROUP + ["all"] * GROUP + ["mixed"] * GROUP
    has = [0] * GROUP + [1] * GROUP + [i % 2 for i in range(GROUP)]
    score = ([SHARED_SCORE] * GROUP + [MEDIAN_AT_MIN] * 12 + [3.0 + i for i in range(8)]
             + [1.5 + 0.5 * i for i in range(GROUP)])
    return pl.DataFrame({"person_id": [pid(i) for i in range(3 * GROUP)], "group": groups,
                         "has_condition": has, "score": score})


def _home(tmp_path_factory, name: str, preset: str | None):
    home = tmp_path_factory.mktemp(name) / "home"
    make_release(home, {"cohort": _cohort()})
    if preset:
        (home / "settings.toml").write_text(f'[disclosure]\npreset = "{preset}"\n')
    return workspace(home), load_settings(home)


@pytest.fixture(scope="module")
def default(tmp_path_factory, user_home):
    return _home(tmp_path_factory, "class-acro", None)


@pytest.fixture(scope="module")
def strict(tmp_path_factory, user_home):
    return _home(tmp_path_factory, "class-strict", "strict")


def _cell(cells: list[dict], group: str, statistic: str) -> dict:
    (hit,) = [c for c in cells if c["cell"] == {"group": group} and c["statistic"] == statistic]
    return hit


def _class(cell: dict) -> bool:
    return any("class disclosure" in r for r in cell["reasons"])


def _airlock(record: dict, settings, *, verified: bool, status: CheckStatus) -> list[dict]:
    outcome = run_checks(record, settings)
    assert outcome.ok is verified, outcome.problems
    assert outcome.status is status
    assert outcome.detail["sandbox"]["uid"] == 65534  # the re-run ran in the sandbox
    return outcome.detail["cells"]


def test_a_mean_of_nobody_or_everybody_is_flagged_in_the_kernel_and_the_airlock(default):
    ws, settings = default
    out = pivot_table(ws.table("cohort"), "group", "has_condition", "mean")
    none, every, mixed = (_cell(out.record["cells"], g, "mean") for g in ("none", "all", "mixed"))
    for cell, value in ((none, 0.0), (every, 1.0)):
        assert cell["outcome"] == "review" and cell["value"] == value
        assert cell["reasons"] == [
            (f"all {GROUP} patients with a value in the cell have the same value (its minimum "
            "equals its maximum), which the mean reveals: class disclosure")]
    assert mixed["outcome"] == "pass" and not _class(mixed)
    assert out.status == "review" and out.record["status"] == "review"
    # the airlock's own re-run reproduces the flag
    cells = _airlock(out.record, settings, verified=True, status=CheckStatus.REVIEW)
    assert _cell(cells, "none", "mean")["outcome"] == "review"
    assert _class(_cell(cells, "none", "mean")) and _class(_cell(cells, "all", "mean"))
    assert _cell(cells, "mixed", "mean")["outcome"] == "pass"
    # the attacker's rewrite to pass, re-hashed with the public function, does not reproduce
    forged = copy.deepcopy(out.record)
    for c in forged["cells"]:
        c["outcome"], c["reasons"] = "pass", []
    forged["status"], forged["reasons"] = "pass", []
    forged["record_sha256"] = record_hash(forged)
    _airlock(forged, settings, verified=False, status=CheckStatus.FAIL)


def test_the_same_data_as_a_crosstab_is_flagged_too(default):
    ws, _ = default
    out = crosstab(ws.table("cohort"), "group", "has_condition")
    cells = {(c["cell"]["group"], c["cell"]["has_condition"]): c for c in out.record["cells"]}
    assert _class(cells[("none", 0)]) and _class(cells[("all", 1)])
    assert cells[("none", 0)]["outcome"] in ("review", "fail")
    assert not _class(cells[("mixed", 0)])


def test_min_equal_to_max_and_a_median_at_the_minimum_are_flagged(default):
    ws, settings = default
    out = pivot_table(ws.table("cohort"), "group", "score", ["min", "max", "median", "mean"])
    cells = out.record["cells"]
    for stat in ("min", "max", "mean"):  # group none: every patient's score is the same
        cell = _cell(cells, "none", stat)
        assert cell["outcome"] == "review" and _class(cell), stat
        assert f"which the {stat} reveals" in cell["reasons"][-1]
    median = _cell(cells, "all", "median")  # 12 of 20 at the minimum
    assert median["outcome"] == "review" and median["value"] == MEDIAN_AT_MIN
    assert median["reasons"] == [
        (f"the median equals the cell's minimum (over {GROUP} rows): it publishes the value that "
        "every row at or below the median shares; class disclosure")]
    assert _cell(cells, "mixed", "median")["outcome"] == "pass"
    # reasons name statistics and counts, never a value
    blob = json.dumps([c["reasons"] for c in cells] + out.record["reasons"])
    assert str(SHARED_SCORE) not in blob and str(MEDIAN_AT_MIN) not in blob
    # (the output fails as a whole: group mixed's min and group all's max are one patient's)
    assert out.status == "fail" and _cell(cells, "all", "max")["outcome"] == "fail"
    rerun = _airlock(out.record, settings, verified=True, status=CheckStatus.FAIL)
    assert _class(_cell(rerun, "none", "min")) and _class(_cell(rerun, "all", "median"))


def test_strict_suppresses_the_value_and_the_airlock_agrees(strict):
    ws, settings = strict
    out = pivot_table(ws.table("cohort"), "group", "has_condition", "mean")
    assert out.record["policy"]["name"] == "strict"
    assert out.record["policy"]["class_disclosure_fails"] is True
    for group in ("none", "all"):
        cell = _cell(out.record["cells"], group, "mean")
        assert cell["outcome"] == "fail" and cell["value"] is None and _class(cell)
        assert out.result.filter(pl.col("group") == group)["mean"].item() is None
    assert _cell(out.record["cells"], "mixed", "mean")["value"] == 0.5
    assert out.status == "fail"
    cells = _airlock(out.record, settings, verified=True, status=CheckStatus.FAIL)
    for group in ("none", "all"):
        cell = _cell(cells, group, "mean")
        assert cell["outcome"] == "fail" and cell["value"] is None and _class(cell)
    # the median at the minimum and the min = max are withheld as well
    out = pivot_table(ws.table("cohort"), "group", "score", ["min", "median"])
    assert _cell(out.record["cells"], "none", "min")["value"] is None
    assert _cell(out.record["cells"], "all", "median")["value"] is None
    assert out.result.filter(pl.col("group") == "all")["median"].item() is None
