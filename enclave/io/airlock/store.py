"""The airlock's tables in its SQLite database (beside the audit trail, so a status change and its
audit event share one transaction). Rows in, plain dicts out; the rules live in ``workflow``."""

from __future__ import annotations

import json
import sqlite3

from enclave.io.airlock.workflow import RequestStatus, RequestView, Vote

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS export_request (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        requester TEXT NOT NULL,
        status TEXT NOT NULL,
        round INTEGER NOT NULL,
        kind TEXT NOT NULL,
        justification TEXT NOT NULL,
        record TEXT NOT NULL,            -- the research output record (JSON), as submitted
        record_sha256 TEXT NOT NULL,
        checks TEXT,                     -- the airlock's own CheckOutcome (JSON), per round
        required INTEGER,                -- approvals this round needs
        decision_reason TEXT,
        outbox_sha256 TEXT,              -- hash of the outbox manifest once released
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS export_request_status ON export_request (status)",
    """CREATE TABLE IF NOT EXISTS request_file (
        request_id TEXT NOT NULL REFERENCES export_request (id),
        round INTEGER NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY (request_id, round, name)
    )""",
    """CREATE TABLE IF NOT EXISTS request_vote (
        request_id TEXT NOT NULL REFERENCES export_request (id),
        round INTEGER NOT NULL,
        steward TEXT NOT NULL,
        vote TEXT NOT NULL,
        reason TEXT NOT NULL,
        ts TEXT NOT NULL,
        PRIMARY KEY (request_id, round, steward)
    )""",
    """CREATE TABLE IF NOT EXISTS request_comment (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL REFERENCES export_request (id),
        author TEXT NOT NULL,
        body TEXT NOT NULL,
        ts TEXT NOT NULL
    )""",
)

_COLS = ("id, project, requester, status, round, kind, justification, record, record_sha256, "
         "checks, required, decision_reason, outbox_sha256, created_at, updated_at")


def _row(row: tuple) -> dict:
    d = dict(zip([c.strip() for c in _COLS.split(",")], row))
    d["record"] = json.loads(d["record"])
    d["checks"] = json.loads(d["checks"]) if d["checks"] else None
    d["status"] = RequestStatus(d["status"])
    return d


def get_request(con: sqlite3.Connection, request_id: str) -> dict | None:
    row = con.execute(f"SELECT {_COLS} FROM export_request WHERE id = ?", (request_id,)).fetchone()
    return _row(row) if row else None


def list_requests(con: sqlite3.Connection, *, status: str | None = None,
                  project: str | None = None, requester: str | None = None) -> list[dict]:
    where, params = [], []
    for col, value in (("status", status), ("project", project), ("requester", requester)):
        if value:
            where.append(f"{col} = ?")
            params.append(value)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return [_row(r) for r in con.execute(
        f"SELECT {_COLS} FROM export_request {clause} ORDER BY created_at, id", params).fetchall()]


def votes(con: sqlite3.Connection, request_id: str, round_: int | None = None) -> list[dict]:
    sql = "SELECT round, steward, vote, reason, ts FROM request_vote WHERE request_id = ?"
    params: list = [request_id]
    if round_ is not None:
        sql += " AND round = ?"
        params.append(round_)
    return [{"round": r, "steward": s, "vote": Vote(v), "reason": why, "ts": ts}
            for r, s, v, why, ts in con.execute(sql + " ORDER BY ts", params).fetchall()]


def files(con: sqlite3.Connection, request_id: str, round_: int) -> list[dict]:
    return [{"name": n, "sha256": h, "bytes": b} for n, h, b in con.execute(
        "SELECT name, sha256, bytes FROM request_file WHERE request_id = ? AND round = ? "
        "ORDER BY name", (request_id, round_)).fetchall()]


def comments(con: sqlite3.Connection, request_id: str) -> list[dict]:
    return [{"author": a, "body": b, "ts": ts} for a, b, ts in con.execute(
        "SELECT author, body, ts FROM request_comment WHERE request_id = ? ORDER BY id",
        (request_id,)).fetchall()]


def view(con: sqlite3.Connection, req: dict) -> RequestView:
    voters = frozenset(v["steward"] for v in votes(con, req["id"], req["round"]))
    return RequestView(id=req["id"], project=req["project"], requester=req["requester"],
                       status=req["status"], round=req["round"], voters=voters)


def set_status(con: sqlite3.Connection, request_id: str, status: RequestStatus, now: str,
               **fields: object) -> None:
    sets = ", ".join(["status = ?", "updated_at = ?", *(f"{k} = ?" for k in fields)])
    con.execute(f"UPDATE export_request SET {sets} WHERE id = ?",
                (status.value, now, *fields.values(), request_id))
