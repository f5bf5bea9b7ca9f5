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
:func:`verify` also checks an anchor.

Anchors: the chain head (seq, hash, time) appended to ``<home>/audit/anchors/anchors.jsonl``
(:func:`write_anchor`), a root-owned 0700 folder the airlock's service user cannot write. Root
writes it: the hub process (``enclave.io.hub.anchor``) after every approval and at least daily
(``hub.anchor_*`` settings), and ``enclave audit anchor`` (e.g. from cron when no hub runs). A
new anchor is written only when the chain verifies against the previous one. ``enclave audit
verify`` checks the newest anchor by default. What it protects: whoever holds the airlock's
database (the service user) can rewrite every event and the head consistently, but not the
anchored events, which a rewrite changes: such a rewrite of anything up to the newest anchor is
detected. Events after the newest anchor are protected by the chain alone, and root (who writes
the anchors) is trusted.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from enclave.core.canonical import canonical_json, canonical_sha256
from enclave.core.errors import BadInputError, StoreError
from enclave.core.settings import Settings

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


def event_hash(seq: int, ts: str, actor: str, action: str, subject: str, detail: str,
               prev_hash: str) -> str:
    return canonical_sha256([seq, ts, actor, action, subject, detail, prev_hash])


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
    body = canonical_json(detail or {}, spaced=True)  # spaced: stored chains keep their hashes
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
                "first_broken": self.first_broken, "problem": self.problem, **self.extra}


def verify_connection(con: sqlite3.Connection,
                      anchor: str | Anchor | None = None) -> Verification:
    """Walk the chain in storage order; the first link that fails is reported. ``anchor``: a
    head hash that must be in the chain, or an :class:`Anchor`, whose event must still carry the
    anchored hash."""
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
    if isinstance(anchor, Anchor):
        found = next((r[8] for r in rows if r[1] == anchor.seq), None)
        extra = {"anchor": anchor.as_dict()}
        if found is None:
            return Verification(False, len(rows), prev, last + 1,
                                f"the chain ends at event {last}, before event {anchor.seq} "
                                f"anchored at {anchor.ts} (newest events deleted)", extra)
        if found != anchor.hash:
            return Verification(False, len(rows), prev, anchor.seq,
                                f"event {anchor.seq} no longer has the hash anchored at "
                                f"{anchor.ts} (the trail was rewritten)", extra)
        return Verification(True, len(rows), prev, extra=extra)
    if anchor and anchor not in {r[8] for r in rows}:
        return Verification(False, len(rows), prev, None,
                            f"the anchor {anchor[:12]}… is not in the chain")
    return Verification(True, len(rows), prev)


def verify(settings: Settings, anchor: str | Anchor | None = None) -> Verification:
    if not database_path(settings).exists():
        if anchor:
            return Verification(False, 0, GENESIS, 1, "the audit database is gone, but the "
                                "trail was anchored (it existed and was deleted)")
        return Verification(True, 0, GENESIS)
    con = connect(settings)
    try:
        return verify_connection(con, anchor)
    finally:
        con.close()


# --- anchors: the head, written where the airlock's service user cannot write -----------------

ANCHORS = "anchors.jsonl"


@dataclass(frozen=True, slots=True)
class Anchor:
    seq: int
    hash: str
    ts: str
    reason: str = ""

    def as_dict(self) -> dict:
        return {"seq": self.seq, "hash": self.hash, "ts": self.ts, "reason": self.reason}


def anchor_dir(settings: Settings) -> Path:
    """``<home>/audit/anchors`` (root, 0700): outside the airlock's folder and its user's reach."""
    return settings.audit_dir / "anchors"


def read_anchors(settings: Settings) -> list[Anchor]:
    """Every anchor, oldest first (a torn last line is skipped). PermissionError when the
    caller may not read the folder (only root may)."""
    path = anchor_dir(settings) / ANCHORS
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            d = json.loads(line)
            out.append(Anchor(int(d["seq"]), str(d["hash"]), str(d["ts"]),
                              str(d.get("reason", ""))))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def newest_anchor(settings: Settings) -> Anchor | None:
    anchors = read_anchors(settings)
    return anchors[-1] if anchors else None


def _anchor_folder(settings: Settings) -> Path:
    """Create (or check) the anchor folder: as root, owned by root and closed to everyone else;
    refused when someone else owns it or may write it."""
    folder = anchor_dir(settings)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for d in (settings.audit_dir, folder):
        st = d.stat()
        if os.geteuid() == 0 and (st.st_uid != 0 or st.st_mode & 0o077):
            os.chown(d, 0, 0)
            os.chmod(d, 0o700)
        elif st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise StoreError(f"{d}: owned or writable by another user; the audit anchors must "
                             "live where only the anchoring user (root) can write")
    return folder


def anchor_due(settings: Settings, max_age_s: float) -> bool:
    """True when the trail has events and: no anchor yet, an approval (an export request
    approved or released, a project approved) after the newest anchor, or the newest anchor is
    older than ``max_age_s``."""
    if not database_path(settings).exists():
        return False
    last = newest_anchor(settings)
    con = connect(settings)
    try:
        head = con.execute("SELECT seq FROM audit_head WHERE one = 1").fetchone()
        if not head:
            return False
        if last is None:
            return True
        approved = con.execute(
            "SELECT 1 FROM audit_event WHERE seq > ? AND (action = 'project.approve' OR "
            "json_extract(detail, '$.to') IN ('approved', 'released')) LIMIT 1",
            (last.seq,)).fetchone()
    finally:
        con.close()
    age = datetime.now(UTC) - datetime.fromisoformat(last.ts)
    return bool(approved) or age.total_seconds() >= max_age_s


def write_anchor(settings: Settings, reason: str) -> Anchor:
    """Append the current head to the anchor file (fsynced), after verifying the chain against
    the previous anchor; StoreError when the chain does not verify (nothing is anchored then)."""
    folder = _anchor_folder(settings)
    result = verify(settings, newest_anchor(settings))
    if not result.ok:
        raise StoreError(f"the audit trail does not verify, nothing anchored: {result.problem}")
    if not result.events:
        raise StoreError("the audit trail is empty: nothing to anchor")
    anchor = Anchor(result.events, result.head, now(), reason)
    fd = os.open(folder / ANCHORS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(anchor.as_dict(), sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return anchor


def events(con: sqlite3.Connection, subject: str | None = None) -> list[dict]:
    where, params = ("WHERE subject = ?", (subject,)) if subject else ("", ())
    out = []
    for seq, ts, actor, action, subj, detail in con.execute(
            f"SELECT seq, ts, actor, action, subject, detail FROM audit_event {where} ORDER BY seq",
            params).fetchall():
        out.append({"seq": seq, "ts": ts, "actor": actor, "action": action, "subject": subj,
                    "detail": json.loads(detail)})
    return out
