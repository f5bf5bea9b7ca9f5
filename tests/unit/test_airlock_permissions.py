"""Every role × action pair, on the real Airlock (SQLite, audit): allowed ones succeed, the others
raise PermissionDeniedError and change nothing."""

from __future__ import annotations

import datetime as dt

import pytest

from enclave.core.audit import now, verify_connection
from enclave.core.errors import BadInputError, InvalidTransitionError, PermissionDeniedError
from enclave.core.model.project import ProjectAction, ProjectStatus
from enclave.core.settings import load_settings
from enclave.io.airlock import store
from enclave.io.airlock.projects import change_project
from enclave.io.airlock.roles import add_role
from tests.airlock_support import (
    ADMIN,
    FILES,
    MEMBER,
    OUTSIDER,
    POLICYMAKER,
    REQUESTER,
    STEWARD_MEMBER,
    STEWARDS,
    MemoryProjects,
    make_airlock,
    project,
    record,
)

ROLES = {"researcher": REQUESTER, "steward": STEWARDS[0], "policymaker": POLICYMAKER,
         "admin": ADMIN, "non-member": OUTSIDER}
OTHER_STEWARD = STEWARDS[1]


def _in_review(a):
    return a.submit(REQUESTER, record("review"), FILES, "paper")["id"]


def _changes(a):
    rid = a.submit(REQUESTER, record("pass"), FILES, "paper")["id"]
    a.vote(OTHER_STEWARD, rid, "request_changes", "round the counts")
    return rid


def _released(a):
    rid = a.submit(REQUESTER, record("pass"), FILES, "paper")["id"]
    a.vote(OTHER_STEWARD, rid, "approve")
    return rid


def _project_op(action, status=ProjectStatus.PROPOSED, member=None, reason=""):
    def op(a, user, _rid):
        a.projects.set_status("beta", status)
        change_project(a.con, a.projects, a.actor(user), "beta", action, member=member,
                       reason=reason)
    return op


#: action: (setup producing a request id or None, operation, roles allowed)
CASES = {
    "submit": (None, lambda a, u, r: a.submit(u, record("pass"), FILES, "paper"),
               {"researcher"}),
    "view": (_in_review, lambda a, u, r: a.describe(r, u), {"researcher", "steward", "admin"}),
    "review queue": (_in_review, lambda a, u, r: a.list(u, queue=True), {"steward", "admin"}),
    "read submitted file": (_in_review, lambda a, u, r: a.read_round_file(u, r, "result.csv"),
                            {"researcher", "steward"}),
    "vote approve": (_in_review, lambda a, u, r: a.vote(u, r, "approve"), {"steward"}),
    "vote reject": (_in_review, lambda a, u, r: a.vote(u, r, "reject", "too small"),
                    {"steward"}),
    "vote request changes": (_in_review, lambda a, u, r: a.vote(u, r, "request_changes", "x"),
                             {"steward"}),
    "comment": (_in_review, lambda a, u, r: a.comment(u, r, "please explain"),
                {"researcher", "steward"}),
    "withdraw": (_in_review, lambda a, u, r: a.withdraw(u, r), {"researcher"}),
    "resubmit": (_changes, lambda a, u, r: a.resubmit(u, r, record("pass"), FILES, "fixed"),
                 {"researcher"}),
    "revoke": (_released, lambda a, u, r: a.revoke(u, r, "published in error"), {"steward"}),
    "download": (_released, lambda a, u, r: a.download(u, r, "result.csv"), {"researcher"}),
    "approve project": (None, _project_op(ProjectAction.APPROVE), {"steward"}),
    "activate project": (None, _project_op(ProjectAction.ACTIVATE, ProjectStatus.APPROVED),
                         {"admin"}),
    "close project": (None, _project_op(ProjectAction.CLOSE, ProjectStatus.ACTIVE,
                                        reason="finished"), {"steward"}),
    "add member": (None, _project_op(ProjectAction.ADD_MEMBER, ProjectStatus.ACTIVE,
                                     member="dave"), {"steward"}),
    "remove member": (None, _project_op(ProjectAction.REMOVE_MEMBER, ProjectStatus.ACTIVE,
                                        member=MEMBER), {"steward"}),
    "grant role": (None, lambda a, u, r: add_role(a.con, a.actor(u), "dave", "steward", now()),
                   {"admin"}),
}


def _state(a):
    con = a.con
    return (con.execute("SELECT id, status, round FROM export_request ORDER BY id").fetchall(),
            con.execute("SELECT count(*) FROM request_vote").fetchone(),
            con.execute("SELECT * FROM user_role ORDER BY 1, 2").fetchall(),
            [(p.id, p.status, p.members) for p in a.projects.list()])


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("action", list(CASES))
def test_role_action(tmp_path, role, action):
    setup, op, allowed = CASES[action]
    a = make_airlock(load_settings(tmp_path / "home"),
                     MemoryProjects(project("alpha"), project("beta", ProjectStatus.PROPOSED)))
    rid = setup(a) if setup else None
    user = ROLES[role]
    if role in allowed:
        op(a, user, rid)
    else:
        before = _state(a)
        with pytest.raises(PermissionDeniedError):
            op(a, user, rid)
        assert _state(a)[:3] == before[:3]
    assert verify_connection(a.con).ok
    a.close()


def test_nobody_reviews_their_own_request(tmp_path):
    a = make_airlock(load_settings(tmp_path / "home"))
    rid = a.submit(STEWARD_MEMBER, record("review"), FILES, "my own output")["id"]
    with pytest.raises(PermissionDeniedError, match="own request"):
        a.vote(STEWARD_MEMBER, rid, "approve")
    a.vote(STEWARDS[0], rid, "approve")
    with pytest.raises(PermissionDeniedError, match="already voted"):
        a.vote(STEWARDS[0], rid, "approve")
    assert a.describe(rid, STEWARD_MEMBER)["status"] == "in_review"
    assert a.vote(STEWARDS[1], rid, "approve")["status"] == "released"


def test_votes_are_blind_until_the_decision(tmp_path):
    a = make_airlock(load_settings(tmp_path / "home"))
    rid = a.submit(REQUESTER, record("fail"), FILES, "paper")["id"]
    a.vote(STEWARDS[0], rid, "reject", "cell below threshold")
    other = a.describe(rid, STEWARDS[1])
    assert other["votes"] == [] and other["votes_in"] == 1 and other["my_vote"] is None
    assert a.describe(rid, STEWARDS[0])["my_vote"] == "reject"
    assert a.describe(rid, REQUESTER)["votes"] == []
    a.vote(STEWARDS[1], rid, "approve")
    decided = a.describe(rid, STEWARDS[1])
    assert decided["status"] == "rejected" and len(decided["votes"]) == 2
    assert "cell below threshold" in decided["decision_reason"]
    assert a.describe(rid, REQUESTER)["votes"] == []  # who voted what stays with the stewards


@pytest.mark.parametrize("vote", ["reject", "request_changes"])
def test_reject_and_changes_need_a_reason(tmp_path, vote):
    a = make_airlock(load_settings(tmp_path / "home"))
    rid = _in_review(a)
    with pytest.raises(BadInputError, match="written reason"):
        a.vote(STEWARDS[0], rid, vote, "  ")
    assert store.votes(a.con, rid) == []


def test_revoke_needs_a_reason_and_a_final_state_stays_final(tmp_path):
    a = make_airlock(load_settings(tmp_path / "home"))
    rid = _released(a)
    with pytest.raises(BadInputError, match="written reason"):
        a.revoke(STEWARDS[0], rid, "")
    a.revoke(STEWARDS[0], rid, "wrong file")
    for op in (lambda: a.revoke(STEWARDS[0], rid, "again"), lambda: a.withdraw(REQUESTER, rid),
               lambda: a.vote(STEWARDS[2], rid, "approve"),
               lambda: a.download(REQUESTER, rid, "result.csv")):
        with pytest.raises(InvalidTransitionError):
            op()


@pytest.mark.parametrize("status, expires", [
    (ProjectStatus.PROPOSED, dt.date(2099, 1, 1)), (ProjectStatus.APPROVED, dt.date(2099, 1, 1)),
    (ProjectStatus.CLOSED, dt.date(2099, 1, 1)), (ProjectStatus.EXPIRED, dt.date(2099, 1, 1)),
    (ProjectStatus.ACTIVE, dt.date(2020, 1, 1)),
])
def test_only_active_unexpired_projects_export(tmp_path, status, expires):
    a = make_airlock(load_settings(tmp_path / "home"),
                     MemoryProjects(project("alpha", status, expires)))
    with pytest.raises(PermissionDeniedError, match="not active"):
        a.submit(REQUESTER, record("pass"), FILES, "paper")
    assert not project("alpha", status, expires).is_usable(dt.date.today())


def test_an_expired_project_cannot_download(tmp_path):
    projects = MemoryProjects(project("alpha"))
    a = make_airlock(load_settings(tmp_path / "home"), projects)
    rid = _released(a)
    assert a.download(REQUESTER, rid, "result.csv").read_bytes() == FILES["result.csv"]
    projects.projects["alpha"] = project("alpha", expires=dt.date(2020, 1, 1))
    with pytest.raises(PermissionDeniedError, match="expired"):
        a.download(REQUESTER, rid, "result.csv")


@pytest.mark.parametrize("files, fragment", [
    ({}, "at least one file"), ({"../x.csv": b"1"}, "not allowed"),
    ({"manifest.json": b"{}"}, "not allowed"), ({".hidden": b"1"}, "not allowed"),
])
def test_bad_submissions_are_refused(tmp_path, files, fragment):
    a = make_airlock(load_settings(tmp_path / "home"))
    with pytest.raises(BadInputError, match=fragment):
        a.submit(REQUESTER, record("pass"), files, "paper")
    with pytest.raises(BadInputError, match="justification"):
        a.submit(REQUESTER, record("pass"), FILES, " ")
    assert store.list_requests(a.con) == []


def test_a_member_removed_before_the_checks_gets_no_rerun(tmp_path):
    """Membership is checked again when the airlock runs its checks (e.g. a request recovered
    after a restart): a requester no longer in the project gets a refusal, and the checks (the
    re-run) are never called."""
    from dataclasses import replace

    from enclave.io.airlock.workflow import RequestStatus

    projects = MemoryProjects(project())
    called = []
    a = make_airlock(load_settings(tmp_path / "home"), projects=projects)
    a.checks = lambda rec, s: called.append(rec) or (_ for _ in ()).throw(AssertionError)
    # submitted (as a crash would leave it), then the member is removed, then the checks run
    a.process_checks = lambda rid: None
    rid = a.submit(REQUESTER, record("pass"), FILES, "paper")["id"]
    projects.projects["alpha"] = replace(projects.projects["alpha"], members=(MEMBER,))
    type(a).process_checks(a, rid)
    req = a.describe(rid, STEWARDS[0])
    assert req["status"] == RequestStatus.REJECTED.value and called == []
    assert "not a member of project alpha" in req["decision_reason"]
    assert req["checks"]["rechecked"] is False


def test_a_requester_sees_cells_only_once_approved(tmp_path):
    """The recomputed evidence stays with the stewards until the output is approved."""
    from enclave.io.airlock.checks import CheckOutcome
    from enclave.io.airlock.workflow import CheckStatus

    cells = [{"cell": {"sex": "F"}, "statistic": "count", "value": 12, "outcome": "pass"},
             {"cell": {"sex": "M"}, "statistic": "count", "value": None, "outcome": "fail"}]
    a = make_airlock(load_settings(tmp_path / "home"))
    a.checks = lambda rec, s: CheckOutcome(ok=True, status=CheckStatus.FAIL, detail={
        "cells": cells, "reasons": [], "result_csv": "sex,count\nF,12\nM,\n",
        "result_keys": ["sex"]})
    rid = a.submit(REQUESTER, record("fail"), {"result.csv": b"sex,count\nF,12\nM,\n"},
                   "paper")["id"]
    assert a.describe(rid, REQUESTER)["checks"]["detail"] == {}
    assert a.describe(rid, STEWARDS[0])["checks"]["detail"]["cells"] == cells
    a.vote(STEWARDS[0], rid, "approve", "fine")
    a.vote(STEWARDS[1], rid, "approve", "fine")
    seen = a.describe(rid, REQUESTER)
    assert seen["status"] == "released"
    assert seen["checks"]["detail"]["cells"] == cells[:1]   # the published cell only
