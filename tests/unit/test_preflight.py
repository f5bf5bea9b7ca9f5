"""The preflight (``enclave.io.hub.preflight``): who can pass through which folder, decided from
owner, group, mode and ACL by stat; and ``enclave up`` (the real command line), ``start_hub`` and
``airlock serve`` refusing a home under a 0700 folder before doing anything.

Folders are real (made here, under /tmp); the users are uids and groups that need not exist, since
the walk never switches users."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from enclave.core.errors import ConfigurationError
from enclave.core.settings import Settings, load_settings
from enclave.io.hub import preflight
from enclave.io.hub.preflight import READ, SEARCH, Account, Need
from tests.enclave_cli import run_enclave

OUTSIDER = os.getuid() + 54321  # neither owner of the folders made here nor in their group


def _st(mode: int, uid: int = 1000, gid: int = 1000) -> os.stat_result:
    return os.stat_result((stat.S_IFDIR | mode, 0, 0, 0, uid, gid, 0, 0, 0, 0))


def _acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


@pytest.fixture
def locked():
    """A fresh ``tempfile.mkdtemp()`` folder under /tmp: mode 0700, as mktemp -d makes it."""
    d = Path(tempfile.mkdtemp(dir="/tmp"))
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_mode_bits_are_read_in_the_kernels_order():
    owner, member, outsider = (Account("o", "t", 1000, frozenset({1000})),
                               Account("m", "t", 2000, frozenset({1000})),
                               Account("x", "t", 3000, frozenset({3000})))
    assert preflight.permits(_st(0o711), outsider, SEARCH)
    assert not preflight.permits(_st(0o770), outsider, SEARCH)
    assert preflight.permits(_st(0o710), member, SEARCH)
    assert not preflight.permits(_st(0o701), member, SEARCH)     # the group class, not other
    assert not preflight.permits(_st(0o611), owner, SEARCH)      # the owner class, not other
    assert preflight.permits(_st(0o000), Account("root", "t", 0), SEARCH)
    fresh = Account("not-yet", "t")                              # up has yet to create it
    assert preflight.permits(_st(0o755), fresh, SEARCH) and not preflight.permits(_st(0o750), fresh,
                                                                                   SEARCH)
    assert preflight.permits(_st(0o644), outsider, READ) and not preflight.permits(
        _st(0o640), outsider, READ)


def test_acl_entries_decide_when_present():
    st, user, other = _st(0o700), Account("u", "t", 2000, frozenset({2000})), Account(
        "x", "t", 3000, frozenset({3000}))
    base = [(0x01, 7, 0), (0x04, 0, 0), (0x20, 0, 0)]
    named = _acl(*base, (0x02, 1, 2000), (0x10, 7, 0))            # user:2000:--x, mask rwx
    assert preflight.permits(st, user, SEARCH, named)
    assert not preflight.permits(st, other, SEARCH, named)
    masked = _acl(*base, (0x02, 1, 2000), (0x10, 6, 0))           # the mask takes x away
    assert not preflight.permits(st, user, SEARCH, masked)
    group = _acl(*base, (0x08, 5, 2000), (0x10, 7, 0))            # group:2000:r-x
    assert preflight.permits(st, user, SEARCH, group)


def test_an_ancestor_closed_to_outsiders_is_named(locked):
    target = locked / "home" / "settings.toml"
    target.parent.mkdir()
    need = Need(Account("svc", "the airlock service", OUTSIDER), target, "load the settings",
                read=True)
    [b] = preflight.blockages([need])
    assert (b.path, b.bit, b.who, b.mode) == (locked, SEARCH, "o", 0o700)
    assert not preflight.can_reach([need])
    with pytest.raises(ConfigurationError) as err:
        preflight.check_reachable([need], home=locked / "home")
    text = str(err.value)
    assert f"{locked} (" in text and "mode 0700" in text and "svc (the airlock service)" in text
    assert f"chmod o+x {locked}" in text and "--home" in text


def test_a_fully_traversable_path_passes(locked):
    (locked / "a" / "b").mkdir(parents=True)
    (locked / "a" / "b" / "f").write_text("x")
    os.chmod(locked, 0o711)
    os.chmod(locked / "a", 0o711)
    os.chmod(locked / "a" / "b", 0o755)
    os.chmod(locked / "a" / "b" / "f", 0o644)
    acc = Account("svc", "t", OUTSIDER)
    needs = [Need(acc, locked / "a" / "b" / "f", "read f", read=True),
             Need(acc, locked / "a" / "b", "enter b")]
    assert preflight.blockages(needs) == []
    preflight.check_reachable(needs, home=locked)                 # no error
    os.chmod(locked / "a" / "b" / "f", 0o600)                     # the file itself: r is needed
    [b] = preflight.blockages(needs)
    assert (b.path, b.bit) == (locked / "a" / "b" / "f", READ)


def test_group_search_passes_a_member_only(locked):
    os.chmod(locked, 0o710)
    gid = locked.stat().st_gid
    path = locked / "inner"
    member = Account("m", "t", OUTSIDER, frozenset({gid}))
    stranger = Account("s", "t", OUTSIDER, frozenset({gid + 54321}))
    assert preflight.can_reach([Need(member, path, "enter")])
    [b] = preflight.blockages([Need(stranger, path, "enter")])
    assert b.path == locked and b.who == "o"


def test_managed_folders_are_skipped_and_unmade_ones_judged_by_the_umask(locked):
    home = locked / "home"
    home.mkdir(mode=0o700)
    os.chmod(locked, 0o711)
    acc = Account("new", "t")
    need = Need(acc, home / "releases" / "desensitized", "read releases")
    assert preflight.blockages([need])[0].path == home            # as it is: the home blocks
    managed = replace(need, managed=(home,))                       # up makes the home 0711 itself
    assert preflight.can_reach([managed], planned=True)
    later = Need(acc, locked / "new" / "home" / "settings.toml", "load settings", read=True)
    assert preflight.can_reach([later])                            # not there: nothing to judge
    old = os.umask(0o077)
    try:
        [b] = preflight.blockages([later], planned=True)
        assert (b.path, b.exists, b.mode) == (locked / "new", False, 0o700)
    finally:
        os.umask(old)


def _settings_under(locked: Path) -> Settings:
    """A home under ``locked`` whose service users do not exist (they count as 'other')."""
    s = load_settings(locked / "home")
    tag = locked.name[-6:].lower()
    return replace(s, hub=replace(s.hub, airlock_user=f"zzpf-{tag}-air",
                                  dashboards_user=f"zzpf-{tag}-dash",
                                  demo_user_prefix=f"zzpf-{tag}-"))


def test_the_hub_needs_name_every_service_and_researcher(locked):
    s = _settings_under(locked)
    needs = preflight.hub_needs(s, planned=True, airlock=True, dashboards=True,
                                researchers=["zzpf-r"])
    assert {n.account.name for n in needs} == {s.hub.airlock_user, s.hub.dashboards_user,
                                               s.hub.culler_user, "zzpf-r"}
    with pytest.raises(ConfigurationError, match=f"{locked} .*mode 0700"):
        preflight.check_hub(s, planned=True, dashboards=True, researchers=["zzpf-r"])
    os.chmod(locked, 0o711)
    blocked = preflight.blockages(needs, planned=True)
    assert not [b for b in blocked if b.path in (locked, s.home)], blocked


def test_start_hub_refuses_before_starting_anything(locked, monkeypatch):
    from enclave.io.hub import serve

    def started(*a, **k):
        raise AssertionError("start_hub went past its preflight")

    monkeypatch.setattr(serve, "write_hub_config", started)
    monkeypatch.setattr(serve, "port_open", lambda *a, **k: False)
    with pytest.raises(ConfigurationError, match=f"{locked} "):
        serve.start_hub(_settings_under(locked), airlock=True)


def test_airlock_serve_as_its_user_names_the_folder(locked, monkeypatch, capsys):
    from enclave.cli import main
    from enclave.io.airlock import server

    def served(*a, **k):
        raise AssertionError("airlock serve went past its preflight")

    monkeypatch.setattr(server, "serve", served)
    monkeypatch.setattr(os, "geteuid", lambda: OUTSIDER)          # as the service user sees it
    monkeypatch.setattr(os, "getegid", lambda: OUTSIDER)
    monkeypatch.setattr(os, "getgroups", list)
    code = main(["--home", str(locked / "home"), "airlock", "serve", "--port", "1"])
    err = capsys.readouterr().err
    assert code == ConfigurationError.exit_code
    assert f"{locked} (" in err and f"chmod o+x {locked}" in err


def _passwd() -> str:
    return subprocess.run(["getent", "passwd"], capture_output=True, text=True, check=True).stdout


def test_up_refuses_a_home_under_a_0700_folder_within_seconds(locked):
    home = locked / "home"
    users = _passwd()
    start = time.monotonic()
    # --serve explicitly (ENCLAVE_UP_SERVE may say no); the timeout stops a run that got past
    proc = run_enclave(home, "up", "--serve", check=False, timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == ConfigurationError.exit_code, proc.stderr[-2000:]
    assert elapsed < 15, elapsed
    assert f"{locked} (" in proc.stderr and "mode 0700" in proc.stderr
    assert f"chmod o+x {locked}" in proc.stderr
    assert not home.exists()                   # no restricted store, no demo extracts, nothing
    assert list(locked.iterdir()) == []
    assert _passwd() == users                  # no Unix user was created
