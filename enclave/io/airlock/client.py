"""What a kernel (or an admin) calls to ask for an output to leave the enclave, and to follow it.

Inside the hub (``ENCLAVE_AIRLOCK_URL`` and ``JUPYTERHUB_API_TOKEN`` set) the request goes to the
airlock service over HTTP with the user's hub token: the kernel cannot write the airlock's files,
and the service, not the kernel, decides who the requester is. Elsewhere (admin, CLI, tests) the
workflow is called directly as the current OS user, in the ``settings`` the caller passes (inside
the hub they are not needed). :func:`get_request` and :func:`list_requests`
read the caller's own requests the same two ways (``GET api/requests/<id>``, ``GET api/requests``).
"""

from __future__ import annotations

import base64
import getpass
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable

from enclave.core.errors import (
    BadInputError,
    ConfigurationError,
    EnclaveError,
    InvalidTransitionError,
    PermissionDeniedError,
)
from enclave.core.settings import Settings

URL_ENV = "ENCLAVE_AIRLOCK_URL"
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
log = logging.getLogger("enclave.io.airlock.client")
# A library's logger: records reach the handlers the program configured (a service's, the CLI's,
# a test's basicConfig), never Python's last-resort stderr handler, which a notebook shows as a red
# error; callers that face a person say a failure themselves (see record_event's ``note``).
log.addHandler(logging.NullHandler())
_ERRORS = {400: BadInputError, 403: PermissionDeniedError, 404: BadInputError,
           409: InvalidTransitionError}


def _hub() -> tuple[str, str] | None:
    """The airlock's URL and the user's hub token, inside the hub (else None)."""
    url, token = os.environ.get(URL_ENV), os.environ.get(TOKEN_ENV)
    return (url.rstrip("/"), token) if url and token else None


def _direct(settings: Settings | None) -> Settings:
    """The settings a direct call (outside the hub) works in: passed by the caller, never guessed."""
    if settings is None:
        raise ConfigurationError("outside the hub the airlock's workflow is called directly: pass "
                                 "settings= (e.g. a workspace's ws.settings, or load_settings(home))")
    return settings


def _call(url: str, token: str, body: dict | None, timeout: float = 600, *,
          method: str = "POST") -> dict:
    """One call of the airlock's JSON API with the user's hub token; an HTTP refusal becomes
    the matching :class:`~enclave.core.errors.EnclaveError`."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"token {token}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
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
    hub = _hub()
    if hub:
        body = {"record": record, "justification": justification,
                "files": {n: base64.b64encode(d).decode() for n, d in files.items()}}
        return _call(hub[0] + "/api/requests", hub[1], body)
    from enclave.io.airlock.exports import Airlock

    with Airlock(_direct(settings)) as airlock:
        return airlock.submit(getpass.getuser(), record, files, justification)


def get_request(request_id: str, *, settings: Settings | None = None,
                timeout: float = 30) -> dict:
    """One export request as its requester may see it (``GET api/requests/<id>``: ``status``,
    ``checks``, ``decision_reason``, ``files`` …); the airlock refuses another user's."""
    hub = _hub()
    if hub:
        return _call(f"{hub[0]}/api/requests/{request_id}", hub[1], None, timeout, method="GET")
    from enclave.io.airlock.exports import Airlock

    with Airlock(_direct(settings)) as airlock:
        return airlock.describe(request_id, getpass.getuser())


def list_requests(*, settings: Settings | None = None, timeout: float = 30) -> list[dict]:
    """The caller's own export requests, oldest first as the airlock lists them (``GET
    api/requests``: ``id``, ``project``, ``status``, ``round``, ``kind``, ``created_at``,
    ``updated_at`` …)."""
    hub = _hub()
    if hub:
        return list(_call(hub[0] + "/api/requests", hub[1], None, timeout,
                          method="GET").get("requests") or [])
    from enclave.io.airlock.exports import Airlock

    with Airlock(_direct(settings)) as airlock:
        return airlock.list(getpass.getuser())


def record_event(action: str, subject: str, detail: dict | None = None, *,
                 settings: Settings | None = None,
                 note: Callable[[str], None] | None = None) -> bool:
    """An audit event from wherever the caller runs (e.g. a release opened by a kernel).

    Inside the hub it goes to the airlock's ``POST /api/audit`` with the user's hub token (the
    airlock records the token's user, never a claimed one, and accepts from a kernel only
    ``release.read`` about a release of the user's own projects, or events about the user
    itself); elsewhere it is appended directly as the current OS user. Returns False, with a
    warning in the log (to the program's handlers) and one line to ``note`` (what a notebook
    shows the researcher), when the trail cannot be reached or refused the event: reading data is
    not blocked by an unavailable trail (the hub's own events behave the same), and the event
    names releases and tables, never values. Outside the hub without ``settings`` it raises
    :class:`~enclave.core.errors.ConfigurationError` (a caller's mistake, not an unavailable trail).
    """
    hub = _hub()
    if not hub:
        settings = _direct(settings)
    try:
        if hub:
            _call(hub[0] + "/api/audit", hub[1],
                  {"action": action, "subject": subject, "detail": detail or {}}, timeout=10)
        else:
            from enclave.core import audit

            audit.record_event(settings, actor=getpass.getuser(),
                               action=action, subject=subject, detail=detail)
        return True
    except Exception as exc:  # noqa: BLE001  (any failure: the trail is unavailable, say so, go on)
        why = str(exc) if isinstance(exc, EnclaveError) else type(exc).__name__
        log.warning("audit event %s on %s not recorded (%s)", action, subject, why)
        if note is not None:
            note(f"note: the audit trail did not record this {action} of {subject} ({why}); "
                 "the work goes on, but please tell an enclave admin")
        return False
