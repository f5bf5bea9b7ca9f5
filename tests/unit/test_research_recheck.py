"""Re-checkable records (issues 5, 15): ``recheck`` re-runs a record in the sandbox, from the record
alone, and fails anything that does not reproduce."""

from __future__ import annotations

import copy
import os
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from enclave.core.settings import DisclosureSettings
from enclave.research import (
    crosstab,
    histogram,
    logit,
    pivot_table,
    recheck,
    record_hash,
    survival,
    workspace,
)
from tests.conftest import researcher_home
from tests.unit.test_research_api import make_release, pid


@pytest.fixture(autouse=True)
def user_home(tmp_path, monkeypatch):
    return researcher_home(tmp_path, monkeypatch)


@pytest.fixture
def ws(tmp_path):
    rng = np.random.default_rng(2)
    n = 300
    df = pl.DataFrame({
        "person_id": [pid(i) for i in range(n)],
        "region": rng.choice(["N", "S", "E", "W"], n), "sex": rng.choice(["F", "M"], n),
        "x": rng.normal(50, 10, n), "z": rng.integers(0, 2, n),
        "days": rng.integers(1, 400, n), "event": rng.integers(0, 2, n)})
    make_release(tmp_path / "home", {"person": df})
    return workspace(tmp_path / "home")


def _rehash(record: dict) -> dict:
    record["record_sha256"] = record_hash(record)
    return record


def test_an_unaltered_record_reproduces_in_another_process(ws):
    t = ws.table("person")
    outs = [crosstab(t.filter(t.x > 40), "region", "sex"),
            pivot_table(t, ["region", "sex"], "x", ["mean", "median", "std", "q90"]),
            histogram(t, "x", 6), logit("z ~ x + sex", t),
            survival(t, "days", "event", group="sex")]
    for out in outs:
        res = recheck(out.record, settings=ws.settings)
        assert res["verified"], (out.kind, res["problems"])
        assert res["status"] == out.record["status"]
        # a separate process re-ran it, in the sandbox: its own PID namespace and uid
        assert res["sandbox"]["pid"] < 10 and res["sandbox"]["uid"] == 65534
        assert res["cells"] == out.record["cells"] or out.kind in ("logit", "survival", "pivot_table")


def test_a_result_altered_after_checking_fails(ws):
    out = pivot_table(ws.table("person"), "region", "x", "mean")
    rec = copy.deepcopy(out.record)
    cell = next(c for c in rec["cells"] if c["value"] is not None)
    cell["value"] = cell["value"] + 0.5
    # re-hashed, so only the recomputation can tell
    res = recheck(_rehash(rec), settings=ws.settings)
    assert not res["verified"] and res["status"] == "fail"
    assert any("recorded value differs from the recomputed one" in p for p in res["problems"])
    # not re-hashed: the record hash gives it away too
    rec2 = copy.deepcopy(out.record)
    rec2["cells"][0]["outcome"] = "pass" if rec2["cells"][0]["outcome"] != "pass" else "fail"
    res2 = recheck(rec2, settings=ws.settings)
    assert res2["status"] == "fail"
    assert any("altered after it was made" in p for p in res2["problems"])


def test_what_is_recorded_is_what_is_checked(ws):
    """The evidence is computed from the recorded SQL: a record whose SQL was swapped for a
    smaller cohort (results kept) no longer reproduces."""
    t = ws.table("person")
    out = crosstab(t, "region", "sex")
    rec = copy.deepcopy(out.record)
    rec["sql"] = rec["sql"] + ' WHERE "x" > 55'
    res = recheck(_rehash(rec), settings=ws.settings)
    assert res["status"] == "fail" and res["problems"]


def test_a_release_hash_mismatch_fails(ws):
    out = crosstab(ws.table("person"), "region", "sex")
    rec = copy.deepcopy(out.record)
    rec["release_sha256"] = "0" * 64
    res = recheck(_rehash(rec), settings=ws.settings)
    assert res["status"] == "fail"
    assert any("database hash does not match the recorded release hash" in p
               for p in res["problems"])
    rec = copy.deepcopy(out.record)
    rec["release"] = "alpha/v9"
    res = recheck(_rehash(rec), settings=ws.settings)
    assert res["status"] == "fail" and any("no release alpha/v9" in p for p in res["problems"])


def test_an_altered_release_file_fails(ws):
    out = crosstab(ws.table("person"), "region", "sex")
    db = ws.current().database
    ws.close()
    os.chmod(db, 0o640)
    with open(db, "ab") as fh:
        fh.write(b"\0")
    res = recheck(out.record, settings=ws.settings)
    assert res["status"] == "fail"
    assert any("differs from its manifest" in p for p in res["problems"])


def test_a_policy_mismatch_fails(ws):
    out = crosstab(ws.table("person"), "region", "sex")
    other = replace(ws.settings, disclosure=DisclosureSettings(preset="opensafely"))
    res = recheck(out.record, settings=other)
    assert res["status"] == "fail"
    assert any("another policy than the one in force" in p for p in res["problems"])
    rec = copy.deepcopy(out.record)
    rec["policy"]["min_patients"] = 3  # claims a laxer policy under the same hash
    res = recheck(_rehash(rec), settings=ws.settings)
    assert any("recorded policy does not match the recorded policy hash" in p
               for p in res["problems"])


def test_garbage_input_fails_closed(ws):
    res = recheck({"kind": "crosstab", "release": "alpha/v1"}, settings=ws.settings)
    assert res["verified"] is False and res["status"] == "fail"
