"""The export workflow: its tables, its decision rules, and a state-machine property test that
drives the real Airlock (SQLite, audit, outbox) with random actors and actions."""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from enclave.core.audit import events, verify_connection
from enclave.core.errors import EnclaveError, InvalidTransitionError
from enclave.core.settings import load_settings
from enclave.io.airlock import store
from enclave.io.airlock.docs import generated, render
from enclave.io.airlock.outbox import outbox_dir
from enclave.io.airlock.workflow import (
    ACTORS,
    AUDIT_ACTIONS,
    FINAL,
    OWNERS,
    TRANSITIONS,
    Action,
    CheckStatus,
    RequestStatus,
    Vote,
    decide,
    next_status,
    required_approvals,
)
from tests.airlock_support import (
    ADMIN,
    FILES,
    MEMBER,
    OUTSIDER,
    POLICYMAKER,
    REQUESTER,
    STEWARD_MEMBER,
    STEWARDS,
    make_airlock,
    record,
)
from tests.conftest import REPO


def test_every_state_has_an_owner_and_every_action_an_actor_and_an_audit_event():
    assert set(OWNERS) == set(RequestStatus)
    assert set(ACTORS) == set(Action) and set(AUDIT_ACTIONS) == set(Action)
    reachable = {to for to in TRANSITIONS.values()}
    assert reachable == set(RequestStatus)  # no dead state


def test_final_states_have_no_way_out():
    assert FINAL == {RequestStatus.REJECTED, RequestStatus.WITHDRAWN, RequestStatus.REVOKED}
    for state in FINAL:
        for action in Action:
            with pytest.raises(InvalidTransitionError, match="it is final"):
                next_status(state, action)


def test_released_outputs_can_only_be_revoked():
    assert [a for (s, a) in TRANSITIONS if s is RequestStatus.RELEASED] == [Action.REVOKE]


def test_required_approvals():
    kw = {"approvals_pass": 1, "approvals_review": 2}
    assert required_approvals(CheckStatus.PASS, 0, **kw) == 1
    assert required_approvals(CheckStatus.PASS, 1, **kw) == 2  # a ledger hit needs two
    assert required_approvals(CheckStatus.REVIEW, 0, **kw) == 2
    assert required_approvals(CheckStatus.FAIL, 0, **kw) == 2
    assert required_approvals(CheckStatus.FAIL, 0, approvals_pass=3, approvals_review=2) == 3


def test_decisions_wait_for_every_required_vote():
    A, C, R = Vote.APPROVE, Vote.REQUEST_CHANGES, Vote.REJECT
    assert decide([A], 2) is None and decide([R], 2) is None  # blind: nothing before the 2nd
    assert decide([A, A], 2) is Action.DECIDE_APPROVE
    assert decide([A, C], 2) is Action.DECIDE_CHANGES
    assert decide([C, R], 2) is Action.DECIDE_REJECT
    assert decide([A], 1) is Action.DECIDE_APPROVE


def test_docs_hold_the_generated_diagram():
    doc = (REPO / "docs" / "airlock.md").read_text(encoding="utf-8")
    assert generated() in doc
    assert render(doc) == doc, "docs/airlock.md is stale: python -m enclave.io.airlock.docs docs/airlock.md"
    assert "stateDiagram-v2" in doc


# --- the property test ---------------------------------------------------------------------

ACTORS_ALL = (REQUESTER, MEMBER, STEWARD_MEMBER, *STEWARDS, POLICYMAKER, ADMIN, OUTSIDER)
actors = st.sampled_from(ACTORS_ALL)
# biased towards the actors and choices that move a request forward, so that long paths
# (two approvals, release, revoke, resubmission) are explored, not only early refusals
voters = st.one_of(st.sampled_from((*STEWARDS, STEWARD_MEMBER)), actors)
requesters = st.one_of(st.just(REQUESTER), actors)
votes_ = st.sampled_from([Vote.APPROVE] * 4 + [Vote.REQUEST_CHANGES, Vote.REJECT])
oks = st.sampled_from([True, True, True, False])
reasons = st.sampled_from(["", "  ", "cell 3 is below 10", "cell 3 is below 10"])


class ExportMachine(RuleBasedStateMachine):
    """Random actors do random things to a few requests; the invariants must hold after each."""

    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="airlock-sm-"))
        self.settings = load_settings(self.tmp / "home")
        self.airlock = make_airlock(self.settings)
        self.ids: list[str] = []
        self.finals: dict[str, str] = {}

    def teardown(self):
        self.airlock.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _try(self, fn, *args):
        try:
            fn(*args)
        except EnclaveError:
            pass  # refusals are expected; the invariants say whether anything slipped through

    @rule(user=requesters, check=st.sampled_from(list(CheckStatus)), ok=oks,
          hits=st.integers(0, 2))
    def submit(self, user, check, ok, hits):
        try:
            out = self.airlock.submit(user, record(check.value, ok, hits), FILES, "for a paper")
        except EnclaveError:
            return
        self.ids.append(out["id"])

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), user=voters, vote=votes_, reason=reasons)
    def vote(self, data, user, vote, reason):
        open_ = [r["id"] for r in store.list_requests(self.airlock.con, status="in_review")]
        rid = data.draw(st.sampled_from(open_ or self.ids))
        self._try(self.airlock.vote, user, rid, vote.value, reason)

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), user=actors)
    def withdraw(self, data, user):
        self._try(self.airlock.withdraw, user, data.draw(st.sampled_from(self.ids)))

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), user=requesters, check=st.sampled_from(list(CheckStatus)))
    def resubmit(self, data, user, check):
        rid = data.draw(st.sampled_from(self.ids))
        self._try(self.airlock.resubmit, user, rid, record(check.value), FILES, "fixed")

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), user=voters, reason=reasons)
    def revoke(self, data, user, reason):
        self._try(self.airlock.revoke, user, data.draw(st.sampled_from(self.ids)), reason)

    @invariant()
    def nothing_leaves_without_its_approvals(self):
        con = self.airlock.con
        for req in store.list_requests(con):
            if req["status"] in (RequestStatus.APPROVED, RequestStatus.RELEASED,
                                 RequestStatus.REVOKED):
                checks = req["checks"]
                assert checks["ok"], "an unreproduced output was approved"
                need = 1 if checks["status"] == "pass" and not checks["ledger_hits"] else 2
                assert req["required"] == need
                votes = store.votes(con, req["id"], req["round"])
                assert len(votes) == need
                assert all(v["vote"] is Vote.APPROVE for v in votes)
                assert len({v["steward"] for v in votes}) == need
            released = (outbox_dir(self.settings) / req["id"]).exists()
            assert released == (req["status"] is RequestStatus.RELEASED)

    @invariant()
    def no_self_review_and_only_stewards_vote(self):
        for rid, steward in self.airlock.con.execute(
                "SELECT v.request_id, v.steward FROM request_vote v").fetchall():
            req = store.get_request(self.airlock.con, rid)
            assert steward != req["requester"]
            assert steward in (*STEWARDS, STEWARD_MEMBER)

    @invariant()
    def final_states_stay_final(self):
        for req in store.list_requests(self.airlock.con):
            if req["id"] in self.finals:
                assert req["status"].value == self.finals[req["id"]]
            elif req["status"] in FINAL:
                self.finals[req["id"]] = req["status"].value

    @invariant()
    def status_and_audit_agree(self):
        con = self.airlock.con
        assert verify_connection(con).ok
        for req in store.list_requests(con):
            trail = [e for e in events(con, f"request:{req['id']}")
                     if e["action"].startswith("request.") and "to" in e["detail"]]
            assert trail[-1]["detail"]["to"] == req["status"].value
            for a, b in itertools.pairwise(trail):  # every change starts where the last one ended
                assert b["detail"]["from"] in (a["detail"]["to"], None)


ExportMachine.TestCase.settings = hsettings(
    max_examples=40, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_export_state_machine = ExportMachine.TestCase


def test_state_machine_reaches_release_and_its_opposites(tmp_path):
    """The property test is only meaningful if the happy path exists: walk it once."""
    a = make_airlock(load_settings(tmp_path / "home"))
    r = a.submit(REQUESTER, record("review"), FILES, "paper")
    assert r["status"] == "in_review" and r["required"] == 2
    assert a.vote(STEWARDS[0], r["id"], "approve")["status"] == "in_review"
    assert a.vote(STEWARDS[1], r["id"], "approve")["status"] == "released"
    assert json.loads((outbox_dir(a.settings) / r["id"] / "manifest.json").read_text())[
        "request"]["id"] == r["id"]
    assert a.revoke(STEWARDS[2], r["id"], "published in error")["status"] == "revoked"
    assert not (outbox_dir(a.settings) / r["id"]).exists()
