"""A small client of a running enclave hub: the operator's REST calls, a user's login, and running
code in a user's kernel. Used by ``enclave status``, the tests and the benchmarks, so they all
drive the hub the way a browser and an admin do (HTTP through the proxy), not through internals.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field

import requests
from tornado import httpclient, websocket


class HubClientError(Exception):
    pass


@dataclass
class Hub:
    """The hub at ``base`` (e.g. http://127.0.0.1:8000), driven with the ops service token."""

    base: str
    token: str
    session: requests.Session = field(default_factory=requests.Session)

    def api(self, method: str, path: str, *, expect: tuple[int, ...] = (200, 201, 202, 204),
            **kwargs) -> dict | list | None:
        r = self.session.request(method, f"{self.base}/hub/api{path}",
                                 headers={"Authorization": f"token {self.token}"}, timeout=60, **kwargs)
        if r.status_code not in expect:
            raise HubClientError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None

    def ensure_user(self, name: str) -> None:
        r = self.session.get(f"{self.base}/hub/api/users/{name}", timeout=60,
                             headers={"Authorization": f"token {self.token}"})
        if r.status_code == 404:
            self.api("POST", f"/users/{name}")

    def user_token(self, name: str) -> str:
        self.ensure_user(name)
        return self.api("POST", f"/users/{name}/tokens", json={"note": "enclave client",
                                                              "expires_in": 3600})["token"]

    def spawn(self, name: str, timeout: float = 60) -> float:
        """Start NAME's server; returns the seconds until it answered."""
        self.ensure_user(name)
        t0 = time.perf_counter()
        self.api("POST", f"/users/{name}/server", expect=(201, 202, 400))
        while time.perf_counter() - t0 < timeout:
            model = self.api("GET", f"/users/{name}")
            server = (model.get("servers") or {}).get("")
            if server and server.get("ready"):
                return time.perf_counter() - t0
            if not model.get("pending") and not server:
                raise HubClientError(f"{name}'s server failed to start")
            time.sleep(0.1)
        raise HubClientError(f"{name}'s server did not start within {timeout} s")

    def stop(self, name: str, timeout: float = 60) -> None:
        self.api("DELETE", f"/users/{name}/server", expect=(202, 204, 400))
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            model = self.api("GET", f"/users/{name}", expect=(200, 404))
            if not model or not model.get("servers"):
                return
            time.sleep(0.1)
        raise HubClientError(f"{name}'s server did not stop within {timeout} s")


def login(base: str, username: str, password: str) -> tuple[int, requests.Session]:
    """The browser's form login; returns (status of the final page, session with the cookies).

    A refused login answers 403 on the login page itself."""
    s = requests.Session()
    r = s.get(f"{base}/hub/login", timeout=30)
    xsrf = s.cookies.get("_xsrf") or _xsrf_from(r.text)
    r = s.post(f"{base}/hub/login?next=", data={"username": username, "password": password,
                                                "_xsrf": xsrf}, timeout=60, allow_redirects=False)
    return r.status_code, s


def _xsrf_from(html: str) -> str:
    m = re.search(r'name="_xsrf" value="([^"]+)"', html)
    return m.group(1) if m else ""


@dataclass
class UserServer:
    """A user's running server, reached through the proxy with the user's own token."""

    base: str
    name: str
    token: str

    @property
    def url(self) -> str:
        return f"{self.base}/user/{self.name}"

    def request(self, method: str, path: str, *, headers: dict | None = None,
                **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.token}", **(headers or {})}
        return requests.request(method, f"{self.url}/{path.lstrip('/')}", timeout=60,
                                headers=headers, **kwargs)

    def run(self, code: str, timeout: float = 60) -> dict:
        """Run ``code`` in a fresh kernel; returns {'stdout' (every stream's text), 'stderr' (the
        stderr texts alone), 'output_bytes' (size of the output messages received), 'error',
        'seconds'}."""
        r = self.request("POST", "api/kernels", json={"name": "enclave"})
        if r.status_code != 201:
            raise HubClientError(f"kernel start: {r.status_code} {r.text[:300]}")
        kid = r.json()["id"]
        try:
            return asyncio.run(self._execute(kid, code, timeout))
        finally:
            self.request("DELETE", f"api/kernels/{kid}")

    async def _execute(self, kid: str, code: str, timeout: float) -> dict:
        ws_url = self.url.replace("http", "ws", 1) + f"/api/kernels/{kid}/channels"
        req = httpclient.HTTPRequest(ws_url, headers={"Authorization": f"token {self.token}"})
        t0 = time.perf_counter()
        conn = await websocket.websocket_connect(req)
        msg_id = uuid.uuid4().hex
        conn.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": self.name,
                       "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
        out, err, size, error, done_shell, done_idle = [], [], 0, None, False, False
        try:
            while not (done_shell and done_idle):
                raw = await asyncio.wait_for(conn.read_message(), timeout)
                if raw is None:
                    raise HubClientError("kernel channel closed")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["header"]["msg_type"], msg["content"]
                if kind in ("stream", "display_data", "execute_result"):
                    size += len(raw)
                if kind == "stream":
                    out.append(content["text"])
                    if content.get("name") == "stderr":
                        err.append(content["text"])
                elif kind == "error":
                    error = f"{content['ename']}: {content['evalue']}"
                elif kind == "execute_reply":
                    done_shell = True
                elif kind == "status" and content.get("execution_state") == "idle":
                    done_idle = True
        finally:
            conn.close()
        return {"stdout": "".join(out), "stderr": err, "output_bytes": size, "error": error,
                "seconds": time.perf_counter() - t0}
