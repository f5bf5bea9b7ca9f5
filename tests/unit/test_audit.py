"""The audit trail: hash chain, head, and `enclave audit verify` against every kind of tampering."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import threading

import pytest

from enclave.core.audit import (
    GENESIS,
    connect,
    database_path,
    events,
    record_event,
    record_event_in,
    transaction,
    verify,
)
from enclave.core.errors import BadInputError, StoreError
from tests.conftest import REPO

N = 8


def _fill(settings, n: int = N) -> None:
    for i in range(n):
        record_event(settings, actor=f"user{i % 3}", action="release.read",
                     subject=f"release:alpha/v{i}", detail={"i": i})


def _verify_cli(settings) -> tuple[int, dict]:
    res = subprocess.run([sys.executable, "-m", "enclave", "--home", str(settings.home), "audit",
                          "verify", "--json"], capture_output=True, text=True, cwd=REPO, check=False)
    return res.returncode, json.loads(res.stdout)


def _raw(settings) -> sqlite3.Connection:
    return sqlite3.connect(database_path(settings), isolation_level=None)


def test_a_fresh_chain_verifies(settings):
    assert verify(settings).ok and verify(settings).events == 0  # nothing recorded yet
    _fill(settings)
    result = verify(settings)
    assert result.ok and result.events == N and result.head != GENESIS
    code, out = _verify_cli(settings)
    assert code == 0 and out == {"ok": True, "events": N, "head": result.head,
                                 "first_broken": None, "problem": "", "anchor": None,
                                 "note": "no anchor written yet"}
    con = connect(settings)
    evs = events(con)
    con.close()
    assert [e["seq"] for e in evs] == list(range(1, N + 1))
    assert evs[3]["detail"] == {"i": 3} and evs[3]["actor"] == "user0"


def test_files_are_private(settings):
    _fill(settings, 1)
    path = database_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("column, value", [
    ("actor", "mallory"), ("action", "release.build"), ("subject", "release:beta/v1"),
    ("detail", '{"i": 99}'), ("ts", "2020-01-01T00:00:00+00:00"), ("prev_hash", "1" * 64),
    ("hash", "f" * 64),
])
@pytest.mark.parametrize("seq", [1, 4, N])
def test_editing_any_field_of_any_event_is_detected(settings, column, value, seq):
    _fill(settings)
    con = _raw(settings)
    con.execute(f"UPDATE audit_event SET {column} = ? WHERE seq = ?", (value, seq))
    con.close()
    code, out = _verify_cli(settings)
    assert code == 1 and not out["ok"]
    assert out["first_broken"] == seq, out


@pytest.mark.parametrize("seq", [1, 4, N - 1])
def test_deleting_an_event_is_detected(settings, seq):
    _fill(settings)
    con = _raw(settings)
    con.execute("DELETE FROM audit_event WHERE seq = ?", (seq,))
    con.close()
    code, out = _verify_cli(settings)
    assert code == 1 and out["first_broken"] == seq and "deleted" in out["problem"]


def test_deleting_the_newest_events_is_detected_by_the_head(settings):
    _fill(settings)
    con = _raw(settings)
    con.execute("DELETE FROM audit_event WHERE seq >= ?", (N - 1,))
    con.close()
    code, out = _verify_cli(settings)
    assert code == 1 and out["first_broken"] == N - 1 and "head" in out["problem"]


@pytest.mark.parametrize("a, b", [(1, 2), (3, 7), (N - 1, N)])
def test_reordering_events_is_detected(settings, a, b):
    _fill(settings)
    con = _raw(settings)
    cols = "ts, actor, action, subject, detail, prev_hash, hash"
    ra = con.execute(f"SELECT {cols} FROM audit_event WHERE seq = ?", (a,)).fetchone()
    rb = con.execute(f"SELECT {cols} FROM audit_event WHERE seq = ?", (b,)).fetchone()
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    con.execute(f"UPDATE audit_event SET {sets} WHERE seq = ?", (*rb, a))
    con.execute(f"UPDATE audit_event SET {sets} WHERE seq = ?", (*ra, b))
    con.close()
    code, out = _verify_cli(settings)
    assert code == 1 and out["first_broken"] == a


def test_renumbering_events_is_detected(settings):
    """Reordering by swapping sequence numbers (each row keeps its content)."""
    _fill(settings)
    con = _raw(settings)
    con.execute("UPDATE audit_event SET seq = 100 WHERE seq = 2")
    con.execute("UPDATE audit_event SET seq = 2 WHERE seq = 3")
    con.execute("UPDATE audit_event SET seq = 3 WHERE seq = 100")
    con.close()
    code, out = _verify_cli(settings)
    assert code == 1 and out["first_broken"] == 2


def test_a_rewritten_tail_is_caught_by_an_anchor(settings):
    _fill(settings)
    anchor = verify(settings).head
    # rewrite history consistently from event 1 on (what only someone who also rewrites the head
    # can do): the chain verifies, but an anchor published earlier is no longer in it
    con = _raw(settings)
    con.execute("DELETE FROM audit_event")
    con.execute("DELETE FROM audit_head")
    con.close()
    _fill(settings, 3)
    assert verify(settings).ok
    result = verify(settings, anchor=anchor)
    assert not result.ok and "anchor" in result.problem


def test_event_and_change_commit_together(settings):
    con = connect(settings, schema=("CREATE TABLE IF NOT EXISTS thing (x INTEGER)",))
    with pytest.raises(RuntimeError), transaction(con):
        con.execute("INSERT INTO thing VALUES (1)")
        record_event_in(con, actor="a", action="thing.add", subject="thing:1")
        raise RuntimeError("crash before commit")
    assert con.execute("SELECT count(*) FROM thing").fetchone()[0] == 0
    assert events(con) == []
    with pytest.raises(StoreError, match="open transaction"):
        record_event_in(con, actor="a", action="thing.add", subject="thing:1")
    con.close()


@pytest.mark.parametrize("action", ["", "Release.Build", "drop table;", "a..b"])
def test_bad_actions_are_refused(settings, action):
    with pytest.raises(BadInputError):
        record_event(settings, actor="a", action=action, subject="s")


def test_concurrent_writers_keep_one_chain(settings):
    """Threads and processes appending at once: no lost event, one unbroken chain."""
    record_event(settings, actor="a", action="x.start", subject="s")
    code = ("import sys; from enclave.core.settings import load_settings; from enclave.core.audit import "
            "record_event; s = load_settings(sys.argv[1])\n"
            "for i in range(25): record_event(s, actor='p', action='x.proc', subject=str(i))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(settings.home)], cwd=REPO)
             for _ in range(3)]

    def work():
        for i in range(25):
            record_event(settings, actor="t", action="x.thread", subject=str(i))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.wait(timeout=120) == 0 for p in procs)
    result = verify(settings)
    assert result.ok and result.events == 1 + 6 * 25

