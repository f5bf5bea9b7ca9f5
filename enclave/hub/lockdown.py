"""The lock-down Jupyter server extension: the single-user server's routes out of the enclave, shut.

Loaded by every user server from the user environment's sys-prefix config (users cannot disable it:
the hub sets ``disable_user_config``). What it refuses, each with 403 and an audit event naming
the user:

- ``/files``, ``/view``, ``/nbconvert`` and ``/api/nbconvert`` (raw download, conversion/export),
  terminals (``/terminals``, ``/api/terminals``; they are also disabled), and the lab extension
  manager (``/lab/api/extensions``: installing packages is the admins' job);
- uploads: saving a file through the contents API in base64 (how JupyterLab uploads every file),
  any text file larger than ``hub.upload_max_bytes`` and any notebook larger than
  ``hub.notebook_max_bytes``;
- downloads through the contents API: reading a file as base64 (binary), and opening a text file
  or notebook above the same limits (a kernel may write a large file; the browser may not fetch it).

Every Jupyter server event (contents saves and renames, kernel actions ...) is forwarded to the
audit trail too. The extension is an edge module: it only decides and forwards, the audit record is
the airlock's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web
from traitlets import Int

from enclave.hub import relay
from enclave.hub.audit import forward_event

log = logging.getLogger("enclave.hub.lockdown")

#: Route patterns (relative to the server's base URL) refused outright.
REFUSED_ROUTES = (
    r"files(/.*)?",
    r"view(/.*)?",
    r"nbconvert(/.*)?",
    r"api/nbconvert(/.*)?",
    r"terminals(/.*)?",
    r"api/terminals(/.*)?",
    r"lab/api/extensions(/.*)?",
)


def audit(action: str, subject: str, detail: dict) -> None:
    """Forward without blocking the server's event loop (a slow audit service delays nothing)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        forward_event(action, subject, detail)
        return
    loop.run_in_executor(None, lambda: forward_event(action, subject, detail))


class RefusedHandler(JupyterHandler):
    """Answers 403 to every method on a refused route, and records the attempt."""

    def _refuse(self, *args, **kwargs):
        audit("hub.route_refused", self.request.path, {"method": self.request.method})
        raise web.HTTPError(403, "refused by the enclave: this route is disabled")

    get = post = put = patch = delete = head = options = _refuse


class EnclaveContentsManager(AsyncLargeFileManager):
    """Contents in the user's home, without uploads or binary downloads."""

    upload_max_bytes = Int(1_000_000, config=True,
                           help="Largest text file that may be saved or opened via the contents API.")
    notebook_max_bytes = Int(20_000_000, config=True,
                             help="Largest notebook that may be saved or opened via the contents API.")

    def _refuse(self, why: str, path: str) -> None:
        audit("hub.upload_refused", path.strip("/") or "/", {"reason": why})
        raise web.HTTPError(403, f"refused by the enclave: {why}")

    async def save(self, model, path=""):
        kind, fmt, content = model.get("type"), model.get("format"), model.get("content")
        if fmt == "base64" or model.get("chunk") is not None:
            self._refuse("uploads are disabled (binary file)", path)
        if content is not None:
            size = len(content.encode() if isinstance(content, str) else json.dumps(content).encode())
            limit = self.notebook_max_bytes if kind == "notebook" else self.upload_max_bytes
            if size > limit:
                self._refuse(f"file larger than {limit} bytes", path)
        return await super().save(model, path)

    async def get(self, path, content=True, type=None, format=None, **kwargs):
        if content and format == "base64":
            self._refuse("binary download is disabled", path)
        os_path = self._get_os_path(path)
        if content and os.path.isfile(os_path):
            notebook = type == "notebook" or (type is None and path.endswith(".ipynb"))
            limit = self.notebook_max_bytes if notebook else self.upload_max_bytes
            if os.path.getsize(os_path) > limit:  # a bulk download dressed as opening a file
                self._refuse(f"files larger than {limit} bytes cannot be opened", path)
        model = await super().get(path, content=content, type=type, format=format, **kwargs)
        if content and model.get("format") == "base64":
            self._refuse("binary download is disabled", path)
        return model


def _forward_server_events(serverapp) -> None:
    async def listener(logger, schema_id: str, data: dict) -> None:
        fields = {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool))}
        subject = str(fields.get("path") or fields.get("kernel_id") or schema_id.rsplit("/", 2)[-2])
        action = "hub.server." + schema_id.rstrip("/").rsplit("/", 2)[-2].replace("_", "-")
        audit(action, subject, {"schema": schema_id, **fields})

    for schema_id in list(serverapp.event_logger.schemas.schema_ids):
        serverapp.event_logger.add_listener(schema_id=schema_id, listener=listener)


def _load_jupyter_server_extension(serverapp) -> None:
    base = serverapp.base_url.rstrip("/")
    handlers = [(f"{base}/{pattern}", RefusedHandler) for pattern in REFUSED_ROUTES]
    serverapp.web_app.add_handlers(".*$", handlers)
    if not isinstance(serverapp.contents_manager, EnclaveContentsManager):
        log.error("enclave lock-down: contents manager is %s, not EnclaveContentsManager",
                  type(serverapp.contents_manager).__name__)
        raise SystemExit("enclave lock-down: the contents manager policy was overridden")
    _forward_server_events(serverapp)
    airlock = os.environ.get(relay.AIRLOCK_ENV)
    if airlock:
        serverapp._enclave_relay = relay.serve_relay(serverapp.runtime_dir, airlock)
    serverapp.log.info("enclave lock-down active: %d routes refused, uploads refused",
                       len(handlers))


def _jupyter_server_extension_points():
    return [{"module": "enclave.hub.lockdown"}]
