"""Issue 16, item 6, over the real airlock service (standalone token mode): the xsrf check of a
cookie-authenticated form does not depend on an ``Authorization`` header being present, and the
manifest a requester downloads names no steward and no vote.

The hub-mode xsrf check and ``enclave up``'s credentials are attacked on a real hub in
test_hub_login.py. Each test asserts the refusal and that nothing crossed (no vote recorded, no
steward name in anything the requester receives).
"""

from __future__ import annotations

import json

import pytest
import requests

from enclave.core.audit import connect, events
from enclave.core.settings import load_settings
from enclave.io.airlock import store
from enclave.io.airlock.outbox import outbox_dir, verify_outbox
from tests.airlock_support import (
    REQUESTER,
    STEWARDS,
    Service,
    make_enclave,
    make_output,
    token_of,
)


@pytest.fixture(scope="module")
def enclave(tmp_path_factory, user_home):
    home = tmp_path_factory.mktemp("fixes") / "home"
    tokens = make_enclave(home)
    service = Service(home, tokens).start()
    yield home, service
    service.stop()


def review_state(home, rid: str) -> dict:
    con = connect(load_settings(home))
    try:
        return {"votes": store.votes(con, rid), "status": store.get_request(con, rid)["status"],
                "events": [e for e in events(con, f"request:{rid}")
                           if e["action"] == "request.vote"]}
    finally:
        con.close()


def browser_login(svc, user: str) -> requests.Session:
    """A browser's sign-in at /login (the form, with its xsrf token): a signed user cookie."""
    s = requests.Session()
    s.get(svc.url + "login", timeout=30)
    r = s.post(svc.url + "login", data={"token": token_of(user), "_xsrf": s.cookies["_xsrf"]},
               allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "enclave-airlock-user" in s.cookies, r.text
    return s


def test_a_bogus_token_header_does_not_skip_the_xsrf_check(enclave):
    home, svc = enclave
    code, req = svc.submit(REQUESTER, make_output(home))
    assert code == 201 and req["status"] == "in_review", req
    rid = req["request_id"]
    steward = browser_login(svc, STEWARDS[0])
    before = review_state(home, rid)
    for header in ("token anything", "token ", "Token " + "x" * 40, "Bearer whatever",
                   "token " + token_of("nobody-known")):
        r = steward.post(svc.url + f"requests/{rid}/vote", data={"vote": "approve"},
                         headers={"Authorization": header}, allow_redirects=False, timeout=30)
        assert r.status_code == 403, (header, r.status_code)
        assert "xsrf" in r.text.lower(), r.text[-500:]
        assert review_state(home, rid) == before, f"a vote crossed with {header!r}"
    # the API answers a bogus token plainly, and records nothing
    r = requests.post(svc.url + f"api/requests/{rid}/vote", json={"vote": "approve"},
                      headers={"Authorization": "token anything"}, timeout=30)
    assert r.status_code == 403 and "authenticates nobody" in r.json()["error"]
    assert review_state(home, rid) == before
    # the same form with its xsrf token goes through: the session was valid, the check refused
    r = steward.post(svc.url + f"requests/{rid}/vote",
                     data={"vote": "approve", "_xsrf": steward.cookies["_xsrf"]},
                     allow_redirects=False, timeout=30)
    assert r.status_code == 302
    after = review_state(home, rid)
    assert [v["steward"] for v in after["votes"]] == [STEWARDS[0]]
    assert after["status"].value == "released"
    # a valid token is still exempt (kernels and the CLI have no xsrf cookie)
    _, other = svc.submit(REQUESTER, make_output(home))
    code, done = svc.call(STEWARDS[1], "POST", f"api/requests/{other['request_id']}/vote",
                          {"vote": "approve"})
    assert code == 200 and done["status"] == "released"


def test_the_requesters_manifest_names_no_steward_and_no_vote(enclave):
    home, svc = enclave
    settings = load_settings(home)
    code, req = svc.submit(REQUESTER, make_output(home))
    rid = req["request_id"]
    code, done = svc.call(STEWARDS[2], "POST", f"api/requests/{rid}/vote", {"vote": "approve"})
    assert code == 200 and done["status"] == "released"
    folder = outbox_dir(settings) / rid
    assert verify_outbox(folder) == []

    def no_reviewer_in(data: bytes) -> None:
        manifest = json.loads(data)
        assert "votes" not in manifest, "the manifest carries the votes"
        text = data.decode()
        assert not any(f'"{s}"' in text for s in STEWARDS), "a steward is named"
        assert manifest["request"]["requester"] == REQUESTER and manifest["files"]

    code, data = svc.call(REQUESTER, "GET", f"requests/{rid}/download/manifest.json")
    assert code == 200
    no_reviewer_in(data)
    no_reviewer_in((folder / "manifest.json").read_bytes())  # the outbox itself
    # the stewards and the trail keep who voted what
    state = review_state(home, rid)
    assert [(v["steward"], v["vote"].value) for v in state["votes"]] == [(STEWARDS[2], "approve")]
    assert [e["actor"] for e in state["events"]] == [STEWARDS[2]]
    code, seen = svc.call(STEWARDS[2], "GET", f"api/requests/{rid}")
    assert [v["steward"] for v in seen["votes"]] == [STEWARDS[2]]
    # an outbox released before this fix still carries its votes: the download leaves them out
    old = json.loads((folder / "manifest.json").read_text())
    old["votes"] = [{"steward": STEWARDS[2], "vote": "approve", "reason": ""}]
    (folder / "manifest.json").write_text(json.dumps(old))
    code, data = svc.call(REQUESTER, "GET", f"requests/{rid}/download/manifest.json")
    assert code == 200
    no_reviewer_in(data)
