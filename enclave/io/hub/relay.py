"""The kernel's one way out: the airlock API, relayed through the user's own notebook server.

Why: kernels run in an empty network namespace, yet ``enclave.research`` submits export requests
to the airlock over HTTP (``$ENCLAVE_AIRLOCK_URL``). Inside the kernel's namespace the launcher
brings loopback up and listens on the airlock URL's port; each connection is piped to a Unix
socket in the user's 0700 runtime folder, served by the lock-down extension in the notebook
server, which forwards only ``<airlock prefix>/api/...`` requests to the airlock, with the
caller's own ``Authorization`` header. The airlock authenticates the hub token; the relay decides
nothing but the path. Nothing else on any host is reachable from the kernel.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import threading
from urllib.parse import urlsplit

SOCKET_ENV = "ENCLAVE_RELAY_SOCKET"
AIRLOCK_ENV = "ENCLAVE_AIRLOCK_URL"
SOCKET_NAME = "enclave-relay.sock"

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4


# --- kernel side (inside the network namespace) --------------------------------------------------

def loopback_up() -> None:
    """Bring up ``lo`` of the kernel's own (empty) network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, _SIOCGIFFLAGS, req)[:18])[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def drop_capabilities() -> None:
    """Give up the capabilities ``unshare --keep-caps`` left us in our user namespace."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_CLEAR_ALL) failed")
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def start_kernel_relay() -> int | None:
    """Listen on the airlock URL's port on the namespace's loopback; returns the port (or None
    when the server offers no relay)."""
    path, url = os.environ.get(SOCKET_ENV), os.environ.get(AIRLOCK_ENV)
    if not path or not url:
        return None
    port = urlsplit(url).port or 80
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            up = socket.socket(socket.AF_UNIX)
            try:
                up.connect(path)
            except OSError:
                conn.close()
                continue
            threading.Thread(target=_pipe, args=(conn, up), daemon=True).start()
            threading.Thread(target=_pipe, args=(up, conn), daemon=True).start()

    threading.Thread(target=accept, daemon=True, name="enclave-relay").start()
    return port


# --- server side (the notebook server, which has the network) -----------------------------------

def serve_relay(runtime_dir: str, airlock_url: str):
    """Serve the relay socket in the user's runtime dir; returns the tornado server."""
    from tornado import httpclient, web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_unix_socket

    target = urlsplit(airlock_url)
    origin, prefix = f"{target.scheme}://{target.netloc}", target.path.rstrip("/") + "/api/"

    class Forward(web.RequestHandler):
        async def _forward(self, *args) -> None:
            path = self.request.path
            if not path.startswith(prefix) or ".." in path:
                raise web.HTTPError(403, "the kernel may reach the airlock API only")
            headers = {k: v for k, v in self.request.headers.get_all()
                       if k.lower() in ("authorization", "content-type", "accept")}
            body = self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None
            resp = await httpclient.AsyncHTTPClient().fetch(
                origin + self.request.uri, method=self.request.method, headers=headers, body=body,
                raise_error=False, follow_redirects=False, request_timeout=600)
            self.set_status(resp.code, resp.reason)
            if ctype := resp.headers.get("Content-Type"):
                self.set_header("Content-Type", ctype)
            if resp.body:
                self.write(resp.body)

        get = post = put = patch = delete = _forward

    path = os.path.join(runtime_dir, SOCKET_NAME)
    os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
    sock = bind_unix_socket(path, mode=0o600)
    server = HTTPServer(web.Application([(r".*", Forward)]))
    server.add_socket(sock)
    os.environ[SOCKET_ENV] = path  # kernels started from now on inherit it
    return server
