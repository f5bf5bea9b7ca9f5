"""The airlock service over real HTTP: submission with the airlock's own re-run and ledger,
permissions, the audit endpoint, concurrency (no lost update) and SIGKILL crash safety."""

from __future__ import annotations

import base64
import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from enclave.core.audit import connect, events, verify
from enclave.core.errors import PermissionDeniedError
from enclave.core.settings import load_settings
from enclave.io.airlock.outbox import outbox_dir, verify_outbox
from tests.airlock_support import (
    MEMBER,
    OUTSIDER,
    POLICYMAKER,
    REQUESTER,
    STEWARD_MEMBER,
    STEWARDS,
    Service,
    consistency_problems,
    make_enclave,
    make_output,
)


@pytest.fixture(scope="module")
def user_home(tmp_path_factory):
    """The researcher API keeps a local ledger under ~: point it at a temporary folder."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("user")
        mp.setenv("HOME", str(home))
        mp.delenv("ENCLAVE_HOME", raising=False)
        yield home


@pytest.fixture(scope="module")
def enclave(tmp_path_factory, user_home):
    home = tmp_path_factory.mktemp("airlock") / "home"
    tokens = make_enclave(home)
    service = Service(home, tokens).start()
    yield home, service
    service.stop()


def test_submit_check_approve_release_download(enclave):
    home, svc = enclave
    out = make_output(home)
    assert out["status"] == "pass"
    code, req = svc.submit(REQUESTER, out)
    assert code == 201, req
    rid = req["request_id"]
    # the airlock re-ran the query itself and found it reproducible: one steward suffices
    assert req["status"] == "in_review" and req["required"] == 1
    assert req["checks"]["ok"] and req["checks"]["rechecked"] and req["checks"]["status"] == "pass"
    # the requester sees no recomputed cells before approval; the stewards see the evidence
    assert req["checks"]["detail"] == {}
    code, seen = svc.call(STEWARDS[0], "GET", f"api/requests/{rid}")
    assert code == 200 and seen["checks"]["detail"]["cells"], "the airlock's own evidence is kept"

    assert svc.call(OUTSIDER, "GET", f"api/requests/{rid}")[0] == 403
    assert svc.call(POLICYMAKER, "GET", f"api/requests/{rid}")[0] == 403
    assert svc.call(REQUESTER, "POST", f"api/requests/{rid}/vote", {"vote": "approve"})[0] == 403
    assert svc.call(MEMBER, "POST", f"api/requests/{rid}/vote", {"vote": "approve"})[0] == 403
    code, body = svc.call(STEWARDS[0], "POST", f"api/requests/{rid}/vote", {"vote": "reject"})
    assert code == 400 and "written reason" in body["error"]
    code, done = svc.call(STEWARDS[0], "POST", f"api/requests/{rid}/vote", {"vote": "approve"})
    assert code == 200 and done["status"] == "released", done

    name = next(iter(out["files"]))
    code, data = svc.call(REQUESTER, "GET", f"requests/{rid}/download/{name}")
    assert code == 200 and data == out["files"][name]
    assert svc.call(MEMBER, "GET", f"requests/{rid}/download/{name}")[0] == 403
    assert svc.call(STEWARDS[0], "GET", f"requests/{rid}/download/{name}")[0] == 403
    folder = outbox_dir(load_settings(home)) / rid
    assert verify_outbox(folder) == []
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["request"]["requester"] == REQUESTER
    assert "votes" not in manifest  # blind to the requester: the votes stay with the stewards
    assert [v["steward"] for v in svc.call(STEWARDS[0], "GET", f"api/requests/{rid}")[1][
        "votes"]] == [STEWARDS[0]]
    assert manifest["checks"]["ok"] and name in manifest["files"]
    assert oct(folder.stat().st_mode & 0o777) == "0o700"


def test_a_tampered_record_is_rejected_by_the_airlock(enclave):
    home, svc = enclave
    out = make_output(home)
    out["record"]["cells"][0]["value"] = 9999  # the kernel lies about a count
    code, req = svc.submit(REQUESTER, out)
    assert code == 201 and req["status"] == "rejected"
    assert not req["checks"]["ok"] and req["decision_reason"]
    # a genuine record with an altered file: the file publishes a count the re-run did not
    out = make_output(home)
    name, data = next(iter(out["files"].items()))
    out["files"][name] = data.replace(b"20", b"21", 1)
    code, req = svc.submit(REQUESTER, out)
    assert code == 201 and req["status"] == "rejected", req
    assert "a value other than the re-run's" in req["decision_reason"]


def test_small_cells_and_ledger_hits_need_two_stewards(enclave):
    home, svc = enclave
    code, req = svc.submit(REQUESTER, make_output(home, small_cell=True))
    assert code == 201 and req["status"] == "in_review"
    assert req["checks"]["status"] in ("review", "fail") and req["required"] == 2
    # a population nested in an earlier output, differing by one patient: a differencing hit
    assert svc.submit(REQUESTER, make_output(home))[0] == 201
    code, req = svc.submit(REQUESTER, make_output(home, drop=1))
    assert code == 201 and req["checks"]["ledger_hits"], req["checks"]
    assert req["required"] == 2
    rid = req["request_id"]
    assert svc.call(STEWARDS[1], "POST", f"api/requests/{rid}/vote",
                    {"vote": "approve"})[1]["status"] == "in_review"
    assert svc.call(STEWARD_MEMBER, "POST", f"api/requests/{rid}/vote",
                    {"vote": "request_changes", "reason": "differs by one patient"}
                    )[1]["status"] == "changes_requested"
    # the requester sends a new output in a second round; others may not
    fixed = make_output(home)
    body = {"record": fixed["record"], "justification": "coarser table",
            "files": {n: base64.b64encode(d).decode() for n, d in fixed["files"].items()}}
    assert svc.call(MEMBER, "POST", f"api/requests/{rid}/resubmit", body)[0] == 403
    code, again = svc.call(REQUESTER, "POST", f"api/requests/{rid}/resubmit", body)
    assert code == 200 and again["round"] == 2 and again["status"] == "in_review", again
    assert again["votes_in"] == 0 and again["checks"]["ok"]


def test_only_active_members_submit(enclave):
    home, svc = enclave
    out = make_output(home)
    for user in (OUTSIDER, POLICYMAKER, STEWARDS[0]):
        code, body = svc.submit(user, out)
        assert code == 403, body
    code, body = svc.call(REQUESTER, "POST", "api/requests", {"record": out["record"],
                                                              "files": {"a.csv": "!!"}})
    assert code == 400


def test_audit_endpoint_records_the_authenticated_user(enclave):
    home, svc = enclave
    code, body = svc.call(MEMBER, "POST", "api/audit", {
        "action": "hub.blocked_download", "subject": "user:bob", "detail": {"path": "x.csv"},
        "actor": "sam"})
    assert code == 201
    con = connect(load_settings(home))
    ev = next(e for e in events(con) if e["seq"] == body["seq"])
    con.close()
    assert ev["actor"] == MEMBER and ev["detail"] == {"path": "x.csv", "via": "api"}
    for action in ("request.release", "project.approve", "NOT VALID"):
        assert svc.call(MEMBER, "POST", "api/audit", {"action": action, "subject": "x"})[0] == 400
    code, _ = svc.call("nobody", "POST", "api/audit", {"action": "hub.x", "subject": "x"})
    assert code == 403
    assert verify(load_settings(home)).ok


def test_forms_need_the_xsrf_token(enclave):
    import urllib.error
    import urllib.request

    home, svc = enclave
    _, req = svc.submit(REQUESTER, make_output(home))
    rid = req["request_id"]
    login = urllib.request.Request(svc.url + f"requests/{rid}/vote", method="POST",
                                   data=b"vote=approve")
    with pytest.raises(urllib.error.HTTPError) as err:  # a cookie-less, token-less form post
        urllib.request.urlopen(login, timeout=30)
    assert err.value.code == 403
    assert svc.call(STEWARDS[2], "GET", f"api/requests/{rid}")[1]["status"] == "in_review"


def test_a_researcher_follows_an_export_from_the_notebook(enclave, monkeypatch):
    """Through the airlock's API as a kernel in the hub calls it (URL and the user's token from
    the environment): export() answers an ExportRequest with its state and link, refresh()
    re-reads it after a steward's vote, my_requests() lists it; another user cannot read it."""
    from enclave.io.airlock.client import get_request
    from enclave.research import crosstab, export, my_requests, workspace
    from tests.airlock_support import token_of

    home, svc = enclave
    monkeypatch.setenv("ENCLAVE_AIRLOCK_URL", svc.url.rstrip("/"))
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token_of(REQUESTER))
    monkeypatch.setenv("JUPYTERHUB_BASE_URL", "/")
    ws = workspace(home, project="alpha")
    t = ws.table("visit")
    out = crosstab(t.filter(t.grp != "c"), "grp", "sex")
    request = export(out, justification="Table 1 of the paper")
    rid = request["request_id"]
    assert request.status == "in_review" and request.check_status == "pass"
    assert request.url == f"/services/airlock/requests/{rid}"
    assert f'href="/services/airlock/requests/{rid}"' in request._repr_html_()
    # one approval, or two when the project's ledger sends it to review (earlier tests of this
    # module exported overlapping tables from the same release)
    for steward in STEWARDS[:request["required"]]:
        code, _ = svc.call(steward, "POST", f"api/requests/{rid}/vote", {"vote": "approve"})
        assert code == 200
    assert request.refresh() is request and request.status == "released"
    assert request["bundle"] and "released" in request._repr_html_()
    mine = my_requests()
    assert rid in [r["id"] for r in mine]
    row = next(r for r in mine if r["id"] == rid)
    assert row["status"] == "released" and row["project"] == "alpha"
    assert row["kind"] == "crosstab" and row["created_at"] and row["url"].endswith(rid)
    assert all(r["requester"] == REQUESTER for r in mine)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token_of(OUTSIDER))
    with pytest.raises(PermissionDeniedError):
        get_request(rid)
    assert rid not in [r["id"] for r in my_requests()]


def test_outside_the_hub_requests_are_read_through_the_workflow(enclave, monkeypatch):
    """No airlock URL: the client reads the workflow directly as the OS user (LOGNAME)."""
    from enclave.research import crosstab, export, my_requests, workspace

    home, _ = enclave
    monkeypatch.delenv("ENCLAVE_AIRLOCK_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    monkeypatch.setenv("LOGNAME", MEMBER)
    monkeypatch.setenv("ENCLAVE_HOME", str(home))
    ws = workspace(home, project="alpha")
    t = ws.table("visit")
    request = export(crosstab(t.filter(t.grp != "c"), "grp", "sex"),
                     justification="Table 2 of the paper", settings=load_settings(home))
    assert request.status == "in_review"
    assert request.refresh().status == "in_review" and request.check_status == "pass"
    assert next(iter(my_requests(settings=load_settings(home))))["id"] == request.request_id


# --- concurrency -----------------------------------------------------------------------------

def test_parallel_submissions_and_votes_lose_no_update(tmp_path, user_home):
    """20 submissions at once, then three stewards vote on all 20 at once (60 requests) with two
    approvals needed: every request ends with exactly two votes and is released; the third
    voter of each is refused; the audit trail has every event exactly once."""
    home = tmp_path / "home"
    tokens = make_enclave(home, "[airlock]\napprovals_pass = 2\n")
    outputs = [make_output(home) for _ in range(20)]
    svc = Service(home, tokens).start()
    try:
        with ThreadPoolExecutor(20) as pool:
            subs = list(pool.map(lambda o: svc.submit(REQUESTER, o), outputs))
        assert all(code == 201 for code, _ in subs), subs
        ids = [r["request_id"] for _, r in subs]
        assert len(set(ids)) == 20 and all(r["required"] == 2 for _, r in subs)
        jobs = [(s, rid) for rid in ids for s in STEWARDS]
        random.Random(3).shuffle(jobs)
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda j: (j[1], svc.call(
                j[0], "POST", f"api/requests/{j[1]}/vote", {"vote": "approve"})[0]), jobs))
        for rid in ids:
            codes = sorted(code for r, code in answers if r == rid)
            assert codes == [200, 200, 409], (rid, codes)
            assert svc.call(STEWARDS[0], "GET", f"api/requests/{rid}")[1]["status"] == "released"
    finally:
        svc.stop()
    settings = load_settings(home)
    assert consistency_problems(settings) == []
    con = connect(settings)
    actions = [e["action"] for e in events(con)]
    con.close()
    assert actions.count("request.submit") == 20 and actions.count("request.vote") == 40
    assert actions.count("request.decide_approve") == 20 and actions.count("request.release") == 20


# --- crash safety ----------------------------------------------------------------------------

@pytest.mark.parametrize("point, after", [
    ("vote_before_commit", "in_review"),   # killed inside the vote's transaction
    ("vote_committed", "approved"),        # killed after the decision, before the outbox
    ("outbox_written", "approved"),        # killed after the outbox rename, before "released"
])
def test_sigkill_during_an_approval_leaves_request_and_audit_consistent(tmp_path, user_home,
                                                                         point, after):
    home = tmp_path / "home"
    tokens = make_enclave(home)
    settings = load_settings(home)
    out = make_output(home)
    svc = Service(home, tokens, env={"ENCLAVE_AIRLOCK_CRASH_AT": point}).start()
    try:
        code, req = svc.submit(REQUESTER, out)
        assert code == 201 and req["status"] == "in_review"
        rid = req["request_id"]
        with pytest.raises(OSError):  # the service dies (SIGKILL) while approving
            svc.call(STEWARDS[0], "POST", f"api/requests/{rid}/vote", {"vote": "approve"})
        assert svc.proc.wait(timeout=30) == -9
    finally:
        svc.kill()
    from enclave.io.airlock import store

    con = connect(settings)
    assert store.get_request(con, rid)["status"].value == after
    con.close()
    assert consistency_problems(settings) == []
    # a restarted service finishes the approval (or the steward votes again)
    svc = Service(home, tokens).start()
    try:
        if after == "in_review":
            assert svc.call(STEWARDS[0], "POST", f"api/requests/{rid}/vote",
                            {"vote": "approve"})[1]["status"] == "released"
        got = svc.call(REQUESTER, "GET", f"api/requests/{rid}")[1]
        assert got["status"] == "released"
        name = next(iter(out["files"]))
        assert svc.call(REQUESTER, "GET", f"requests/{rid}/download/{name}")[1] == \
            out["files"][name]
    finally:
        svc.stop()
    assert consistency_problems(settings) == []
    con = connect(settings)
    trail = [e["action"] for e in events(con, f"request:{rid}")]
    con.close()
    assert trail.count("request.vote") == 1 and trail.count("request.release") == 1


def test_sigkill_at_random_moments_during_approvals(tmp_path, user_home):
    """Approvals stream in while the service is killed from outside at a random moment."""
    home = tmp_path / "home"
    tokens = make_enclave(home)
    settings = load_settings(home)
    outputs = [make_output(home) for _ in range(8)]
    rng = random.Random(7)
    svc = Service(home, tokens).start()
    try:
        ids = [svc.submit(REQUESTER, o)[1]["request_id"] for o in outputs]
        killer = threading.Timer(rng.uniform(0.05, 0.4), svc.kill)
        killer.start()

        def approve(rid):
            try:
                return svc.call(STEWARDS[rng.randrange(3)], "POST", f"api/requests/{rid}/vote",
                                {"vote": "approve"}, timeout=30)[0]
            except OSError:
                return None

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(approve, ids))
        killer.join()
    finally:
        svc.kill() if svc.proc.poll() is None else None
    assert consistency_problems(settings) == []
    svc = Service(home, tokens).start()  # recovery on start
    try:
        states = {rid: svc.call(STEWARDS[0], "GET", f"api/requests/{rid}")[1]["status"]
                  for rid in ids}
        assert set(states.values()) <= {"in_review", "released"}, states
        for rid, state in states.items():
            if state == "in_review":
                assert svc.call(STEWARDS[0], "POST", f"api/requests/{rid}/vote",
                                {"vote": "approve"})[1]["status"] == "released"
    finally:
        svc.stop()
    assert consistency_problems(settings) == []
    for rid in ids:
        assert verify_outbox(outbox_dir(settings) / rid) == []
