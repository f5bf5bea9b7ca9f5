"""Issue 16, item 4: the audit trail's integrity, attacked over the real airlock service.

The real service (``enclave airlock serve``, standalone token mode) on a real enclave home; events
are posted the way a kernel posts them (``enclave.io.airlock.client.record_event`` in a process of its
own, with the user's token) or raw over HTTP. Each test asserts the refusal **and** that nothing
crossed: no event with the forged subject, no byte of the oversized body in the trail, no anchor
on a rewritten trail. The anchor test uses a real Unix user as the owner of the airlock's folder
(what ``hub.airlock_user`` is in production) and rewrites the trail as that user.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from enclave.core.audit import (
    airlock_dir,
    anchor_dir,
    connect,
    events,
    newest_anchor,
    read_anchors,
    verify,
    write_anchor,
)
from enclave.core.errors import StoreError
from enclave.core.settings import load_settings
from enclave.io.hub.anchor import anchor_if_due
from tests.airlock_support import (
    MEMBER,
    OUTSIDER,
    REPO,
    REQUESTER,
    STEWARDS,
    Service,
    make_enclave,
    make_output,
    token_of,
)


@pytest.fixture(scope="module")
def enclave(user_home):
    # under /tmp, traversable (0711) like a real home, so the service user below can reach it
    top = Path(tempfile.mkdtemp(prefix="enclave-audit-", dir="/tmp"))
    os.chmod(top, 0o711)
    home = top / "home"
    tokens = make_enclave(home)
    os.chmod(home, 0o711)
    service = Service(home, tokens).start()
    try:
        yield home, service
    finally:
        service.stop()
        shutil.rmtree(top, ignore_errors=True)


def trail(home) -> list[dict]:
    con = connect(load_settings(home))
    try:
        return events(con)
    finally:
        con.close()


def kernel_event(svc, user: str, action: str, subject: str, detail: dict | None = None) -> dict:
    """What a kernel does: ``record_event`` in its own process, with the user's token."""
    code = ("import json, logging, sys\n"
            "logging.basicConfig(level=logging.WARNING, stream=sys.stdout)\n"
            "from enclave.io.airlock.client import record_event\n"
            f"ok = record_event({action!r}, {subject!r}, {detail or {}!r})\n"
            "print('RESULT', json.dumps(ok))\n")
    env = {**os.environ, "ENCLAVE_AIRLOCK_URL": svc.url.rstrip("/"),
           "JUPYTERHUB_API_TOKEN": token_of(user)}
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120, check=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return {"ok": json.loads(line.removeprefix("RESULT ")), "log": proc.stdout}


def test_a_kernels_release_read_is_recorded_as_its_user(enclave):
    home, svc = enclave
    # the real call path: the research API opens the release and reports it (no hub: the token
    # and URL a kernel would have come from the environment)
    code = ("from enclave.research import workspace\n"
            f"ws = workspace({str(home)!r}, project='alpha')\n"
            "print(ws.table('visit').count().execute())\n")
    env = {**os.environ, "ENCLAVE_AIRLOCK_URL": svc.url.rstrip("/"),
           "JUPYTERHUB_API_TOKEN": token_of(MEMBER)}
    subprocess.run([sys.executable, "-I", "-c", code], env=env, cwd=REPO, timeout=120,
                   check=True, capture_output=True)
    reads = [e for e in trail(home) if e["action"] == "release.read"]
    assert [(e["actor"], e["subject"], e["detail"]["via"]) for e in reads] == [
        (MEMBER, "release:alpha/v1", "api")]
    assert reads[0]["detail"]["tier"] == "desensitized"
    # the synthetic twin of any project is every researcher's
    assert kernel_event(svc, MEMBER, "release.read", "release:synthetic/alpha/v1")["ok"]
    assert verify(load_settings(home)).ok


def test_a_release_read_of_someone_elses_release_is_refused(enclave):
    home, svc = enclave
    before = len(trail(home))
    out = kernel_event(svc, OUTSIDER, "release.read", "release:alpha/v1")
    assert out["ok"] is False and "not a member of project alpha" in out["log"]
    for subject in ("user:alice", "request:r-1", "release:../alpha/v1", "alpha/v1"):
        code, body = svc.call(MEMBER, "POST", "api/audit", {"action": "release.read",
                                                            "subject": subject})
        assert code == 400 and "is about a release" in body["error"], (subject, body)
    after = trail(home)[before:]
    assert all(e["action"] == "audit.event_refused" for e in after), after
    assert {e["actor"] for e in after} == {OUTSIDER, MEMBER}
    assert all(e["subject"] in (f"user:{OUTSIDER}", f"user:{MEMBER}") for e in after)


@pytest.mark.parametrize("subject", [
    f"user:{REQUESTER}", f" User:{REQUESTER}", f"user: {REQUESTER}", f"user:{STEWARDS[0]}",
    "request:r-1", "project:alpha", "role:steward", "release:alpha/v1", "audit:head"])
def test_an_event_about_someone_else_is_refused(enclave, subject):
    home, svc = enclave
    before = len(trail(home))
    code, body = svc.call(MEMBER, "POST", "api/audit", {
        "action": "hub.route_refused", "subject": subject, "detail": {"path": "/x"}})
    assert code == 403, body
    assert "written by the enclave only" in body["error"] and f"user:{MEMBER}" in body["error"]
    after = trail(home)[before:]
    # nothing crossed: the refusal is recorded, about the caller, and nothing else
    assert [(e["action"], e["actor"], e["subject"]) for e in after] == [
        ("audit.event_refused", MEMBER, f"user:{MEMBER}")]
    assert after[0]["detail"]["subject"] == subject and after[0]["detail"]["status"] == 403
    # what the caller may write: about themself, or about its own server (a route, a file)
    for ok_subject in (f"user:{MEMBER}", "/user/bob/files/x.csv", "notes.ipynb"):
        code, body = svc.call(MEMBER, "POST", "api/audit", {"action": "hub.route_refused",
                                                            "subject": ok_subject})
        assert code == 201, (ok_subject, body)


def test_an_oversized_event_is_refused(enclave):
    home, svc = enclave
    limit = load_settings(home).airlock.max_audit_event_bytes
    marker = secrets.token_hex(8)
    before = len(trail(home))
    code, body = svc.call(MEMBER, "POST", "api/audit", {
        "action": "hub.route_refused", "subject": f"user:{MEMBER}",
        "detail": {"blob": marker + "x" * 300_000}})
    assert code == 413 and f"at most {limit}" in body["error"], body
    after = trail(home)[before:]
    assert [e["action"] for e in after] == ["audit.event_refused"]
    assert after[0]["detail"]["size"] > 300_000
    raw = sqlite3.connect(f"file:{load_settings(home).control_path}?mode=ro", uri=True)
    try:
        assert not raw.execute("SELECT count(*) FROM audit_event WHERE detail LIKE ?",
                               (f"%{marker}%",)).fetchone()[0]
        assert raw.execute("SELECT max(length(detail)) FROM audit_event").fetchone()[0] < limit
    finally:
        raw.close()
    # an event under the limit is fine
    code, _ = svc.call(MEMBER, "POST", "api/audit", {
        "action": "hub.route_refused", "subject": f"user:{MEMBER}", "detail": {"b": "x" * 1000}})
    assert code == 201


@pytest.mark.parametrize("action", ["hub.login", "hub.login_locked", "request.release",
                                    "release.build", "audit.event_refused", "airlock.login"])
def test_the_enclaves_own_actions_are_refused(enclave, action):
    home, svc = enclave
    before = len(trail(home))
    code, body = svc.call(MEMBER, "POST", "api/audit", {"action": action,
                                                        "subject": f"user:{MEMBER}"})
    assert code == 400 and "not allowed here" in body["error"]
    assert [e["action"] for e in trail(home)[before:]] == ["audit.event_refused"]


# --- anchors: last, this test rewrites the trail ----------------------------------------------

@pytest.fixture
def service_user(enclave):
    """A real system user owning the airlock's folder, as hub.airlock_user does in production."""
    if os.geteuid() != 0:
        pytest.skip("a real service user needs root")
    home, svc = enclave
    name = "zz" + secrets.token_hex(3) + "-air"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


def as_user(pw, code: str) -> subprocess.CompletedProcess:
    """``code`` (standard library only) run by the system Python as that user (the admin venv
    under /root is closed to it)."""
    python = load_settings().hub.system_python
    return subprocess.run([python, "-I", "-c", code], capture_output=True, text=True,
                          user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], cwd="/",
                          timeout=120, check=False)


REWRITE = '''
import hashlib, json, sqlite3
con = sqlite3.connect(DB, isolation_level=None)
h = lambda *a: hashlib.sha256(json.dumps(list(a), sort_keys=True, ensure_ascii=False,
                                         separators=(",", ":")).encode()).hexdigest()
prev = "0" * 64
for s, ts, actor, action, subj, detail in con.execute(
        "SELECT seq, ts, actor, action, subject, detail FROM audit_event ORDER BY seq").fetchall():
    if s == 1:
        actor = "nobody-at-all"
    d = h(s, ts, actor, action, subj, detail, prev)
    con.execute("UPDATE audit_event SET actor=?, prev_hash=?, hash=? WHERE seq=?",
                (actor, prev, d, s))
    prev = d
con.execute("UPDATE audit_head SET hash=?", (prev,))
print("rewritten")
'''


def test_an_approval_is_anchored_where_the_airlock_cannot_write(enclave, service_user):
    home, svc = enclave
    settings = load_settings(home)
    code, req = svc.submit(REQUESTER, make_output(home))
    assert code == 201 and req["status"] == "in_review", req
    code, done = svc.call(STEWARDS[0], "POST", f"api/requests/{req['request_id']}/vote",
                          {"vote": "approve"})
    assert code == 200 and done["status"] == "released"
    svc.stop()  # the folder changes hands below; the service is not needed any more

    # the root side (the hub process): the approval makes an anchor due, and it is written
    anchor = anchor_if_due(settings)
    head = verify(settings)
    assert anchor is not None and (anchor.seq, anchor.hash) == (head.events, head.head)
    folder = anchor_dir(settings)
    assert (folder.stat().st_uid, folder.stat().st_mode & 0o777) == (0, 0o700)
    assert (folder.parent.stat().st_uid, folder.parent.stat().st_mode & 0o077) == (0, 0)

    # the airlock's service user owns its folder and the database in it ...
    pw = service_user
    subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", str(airlock_dir(settings))],
                   check=True)
    # ... but can neither write nor replace nor remove an anchor
    probe = as_user(pw, f'''
import os
out = []
for what, f in (("own database", lambda: open({str(settings.control_path)!r}, "ab")),
                ("append", lambda: open({str(folder / "anchors.jsonl")!r}, "a").write("x")),
                ("create", lambda: open({str(folder / "planted.jsonl")!r}, "w")),
                ("unlink", lambda: os.unlink({str(folder / "anchors.jsonl")!r})),
                ("mkdir", lambda: os.makedirs({str(folder.parent / "anchors2")!r}))):
    try:
        f(); out.append(what)
    except OSError:
        pass
print("DONE", out)
''')
    assert "DONE ['own database']" in probe.stdout, probe.stdout + probe.stderr
    assert read_anchors(settings)[-1] == anchor

    # what it can do: rewrite the whole chain consistently (it holds the database)
    res = as_user(pw, REWRITE.replace("DB", repr(str(settings.control_path))))
    assert "rewritten" in res.stdout, res.stderr
    assert verify(settings).ok, "the chain alone cannot see a consistent rewrite"
    # the anchor does: `enclave audit verify` uses the newest one by default
    cli = subprocess.run([sys.executable, "-m", "enclave", "--home", str(home), "audit",
                          "verify"], capture_output=True, text=True, cwd=REPO, check=False)
    assert cli.returncode == 1, cli.stdout
    assert f"event {anchor.seq} no longer has the hash anchored" in cli.stdout
    # and nothing is anchored on top of the rewritten trail, even when an anchor is due
    due = replace(settings, hub=replace(settings.hub, anchor_max_age_s=0))
    assert anchor_if_due(due) is None
    with pytest.raises(StoreError, match="does not verify"):
        write_anchor(settings, "test")
    assert read_anchors(settings)[-1] == anchor and newest_anchor(settings) == anchor
