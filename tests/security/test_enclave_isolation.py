"""Issue 21, item 3: two enclaves on one machine keep to their own Unix users, groups, nftables
table and ports (root; real hubs, real PAM logins, the real ``enclave`` command line).

The first enclave (A) is a hub test bed: its users have known passwords and every machine-wide
name carries the run's random prefix (``hubbed.isolated_home``), its ports a block free for this
run. The second (B) is what the README invites: ``enclave --home OTHER up`` on a home with no
[hub] settings, so its names and ports are the ones derived from its home (its folder is named
with the run's prefix, so its instance, users and groups start with it too). Before the fix, B's
``up`` re-created the demo users of A with new passwords; here A's users must still log in with
theirs, B's get names of their own, and an ``up`` whose settings name A's or B's users, groups or
ports is refused before it does anything. B's data work (``up --no-serve``: generate, ingest,
release, twin, indicators, no machine-wide name) runs while A's bed is built; its serving ``up``
(users, egress table, hub) runs once A serves. The last test removes both enclaves and checks that
nothing of them is left: users, groups, nftables tables, ports, homes, registry records.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from enclave.core.settings import MACHINE_WIDE, load_settings
from enclave.io.hub import egress, permissions, registry
from enclave.io.hub.client import login
from enclave.io.hub.serve import port_open
from enclave.workflows.enclave_up import credentials_path, demo_users
from tests.integration import hubbed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="enclaves that serve create Unix users: root only"),
]

DATA = ("--patients", "200", "--hospitals", "1", "--seed", "3")  # the smallest demo up makes
# B's only settings: no [hub] (its machine-wide names are the derived ones); a twin bar this small
# data passes, so the data run publishes the twin and the serving run does not fit it again
B_SETTINGS = """[synthetic]
eval_patients = 200
privacy_rows = 200
new_row_sample = 200
min_dcr_baseline_protection = 0.0
min_dcr_overfitting_protection = 0.0
min_new_row_synthesis = 0.0
max_identical_share = 1.0
max_unique_identical_share = 1.0
"""
NFT = shutil.which("nft")


def _enclave(home: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enclave", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def _summary(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout[proc.stdout.index("\n{") + 1:])


def _home(prefix: str, tag: str) -> Path:
    home = Path(tempfile.mkdtemp(prefix=f"{prefix}{tag}-", dir="/tmp"))
    os.chmod(home, 0o711)  # a serving home: the service users pass through it
    return home


class Machine:
    """The two enclaves, and what the tests made, for the teardown to remove and check."""

    def __init__(self) -> None:
        self.a: hubbed.Bed | None = None
        self.b_home: Path | None = None
        self.b_data: subprocess.CompletedProcess | None = None
        self.b_up: subprocess.CompletedProcess | None = None
        self.refused_homes: list[Path] = []
        self.removed = False

    @property
    def b(self):
        return load_settings(self.b_home)

    def names_b(self) -> tuple[list[str], list[str]]:
        """B's users and groups (derived: all but the project groups start with the prefix)."""
        h = self.b.hub
        users = [n for n, _ in demo_users(self.b)] + [h.airlock_user, h.dashboards_user]
        groups = [h.researchers_group, h.stewards_group, h.policymakers_group,
                  f"{h.project_group_prefix}demo", h.airlock_user, h.dashboards_user]
        return users, groups

    def remove(self) -> None:
        if self.removed:
            return
        self.removed = True
        stops = []
        if self.a is not None:  # A's hub and B's stop side by side (each takes seconds)
            stops.append(threading.Thread(target=hubbed.teardown, args=(self.a,)))
        if self.b_home is not None:
            stops.append(threading.Thread(target=_enclave, args=(self.b_home, "down")))
        for t in stops:
            t.start()
        for t in stops:
            t.join()
        if self.b_home is not None:
            b = self.b
            if NFT:
                with contextlib.suppress(Exception):  # (never installed)
                    egress.remove_egress(b)
            users, groups = self.names_b()
            for name in users:
                permissions.remove_user(name)
            for g in groups:
                subprocess.run(["groupdel", g], capture_output=True, check=False)
            registry.release(b.home)
            shutil.rmtree(self.b_home, ignore_errors=True)
        for home in self.refused_homes:
            registry.release(home)
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def machine():
    m = Machine()
    prefix = hubbed.new_prefix()
    m.b_home = _home(prefix, "b")  # B's folder carries the run's prefix, so its names do too
    (m.b_home / "settings.toml").write_text(B_SETTINGS)
    try:
        # B's data work needs no machine-wide name: it runs while A's bed is built
        done: dict = {}
        worker = threading.Thread(
            target=lambda: done.update(b=_enclave(m.b_home, "up", *DATA, "--no-serve")))
        worker.start()
        try:
            m.a = hubbed.make_bed(patients=300, prefix=prefix)
        finally:
            worker.join()
        m.b_data = done.get("b")
        assert m.b_data is not None and m.b_data.returncode == 0, m.b_data and m.b_data.stderr[-3000:]
        # the second enclave serves beside the first: its demo users, egress table, hub
        m.b_up = _enclave(m.b_home, "up", *DATA, "--serve")
        yield m
    finally:
        m.remove()


def test_the_second_enclave_gets_names_and_ports_of_its_own(machine):
    a, b, up = machine.a.settings, machine.b, machine.b_up
    assert up.returncode == 0, up.stderr[-3000:]
    summary = _summary(up)
    assert b.hub.instance.startswith(machine.a.prefix) and b.hub.instance != a.hub.instance
    assert set(summary["users"]) == {n for n, _ in demo_users(b)}
    assert all(n.startswith(b.hub.instance + "-") for n in summary["users"])
    assert summary["hub"] == f"http://127.0.0.1:{b.hub.port}/"
    # no machine-wide name in common: users, groups, table, ports
    for name in MACHINE_WIDE:
        assert getattr(a.hub, name) != getattr(b.hub, name), name
    ports_a = {getattr(a.hub, n) for n in MACHINE_WIDE if n.endswith("port")}
    ports_b = {getattr(b.hub, n) for n in MACHINE_WIDE if n.endswith("port")}
    assert not ports_a & ports_b
    # status names B's instance, recorded in the registry, shared with nobody
    st = json.loads(_enclave(b.home, "status", "--json").stdout)
    assert st["hub"]["running"] and st["hub"]["responding"]
    assert st["instance"]["instance"] == b.hub.instance and st["instance"]["registered"]
    assert st["instance"]["shared_with"] == []
    assert set(summary["users"]) <= set(st["instance"]["users"])
    records = {r.home: r for r in registry.records()}
    assert {str(a.home), str(b.home)} <= set(records)
    assert not registry.overlap(records[str(a.home)], records[str(b.home)])
    if NFT:  # B's egress table is its own
        assert egress.installed(b), up.stdout[-2000:]


@pytest.mark.parametrize("collide", ["instance", "port", "airlock_user"])
def test_an_up_that_would_take_another_enclaves_names_is_refused(machine, collide):
    """A third home whose settings name B's instance (every name of B), A's hub port, or A's
    airlock user: ``up`` stops before any work, naming the name, its home and the fix."""
    a, b = machine.a.settings, machine.b
    owner, line = {
        "instance": (b, f'instance = "{b.hub.instance}"'),
        "port": (a, f"port = {a.hub.port}"),
        "airlock_user": (a, f'airlock_user = "{a.hub.airlock_user}"'),
    }[collide]
    home = _home(machine.a.prefix, "c")
    machine.refused_homes.append(home)
    (home / "settings.toml").write_text(f"[hub]\n{line}\n")
    users_before = {p.pw_name for p in pwd.getpwall()}
    proc = _enclave(home, "up", *DATA, "--serve", timeout=120)
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    err = proc.stderr
    assert "nothing was done" in err and f"the enclave at {owner.home}" in err
    assert f"enclave --home {owner.home}" in err and str(home / "settings.toml") in err
    expected = {"instance": f"Unix user '{b.hub.demo_user_prefix}researcher'",
                "port": f"port {a.hub.port}", "airlock_user": f"Unix user '{a.hub.airlock_user}'"}
    assert expected[collide] in err
    assert f"hub.{collide}" in err
    # nothing was done: no data, no user, no record
    assert sorted(p.name for p in home.iterdir()) == ["settings.toml"]
    assert {p.pw_name for p in pwd.getpwall()} == users_before
    assert registry.record_of(load_settings(home)) is None


def test_the_first_enclaves_users_still_log_in_with_their_passwords(machine):
    """What broke: after the second ``up``, every role of the first enclave logs in with the
    password it was given; each hub admits its own users only."""
    bed, b = machine.a, machine.b
    assert machine.b_up.returncode == 0
    for short in ("r0", "r1", "steward", "policymaker"):
        assert bed.login(short)[0] == 302, short
    assert bed.login("outsider")[0] == 403
    creds = {}
    for line in credentials_path(b).read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, password = line.split()
            creds[name] = password
    base_b = f"http://127.0.0.1:{b.hub.port}"
    for name, password in creds.items():
        assert login(base_b, name, password)[0] == 302, name          # B's own users on B
        assert login(bed.base, name, password)[0] == 403, name        # not on A
    name, password = bed.users["r0"]
    assert login(base_b, name, password)[0] == 403                    # nor A's on B


def test_everything_the_enclaves_made_is_removed_afterwards(machine):
    a, b, prefix = machine.a.settings, machine.b, machine.a.prefix
    users_b, groups_b = machine.names_b()
    homes = [a.home, b.home, *machine.refused_homes]
    ports = [getattr(s.hub, n) for s in (a, b) for n in MACHINE_WIDE if n.endswith("port")]
    machine.remove()
    assert not [p.pw_name for p in pwd.getpwall() if p.pw_name.startswith(prefix)]
    assert not [u for u in users_b if permissions.user_exists(u)]
    assert not [g.gr_name for g in grp.getgrall() if g.gr_name.startswith(prefix)
                or g.gr_name in groups_b]
    if NFT:
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                                check=False).stdout
        assert prefix not in tables and b.hub.egress_table not in tables
    assert not [p for p in ports if port_open(p)]
    assert not [h for h in homes if h.exists()]
    assert not [r for r in registry.records() if r.home in {str(h) for h in homes}]
