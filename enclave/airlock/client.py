"""What a kernel (or an admin) calls to ask for an output to leave the enclave.

Inside the hub (``ENCLAVE_AIRLOCK_URL`` and ``JUPYTERHUB_API_TOKEN`` set) the request goes to the
airlock service over HTTP with the user's hub token: the kernel cannot write the airlock's files,
and the service, not the kernel, decides who the requester is. Elsewhere (admin, CLI, tests) the
workflow is called directly as the current OS user.
"""

from __future__ import annotations

import base64
import getpass
import json
import logging
import os
import urllib.error
import urllib.request

from enclave.errors import (
    BadInputError,
    EnclaveError,
    InvalidTransitionError,
    PermissionDeniedError,
)
from enclave.settings import Settings, load_settings

URL_ENV = "ENCLAVE_AIRLOCK_URL"
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
log = logging.getLogger("enclave.airlock.client")
_ERRORS = {400: BadInputError, 403: PermissionDeniedError, 409: InvalidTransitionError}


def _post(url: str, token: str, body: dict, timeout: float = 600) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise _ERRORS.get(exc.code, EnclaveError)(
            f"the airlock refused the request ({exc.code}): {message}") from None


def submit_export(record: dict, files: dict[str, bytes], justification: str, *,
                  settings: Settings | None = None) -> dict:
    """Submit an output record and its rendered files; returns at least ``request_id`` and
    ``status`` (``in_review`` when the airlock's checks reproduced it, ``rejected`` when not)."""
    url, token = os.environ.get(URL_ENV), os.environ.get(TOKEN_ENV)
    if url and token:
        body = {"record": record, "justification": justification,
                "files": {n: base64.b64encode(d).decode() for n, d in files.items()}}
        return _post(url.rstrip("/") + "/api/requests", token, body)
    from enclave.airlock.exports import Airlock

    with Airlock(settings or load_settings()) as airlock:
        return airlock.submit(getpass.getuser(), record, files, justification)


def record_event(action: str, subject: str, detail: dict | None = None, *,
                 settings: Settings | None = None) -> bool:
    """An audit event from wherever the caller runs (e.g. a release opened by a kernel).

    Inside the hub it goes to the airlock's ``POST /api/audit`` with the user's hub token (the
    airlock records the token's user, never a claimed one, and accepts from a kernel only
    ``release.read`` about a release of the user's own projects, or events about the user
    itself); elsewhere it is appended directly as the current OS user. Returns False, with a
    warning in the log, when the trail cannot be reached or refused the event: reading data is
    not blocked by an unavailable trail (the hub's own events behave the same), and the event
    names releases and tables, never values.
    """
    url, token = os.environ.get(URL_ENV), os.environ.get(TOKEN_ENV)
    try:
        if url and token:
            _post(url.rstrip("/") + "/api/audit", token,
                  {"action": action, "subject": subject, "detail": detail or {}}, timeout=10)
        else:
            from enclave import audit

            audit.record_event(settings or load_settings(), actor=getpass.getuser(),
                               action=action, subject=subject, detail=detail)
        return True
    except Exception as exc:  # noqa: BLE001  (any failure: the trail is unavailable, say so, go on)
        why = str(exc) if isinstance(exc, EnclaveError) else type(exc).__name__
        log.warning("audit event %s on %s not recorded (%s)", action, subject, why)
        return False
