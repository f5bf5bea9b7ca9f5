"""``enclave up --serve`` / ``status`` / ``down`` on a fresh home, end to end (root; a free block of ports).

Demo users, groups, project group and nftables table are named with a random prefix (settings), so
this runs beside a live demo on the same machine without touching it.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enclave.core.settings import load_settings
from enclave.io.hub import permissions
from enclave.io.hub.serve import port_open
from tests.integration import hubbed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="enclave up --serve creates Unix users: root only"),
]

PORTS = hubbed.port_block()
IDLE_S = 20


def _enclave(home: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enclave", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def up():
    # a short idle timeout, so the culler's work is seen within the test
    prefix, home = hubbed.isolated_home(PORTS, f"idle_timeout_s = {IDLE_S}\ncull_every_s = 5\n")
    bed = hubbed.Bed(load_settings(home), prefix, {}, {})
    proc = _enclave(home, "up", "--patients", "600", "--hospitals", "2", "--seed", "3", "--serve")
    summary = json.loads(proc.stdout[proc.stdout.index("\n{") + 1:]) if proc.returncode == 0 else {}
    creds = home / "restricted" / "demo-credentials.txt"  # up prints its path, not the passwords
    lines = creds.read_text().splitlines() if creds.exists() else []
    passwords = {n: pw for n, _, pw in (ln.split() for ln in lines if ln and ln[0] != "#")}
    bed.users = {u: (u, passwords.get(u, "")) for u in summary.get("users", {})}
    try:
        yield home, proc, summary, bed
    finally:
        _enclave(home, "down")
        hubbed.teardown(bed)
        for name, _ in [(u, None) for u in summary.get("users", {})]:
            permissions.remove_user(name)
        shutil.rmtree(home, ignore_errors=True)


def test_up_builds_everything_and_serves(up):
    home, proc, summary, bed = up
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["persons"] == 600 and summary["release"] == "demo/v1"
    assert "twin" in summary and "indicators" in summary          # built, or reported as skipped
    roles = {v["role"] for v in summary["users"].values()}
    assert sorted(v["role"] for v in summary["users"].values()) == [
        "policymaker", "researcher", "steward", "steward"] and roles
    assert summary["hub"] == f"http://127.0.0.1:{PORTS}/"
    release = home / "releases" / "desensitized" / "demo" / "v1" / "release.duckdb"
    assert oct(release.stat().st_mode & 0o777) == "0o440"
    bed.base = summary["hub"].rstrip("/")
    for name, (_, password) in bed.users.items():
        status, _ = hubbed.login(bed.base, name, password)
        assert status == 302, name                          # the written passwords work
        assert password not in proc.stdout


def test_status_reports_the_running_hub(up):
    home, proc, _, _ = up
    assert proc.returncode == 0
    st = json.loads(_enclave(home, "status", "--json").stdout)
    assert st["hub"]["running"] and st["hub"]["responding"] and st["hub"]["processes"] >= 3


def _below_hub(home: Path) -> dict[str, dict[str, list[int]]]:
    """Command line -> Uid/Groups of every process below the hub."""
    from enclave.io.hub.serve import descendants

    out = {}
    for p in descendants(json.loads((home / "hub" / "run.json").read_text())["pid"]):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        out[cmd] = {k: [int(v) for v in rest.split()] for k, _, rest in
                    (line.partition(":") for line in status) if k in ("Uid", "Groups")}
    return out


def test_services_run_as_their_own_users_not_root(up):
    home, proc, _, _ = up
    assert proc.returncode == 0
    s = load_settings(home)
    air, dash = (pwd.getpwnam(n) for n in (s.hub.airlock_user, s.hub.dashboards_user))
    expected = {"airlock serve": air.pw_uid, "hub gate": dash.pw_uid,
                "jupyterhub_idle_culler": pwd.getpwnam(s.hub.culler_user).pw_uid}
    if (hubbed.REPO / "dashboards" / "app.py").exists():
        expected["dashboards.serve"] = dash.pw_uid
    procs = _below_hub(home)
    for needle, uid in expected.items():
        found = [ids for cmd, ids in procs.items() if needle in cmd]
        assert found, f"no '{needle}' process below the hub"
        assert all(ids["Uid"] == [uid] * 4 and uid != 0 for ids in found), (needle, found)
    # the dashboards user is in no project group: it cannot read a release
    demo_group = grp.getgrnam(permissions.project_group(s, "demo")).gr_gid
    assert demo_group not in next(i for c, i in procs.items() if "hub gate" in c)["Groups"]
    assert demo_group in next(i for c, i in procs.items() if "airlock serve" in c)["Groups"]


def test_an_idle_server_is_culled(up):
    """The idle-culler service (as its own user) stops a server idle longer than the setting."""
    home, proc, summary, _ = up
    assert proc.returncode == 0
    from enclave.io.hub.client import Hub

    hub = Hub(summary["hub"].rstrip("/"), (home / "hub" / "ops_token").read_text().strip())
    name = next(u for u, v in summary["users"].items() if v["role"] == "researcher")
    hub.spawn(name)
    assert hub.api("GET", f"/users/{name}")["servers"]
    t0 = time.monotonic()
    while time.monotonic() - t0 < IDLE_S + 60 and hub.api("GET", f"/users/{name}")["servers"]:
        time.sleep(1)
    gone_after = time.monotonic() - t0
    assert not hub.api("GET", f"/users/{name}")["servers"], "the idle server was not culled"
    assert gone_after >= IDLE_S - 5                      # idle for the timeout, not at once
    log = (home / "hub" / "hub.log").read_text()
    assert f"Culling server {name}" in log or f"culling server {name}" in log.lower()


def test_up_again_keeps_the_work_and_down_stops_everything(up):
    home, proc, _, _ = up
    assert proc.returncode == 0
    again = _enclave(home, "up", "--patients", "600", "--hospitals", "2", "--seed", "3", "--serve")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already running" in again.stdout and again.stdout.count("already ingested") == 2
    pid = json.loads((home / "hub" / "run.json").read_text())["pid"]
    from enclave.io.hub.serve import descendants

    below = descendants(pid)
    down = _enclave(home, "down")
    assert down.returncode == 0 and down.stdout.startswith("stopped")
    for p in [pid, *below]:
        assert not Path(f"/proc/{p}").exists() or "Z" in Path(f"/proc/{p}/stat").read_text().split(")")[-1][:3]
    for port in range(PORTS, PORTS + 6):
        assert not port_open(port), port
    assert "not running" in _enclave(home, "status").stdout
    assert "nothing was running" in _enclave(home, "down").stdout
