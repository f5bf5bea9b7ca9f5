"""A hub-OAuth gate: a reverse proxy that lets through only users the hub grants this service.

Why: the dashboards (Streamlit) have no login of their own. The gate runs as the hub service
``dashboards`` (URL prefix ``/services/dashboards/``); every request must carry the hub OAuth
cookie of a user whose token holds ``access:services!service=dashboards`` (granted by role to the
policymakers group, see :func:`enclave.io.hub.config.roles`); anyone else gets 403. Allowed requests,
HTTP and websocket, are forwarded to the app on 127.0.0.1, path unchanged (the app is started with
the same base path).
"""

from __future__ import annotations

import asyncio
import os

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import httpclient, web, websocket
from tornado.httpserver import HTTPServer

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade", "host", "content-length", "cookie", "authorization"}


class GateHandler(HubOAuthenticated, web.RequestHandler):
    def initialize(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")

    def check_xsrf_cookie(self) -> None:  # the upstream app does its own CSRF checks
        return None

    @web.authenticated
    async def _forward(self, *args) -> None:
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            raise web.HTTPError(400, "websocket requests go to the websocket route")
        body = self.request.body if self.request.method not in ("GET", "HEAD", "DELETE") else None
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() not in _HOP}
        headers["X-Forwarded-User"] = self.current_user["name"]
        req = httpclient.HTTPRequest(self.upstream + self.request.uri, method=self.request.method,
                                     headers=headers, body=body, follow_redirects=False,
                                     allow_nonstandard_methods=True, request_timeout=120)
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(req, raise_error=False)
        except OSError:
            raise web.HTTPError(502, "the dashboards app is not answering") from None
        self.set_status(resp.code, resp.reason)
        self._headers.clear()
        for k, v in resp.headers.get_all():
            if k.lower() not in _HOP | {"content-encoding", "set-cookie"}:
                self.add_header(k, v)
        if resp.body and self.request.method != "HEAD":
            self.write(resp.body)

    get = post = put = patch = delete = head = options = _forward


class GateSocket(HubOAuthenticated, websocket.WebSocketHandler):
    def initialize(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/").replace("http", "ws", 1)
        self.conn: websocket.WebSocketClientConnection | None = None

    async def get(self, *args, **kwargs):
        if self.current_user is None:  # no redirect dance on a websocket: just refuse
            raise web.HTTPError(403)
        return await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        return True  # the hub cookie (SameSite) and the scope check above guard this route

    async def open(self, *args) -> None:
        req = httpclient.HTTPRequest(self.upstream + self.request.uri, headers={
            k: v for k, v in self.request.headers.get_all()
            if k.lower() in ("sec-websocket-protocol",)})
        self.conn = await websocket.websocket_connect(
            req, subprotocols=self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if self.request.headers.get("Sec-WebSocket-Protocol") else None)
        asyncio.ensure_future(self._pump())

    def select_subprotocol(self, subprotocols):
        return subprotocols[0] if subprotocols else None

    async def _pump(self) -> None:
        while self.conn is not None:
            msg = await self.conn.read_message()
            if msg is None:
                self.close()
                return
            await self.write_message(msg, binary=isinstance(msg, bytes))

    async def on_message(self, message) -> None:
        if self.conn is not None:
            await self.conn.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def make_app(upstream: str, ws_paths: tuple[str, ...] = ("_stcore/stream",)) -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    ws = [(url_path_join(prefix, p), GateSocket, {"upstream": upstream}) for p in ws_paths]
    return web.Application(
        ws + [
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
            (url_path_join(prefix, r"(.*)"), GateHandler, {"upstream": upstream}),
        ],
        cookie_secret=os.urandom(32),
    )


async def serve(port: int, upstream: str) -> None:
    HTTPServer(make_app(upstream), xheaders=True).listen(port, "127.0.0.1")
    await asyncio.Event().wait()
