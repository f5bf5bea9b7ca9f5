"""The project lifecycle on the real control database, through the command line, audited."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta

import pytest

from enclave.core.audit import connect, events, verify
from enclave.io.projects import SqlProjectStore
from tests.conftest import REPO

FUTURE = (date.today() + timedelta(days=365)).isoformat()


def _cli(home, *args):
    return subprocess.run([sys.executable, "-m", "enclave", "--home", str(home), *args],
                          capture_output=True, text=True, cwd=REPO, check=False, timeout=120)


@pytest.fixture
def home(settings):
    h = settings.home
    res = _cli(h, "project", "create", "--id", "alpha", "--title", "T", "--purpose", "P",
               "--pi", "alice", "--member", "bob", "--tier", "desensitized",
               "--sharing", "enclave", "--expires", FUTURE, "--table", "person")
    assert res.returncode == 0, res.stderr
    for user, role in (("sam", "steward"), ("pat", "policymaker")):
        res = _cli(h, "airlock", "role", "add", user, role)
        assert res.returncode == 0, res.stderr
    return h


def _status(settings, pid="alpha"):
    return SqlProjectStore(settings).get(pid)


def test_lifecycle_through_the_cli(settings, home):
    # a researcher cannot approve, a steward can; only an admin activates
    res = _cli(home, "project", "approve", "alpha", "--as", "bob")
    assert res.returncode == 3 and "only stewards may approve" in res.stderr
    assert _cli(home, "project", "approve", "alpha", "--as", "sam").returncode == 0
    assert _status(settings).status == "approved"
    res = _cli(home, "project", "activate", "alpha", "--as", "sam")
    assert res.returncode == 3 and "only admins may activate" in res.stderr
    res = _cli(home, "project", "activate", "alpha")  # root: admin
    assert res.returncode == 0, res.stderr
    p = _status(settings)
    assert p.status == "active" and p.is_usable(date.today())
    # membership: stewards only
    res = _cli(home, "project", "member", "add", "alpha", "carol", "--as", "pat")
    assert res.returncode == 3
    assert _cli(home, "project", "member", "add", "alpha", "carol", "--as", "sam").returncode == 0
    assert _status(settings).members == ("alice", "bob", "carol")
    res = _cli(home, "project", "member", "remove", "alpha", "alice", "--as", "sam")
    assert res.returncode == 2 and "principal investigator" in res.stderr
    assert _cli(home, "project", "member", "remove", "alpha", "bob", "--as", "sam").returncode == 0
    assert _status(settings).members == ("alice", "carol")
    # closing needs a reason and is final
    res = _cli(home, "project", "close", "alpha", "--as", "sam", "--reason", "study finished")
    assert res.returncode == 0, res.stderr
    res = _cli(home, "project", "approve", "alpha", "--as", "sam")
    assert res.returncode == 4 and "it is closed" in res.stderr
    shown = json.loads(_cli(home, "project", "show", "alpha", "--json").stdout)
    assert shown["status"] == "closed" and shown["members"] == ["alice", "carol"]

    con = connect(settings)
    trail = [(e["actor"], e["action"], e["detail"].get("to")) for e in events(con, "project:alpha")]
    con.close()
    assert trail == [("root", "project.create", None),
                     ("sam", "project.approve", "approved"), ("root", "project.activate", "active"),
                     ("sam", "project.add_member", "active"),
                     ("sam", "project.remove_member", "active"),
                     ("sam", "project.close", "closed")]
    assert verify(settings).ok


def test_expiry_is_recorded_and_ends_use(settings, home):
    from enclave.io.airlock.exports import Airlock
    from enclave.io.airlock.projects import expire_projects

    assert _cli(home, "project", "approve", "alpha", "--as", "sam").returncode == 0
    assert _cli(home, "project", "activate", "alpha").returncode == 0
    store = SqlProjectStore(settings)
    later = date.today() + timedelta(days=400)
    with Airlock(settings, projects=store, today=lambda: later) as a:
        assert not a.usable("alpha")  # past its expiry date: unusable even before it is recorded
        assert expire_projects(a.con, store, today=later) == ["alpha"]
        assert expire_projects(a.con, store, today=later) == []
    assert _status(settings).status == "expired"
    assert _cli(home, "project", "expire").stdout.strip() == "expired: none"


def test_a_failed_change_leaves_no_audit_event(settings, home):
    res = _cli(home, "project", "member", "add", "alpha", "Not A User", "--as", "sam")
    assert res.returncode == 2
    con = connect(settings)
    assert [e["action"] for e in events(con)] == ["project.create", "role.add", "role.add"]
    con.close()


def test_only_admins_grant_roles(settings, home):
    res = _cli(home, "airlock", "role", "add", "eve", "steward", "--as", "sam")
    assert res.returncode == 3 and "only admins grant roles" in res.stderr
    res = _cli(home, "airlock", "role", "list", "--json")
    assert json.loads(res.stdout) == [{"user": "pat", "role": "policymaker"},
                                      {"user": "sam", "role": "steward"}]
