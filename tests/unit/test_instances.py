"""Several enclaves on one machine: the machine-wide names (Unix users and groups, the nftables
table, ports) derive from the home or ``hub.instance`` (``enclave.core.settings``), and the registry
(``enclave.io.hub.registry``, real files in a folder of this test) refuses a home that would take
another existing home's names, before anything is done."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from enclave.core.errors import ConfigurationError
from enclave.core.model.project import USER_NAME
from enclave.core.settings import (
    DEFAULT_HOME,
    MACHINE_WIDE,
    PORT_BLOCK_SIZE,
    HubSettings,
    derive_instance,
    load_settings,
)
from enclave.io.hub import registry, serve
from tests.enclave_cli import run_enclave

DEMO = ("researcher", "steward1", "steward2", "policymaker")  # enclave_up.DEMO_ROLES


def names(settings) -> dict:
    return {n: getattr(settings.hub, n) for n in MACHINE_WIDE}


def home_with(tmp_path: Path, name: str, hub: str = "") -> Path:
    home = tmp_path / name
    home.mkdir()
    if hub:
        (home / "settings.toml").write_text("[hub]\n" + hub + "\n")
    return home


@pytest.fixture
def reg(tmp_path, monkeypatch):
    folder = tmp_path / "registry"
    monkeypatch.setenv("ENCLAVE_REGISTRY", str(folder))
    return folder


# --- derivation ----------------------------------------------------------------------------------

def test_the_default_home_keeps_the_documented_names():
    s = load_settings(DEFAULT_HOME)
    assert s.hub.instance == "enclave"
    assert names(s) == {n: getattr(HubSettings(), n) for n in MACHINE_WIDE}
    assert (s.hub.port, s.hub.demo_user_prefix, s.hub.egress_table) == (8000, "demo-",
                                                                         "enclave_egress")
    # another user's default home (a service, running as its own user, loading root's) too
    assert derive_instance(Path("/root/.local/share/enclave")) == "enclave"


def test_every_other_home_gets_names_of_its_own(tmp_path):
    homes = [tmp_path / f"h{i}" / leaf for i in range(60)
             for leaf in (".enclave", "enclave", "2024 研究")]
    settings = [load_settings(h) for h in homes]
    instances = {s.hub.instance for s in settings}
    assert len(instances) == len(homes) and "enclave" not in instances
    for field in MACHINE_WIDE:
        if not field.endswith("port"):  # ports: one block of 1000, met by the registry's check
            assert len({getattr(s.hub, field) for s in settings}) == len(homes), field
    for s in settings:
        h = s.hub
        assert re.fullmatch(r"[a-z][a-z0-9]{0,7}-[0-9a-f]{6}", h.instance), h.instance
        for user in [h.airlock_user, h.dashboards_user, *(h.demo_user_prefix + d for d in DEMO)]:
            assert USER_NAME.fullmatch(user) and user.startswith(h.instance), user
        for group in (h.researchers_group, h.stewards_group, h.policymakers_group,
                      h.project_group_prefix + "p" * 24):       # the longest project id
            assert len(group) <= 32 and re.fullmatch(r"[a-z][a-z0-9-]*", group), group
        assert re.fullmatch(r"[a-z][a-z0-9_]*", h.egress_table)
        ports = [getattr(h, n) for n in MACHINE_WIDE if n.endswith("port")]
        assert ports == list(range(h.port, h.port + 6)) and h.port % PORT_BLOCK_SIZE == 0
        assert 20000 <= h.port and h.port + 5 < 32768        # below Linux's ephemeral ports
    # the same home, the same names, every time (the hub, its services and kernels agree)
    assert names(load_settings(homes[0])) == names(settings[0])


def test_explicit_settings_win_and_an_explicit_instance_names_the_rest(tmp_path):
    home = home_with(tmp_path, "a", 'instance = "lab2"\nport = 18888\nairlock_user = "air"')
    h = load_settings(home).hub
    assert (h.instance, h.port, h.airlock_user) == ("lab2", 18888, "air")
    assert (h.researchers_group, h.demo_user_prefix, h.egress_table) == (
        "lab2-researchers", "lab2-", "lab2_egress")
    assert h.hub_port != 18889                              # the rest from lab2's block
    # instance "enclave" anywhere: the documented names (an existing install keeps them)
    assert names(load_settings(home_with(tmp_path, "b", 'instance = "enclave"'))) == names(
        load_settings(DEFAULT_HOME))
    for bad in ("Lab", "9lab", "lab-", "a" * 16, "la--b"):
        with pytest.raises(ConfigurationError, match="hub.instance"):
            load_settings(home_with(tmp_path, f"bad{len(bad)}{bad[0]}", f'instance = "{bad}"'))


# --- the registry --------------------------------------------------------------------------------

def test_a_home_claims_its_names_and_keeps_the_users_it_added(tmp_path, reg):
    s = load_settings(home_with(tmp_path, "a"))
    assert registry.claim(s, users=["alice"], write=False).users and not list(reg.glob("*.json"))
    assert registry.record_of(s) is None                      # a check records nothing
    record = registry.claim(s, users=["alice"])
    assert record.home == str(s.home) and record.instance == s.hub.instance
    assert {"alice", s.hub.airlock_user} <= set(record.users)
    assert record.tables == (s.hub.egress_table,) and s.hub.port in record.ports
    registry.claim(s, users=["bob"])                          # again: alice stays recorded
    assert {"alice", "bob"} <= set(registry.record_of(s).users)
    path = registry.record_path(s.home)
    assert path.parent == reg and oct(path.stat().st_mode & 0o777) == "0o644"
    registry.release(s.home, users=["alice"])
    assert "alice" not in registry.record_of(s).users
    registry.release(s.home)
    assert registry.record_of(s) is None and not list(reg.glob("*.json"))


def test_a_second_home_with_the_first_ones_names_is_refused_and_records_nothing(tmp_path, reg):
    first = load_settings(home_with(tmp_path, "first"))
    registry.claim(first, users=[first.hub.demo_user_prefix + d for d in DEMO])
    # its own instance name, set by hand in a second home: every name is the first one's
    second = load_settings(home_with(tmp_path, "second", f'instance = "{first.hub.instance}"'))
    with pytest.raises(registry.NameConflictError) as err:
        registry.claim(second, users=[second.hub.demo_user_prefix + d for d in DEMO])
    msg = str(err.value)
    assert f"Unix user '{first.hub.demo_user_prefix}researcher'" in msg
    assert f"Unix group '{first.hub.researchers_group}'" in msg
    assert f"nftables table 'inet {first.hub.egress_table}'" in msg and f"port {first.hub.port}" in msg
    assert f"the enclave at {first.home}" in msg and "nothing was done" in msg
    assert f"enclave --home {first.home}" in msg and str(second.home / "settings.toml") in msg
    assert "hub.instance" in msg
    assert registry.record_of(second) is None
    # one shared name is enough: a port, or a project group prefix that starts another's
    for i, hub in enumerate((f"port = {first.hub.port}",
                             f'project_group_prefix = "{first.hub.project_group_prefix[:-1]}"')):
        other = load_settings(home_with(tmp_path, f"other{i}", hub))
        with pytest.raises(registry.NameConflictError, match=r"hub\.(port|project_group_prefix)"):
            registry.claim(other)
    # ... while a home with names of its own is welcome
    registry.claim(load_settings(home_with(tmp_path, "third")))
    assert len(registry.records()) == 2


def test_the_names_of_a_home_that_no_longer_exists_are_taken_over(tmp_path, reg):
    gone = load_settings(home_with(tmp_path, "gone"))
    registry.claim(gone)
    shutil.rmtree(gone.home)
    heir = load_settings(home_with(tmp_path, "heir", f'instance = "{gone.hub.instance}"'))
    said = []
    registry.claim(heir, echo=said.append)
    assert len(said) == 1 and f"from the enclave at {gone.home}" in said[0]
    assert "no longer exists" in said[0]
    assert [r.home for r in registry.records()] == [str(heir.home)]


def test_a_port_another_program_listens_on_is_refused(tmp_path, reg):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        s = load_settings(home_with(tmp_path, "a", f"dashboards_port = {port}"))
        with pytest.raises(registry.NameConflictError,
                           match=rf"port {port} \(hub.dashboards_port\) is in use"):
            serve.check_ports_free(s)
        serve.check_ports_free(s, ["port"])               # the others are free


def test_status_shows_the_instance_and_what_it_shares(tmp_path, reg):
    first = load_settings(home_with(tmp_path, "first"))
    registry.claim(first)
    home = home_with(tmp_path, "second", f'instance = "{first.hub.instance}"')
    out = run_enclave(home, "status").stdout
    assert f"instance {first.hub.instance}: demo users {first.hub.demo_user_prefix}*" in out
    assert f"shared with the enclave at {first.home}" in out
    st = __import__("json").loads(run_enclave(first.home, "status", "--json").stdout)
    assert st["instance"]["registered"] and st["instance"]["port"] == first.hub.port
    assert st["instance"]["shared_with"] == [] and st["hub"]["url"].endswith(f":{first.hub.port}/")


@pytest.mark.skipif(os.geteuid() != 0, reason="a serving up is refused to non-root before this")
def test_up_refuses_another_homes_names_before_doing_anything(tmp_path, reg):
    """The real command line: a serving ``up`` whose settings name the users of another
    enclave stops before it generates, ingests or creates anything."""
    first = load_settings(home_with(tmp_path, "first"))
    registry.claim(first, users=[first.hub.demo_user_prefix + d for d in DEMO])
    home = Path(tempfile.mkdtemp(prefix="zzup-", dir="/tmp"))  # passable, as a serving home is
    os.chmod(home, 0o711)
    try:
        (home / "settings.toml").write_text(f'[hub]\ndemo_user_prefix = "{first.hub.demo_user_prefix}"\n')
        os.chmod(home / "settings.toml", 0o644)  # readable by the services, whatever the umask
        proc = run_enclave(home, "up", "--patients", "50", "--hospitals", "1", "--serve",
                           check=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"Unix user '{first.hub.demo_user_prefix}researcher'" in proc.stderr
        assert f"the enclave at {first.home}" in proc.stderr and "hub.demo_user_prefix" in proc.stderr
        assert sorted(p.name for p in home.iterdir()) == ["settings.toml"]   # nothing was done
        assert registry.record_of(load_settings(home)) is None
    finally:
        shutil.rmtree(home, ignore_errors=True)
