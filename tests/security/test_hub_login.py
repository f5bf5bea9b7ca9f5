"""Issue 16, items 5 and 6, on a real hub brought up by ``enclave up --serve`` (a free block of
ports; root): the demo credentials ``up`` hands out, the throttling of password guesses, and the xsrf
check of a logged-in steward's form in the airlock behind the hub.

Real PAM logins of real Unix users (the demo users, named with a random prefix) through the real
proxy; the real airlock service runs as its own user. Each test asserts the refusal **and** that
nothing crossed: no password on standard output, no session after a refused login, PAM not asked
while locked (the trail has exactly the allowed failures), no vote recorded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from enclave.core import audit
from enclave.core.settings import Settings, load_settings
from enclave.io.hub import permissions
from enclave.io.hub.client import Hub, UserServer, login
from enclave.workflows.enclave_up import credentials_path, demo_users
from tests.integration import hubbed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="enclave up --serve creates Unix users: root only"),
]

PORTS = hubbed.port_block()
FAILURES_USER, FAILURES_ADDRESS, LOCKOUT_S = 4, 12, 20
HUB_LOGIN_COOKIE = "jupyterhub-hub-login"


@dataclass
class Up:
    home: Path
    settings: Settings
    proc: subprocess.CompletedProcess
    bed: hubbed.Bed

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{PORTS}"

    def user(self, role: str, n: int = 0) -> str:
        return [u for u, r in demo_users(self.settings) if r == role][n]


def _enclave(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enclave", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=1500)


def summary_of(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout[proc.stdout.index("\n{") + 1:])


def credentials(up: Up) -> dict[str, tuple[str, str]]:
    """name -> (role, password), from the file ``up`` wrote (read as root)."""
    out = {}
    for line in credentials_path(up.settings).read_text().splitlines():
        if line and not line.startswith("#"):
            name, role, password = line.split()
            out[name] = (role, password)
    return out


@pytest.fixture(scope="module")
def up():
    prefix, home = hubbed.isolated_home(
        PORTS, f"login_max_failures_user = {FAILURES_USER}\n"
               f"login_max_failures_address = {FAILURES_ADDRESS}\n"
               f"login_window_s = 600\nlogin_lockout_s = {LOCKOUT_S}\nanchor_check_s = 2\n")
    settings = load_settings(home)
    bed = hubbed.Bed(settings, prefix, {}, {n: (n, "") for n, _ in demo_users(settings)})
    proc = _enclave(home, "up", "--patients", "600", "--hospitals", "2", "--seed", "3", "--serve")
    try:
        yield Up(home, settings, proc, bed)
    finally:
        _enclave(home, "down")
        hubbed.teardown(bed)
        for name, _ in demo_users(settings):
            permissions.remove_user(name)
        shutil.rmtree(home, ignore_errors=True)


def trail_since(up: Up, seq: int = 0) -> list[dict]:
    con = audit.connect(up.settings)
    try:
        return [e for e in audit.events(con) if e["seq"] > seq]
    finally:
        con.close()


def head(up: Up) -> int:
    return max((e["seq"] for e in trail_since(up)), default=0)


def refused_login(up: Up, name: str, password: str) -> requests.Session:
    """A login the hub must refuse: 403, and no session came of it."""
    status, session = login(up.base, name, password)
    assert status == 403, (name, status)
    assert HUB_LOGIN_COOKIE not in session.cookies, "a refused login got a hub session"
    assert requests.get(f"{up.base}/hub/api/user", cookies=session.cookies,
                        timeout=30).status_code in (401, 403)
    return session


def wait_for_lockout_end(since: float) -> None:
    time.sleep(max(0.0, since + LOCKOUT_S + 1 - time.monotonic()))


# --- item 6: enclave up's demo credentials ------------------------------------------------------

def test_up_writes_the_demo_passwords_to_a_root_only_file(up):
    proc = up.proc
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = summary_of(proc)
    path = credentials_path(up.settings)
    assert summary["credentials"] == str(path) and str(path) in proc.stdout
    assert path.parent == up.settings.restricted_dir
    st, zone = path.stat(), path.parent.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)
    assert (zone.st_uid, zone.st_mode & 0o777) == (0, 0o700)
    creds = credentials(up)
    assert sorted(r for r, _ in creds.values()) == ["policymaker", "researcher", "steward",
                                                   "steward"]
    assert set(creds) == set(summary["users"]) == {n for n, _ in demo_users(up.settings)}
    # nothing crossed: no password on standard output or error, none in the summary
    for _, password in creds.values():
        assert password not in proc.stdout and password not in proc.stderr
    assert all(set(u) == {"role"} for u in summary["users"].values())
    # a demo user (a real Unix user) cannot read it
    researcher = up.user("researcher")
    peek = subprocess.run([up.settings.hub.system_python, "-I", "-c",
                           f"print(open({str(path)!r}).read())"], capture_output=True, text=True,
                          user=researcher, cwd="/", timeout=60)
    assert peek.returncode != 0 and "Permission denied" in peek.stderr
    assert not any(pw in peek.stdout for _, pw in creds.values())
    # the written passwords are the real ones
    for name, (_, password) in creds.items():
        assert login(up.base, name, password)[0] == 302, name


def test_up_prints_the_passwords_only_when_asked(up):
    assert up.proc.returncode == 0
    again = _enclave(up.home, "up", "--patients", "600", "--hospitals", "2", "--seed", "3",
                     "--serve", "--show-passwords")
    assert again.returncode == 0, again.stderr[-2000:]
    creds = credentials(up)                          # new passwords, written again
    summary = summary_of(again)
    assert {n: (u["role"], u["password"]) for n, u in summary["users"].items()} == creds
    assert all(pw in again.stdout for _, pw in creds.values())
    assert "--show-passwords" in _enclave(up.home, "up", "--help").stdout


# --- item 6: the xsrf check of a steward's form, hub mode ----------------------------------------

KERNEL = '''
import json
from enclave.research import workspace, pivot_table
from enclave.io.airlock.client import submit_export
out = pivot_table(workspace().table("person"), "sex", aggfunc="patients")
print("RESULT " + json.dumps(submit_export(out.record, out.files(), "the xsrf test")))
'''


def review_state(up: Up, rid: str) -> dict:
    con = sqlite3.connect(f"file:{up.settings.control_path}?mode=ro", uri=True)
    try:
        votes = con.execute("SELECT steward, vote FROM request_vote WHERE request_id = ?",
                            (rid,)).fetchall()
        status = con.execute("SELECT status FROM export_request WHERE id = ?",
                             (rid,)).fetchone()[0]
        n_events = con.execute("SELECT count(*) FROM audit_event WHERE subject = ? AND action = "
                               "'request.vote'", (f"request:{rid}",)).fetchone()[0]
    finally:
        con.close()
    return {"votes": votes, "status": status, "vote_events": n_events}


def test_a_stewards_form_with_a_bogus_token_header_needs_its_xsrf_token(up):
    creds = credentials(up)
    researcher, steward = up.user("researcher"), up.user("steward")
    assert login(up.base, researcher, creds[researcher][1])[0] == 302  # the hub learns its groups
    hub = Hub(up.base, (up.home / "hub" / "ops_token").read_text().strip())
    hub.spawn(researcher, timeout=120)
    out = UserServer(up.base, researcher, hub.user_token(researcher)).run(KERNEL, timeout=600)
    assert out["error"] is None, out
    answer = json.loads(next(ln for ln in out["stdout"].splitlines()
                             if ln.startswith("RESULT ")).removeprefix("RESULT "))
    rid = answer["request_id"]
    assert answer["status"] == "in_review", answer

    status, session = login(up.base, steward, creds[steward][1])
    assert status == 302
    page = session.get(f"{up.base}/services/airlock/requests/{rid}", timeout=60)  # hub OAuth
    assert page.status_code == 200 and 'id="vote-form"' in page.text, page.text[-500:]
    before = review_state(up, rid)
    for header in ("token anything", "token " + "0" * 32, "Bearer whatever"):
        r = session.post(f"{up.base}/services/airlock/requests/{rid}/vote",
                         data={"vote": "approve"}, headers={"Authorization": header},
                         allow_redirects=False, timeout=60)
        assert r.status_code == 403, (header, r.status_code, r.text[-300:])
        assert review_state(up, rid) == before, f"a vote crossed with {header!r}"
    # the same session with the form's own xsrf token: accepted (the refusal was the xsrf check)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    r = session.post(f"{up.base}/services/airlock/requests/{rid}/vote",
                     data={"vote": "approve", "_xsrf": xsrf}, allow_redirects=False, timeout=60)
    assert r.status_code == 302, r.text[-300:]
    after = review_state(up, rid)
    assert after["votes"] == [(steward, "approve")] and after["vote_events"] == 1


# --- item 5: throttling ---------------------------------------------------------------------

def _since(up: Up, seq: int, action: str, name: str | None = None) -> list[dict]:
    return [e for e in trail_since(up, seq) if e["action"] == action
            and (name is None or e["subject"] == f"user:{name}")]


def test_a_user_is_locked_out_after_repeated_wrong_passwords(up):
    name = up.user("policymaker")
    password = credentials(up)[name][1]
    start = head(up)
    for i in range(68):
        refused_login(up, name, f"wrong-{i}")
        if i == FAILURES_USER - 1:
            locked_at = time.monotonic()
    refused_login(up, name, password)                     # the right one: refused while locked
    # PAM was asked only until the lockout: exactly the allowed failures are in the trail
    assert len(_since(up, start, "hub.login_refused", name)) == FAILURES_USER
    locks = _since(up, start, "hub.login_locked", name)
    assert len(locks) == 1 and locks[0]["detail"]["kind"] == "user"
    assert not _since(up, start, "hub.login", name)
    assert not any(password in json.dumps(e) for e in trail_since(up, start))
    wait_for_lockout_end(locked_at)
    assert login(up.base, name, password)[0] == 302       # the lockout ends
    assert len(_since(up, start, "hub.login", name)) == 1


def test_parallel_guesses_get_no_more_tries(up):
    name = up.user("steward", 1)
    password = credentials(up)[name][1]
    start = head(up)
    with ThreadPoolExecutor(34) as pool:
        statuses = list(pool.map(lambda i: login(up.base, name, f"wrong-{i}")[0], range(68)))
    guessed = time.monotonic()                            # the lock began before this
    assert statuses == [403] * 68
    refused_login(up, name, password)
    assert len(_since(up, start, "hub.login_refused", name)) == FAILURES_USER
    assert len(_since(up, start, "hub.login_locked", name)) == 1
    assert not _since(up, start, "hub.login", name)
    wait_for_lockout_end(guessed)
    assert login(up.base, name, password)[0] == 302


def test_an_address_is_locked_out_whatever_names_it_tries(up):
    steward = up.user("steward")
    password = credentials(up)[steward][1]
    start = head(up)
    for i in range(FAILURES_ADDRESS + 1):                # fresh names: no user limit applies
        refused_login(up, f"{up.bed.prefix}-nobody{i}", "guess")
        locks = [e for e in _since(up, start, "hub.login_locked")
                 if e["detail"]["kind"] == "address"]
        if locks:
            break
    locked_at = time.monotonic()
    assert len(locks) == 1 and locks[0]["subject"].startswith("address:"), locks
    assert i < FAILURES_ADDRESS
    refused_login(up, steward, password)                 # a real user from that address
    assert not _since(up, start, "hub.login", steward)
    refused_login(up, f"{up.bed.prefix}-nobody-late", "guess")
    assert len([e for e in _since(up, start, "hub.login_locked")
                if e["detail"]["kind"] == "address"]) == 1       # audited once per lockout
    wait_for_lockout_end(locked_at)
    assert login(up.base, steward, password)[0] == 302


# --- item 4, wired in the hub: the approval above is anchored by the hub process ----------------

def test_the_hub_anchors_approvals(up):
    config = (hubbed.REPO / "enclave" / "io" / "hub" / "config.py").read_text()
    if "schedule_anchors" not in config:
        pytest.skip("enclave.io.hub.anchor.schedule_anchors is not wired into the hub config yet")
    approved = [e for e in trail_since(up) if e["detail"].get("to") in ("approved", "released")]
    assert approved, "the xsrf test approved a request"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        anchor = audit.newest_anchor(up.settings)
        if anchor and anchor.seq >= approved[-1]["seq"]:
            break
        time.sleep(1)
    assert anchor and anchor.seq >= approved[-1]["seq"], anchor
    folder = audit.anchor_dir(up.settings)
    assert (folder.stat().st_uid, folder.stat().st_mode & 0o777) == (0, 0o700)
    assert audit.verify(up.settings, anchor).ok


# --- issue 19: no lab for those who are not researchers -------------------------------------------

def test_a_steward_or_policymaker_cannot_start_a_lab_by_any_door(up):
    """The hub page, the spawn URL and the REST API with the user's own token all refuse a
    steward's or policymaker's server (403, not 500), and nothing started: the hub reports no
    server and no process runs as them."""
    creds = credentials(up)
    hub = Hub(up.base, (up.home / "hub" / "ops_token").read_text().strip())
    for role in ("steward", "policymaker"):
        name = up.user(role)
        status, session = login(up.base, name, creds[name][1])
        assert status == 302, (role, status)
        for path in ("/hub/spawn", f"/hub/spawn/{name}", f"/user/{name}/lab"):
            r = session.get(f"{up.base}{path}", allow_redirects=True, timeout=60)
            assert r.status_code in (403, 404), (role, path, r.status_code)
        token = hub.user_token(name)
        for method, path in (("POST", f"/users/{name}/server"),
                             ("POST", f"/users/{name}/servers/lab")):
            r = requests.request(method, f"{up.base}/hub/api{path}", timeout=60,
                                 headers={"Authorization": f"token {token}"})
            assert r.status_code == 403, (role, path, r.status_code, r.text[:200])
        model = hub.api("GET", f"/users/{name}")
        assert not model.get("server") and not model.get("servers"), model
        ps = subprocess.run(["pgrep", "-u", name], check=False, capture_output=True, text=True)
        assert ps.stdout.strip() == "", f"processes run as {role} {name}"
