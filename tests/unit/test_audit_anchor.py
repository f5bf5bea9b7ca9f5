"""Audit anchors: the head written outside the trail, checked by `enclave audit verify` by default.

Real SQLite trail, real files, the real CLI; the attacker's move is the one the chain alone cannot
see: rewrite events and recompute every later hash and the head.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import replace

import pytest

from enclave.core.audit import (
    ANCHORS,
    anchor_dir,
    anchor_due,
    connect,
    database_path,
    event_hash,
    newest_anchor,
    read_anchors,
    record_event,
    verify,
    write_anchor,
)
from enclave.core.errors import StoreError
from enclave.io.hub.anchor import anchor_if_due, schedule_anchors
from tests.conftest import REPO


def _fill(settings, n: int = 5, **detail) -> None:
    for i in range(n):
        record_event(settings, actor="alice", action="hub.route_refused", subject=f"/x/{i}",
                     detail={"i": i, **detail})


def _approve(settings) -> None:
    record_event(settings, actor="sam", action="request.vote", subject="request:r-1",
                 detail={"from": "in_review", "to": "released", "vote": "approve"})


def rewrite(settings, seq: int, subject: str) -> None:
    """The full rewrite: change event ``seq`` and recompute every later link and the head."""
    con = sqlite3.connect(database_path(settings), isolation_level=None)
    rows = con.execute("SELECT seq, ts, actor, action, subject, detail FROM audit_event "
                       "ORDER BY seq").fetchall()
    prev = "0" * 64
    for s, ts, actor, action, subj, detail in rows:
        subj = subject if s == seq else subj
        digest = event_hash(s, ts, actor, action, subj, detail, prev)
        con.execute("UPDATE audit_event SET subject = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                    (subj, prev, digest, s))
        prev = digest
    con.execute("UPDATE audit_head SET hash = ?", (prev,))
    con.close()


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enclave", "--home", str(settings.home),
                           "audit", *args], capture_output=True, text=True, cwd=REPO, check=False)


def test_an_anchor_records_the_head_in_a_private_folder(settings):
    _fill(settings)
    a = write_anchor(settings, "test")
    assert (a.seq, a.hash) == (5, verify(settings).head)
    assert newest_anchor(settings) == a and read_anchors(settings) == [a]
    folder = anchor_dir(settings)
    assert not str(folder).startswith(str(database_path(settings).parent))
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / ANCHORS).stat().st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        assert folder.stat().st_uid == 0 and folder.parent.stat().st_uid == 0
    _fill(settings, 2)
    b = write_anchor(settings, "test")
    assert b.seq == 7 and read_anchors(settings) == [a, b]
    assert verify(settings, a).ok and verify(settings, b).ok


def test_a_consistent_rewrite_is_caught_only_by_the_anchor(settings):
    _fill(settings)
    a = write_anchor(settings, "test")
    _fill(settings, 2)
    rewrite(settings, 2, "/x/forged")
    assert verify(settings).ok, "the chain alone cannot see a full rewrite"
    result = verify(settings, a)
    assert not result.ok and result.first_broken == 5
    assert "no longer has the hash anchored" in result.problem
    # nothing is anchored on top of a rewritten trail
    with pytest.raises(StoreError, match="does not verify"):
        write_anchor(settings, "test")
    assert read_anchors(settings) == [a]
    # the CLI checks the newest anchor by default; --no-anchor shows what the chain alone says
    res = _cli(settings, "verify")
    assert res.returncode == 1 and "event 5 no longer has the hash" in res.stdout
    assert _cli(settings, "verify", "--no-anchor").returncode == 0
    out = json.loads(_cli(settings, "verify", "--json").stdout)
    assert not out["ok"] and out["anchor"]["seq"] == 5


def test_deleting_anchored_events_is_caught(settings):
    _fill(settings)
    a = write_anchor(settings, "test")
    con = sqlite3.connect(database_path(settings), isolation_level=None)
    con.execute("DELETE FROM audit_event WHERE seq >= 4")
    last = con.execute("SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1").fetchone()
    con.execute("UPDATE audit_head SET seq = ?, hash = ?", last)
    con.close()
    assert verify(settings).ok
    result = verify(settings, a)
    assert not result.ok and "before event 5" in result.problem
    for suffix in ("", "-wal", "-shm"):                   # the whole database, gone
        database_path(settings).with_name(database_path(settings).name + suffix).unlink(
            missing_ok=True)
    assert verify(settings).ok and not verify(settings, a).ok
    res = _cli(settings, "verify")
    assert res.returncode == 1 and "database is gone" in res.stdout


def test_an_anchor_is_due_after_an_approval_and_daily(settings):
    assert not anchor_due(settings, 86400)          # no trail yet
    _fill(settings)
    assert anchor_due(settings, 86400)              # events, no anchor
    write_anchor(settings, "test")
    assert not anchor_due(settings, 86400)
    _fill(settings, 3)                              # events, but no approval
    assert not anchor_due(settings, 86400)
    assert anchor_due(settings, 0)                  # the newest anchor is too old
    _approve(settings)
    assert anchor_due(settings, 86400)
    a = anchor_if_due(settings)
    assert a is not None and a.seq == 9 and a.reason == "hub"
    assert anchor_if_due(settings) is None          # nothing new


def test_empty_trails_and_planted_folders(settings):
    connect(settings).close()
    with pytest.raises(StoreError, match="empty"):
        write_anchor(settings, "test")
    assert read_anchors(settings) == []
    if os.geteuid() == 0:  # root takes the folder back from whoever planted it
        _fill(settings, 1)
        folder = anchor_dir(settings)
        os.chown(folder, 65534, 65534)
        os.chmod(folder, 0o777)
        write_anchor(settings, "test")
        st = folder.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o700)


def test_the_cli_anchors_when_due(settings):
    _fill(settings)
    res = _cli(settings, "anchor", "--if-due")
    assert res.returncode == 0 and "anchored event 5" in res.stdout, res.stderr
    assert "no anchor due" in _cli(settings, "anchor", "--if-due").stdout
    res = _cli(settings, "verify")
    assert res.returncode == 0 and "anchored event 5" in res.stdout


def test_the_hub_schedule_anchors_an_approval(settings):
    fast = replace(settings, hub=replace(settings.hub, anchor_check_s=1))
    assert schedule_anchors(fast) is None           # no event loop: nothing scheduled
    _fill(settings)

    async def run() -> None:
        callback = schedule_anchors(fast)
        try:
            await asyncio.sleep(0.5)                # the first check runs at once
            assert newest_anchor(settings).seq == 5
            _approve(settings)
            for _ in range(40):
                await asyncio.sleep(0.1)
                if newest_anchor(settings).seq == 6:
                    break
        finally:
            callback.stop()

    asyncio.run(run())
    assert [a.seq for a in read_anchors(settings)] == [5, 6]
