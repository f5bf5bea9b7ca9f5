"""The daily egress budget's ledger, kept by the airlock (security-critical).

Every user server counts the bytes it hands to the browser — file contents through the contents
API and kernel output over the websocket (:mod:`enclave.io.hub.budget`) — and reports them here
(``POST /api/egress``, authenticated as the user; reports only add). The airlock keeps the total
per user and day in its database, answers with it, and writes one ``egress.alert`` audit event
(actor ``airlock``, subject ``user:<name>``) the first time a user's day passes
``hub.egress_budget_mb``, for the stewards to look at. Past the budget the server refuses further
transfers. What this cannot stop: a screen can be read, photographed or typed out; the budget
bounds bulk copying through the browser, nothing more.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

from enclave.core.audit import record_event_in, transaction
from enclave.core.settings import Settings

SCHEMA = """CREATE TABLE IF NOT EXISTS egress_usage (
    user_name TEXT NOT NULL,
    day TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    alerted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_name, day)
)"""
CHANNELS = ("contents", "iopub")
#: one report may not claim more than this (a server flushes about 1 MiB at a time)
MAX_REPORT_BYTES = 1 << 30


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def usage(con: sqlite3.Connection, settings: Settings, user: str) -> dict:
    """Today's bytes of ``user``, the limit, and whether the day is over it."""
    con.execute(SCHEMA)
    row = con.execute("SELECT bytes FROM egress_usage WHERE user_name = ? AND day = ?",
                      (user, _today())).fetchone()
    used, limit = int(row[0]) if row else 0, settings.hub.egress_budget_bytes
    return {"used": used, "limit": limit, "over": used > limit, "day": _today()}


def add_usage(con: sqlite3.Connection, settings: Settings, user: str, n: int,
              channel: str, refused: int = 0) -> dict:
    """Add ``n`` bytes to the user's day (one transaction); alert once a day when the day passes
    the budget or a server refused ``refused`` bytes for it. Returns :func:`usage` after the
    addition."""
    if channel not in CHANNELS or not 0 <= n <= MAX_REPORT_BYTES or not 0 <= refused:
        raise ValueError("an egress report names a channel (contents, iopub) and 0 to 1 GiB")
    day, limit = _today(), settings.hub.egress_budget_bytes
    con.execute(SCHEMA)
    with transaction(con):
        con.execute("INSERT INTO egress_usage (user_name, day, bytes) VALUES (?, ?, ?) "
                    "ON CONFLICT (user_name, day) DO UPDATE SET bytes = bytes + excluded.bytes",
                    (user, day, n))
        used, alerted = con.execute("SELECT bytes, alerted FROM egress_usage WHERE user_name = ? "
                                    "AND day = ?", (user, day)).fetchone()
        if (used > limit or refused) and not alerted:
            con.execute("UPDATE egress_usage SET alerted = 1 WHERE user_name = ? AND day = ?",
                        (user, day))
            record_event_in(con, actor="airlock", action="egress.alert", subject=f"user:{user}",
                            detail={"day": day, "bytes": used, "limit": limit,
                                    "channel": channel, "refused_bytes": refused})
    return {"used": int(used), "limit": limit, "over": used > limit or bool(refused), "day": day}
