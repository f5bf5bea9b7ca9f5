"""The airlock HTTP service (tornado): researchers submit, stewards review, requesters download.

Two ways to know who is calling:

* **hub** (production): run by JupyterHub as a service; users are identified by hub OAuth (browser)
  or their hub API token (``Authorization: token …`` from a kernel), through
  ``jupyterhub.services.auth.HubOAuthenticated``. Needs the ``JUPYTERHUB_*`` environment the hub
  gives its services.
* **tokens** (standalone, for tests and demos only): a JSON file ``{"<token>": "<user>"}`` given
  with ``--tokens``; browsers sign in at ``/login`` with a token. Refused when the hub environment
  is present, so it cannot be switched on in the hub configuration.

Forms are protected by tornado's xsrf cookies (hub mode: JupyterHub's xsrf check); a call is exempt
only when its ``Authorization`` token actually authenticates a user (a browser never adds that
header by itself). A header with a bogus token exempts nothing: a cookie-authenticated form post
still needs its xsrf token.
Blocking work (SQLite, the checks' re-run) runs in a small thread pool, one :class:`Airlock` per
thread.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import tornado.web
from tornado.escape import json_encode

from enclave.core.audit import ACTION, record_event_in, transaction
from enclave.core.errors import (
    BadInputError,
    ConfigurationError,
    EnclaveError,
    InvalidTransitionError,
    PermissionDeniedError,
)
from enclave.core.model.project import PROJECT_ID
from enclave.core.settings import Settings
from enclave.io.airlock import egress, pages, store
from enclave.io.airlock.exports import Airlock
from enclave.io.airlock.outbox import MANIFEST, requester_manifest
from enclave.io.airlock.workflow import RequestStatus, can_revoke, can_vote, can_withdraw

USER_COOKIE = "enclave-airlock-user"
#: audit namespaces only the enclave itself writes; POST /api/audit may not use them ...
RESERVED_ACTIONS = ("request.", "project.", "role.", "release.", "audit.", "synthetic.",
                    "airlock.", "hub.login")
#: ... except these, which a kernel writes about itself (a release it opened)
KERNEL_ACTIONS = ("release.read",)
#: typed subjects (``kind:…``) the enclave writes; another process may name only releases it can
#: read and its own user, never another user, request, project or role
SUBJECT_KINDS = frozenset({"user", "request", "project", "role", "release", "audit", "synthetic",
                           "output", "ledger"})
_KIND = re.compile(r"\s*([A-Za-z][\w-]*)\s*:")
RELEASE_SUBJECT = re.compile(rf"release:(synthetic/)?({PROJECT_ID.pattern})/v[0-9]{{1,6}}")
_STATUS = {BadInputError: 400, PermissionDeniedError: 403, InvalidTransitionError: 409}


class Backend:
    """The thread pool and one Airlock per worker thread."""

    def __init__(self, settings: Settings, workers: int = 4, **airlock_kw: Any):
        self.settings = settings
        self.kw = airlock_kw
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="airlock")

    def airlock(self) -> Airlock:
        if not hasattr(self.local, "airlock"):
            self.local.airlock = Airlock(self.settings, **self.kw)
        return self.local.airlock

    async def call(self, method: str, *args: Any, **kw: Any) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.pool, lambda: getattr(self.airlock(), method)(*args, **kw))

    async def run(self, fn, *args: Any) -> Any:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(
            self.pool, lambda: fn(self.airlock(), *args))


class BaseHandler(tornado.web.RequestHandler):
    @property
    def backend(self) -> Backend:
        return self.settings["backend"]

    @property
    def prefix(self) -> str:
        return self.settings["prefix"]

    @property
    def user_name(self) -> str:
        user = self.current_user
        if isinstance(user, dict):
            return user["name"]
        return user

    def get_template_namespace(self) -> dict:
        ns = super().get_template_namespace()
        ns.update(prefix=self.prefix, json_encode=json_encode, enumerate=enumerate, len=len,
                  hub=os.environ.get("JUPYTERHUB_BASE_URL", "/"),
                  user=self.current_user and self.user_name,
                  is_steward=getattr(self, "_is_steward", False),
                  is_admin=getattr(self, "_is_admin", False), sorted=sorted)
        return ns

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = str(exc) if isinstance(exc, EnclaveError) else self._reason
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message
        if self.request.path.startswith(self.prefix + "api/"):
            self.finish({"error": message, "status": status_code})
        else:
            self.render("error.html", title="error", status_code=status_code, message=message)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, EnclaveError):
            return  # expected refusals: the client gets the message, no traceback in the log
        super().log_exception(typ, value, tb)

    async def act(self, method: str, *args: Any, **kw: Any) -> Any:
        try:
            return await self.backend.call(method, *args, **kw)
        except EnclaveError as exc:
            code = next((c for t, c in _STATUS.items() if isinstance(exc, t)), 500)
            raise tornado.web.HTTPError(code, str(exc).replace("%", "%%")) from exc

    def json_body(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, "the body must be a JSON object")
        return body


class TokenAuth:
    """Standalone mode: a seeded token table (tests and demos; never in the hub)."""

    def get_current_user(self):
        header = self.request.headers.get("Authorization", "")
        if header.lower().startswith("token "):
            user = self.settings["tokens"].get(header[6:].strip())
            self._token_authenticated = user is not None
            return user
        cookie = self.get_signed_cookie(USER_COOKIE, max_age_days=1)
        return cookie.decode() if cookie else None

    def get_login_url(self) -> str:
        return self.prefix + "login"

    def check_xsrf_cookie(self) -> None:
        """Exempt only a call whose token names a user; anything else needs the xsrf token."""
        if not self.request.headers.get("Authorization"):
            super().check_xsrf_cookie()
        elif self.current_user is None or not getattr(self, "_token_authenticated", False):
            _as_form(super().check_xsrf_cookie)


def _as_form(check) -> None:
    """The xsrf check of a request whose token authenticated nobody; its refusal says so."""
    try:
        check()
    except tornado.web.HTTPError as exc:
        raise tornado.web.HTTPError(
            403, "the Authorization token authenticates nobody (unknown or expired), and without "
                 "one a form post needs its xsrf token") from exc


def hub_mixin() -> type:
    """Hub OAuth for browsers, hub tokens for API calls. Tornado checks xsrf before it knows who
    is calling, so a request carrying an ``Authorization`` header is first authenticated with the
    hub: it is exempt only when the hub vouches for its token (a browser never adds the header by
    itself, and a cross-site page cannot without a CORS preflight this service refuses). With a
    token the hub does not know, JupyterHub falls back to the cookie, which needs the xsrf token
    like any form."""
    from jupyterhub.services.auth import HubOAuthenticated

    class HubAuth(HubOAuthenticated):
        def check_xsrf_cookie(self) -> None:
            # resolving the user re-enters here (JupyterHub checks xsrf before it accepts the
            # cookie); that inner call does the plain check
            if self.request.headers.get("Authorization") and not getattr(
                    self, "_enclave_resolving", False):
                self._enclave_resolving = True
                try:
                    self.current_user  # noqa: B018  (asks the hub about the token)
                finally:
                    self._enclave_resolving = False
                if not getattr(self, "_token_authenticated", False):
                    _as_form(super().check_xsrf_cookie)
                return
            super().check_xsrf_cookie()

    return HubAuth


# --- HTML ------------------------------------------------------------------------------------

class LoginHandler(BaseHandler):
    def get(self) -> None:
        self.render("login.html", title="sign in")

    async def post(self) -> None:
        user = self.settings["tokens"].get(self.get_body_argument("token", ""))
        if not user:
            raise tornado.web.HTTPError(403, "unknown token")
        self.set_signed_cookie(USER_COOKIE, user, expires_days=1, httponly=True,
                               samesite="Strict")
        await self.backend.run(_audit_login, user)
        self.redirect(self.prefix + "requests")


def _audit_login(airlock: Airlock, user: str) -> None:
    with transaction(airlock.con):
        record_event_in(airlock.con, actor=user, action="airlock.login", subject=f"user:{user}")


class HomeHandler(BaseHandler):
    """The airlock's front door sends each role where it works: stewards to the requests that
    wait for their vote, everyone else to their own requests."""

    @tornado.web.authenticated
    async def get(self) -> None:
        actor = await self.backend.call("actor", self.user_name)
        self.redirect(self.prefix + ("status" if actor.is_admin else
                                     "requests?queue=1&needs_my_vote=1" if actor.is_steward
                                     else "requests"))


class StatusPage(BaseHandler):
    """Admins: projects and requests at a glance (names, counts, dates)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        actor = await self.backend.call("actor", self.user_name)
        self._is_steward, self._is_admin = actor.is_steward, actor.is_admin
        status = await self.act("status", self.user_name)
        self.render("status.html", title="status", status=status)


class ListPage(BaseHandler):
    """A requester's own requests, or (``queue=1``, stewards and admins) every request, with
    filters (state, project, needs my vote) and sorting by any column (``sort=col``/``-col``)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        user = self.user_name
        queue = bool(self.get_argument("queue", ""))
        mine = bool(self.get_argument("needs_my_vote", "")) and queue
        status = self.get_argument("status", "") or None
        project = self.get_argument("project", "") or None
        sort = self.get_argument("sort", "-created_at")
        actor = await self.backend.call("actor", user)
        self._is_steward, self._is_admin = actor.is_steward, actor.is_admin
        if status is not None and status not in {s.value for s in RequestStatus}:
            raise tornado.web.HTTPError(400, f"unknown state '{status[:40]}' (one of: "
                                        + ", ".join(s.value for s in RequestStatus) + ")")
        every = await self.act("list", user, queue=queue)  # one read; the filters pick from it
        projects = sorted({r["project"] for r in every})
        rows = [r for r in every if (status is None or r["status"] == status)
                and (project is None or r["project"] == project)
                and (not mine or r["needs_my_vote"])]
        args = {k: v for k, v in (("queue", "1" if queue else ""), ("status", status or ""),
                                  ("project", project or ""),
                                  ("needs_my_vote", "1" if mine else "")) if v}

        def sort_link(key: str) -> str:
            order = f"-{key}" if sort == key else key
            return self.prefix + "requests?" + urlencode({**args, "sort": order})

        heading = ("Requests waiting for your vote" if mine else "Review queue" if queue
                   else "My export requests")
        empty = ("Nothing waits for your vote." if mine else "No requests match." if queue
                 else "You have not asked to export anything yet: call export(output, "
                      "justification=...) in a notebook.")
        self.render("list.html", title="requests", rows=pages.sort_rows(rows, sort),
                    heading=heading, queue=queue, states=[s.value for s in RequestStatus],
                    projects=projects, f_status=status, f_project=project, f_mine=mine,
                    sort=sort, sort_link=sort_link, columns=pages.COLUMNS, empty=empty)


class RequestPage(BaseHandler):
    @tornado.web.authenticated
    async def get(self, request_id: str) -> None:
        await show_request(self, request_id)


async def show_request(self: BaseHandler, request_id: str, form_error: str | None = None,
                       form: dict | None = None) -> None:
    """Render the request page on handler ``self``; ``form_error``: why the vote just posted was
    refused (shown on the form, with what was entered; status 400)."""
    user = self.user_name
    req = await self.act("describe", request_id, user)
    actor = await self.backend.call("actor", user)
    self._is_steward, self._is_admin = actor.is_steward, actor.is_admin
    previews = []
    if actor.is_steward or user == req["requester"]:
        for meta in req["files"]:
            data = await self.act("read_round_file", user, request_id, meta["name"])
            previews.append(pages.preview(meta["name"], data, meta))
    view = await self.backend.run(lambda a: store.view(a.con, store.get_request(
        a.con, request_id)))
    cols, cells, source = pages.cell_table(req)
    if form_error:
        self.set_status(400)
    self.render("request.html", title=request_id, req=req, previews=previews,
                cell_cols=cols, cells=cells, evidence_source=source, can_vote=can_vote(actor, view),
                can_revoke=can_revoke(actor, view), can_withdraw=can_withdraw(actor, view),
                form_error=form_error, form=form or {})


class VoteForm(BaseHandler):
    @tornado.web.authenticated
    async def post(self, request_id: str) -> None:
        form = {"vote": self.get_body_argument("vote", ""),
                "reason": self.get_body_argument("reason", "")}
        if not form["vote"]:
            problem = "choose a vote: approve, request changes or reject"
        else:
            try:
                await self.backend.call("vote", self.user_name, request_id, form["vote"],
                                        form["reason"])
            except (BadInputError, InvalidTransitionError) as exc:
                problem = str(exc)
            else:
                return self.redirect(f"{self.prefix}requests/{request_id}")
        # refused: the same page, the reason on the form and what was entered kept
        await show_request(self, request_id, form_error=problem, form=form)


class CommentForm(BaseHandler):
    @tornado.web.authenticated
    async def post(self, request_id: str) -> None:
        await self.act("comment", self.user_name, request_id, self.get_body_argument("body", ""))
        self.redirect(f"{self.prefix}requests/{request_id}")


class WithdrawForm(BaseHandler):
    @tornado.web.authenticated
    async def post(self, request_id: str) -> None:
        await self.act("withdraw", self.user_name, request_id)
        self.redirect(f"{self.prefix}requests/{request_id}")


class RevokeForm(BaseHandler):
    @tornado.web.authenticated
    async def post(self, request_id: str) -> None:
        await self.act("revoke", self.user_name, request_id, self.get_body_argument("reason", ""))
        self.redirect(f"{self.prefix}requests/{request_id}")


class DownloadHandler(BaseHandler):
    @tornado.web.authenticated
    async def get(self, request_id: str, name: str) -> None:
        path: Path = await self.act("download", self.user_name, request_id, name)
        data = path.read_bytes()
        if path.name == MANIFEST:  # an outbox written before votes were kept out of it
            data = requester_manifest(data)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f'attachment; filename="{path.name}"')
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(data)


# --- JSON API -------------------------------------------------------------------------------

def _decode_files(files: Any) -> dict[str, bytes]:
    if not isinstance(files, dict):
        raise tornado.web.HTTPError(400, "files must be an object {name: base64}")
    try:
        return {str(k): base64.b64decode(v, validate=True) for k, v in files.items()}
    except (binascii.Error, TypeError):
        raise tornado.web.HTTPError(400, "files must be base64-encoded") from None


class ApiRequests(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        rows = await self.act("list", self.user_name, queue=bool(self.get_argument("queue", "")),
                              status=self.get_argument("status", None))
        self.finish({"requests": rows})

    @tornado.web.authenticated
    async def post(self) -> None:
        body = self.json_body()
        out = await self.act("submit", self.user_name, body.get("record"),
                             _decode_files(body.get("files", {})), body.get("justification", ""))
        self.set_status(201)
        self.finish(out)


class ApiRequest(BaseHandler):
    @tornado.web.authenticated
    async def get(self, request_id: str) -> None:
        self.finish(await self.act("describe", request_id, self.user_name))


class ApiAction(BaseHandler):
    @tornado.web.authenticated
    async def post(self, request_id: str, action: str) -> None:
        body, user = self.json_body(), self.user_name
        if action == "vote":
            out = await self.act("vote", user, request_id, body.get("vote", ""),
                                 body.get("reason", ""))
        elif action == "withdraw":
            out = await self.act("withdraw", user, request_id)
        elif action == "revoke":
            out = await self.act("revoke", user, request_id, body.get("reason", ""))
        elif action == "resubmit":
            out = await self.act("resubmit", user, request_id, body.get("record"),
                                 _decode_files(body.get("files", {})),
                                 body.get("justification", ""))
        elif action == "comment":
            await self.act("comment", user, request_id, body.get("body", ""))
            out = await self.act("describe", request_id, user)
        else:
            raise tornado.web.HTTPError(404)
        self.finish(out)


class ApiAudit(BaseHandler):
    """Other processes (the hub's lock-down extension, a kernel opening a release, both running
    as the researcher) append audit events here; the actor is the authenticated user, never a
    claimed one. Refused, and the refusal itself recorded: an event over
    ``airlock.max_audit_event_bytes``, an action of the enclave's own namespaces (but
    ``release.read``), a subject naming another user, a request, project or role, or a release
    the caller is not a member of."""

    @tornado.web.authenticated
    async def post(self) -> None:
        user, limit = self.user_name, self.backend.settings.airlock.max_audit_event_bytes
        if len(self.request.body) > limit:
            await self._refuse(413, f"the audit event is {len(self.request.body)} bytes; at most "
                                    f"{limit} are accepted", size=len(self.request.body))
        body = self.json_body()
        action, subject = str(body.get("action", "")), str(body.get("subject", ""))
        detail = body.get("detail") or {}
        if not ACTION.fullmatch(action) or (action.startswith(RESERVED_ACTIONS)
                                            and action not in KERNEL_ACTIONS):
            await self._refuse(400, f"audit action '{action[:64]}' is not allowed here",
                               action=action[:64])
        if not subject or len(subject) > 200 or not isinstance(detail, dict):
            raise tornado.web.HTTPError(400, "an audit event needs a subject (<= 200 characters) "
                                             "and a JSON object as detail")
        actor = await self.backend.call("actor", user)
        problem = _subject_problem(user, actor.projects, action, subject)
        if problem:
            await self._refuse(problem[0], problem[1], action=action, subject=subject)

        def append(airlock: Airlock) -> int:
            with transaction(airlock.con):
                return record_event_in(airlock.con, actor=user, action=action, subject=subject,
                                       detail={**detail, "via": "api"})

        seq = await self.backend.run(append)
        self.set_status(201)
        self.finish({"seq": seq})

    async def _refuse(self, code: int, message: str, **detail: Any) -> None:
        user = self.user_name

        def append(airlock: Airlock) -> None:
            with transaction(airlock.con):
                record_event_in(airlock.con, actor=user, action="audit.event_refused",
                                subject=f"user:{user}",
                                detail={"reason": message, "status": code, **detail})

        await self.backend.run(append)
        raise tornado.web.HTTPError(code, message.replace("%", "%%"))


def _subject_problem(user: str, projects: frozenset[str], action: str,
                     subject: str) -> tuple[int, str] | None:
    """Why ``user`` may not write an event about ``subject`` (None: they may). Untyped subjects
    (routes, files, kernels of the caller's own server) are the caller's own business."""
    if action in KERNEL_ACTIONS:
        m = RELEASE_SUBJECT.fullmatch(subject)
        if not m:
            return 400, (f"a {action} event is about a release: 'release:<project>/vN' or "
                         "'release:synthetic/<project>/vN'")
        if not m.group(1) and m.group(2) not in projects:
            return 403, f"{user} is not a member of project {m.group(2)}: not their release"
        return None
    m = _KIND.match(subject)
    kind = m.group(1).lower() if m else ""
    if kind not in SUBJECT_KINDS:
        return None
    if kind == "user" and subject.strip() == f"user:{user}":
        return None
    what = "another user" if kind == "user" else f"a {kind}"
    return 403, (f"an audit event about {what} ({subject[:64]}) is written by the enclave only; "
                 f"an event from {user} may be about user:{user} or a release it read")


class ApiEgress(BaseHandler):
    """The daily egress budget (:mod:`enclave.io.airlock.egress`): a user server reports the bytes
    it handed to the browser (``POST {"bytes", "channel"}``: reports only add) and reads the
    day's total (``GET``); the user is the authenticated one."""

    @tornado.web.authenticated
    async def get(self) -> None:
        user = self.user_name
        self.finish(await self.backend.run(
            lambda a: egress.usage(a.con, self.backend.settings, user)))

    @tornado.web.authenticated
    async def post(self) -> None:
        body, user = self.json_body(), self.user_name
        try:
            n, channel = int(body.get("bytes")), str(body.get("channel"))
            refused = int(body.get("refused") or 0)
        except (TypeError, ValueError):
            raise tornado.web.HTTPError(400, "an egress report needs bytes and a channel"
                                        ) from None
        try:
            answer = await self.backend.run(
                lambda a: egress.add_usage(a.con, self.backend.settings, user, n, channel,
                                           refused))
        except ValueError as exc:
            raise tornado.web.HTTPError(400, str(exc)) from None
        self.finish(answer)


HANDLERS = [
    ("", HomeHandler), ("status", StatusPage), ("requests", ListPage), (r"requests/([\w-]+)", RequestPage),
    (r"requests/([\w-]+)/vote", VoteForm), (r"requests/([\w-]+)/comment", CommentForm),
    (r"requests/([\w-]+)/withdraw", WithdrawForm), (r"requests/([\w-]+)/revoke", RevokeForm),
    (r"requests/([\w-]+)/download/([\w.-]+)", DownloadHandler),
    ("api/requests", ApiRequests), (r"api/requests/([\w-]+)", ApiRequest),
    (r"api/requests/([\w-]+)/(vote|withdraw|revoke|resubmit|comment)", ApiAction),
    ("api/audit", ApiAudit), ("api/egress", ApiEgress),
]


def make_app(settings: Settings, *, tokens: dict[str, str] | None = None,
             backend: Backend | None = None, **airlock_kw: Any) -> tornado.web.Application:
    """The service. ``tokens`` given: standalone token mode; else hub OAuth mode."""
    hub_env = bool(os.environ.get("JUPYTERHUB_API_TOKEN"))
    if tokens is not None and hub_env:
        raise ConfigurationError("the token table is for standalone use only: it is refused when "
                                 "the airlock runs as a hub service (JUPYTERHUB_API_TOKEN is set)")
    if tokens is None and not hub_env:
        raise ConfigurationError("no way to authenticate: run as a JupyterHub service (hub OAuth) "
                                 "or give --tokens FILE for standalone use")
    backend = backend or Backend(settings, **airlock_kw)
    if tokens is not None:
        prefix = "/"
        mixin: type = TokenAuth
        extra: list = [("login", type("LoginHandler", (TokenAuth, LoginHandler), {}))]
        secret = secrets.token_bytes(32)
    else:
        from jupyterhub.services.auth import HubOAuthCallbackHandler

        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/airlock/")
        mixin = hub_mixin()
        extra = [("oauth_callback", HubOAuthCallbackHandler)]
        secret = os.environ.get("JUPYTERHUB_COOKIE_SECRET", "").encode() or secrets.token_bytes(32)
    if not prefix.endswith("/"):
        prefix += "/"
    routes = [(prefix + path, type(handler.__name__, (mixin, handler), {}))
              for path, handler in HANDLERS]
    routes += [(prefix + path, handler) for path, handler in extra]
    return tornado.web.Application(
        routes, backend=backend, prefix=prefix, tokens=tokens or {}, cookie_secret=secret,
        xsrf_cookies=True, template_loader=pages.LOADER, login_url=prefix + "login",
    )


def load_tokens(path: Path) -> dict[str, str]:
    """The standalone token table: a JSON object mapping tokens to user names."""
    if path.stat().st_mode & 0o077:
        raise ConfigurationError(f"token table {path}: readable by others; chmod 600 it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"token table {path}: unreadable ({exc.__class__.__name__})") \
            from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) and
                                             len(k) >= 16 for k, v in data.items()):
        raise ConfigurationError(f"token table {path}: must map tokens (16+ characters) to "
                                 "user names")
    return data


async def serve(settings: Settings, *, port: int, bind: str = "127.0.0.1",
                tokens: dict[str, str] | None = None) -> None:
    """Recover interrupted requests, then serve until cancelled."""
    import asyncio

    os.umask(0o077)  # everything the service writes (database, ledger, outbox) is private
    backend = Backend(settings)
    done = await backend.call("recover")
    app = make_app(settings, tokens=tokens, backend=backend)
    server = app.listen(port, address=bind, xheaders=False)
    print(f"airlock listening on http://{bind}:{port}{app.settings['prefix']} "
          f"({'tokens' if tokens is not None else 'hub OAuth'}; recovered {len(done)} requests)",
          flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        server.stop()
        backend.pool.shutdown(wait=False)
