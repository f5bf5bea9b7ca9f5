"""Differencing attacks on the real airlock service (issue 17): across projects, and by rows.

Two projects draw releases from one store; their pseudonyms differ, so only the airlock's ledger
(keyed by store identity through each release's identity map) can see that two of their outputs
describe nested sets of the same patients. Each researcher makes outputs with the real research
API in their own home (their own local ledger), and submits them to ``enclave airlock serve``.
"""

from __future__ import annotations

import itertools
import json
import os

import pytest

from enclave.core.settings import load_settings
from enclave.io.airlock.checks import store_ledger_path
from enclave.io.release.identity import identity_map_path
from tests.airlock_support import Service, token_of
from tests.enclave_cli import run_enclave

A, B, STEWARDS = "ada", "ben", ("sam", "sue")


def enclave(home, *args):
    return run_enclave(home, *args)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store, projects alpha (ada) and beta (ben) on it, a release each, the airlock."""
    root = tmp_path_factory.mktemp("xproject")
    home = root / "home"
    enclave(home, "up", "--patients", "1000", "--hospitals", "2", "--seed", "3", "--data-only")
    for pid, pi in (("alpha", A), ("beta", B)):
        enclave(home, "project", "create", "--id", pid, "--title", "T", "--purpose", "P", "--pi",
                pi, "--tier", "desensitized", "--sharing", "enclave", "--expires", "2099-12-31",
                "--table", "person", "--table", "condition_occurrence")
    for s in STEWARDS:
        enclave(home, "airlock", "role", "add", s, "steward")
    for pid in ("alpha", "beta"):
        enclave(home, "project", "approve", pid, "--as", STEWARDS[0])
        enclave(home, "project", "activate", pid)
        enclave(home, "release", "build", "--project", pid)
    tokens = root / "tokens.json"
    tokens.write_text(json.dumps({token_of(u): u for u in (A, B, *STEWARDS)}))
    os.chmod(tokens, 0o600)
    service = Service(home, tokens).start()
    yield {"home": home, "root": root, "svc": service}
    service.stop()


def as_user(root, user, monkeypatch):
    """The researcher's own home (their local ledger lives under it)."""
    h = root / f"user-{user}"
    h.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("ENCLAVE_HOME", raising=False)


def cohort(home, project, concept, region=None):
    from enclave.research import workspace

    ws = workspace(home, project=project)
    co, person = ws.table("condition_occurrence"), ws.table("person")
    ids = co.filter(co.condition_concept_id == concept).select("person_id").distinct()
    t = person.semi_join(ids, "person_id")
    return t.filter(t.region != region) if region is not None else t


def pick(home):
    """A condition and a region holding 1–9 of its patients (beta's view; both releases keep the
    same patients)."""
    from enclave.research import workspace

    co = workspace(home, project="beta").table("condition_occurrence")
    top = co.group_by("condition_concept_id").agg(n=co.person_id.nunique()).order_by(
        co.person_id.nunique().desc()).limit(8).execute()
    for concept in top["condition_concept_id"]:
        t = cohort(home, "beta", int(concept))
        per = t.group_by("region").agg(n=t.count()).execute()
        small = per[(per["n"] >= 1) & (per["n"] <= 9)].sort_values("n")
        if len(small):
            return int(concept), str(small["region"].iloc[0]), int(small["n"].iloc[0])
    pytest.fail("no condition with a small region in the demo store")


def submit(svc, user, out):
    code, req = svc.submit(user, {"record": out.record, "files": out.files()})
    assert code == 201, req
    return req


def test_cross_project_differencing_is_flagged_to_the_stewards_only(store, monkeypatch):
    from enclave.research import pivot_table

    home, svc = store["home"], store["svc"]
    settings = load_settings(home)
    # each release has an identity map in the airlock's folder, none readable by others
    for pid in ("alpha", "beta"):
        path = identity_map_path(settings, f"{pid}/v1")
        assert path.is_file() and oct(path.stat().st_mode & 0o077) == "0o0"
    concept, region, removed = pick(home)

    as_user(store["root"], A, monkeypatch)
    first = pivot_table(cohort(home, "alpha", concept), "sex", aggfunc="patients")
    assert first.status == "pass", first.reasons
    req_a = submit(svc, A, first)
    assert req_a["checks"]["ok"] and req_a["checks"]["ledger_hits"] == []

    as_user(store["root"], B, monkeypatch)
    second = pivot_table(cohort(home, "beta", concept, region), "sex", aggfunc="patients")
    # alone, and against ben's own (empty) history, it is a clean pass
    assert second.status == "pass" and second.ledger_hits == [], second.reasons
    req_b = submit(svc, B, second)
    rid = req_b["request_id"]

    # the stewards see the hit, naming both outputs and the other project
    code, seen = svc.call(STEWARDS[0], "GET", f"api/requests/{rid}")
    assert code == 200
    hits = seen["checks"]["ledger_hits"]
    assert hits, seen["checks"]
    assert {h["earlier_output"] for h in hits} == {first.output_id}
    assert {h["earlier_project"] for h in hits} == {"alpha"}
    nested = [h for h in hits if h["kind"] == "nested populations"]
    assert nested and nested[0]["difference"] == removed
    assert "alpha" in nested[0]["message"] and first.output_id in nested[0]["message"]
    # two stewards must decide
    assert req_b["required"] == 2 and seen["status"] == "in_review"

    # the researcher learns that a risk exists, not which project or output is behind it
    code, mine = svc.call(B, "GET", f"api/requests/{rid}")
    assert code == 200
    assert mine["checks"]["ledger_hits"] and all(
        h["kind"] == "differencing" and "stewards" in h["message"]
        for h in mine["checks"]["ledger_hits"])
    text = json.dumps(mine)
    assert "alpha" not in text and first.output_id not in text
    assert req_a["request_id"] not in text

    # the ledger holds both outputs under one scope, keyed by token, with their projects
    import duckdb

    con = duckdb.connect(str(store_ledger_path(settings)), read_only=True)
    try:
        rows = con.execute("SELECT output_id, project, scope FROM outputs ORDER BY created_at"
                           ).fetchall()
    finally:
        con.close()
    assert {(o, p) for o, p, _ in rows} >= {(first.output_id, "alpha"),
                                           (second.output_id, "beta")}
    assert {s for *_, s in rows} == {"store"}


def test_two_histograms_a_hair_apart_are_a_row_difference(store, monkeypatch):
    """Edges [lo, hi] and [lo, hi − δ]: the same patients, one row fewer. Patient sets do not
    differ, the row multisets do: flagged in the researcher's own ledger and at the airlock."""
    from enclave.research import histogram, workspace

    home, svc = store["home"], store["svc"]
    as_user(store["root"], A, monkeypatch)
    ws = workspace(home, project="alpha")
    co = ws.table("condition_occurrence")
    # patients with several conditions (so that dropping their latest row keeps them), by date
    many = co.group_by("person_id").agg(n=co.count())
    co = co.semi_join(many.filter(many.n >= 3).select("person_id"), "person_id")
    t = co.mutate(day=(co.condition_start_date.epoch_seconds() / 86400).cast("float64"))
    days = t.select("person_id", "day").execute()
    top = float(days["day"].max())
    # a cut below the largest values such that the rows above it (1 to 9) belong to patients
    # who keep other rows below it: the patient sets stay equal, the row counts do not
    values = sorted(days["day"].unique(), reverse=True)
    for upper, lower in itertools.pairwise(values):
        gone = days[days["day"] > lower]
        kept = set(days[days["day"] <= lower]["person_id"])
        if len(gone) >= 10:
            pytest.fail("no cut removes fewer than 10 rows")
        if set(gone["person_id"]) <= kept:
            cut = (upper + lower) / 2
            break
    else:
        pytest.fail("no cut keeps the patient set")
    wide = histogram(t, "day", [0.0, top])
    narrow = histogram(t, "day", [0.0, cut])
    hits = [h for h in narrow.ledger_hits if h["kind"] == "row difference"]
    assert hits and {h["earlier_output"] for h in hits} == {wide.output_id}
    assert {h["difference"] for h in hits} == {len(gone)}
    assert not [h for h in narrow.ledger_hits if h["unit"] == "patients"]
    assert narrow.status == "review"
    req_wide = submit(svc, A, wide)
    assert req_wide["checks"]["ok"], req_wide["checks"]
    req = submit(svc, A, narrow)
    assert req["required"] == 2
    assert any(h["kind"] == "row difference" and h["earlier_output"] == wide.output_id
               for h in req["checks"]["ledger_hits"]), req["checks"]
