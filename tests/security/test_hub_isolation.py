"""Issue 16 (items 1 and 2): kernels, users and projects stay in their lanes, and access ends when
it should — against a real hub with real Unix users and real kernels (a free block of ports; root).

``r0`` and ``r2`` work on alpha, ``r1`` on beta. The hub's access watch checks every 5 s here.
Each test tries to cross a boundary and asserts the refusal and that nothing crossed.
"""

from __future__ import annotations

import datetime as dt
import grp
import json
import os
import pwd
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from enclave.core import audit
from enclave.io.hub.access import user_processes
from enclave.io.hub.client import HubClientError
from tests.integration import hubbed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a real hub with real Unix users needs root"),
]

PORTS = hubbed.port_block()
WITHIN_S = 60
NFT = Path("/usr/sbin/nft").exists()


@pytest.fixture(scope="module")
def bed():
    b = hubbed.make_bed(PORTS, researchers=3, real_airlock=True,
                        hub_settings="access_check_interval_s = 5")
    if NFT:
        from enclave.io.hub import egress

        try:
            egress.apply_egress(b.settings)
        except BaseException:
            hubbed.teardown(b)
            raise
    for short in ("r0", "r1", "r2"):  # a real login: the hub learns their groups (airlock access)
        assert b.login(short)[0] in (200, 302)
    yield b
    hubbed.teardown(b)


def _wait(predicate, timeout: float = WITHIN_S, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


_processes = user_processes


def _group(bed, project: str) -> set[str]:
    return set(grp.getgrnam(f"{bed.settings.hub.project_group_prefix}{bed.projects[project]}"
                            ).gr_mem)


def _events(bed, action: str, subject: str) -> list[dict]:
    con = audit.connect(bed.settings)
    try:
        return [e for e in audit.events(con, subject) if e["action"] == action]
    finally:
        con.close()


def _kernels_or_none(srv) -> list[dict]:
    """The server's kernels, or none when the server itself is gone."""
    try:
        r = srv.request("GET", "api/kernels")
    except Exception:  # noqa: BLE001 - connection refused: the server was stopped
        return []
    return r.json() if r.status_code == 200 else []


READ = """
from enclave.research import workspace
try:
    ws = workspace(project={project!r})
    print("rows", ws.table("person").count().execute())
except Exception as exc:
    print("refused", type(exc).__name__, str(exc)[:300])
"""


def test_only_the_enclave_kernel_starts(bed):
    srv = bed.server("r1")
    specs = srv.request("GET", "api/kernelspecs").json()
    assert set(specs["kernelspecs"]) == {"enclave"}
    before = {k["id"] for k in srv.request("GET", "api/kernels").json()}
    for name in ("python3", "Python3", "native"):
        r = srv.request("POST", "api/kernels", json={"name": name})
        assert r.status_code in (403, 404), (name, r.status_code)
        r = srv.request("POST", "api/sessions", json={
            "path": "x.ipynb", "type": "notebook", "kernel": {"name": name}})
        assert r.status_code in (403, 404, 500), (name, r.status_code)
    kernels = srv.request("GET", "api/kernels").json()
    assert {k["id"] for k in kernels} == before and all(k["name"] == "enclave" for k in kernels)
    assert _wait(lambda: _events(bed, "hub.kernel_refused", "python3"), timeout=20), \
        "the refusal was not audited"


def test_kernels_have_no_network_and_a_private_tmp(bed):
    marker = f"/tmp/{bed.prefix}-copied.csv"
    out = bed.server("r1").run(f"""
import duckdb, os, socket
con = duckdb.connect()
con.execute("COPY (SELECT 42 AS secret) TO '{marker}'")
print("wrote", os.path.exists({marker!r}), oct(os.stat({marker!r}).st_mode & 0o777))
for port in ({bed.settings.hub.port}, {bed.settings.hub.hub_port}, {bed.settings.hub.dashboards_port}):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3); print("connected", port)
    except OSError:
        print("no-net", port)
""")
    lines = out["stdout"].split("\n")
    assert lines[0] == "wrote True 0o600", out          # umask 077 in the kernel
    assert all(ln.startswith("no-net") for ln in lines[1:4]), out
    assert not Path(marker).exists(), "the kernel's /tmp is the host's"
    other = bed.server("r0").run(f"import os; print(os.path.exists({marker!r}))")
    assert other["stdout"].strip() == "False", "another project's kernel saw the file"


@pytest.mark.skipif(not NFT, reason="nftables is not installed (apt-get install nftables)")
def test_a_researcher_added_while_the_hub_runs_has_no_network_at_once(bed):
    from enclave.io.hub.egress import researcher_uids

    name, password = f"{bed.prefix}late", "Late-pass-1234"
    bed.users["late"] = (name, password)
    hubbed.enclave(bed.settings.home, "project", "member", "add", bed.projects["beta"], name,
                   "--as", bed.name("steward"))
    subprocess.run([".venv/bin/python", "-m", "enclave", "--home", str(bed.settings.home), "user",
                    "add", name, "--role", "researcher", "--project", bed.projects["beta"],
                    "--password-stdin"], input=password + "\n", text=True, check=True,
                   cwd=hubbed.REPO, capture_output=True)
    t0 = time.monotonic()
    uid = pwd.getpwnam(name).pw_uid
    assert uid in researcher_uids(bed.settings)
    listed = subprocess.run(["nft", "list", "set", "inet", bed.settings.hub.egress_table,
                             "researchers"], capture_output=True, text=True).stdout
    assert str(uid) in listed, "the new researcher is not in the egress set"
    # any process of theirs: only the hub API and the airlock answer
    probe = ("import socket\nfor p in ({}):\n    s = socket.socket(); s.settimeout(3)\n"
             "    print(p, s.connect_ex(('127.0.0.1', p)))").format(
        f"{bed.settings.hub.dashboards_port}, {bed.settings.hub.proxy_api_port}")
    got = subprocess.run(["runuser", "-u", name, "--", "/usr/bin/python3", "-c", probe],
                         capture_output=True, text=True, cwd="/").stdout.split("\n")
    assert all(line.split()[1] != "0" for line in got if line), got
    status, _ = bed.login("late")
    assert status in (200, 302)
    out = bed.server("late").run(f"""
import socket
for port in ({bed.settings.hub.port}, {bed.settings.hub.hub_port}, {bed.settings.hub.airlock_port}):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3); print("connected", port)
    except OSError:
        print("no-net", port)
""")
    assert time.monotonic() - t0 < WITHIN_S
    # the airlock port answers only through the kernel's relay (the airlock API); nothing else
    assert [ln.split()[0] for ln in out["stdout"].split("\n")[:2]] == ["no-net", "no-net"], out


def test_removing_a_member_stops_their_kernels_and_ends_their_reads(bed):
    name = bed.name("r2")
    srv = bed.server("r2")
    first = srv.run(READ.format(project=bed.projects["alpha"]))
    assert first["stdout"].startswith("rows "), first
    # the kernel's read reached the real trail, with the user the hub vouched for
    reads = _wait(lambda: _events(bed, "release.read", f"release:{bed.projects['alpha']}/v1"),
                  timeout=20)
    assert reads and {e["actor"] for e in reads} >= {name}, reads
    kid = srv.request("POST", "api/kernels", json={"name": "enclave"}).json()["id"]
    assert _processes(name)
    t0 = time.monotonic()
    hubbed.enclave(bed.settings.home, "project", "member", "remove", bed.projects["alpha"], name,
                   "--as", bed.name("steward"))
    assert _wait(lambda: name not in _group(bed, "alpha"))
    assert _wait(lambda: not _processes(name)), "their server and kernels still run"
    assert time.monotonic() - t0 < WITHIN_S
    assert kid not in {k["id"] for k in _kernels_or_none(srv)}
    subject = f"user:{name}"
    assert _events(bed, "access.group_removed", subject)
    assert _wait(lambda: _events(bed, "access.processes_stopped", subject), timeout=20)
    # a new server and kernel: the release is not theirs any more
    _wait(lambda: not bed.hub.api("GET", f"/users/{name}").get("servers"), timeout=45)
    try:
        again = bed.server("r2").run(READ.format(project=bed.projects["alpha"]))
    except HubClientError:
        again = {"stdout": "refused server"}
    assert again["stdout"].startswith("refused"), again
    db = bed.release("alpha")
    reads = subprocess.run(["runuser", "-u", name, "--", "/usr/bin/python3", "-c",
                            f"open({str(db)!r}, 'rb').read(1)"], capture_output=True, text=True)
    assert reads.returncode != 0 and "PermissionError" in reads.stderr


def test_an_expiry_that_passes_while_the_hub_runs_ends_access(bed):
    name, pid = bed.name("r1"), bed.projects["beta"]
    assert name in _group(bed, "beta")
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    con = sqlite3.connect(bed.settings.control_path)
    with con:
        con.execute("UPDATE project SET expires = ? WHERE project_id = ?", (yesterday, pid))
    con.close()
    t0 = time.monotonic()
    assert _wait(lambda: name not in _group(bed, "beta")), "the watch did not take the group"
    folder = bed.settings.releases_dir / "desensitized" / pid
    assert _wait(lambda: folder.stat().st_mode & 0o077 == 0 and folder.stat().st_gid == 0)
    assert _wait(lambda: not _processes(name))
    assert time.monotonic() - t0 < WITHIN_S
    assert _wait(lambda: _events(bed, "access.release_closed", f"project:{pid}"), timeout=20)
    reads = subprocess.run(["runuser", "-u", name, "--", "/usr/bin/python3", "-c",
                            f"open({str(bed.release('beta'))!r}, 'rb').read(1)"],
                           capture_output=True, text=True)
    assert "PermissionError" in reads.stderr


def test_closing_a_project_ends_its_members_access(bed):
    name, pid = bed.name("r0"), bed.projects["alpha"]
    srv = bed.server("r0")
    assert srv.run(READ.format(project=pid))["stdout"].startswith("rows ")
    t0 = time.monotonic()
    hubbed.enclave(bed.settings.home, "project", "close", pid, "--reason", "study ended",
                   "--as", bed.name("steward"))
    folder = bed.settings.releases_dir / "desensitized" / pid
    assert _wait(lambda: name not in _group(bed, "alpha"))
    assert folder.stat().st_mode & 0o077 == 0 and folder.stat().st_gid == 0
    assert _wait(lambda: not _processes(name))
    assert time.monotonic() - t0 < WITHIN_S
    assert _wait(lambda: _events(bed, "access.release_closed", f"project:{pid}"), timeout=20)
    _wait(lambda: not bed.hub.api("GET", f"/users/{name}").get("servers"), timeout=45)
    again = bed.server("r0").run(READ.format(project=pid))
    assert again["stdout"].startswith("refused"), again


def test_a_disabled_user_cannot_log_in_and_loses_everything(bed):
    name = bed.name("r0")
    bed.server("r0")
    assert _processes(name)
    out = hubbed.enclave(bed.settings.home, "user", "disable", name)
    assert "disabled" in out
    assert not _processes(name)
    assert bed.settings.hub.researchers_group not in {
        g.gr_name for g in grp.getgrall() if name in g.gr_mem}
    status, _ = bed.login("r0")
    assert status == 403, "a disabled user logged in"
    assert _events(bed, "access.user_disabled", f"user:{name}")
    assert json.loads(hubbed.enclave(bed.settings.home, "audit", "verify", "--json"))["ok"]
