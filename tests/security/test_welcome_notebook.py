"""The hub (root) writes ``~/Welcome.ipynb`` into a folder its owner controls before each spawn
(:func:`enclave.io.hub.welcome.write_welcome_into`). An owner who plants a link there, or swaps the
file for a link while root writes it, must not get root to write or chown anything else.

The attacker is a real unprivileged process (user ``nobody``) working in its own 0700 home; the
victim is a root-owned file the link points at."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from enclave.io.hub import welcome

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root writes into another user's home")

NOBODY = pwd.getpwnam("nobody")

SWAPPER = r"""
import os, sys, time
home, victim, until = sys.argv[1], sys.argv[2], float(sys.argv[3])
target = os.path.join(home, "Welcome.ipynb")
n = 0
while time.time() < until:
    try:
        os.rename(target, os.path.join(home, f"moved-{n}"))
        os.symlink(victim, target)
        n += 1
    except OSError:
        pass
print(n)
"""


@pytest.fixture
def attack():
    """A 0700 home owned by nobody, and a root-owned victim file (0644, known text) outside it
    (in a folder nobody can pass through: pytest's own tmp folders are root's, 0700)."""
    base = Path(tempfile.mkdtemp(prefix="welcome-attack-", dir="/tmp"))
    os.chmod(base, 0o755)
    home = base / "home"
    home.mkdir(mode=0o700)
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    victim = base / "victim.conf"
    victim.write_text("root's own\n")
    os.chmod(victim, 0o644)
    yield home, victim
    shutil.rmtree(base)


def _untouched(victim) -> None:
    st = victim.stat()
    assert (st.st_uid, st.st_gid) == (0, 0), "root chowned the link's target to the user"
    assert oct(st.st_mode & 0o777) == oct(0o644)
    assert victim.read_text() == "root's own\n", "root wrote through the link"


def test_a_planted_link_is_neither_followed_nor_replaced(settings, attack):
    home, victim = attack
    link = home / welcome.WELCOME
    os.symlink(victim, link)
    assert welcome.write_welcome_into(settings, home, NOBODY.pw_uid, NOBODY.pw_gid) == link
    assert link.is_symlink() and os.readlink(link) == str(victim)
    _untouched(victim)
    # a dangling link (to where root could create a file) is not followed either
    link.unlink()
    os.symlink(home.parent / "created-by-root", link)
    welcome.write_welcome_into(settings, home, NOBODY.pw_uid, NOBODY.pw_gid)
    assert not (home.parent / "created-by-root").exists()


def test_a_file_swapped_for_a_link_while_root_writes_gives_the_user_nothing(settings, attack):
    """The owner renames the new notebook away and puts a link in its place as fast as it can,
    while root writes the notebook again and again: the victim keeps its owner, mode and text,
    and every notebook root made is the owner's, 0600."""
    home, victim = attack
    until = time.time() + 4
    swapper = subprocess.Popen(
        ["/usr/bin/python3", "-c", SWAPPER, str(home), str(victim), str(until)],
        user=NOBODY.pw_uid, group=NOBODY.pw_gid, stdout=subprocess.PIPE, text=True)
    written = 0
    try:
        while time.time() < until:
            link = home / welcome.WELCOME
            if link.is_symlink():  # make room for the next write (root may; the home is nobody's)
                link.unlink(missing_ok=True)
            welcome.write_welcome_into(settings, home, NOBODY.pw_uid, NOBODY.pw_gid)
            written += 1
    finally:
        swaps = int(swapper.communicate(timeout=30)[0] or 0)
    assert swapper.returncode == 0 and written > 100 and swaps > 10, (written, swaps)
    _untouched(victim)
    made = [p for p in home.iterdir() if not p.is_symlink()]
    assert made and all((p.stat().st_uid, p.stat().st_mode & 0o777) == (NOBODY.pw_uid, 0o600)
                        for p in made)
