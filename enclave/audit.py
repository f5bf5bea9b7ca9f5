"""The audit trail: append-only, hash-chained, written in the same transaction as what it records.

Every zone writes here: the airlock (each status change and vote, in the transaction that makes it),
release and twin builds, the hub (release reads, logins, blocked actions, through the airlock
service's ``POST /api/audit``), downloads from the outbox. ``enclave audit verify`` walks the chain
and names the first broken link.

Storage is the airlock's SQLite database (``<home>/airlock/airlock.sqlite``, see
:func:`database_path`): SQLite in WAL mode with ``BEGIN IMMEDIATE`` gives many processes
(the service, the CLI, builds) serialized, crash-safe write transactions on one file, which the
DuckDB control database (one read-write process per file) cannot. A status change and its audit
event share one SQLite transaction, so they are committed together or not at all.

The chain: event ``n`` stores ``prev_hash`` (the hash of event ``n-1``, 64 zeros for the first) and
``hash = sha256(canonical JSON of (seq, ts, actor, action, subject, detail, prev_hash))``. The head
(last seq and hash) is kept in a one-row table updated in the same transaction, so deleting the
newest events is detected too. An edit, deletion or reordering of any row breaks a link; only
someone who rewrites every later row *and* the head can hide a change, which is why
:func:`verify` can also be given an anchor (a hash published elsewhere, e.g. printed in a report).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enclave.errors import BadInputError, StoreError
from enclave.settings import Settings

GENESIS = "0" * 64
#: actions are short dotted names (``request.submit``, ``release.build``, ``hub.login``)
ACTION = re.compile(r"[a-z][a-z0-9_]*(?:[.:-][a-z0-9_]+){0,4}")

_DDL = (
    """CREATE TABLE IF NOT EXISTS audit_event (
        seq INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS audit_head (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    )""",
)


def airlock_dir(settings: Settings) -> Path:
    """The airlock's own folder (service user, 0700): database, request files, outbox."""
    return settings.control_path.parent


def database_path(settings: Settings) -> Path:
    """The control database: projects, requests, votes and the audit trail."""
    return settings.control_path


def _own_like_parent(path: Path) -> None:
    """When root writes (CLI, builds), the files stay owned by the folder's owner (the service
    user), or the service could no longer open its own WAL files."""
    if os.geteuid() != 0 or not path.exists():
        return
    st = path.parent.stat()
    if (path.stat().st_uid, path.stat().st_gid) != (st.st_uid, st.st_gid):
        os.chown(path, st.st_uid, st.st_gid)


def hand_over(settings: Settings) -> None:
    """After root (CLI, builds) wrote in the airlock's folder: give every entry it made to the
    folder's owner (the airlock's service user), or the service could not read its own outbox,
    request files or ledger. Does nothing unless run as root on a service-owned folder."""
    top = airlock_dir(settings)
    if os.geteuid() != 0 or not top.exists():
        return
    st = top.stat()
    if st.st_uid == 0:
        return
    for d, dirs, files in os.walk(top):
        for p in (d, *(os.path.join(d, n) for n in dirs + files)):
            if os.lstat(p).st_uid != st.st_uid:
                os.chown(p, st.st_uid, st.st_gid, follow_symlinks=False)


def connect(settings: Settings, *, schema: tuple[str, ...] = ()) -> sqlite3.Connection:
    """A connection to the airlock database (created, 0600 in a 0700 folder, when missing).

    Autocommit mode: transactions are opened explicitly with :func:`transaction`.
    """
    path = database_path(settings)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        con = sqlite3.connect(str(path), timeout=settings.airlock.busy_timeout_s,
                              isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL").fetchall()
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        with transaction(con):
            for ddl in (*_DDL, *schema):
                con.execute(ddl)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the airlock database at {path}: {exc}") from None
    finally:
        os.umask(old)
    for suffix in ("", "-wal", "-shm"):
        _own_like_parent(Path(str(path) + suffix))
    return con


@contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock is taken up front, so two writers never
    read the same chain head; any exception rolls everything back."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def event_hash(seq: int, ts: str, actor: str, action: str, subject: str, detail: str,
               prev_hash: str) -> str:
    return hashlib.sha256(_canonical([seq, ts, actor, action, subject, detail, prev_hash])).hexdigest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def record_event_in(con: sqlite3.Connection, *, actor: str, action: str, subject: str,
                    detail: dict | None = None) -> int:
    """Append one event inside the caller's open transaction (see :func:`transaction`); returns its
    sequence number. The caller's change and this event commit together."""
    if not con.in_transaction:
        raise StoreError("record_event_in needs an open transaction (use audit.transaction)")
    if not ACTION.fullmatch(action or ""):
        raise BadInputError(f"audit action '{action}' is not a dotted lower-case name")
    if not actor or not subject:
        raise BadInputError("an audit event needs an actor and a subject")
    head = con.execute("SELECT seq, hash FROM audit_head WHERE one = 1").fetchone()
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
    ts = now()
    body = json.dumps(detail or {}, sort_keys=True, ensure_ascii=False, default=str)
    digest = event_hash(seq, ts, actor, action, subject, body, prev)
    con.execute("INSERT INTO audit_event VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, ts, actor, action, subject, body, prev, digest))
    con.execute("INSERT INTO audit_head VALUES (1, ?, ?) ON CONFLICT(one) DO UPDATE SET "
                "seq = excluded.seq, hash = excluded.hash", (seq, digest))
    return seq


def record_event(settings: Settings, *, actor: str, action: str, subject: str,
                 detail: dict | None = None) -> int:
    """Append one event in its own transaction; returns its sequence number."""
    con = connect(settings)
    try:
        with transaction(con):
            return record_event_in(con, actor=actor, action=action, subject=subject,
                                   detail=detail)
    finally:
        con.close()


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    events: int
    head: str
    first_broken: int | None = None  #: seq (position) of the first event that does not verify
    problem: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "events": self.events, "head": self.head,
                "first_broken": self.first_broken, "problem": self.problem}


def verify_connection(con: sqlite3.Connection, anchor: str | None = None) -> Verification:
    """Walk the chain in storage order; the first link that fails is reported."""
    rows = con.execute("SELECT rowid, seq, ts, actor, action, subject, detail, prev_hash, hash "
                       "FROM audit_event ORDER BY rowid").fetchall()
    head = con.execute("SELECT seq, hash FROM audit_head WHERE one = 1").fetchone()
    prev, expected_seq = GENESIS, 1
    for _rowid, seq, ts, actor, action, subject, detail, prev_hash, digest in rows:
        problem = ""
        if seq != expected_seq:
            problem = (f"event {expected_seq}: found event {seq} in its place "
                       "(an event was deleted or the events were reordered)")
        elif prev_hash != prev:
            problem = f"event {seq}: does not link to the event before it"
        elif event_hash(seq, ts, actor, action, subject, detail, prev_hash) != digest:
            problem = f"event {seq}: its content does not match its hash (edited)"
        if problem:
            return Verification(False, len(rows), prev, expected_seq, problem)
        prev, expected_seq = digest, seq + 1
    last = expected_seq - 1
    if (head or (0, GENESIS)) != (last, prev):
        return Verification(False, len(rows), prev, last + 1,
                            f"the chain ends at event {last} but its head records event "
                            f"{head[0] if head else 0} (newest events deleted, or head edited)")
    if anchor and anchor not in {r[8] for r in rows}:
        return Verification(False, len(rows), prev, None,
                            f"the anchor {anchor[:12]}… is not in the chain")
    return Verification(True, len(rows), prev)


def verify(settings: Settings, anchor: str | None = None) -> Verification:
    if not database_path(settings).exists():
        return Verification(True, 0, GENESIS)
    con = connect(settings)
    try:
        return verify_connection(con, anchor)
    finally:
        con.close()


def events(con: sqlite3.Connection, subject: str | None = None) -> list[dict]:
    where, params = ("WHERE subject = ?", (subject,)) if subject else ("", ())
    out = []
    for seq, ts, actor, action, subj, detail in con.execute(
            f"SELECT seq, ts, actor, action, subject, detail FROM audit_event {where} ORDER BY seq",
            params).fetchall():
        out.append({"seq": seq, "ts": ts, "actor": actor, "action": action, "subject": subj,
                    "detail": json.loads(detail)})
    return out
