"""The user server's side of the daily egress budget (see :mod:`enclave.io.airlock.egress`).

One :class:`EgressMeter` per user server counts the bytes the server hands to the browser: file
contents read through the contents API and kernel output (iopub) over the websocket. It reports
them to the airlock (``POST /api/egress`` with the server's own hub token) about every MiB or
every few seconds, in a worker thread, and learns the day's total from the answer; the airlock
keeps the authoritative count (a restarted server starts from it) and alerts the stewards. Past
``ENCLAVE_EGRESS_BUDGET_BYTES`` for the day, :meth:`EgressMeter.allows` says no and the server
refuses: the contents API with 403, kernel output with a notice in place of the output.

Fails closed on the count, open on the report: when the airlock cannot be reached, the bytes stay
counted locally (and are reported later); the budget still applies to what this server saw.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import urllib.request

log = logging.getLogger("enclave.io.hub.budget")

BUDGET_ENV = "ENCLAVE_EGRESS_BUDGET_BYTES"
MESSAGE_ENV = "ENCLAVE_IOPUB_MAX_MESSAGE_BYTES"
URL_ENV = "ENCLAVE_AIRLOCK_URL"
FLUSH_BYTES = 1 << 20
FLUSH_S = 5.0


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


class EgressMeter:
    def __init__(self, limit: int, *, url: str | None = None, token: str | None = None):
        self.limit = limit
        self.url = (url or os.environ.get(URL_ENV) or "").rstrip("/")
        self.token = token or os.environ.get("JUPYTERHUB_API_TOKEN") or ""
        self.day = _today()
        self.known = 0              # the day's total as the airlock last answered
        self.pending: dict[str, int] = {"contents": 0, "iopub": 0}  # counted, not yet reported
        self.last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._flushing = False

    @classmethod
    def from_env(cls) -> EgressMeter:
        meter = cls(int(os.environ.get(BUDGET_ENV) or 20 << 20))
        meter.refresh()  # once, on first use: a restarted server starts from the day's total
        return meter

    def used(self) -> int:
        self._roll()
        return self.known + sum(self.pending.values())

    def allows(self, n: int = 0) -> bool:
        """Whether ``n`` more bytes stay within today's budget."""
        return self.used() + n <= self.limit

    def add(self, n: int, channel: str) -> None:
        self._roll()
        with self._lock:
            self.pending[channel] += n
            due = (sum(self.pending.values()) >= FLUSH_BYTES
                   or time.monotonic() - self.last_flush >= FLUSH_S)
        if due:
            self.flush_soon()

    def _roll(self) -> None:
        if _today() != self.day:
            with self._lock:
                self.day, self.known = _today(), 0
                self.pending = {k: 0 for k in self.pending}

    def _call(self, method: str, body: dict | None = None) -> dict | None:
        if not self.url:
            return None
        req = urllib.request.Request(
            self.url + "/api/egress", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError) as exc:
            log.warning("egress report failed (%s); counted locally", type(exc).__name__)
            return None

    def refresh(self) -> None:
        answer = self._call("GET")
        if answer is not None:
            self.known = max(self.known, int(answer.get("used", 0)))

    def flush(self) -> None:
        with self._lock:
            batch = {k: v for k, v in self.pending.items() if v}
            self.pending = {k: 0 for k in self.pending}
            self.last_flush = time.monotonic()
        for channel, n in batch.items():
            answer = self._call("POST", {"bytes": n, "channel": channel})
            with self._lock:
                if answer is None:
                    self.pending[channel] += n  # reported later; still counted
                else:
                    self.known = max(self.known, int(answer.get("used", 0)))

    def refused(self, n: int, channel: str) -> None:
        """A transfer of ``n`` bytes was refused for the budget: report it (with what is pending)
        so that the airlock alerts the stewards."""
        def run() -> None:
            self.flush()
            self._call("POST", {"bytes": 0, "channel": channel, "refused": n})

        threading.Thread(target=run, daemon=True, name="enclave-egress").start()

    def flush_soon(self) -> None:
        if self._flushing:
            return
        self._flushing = True

        def run() -> None:
            try:
                self.flush()
            finally:
                self._flushing = False

        threading.Thread(target=run, daemon=True, name="enclave-egress").start()

    def refusal(self) -> str:
        return (f"refused by the enclave: today's egress budget of {self.limit / (1 << 20):.0f} "
                "MB through the browser is used up (the stewards were alerted); results leave "
                "through export requests")
