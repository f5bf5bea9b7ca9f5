"""Forwarding hub-side events to the audit trail (the airlock's authenticated ``POST /api/audit``).

One small function, so the user server has one way out for events: it posts JSON with the user's
own hub token (``JUPYTERHUB_API_TOKEN``); the airlock authenticates that token against the hub and
records the user the *hub* names, never one the event claims. Events carry routes, actions and
file names, never file contents.

A failed forward is logged (to the server log, which the hub keeps) and never blocks the user's
request: the refusal itself does not depend on the audit trail being up.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request

log = logging.getLogger("enclave.io.hub.audit")

#: Where events go; the hub config sets it for every user server (see enclave.io.hub.config).
AUDIT_URL_ENV = "ENCLAVE_AUDIT_URL"


def forward_event(action: str, subject: str, detail: dict, *, url: str | None = None,
                  token: str | None = None, user: str | None = None, timeout: float = 2.0) -> bool:
    """POST one audit event (``subject``: the route, file or kernel it is about); True when the
    audit service accepted it (2xx). The airlock records the token's user as the actor; ``user``
    travels in the detail only, for the server log."""
    url = url or os.environ.get(AUDIT_URL_ENV)
    token = token or os.environ.get("JUPYTERHUB_API_TOKEN")
    event = {
        "action": action,
        "subject": subject[:200],
        "detail": {"source": "hub", "server_user": user or os.environ.get("JUPYTERHUB_USER"),
                   "at": time.time(), **detail},
    }
    if not url:
        log.warning("audit (not forwarded, no %s): %s", AUDIT_URL_ENV, json.dumps(event))
        return False
    req = urllib.request.Request(
        url, data=json.dumps(event).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"token {token or ''}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            ok = 200 <= resp.status < 300
    except OSError as exc:
        log.warning("audit forward failed (%s): %s", exc.__class__.__name__, json.dumps(event))
        return False
    if not ok:
        log.warning("audit forward refused: %s", json.dumps(event))
    return ok
