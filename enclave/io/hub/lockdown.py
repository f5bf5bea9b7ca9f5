"""The lock-down Jupyter server extension: the single-user server's routes out of the enclave, shut.

Loaded by every user server from the user environment's sys-prefix config (users cannot disable it:
the hub sets ``disable_user_config``). What it refuses, each with 403 and an audit event naming
the user:

- ``/files``, ``/view``, ``/nbconvert`` and ``/api/nbconvert`` (raw download, conversion/export),
  terminals (``/terminals``, ``/api/terminals``; they are also disabled), and the lab extension
  manager (``/lab/api/extensions``: installing packages is the admins' job);
- kernels other than the enclave's (``enclave``, :mod:`enclave.io.hub.kernel`): the kernel spec
  manager knows no other name (jupyter_client would otherwise fall back to ipykernel's own
  ``python3`` spec, with the host's network), and starting one answers 403;
- bulk transfer through the browser past the daily egress budget (:mod:`enclave.io.hub.budget`):
  file contents read through the contents API and kernel output over the websocket are counted
  per user and day (the airlock keeps the count and alerts the stewards); past the budget, reads
  answer 403 and kernel output is replaced by a notice; one kernel output larger than
  ``ENCLAVE_IOPUB_MAX_MESSAGE_BYTES`` is withheld, and the iopub data rate is limited;
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

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Int

from enclave.io.hub import relay
from enclave.io.hub.audit import forward_event
from enclave.io.hub.budget import MESSAGE_ENV, EgressMeter

log = logging.getLogger("enclave.io.hub.lockdown")

#: the only kernel a user server starts (see enclave.io.hub.kernel and userenv.kernel_spec)
KERNEL = "enclave"
#: files the server and its kernels create are the user's alone
UMASK = 0o077
#: kernel messages that carry output to the browser (counted against the egress budget)
OUTPUT_MESSAGES = frozenset({"stream", "display_data", "update_display_data", "execute_result",
                             "error", "comm_msg"})
#: replies on the shell channel that can carry data (user_expressions, object inspection,
#: history): counted, so bulk use reaches the budget and alerts the stewards; passed on, since a
#: frontend waits for them
SHELL_DATA = frozenset({"execute_reply", "inspect_reply", "history_reply"})
_meter: EgressMeter | None = None


def meter() -> EgressMeter:
    """This server's egress meter (one per user server; created on first use)."""
    global _meter
    if _meter is None:
        _meter = EgressMeter.from_env()
    return _meter

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
        if content and model.get("content") is not None:
            body = model["content"]
            size = len(body.encode() if isinstance(body, str) else json.dumps(body).encode())
            if not meter().allows(size):
                audit("hub.egress_refused", path.strip("/") or "/", {"bytes": size,
                                                                     "channel": "contents"})
                meter().refused(size, "contents")
                raise web.HTTPError(403, meter().refusal())
            meter().add(size, "contents")
        return model


class EnclaveKernelSpecManager(KernelSpecManager):
    """Knows the allowed kernel specs only: ``get_kernel_spec('python3')`` does not fall back to
    ipykernel's built-in spec (which would run with the host's network)."""

    def get_kernel_spec(self, kernel_name: str):
        if kernel_name.lower() not in (self.allowed_kernelspecs or {KERNEL}):
            raise NoSuchKernel(kernel_name)
        return super().get_kernel_spec(kernel_name)


class EnclaveKernelManager(AsyncMappingKernelManager):
    """Starts the enclave kernel only; any other name is refused (403) and audited."""

    async def start_kernel(self, *args, **kwargs):
        name = kwargs.get("kernel_name") or self.default_kernel_name
        if name != KERNEL:
            audit("hub.kernel_refused", str(name)[:64], {"allowed": KERNEL})
            raise web.HTTPError(403, f"refused by the enclave: only the '{KERNEL}' kernel "
                                     "(no network) may run here")
        return await super().start_kernel(*args, **kwargs)


class EnclaveWebsocketConnection(ZMQChannelsWebsocketConnection):
    """Kernel output to the browser, counted against the egress budget; a single output larger
    than the per-message limit, or any output past the budget, is replaced by a notice."""

    def _limit_rate(self, channel, msg, msg_list):
        if super()._limit_rate(channel, msg, msg_list):
            return True
        if channel not in ("iopub", "shell"):
            return False
        msg["header"] = self.get_part("header", msg["header"], msg_list)
        kind = msg["header"].get("msg_type")
        size = sum(len(part) for part in msg_list)
        if channel == "shell":
            if kind in SHELL_DATA:
                meter().add(size, "iopub")
            return False
        if kind not in OUTPUT_MESSAGES:
            return False
        limit = int(os.environ.get(MESSAGE_ENV) or 4 << 20)
        why = None
        if size > limit:
            why = (f"refused by the enclave: an output of {size:,} bytes is larger than the "
                   f"{limit:,} bytes one output may carry to the browser")
        elif not meter().allows(size):
            why = meter().refusal()
            meter().refused(size, "iopub")
        if why is None:
            meter().add(size, "iopub")
            return False
        audit("hub.egress_refused", str(self.kernel_id), {"bytes": size, "channel": "iopub"})
        parent = self.get_part("parent_header", msg["parent_header"], msg_list)
        self.write_stderr(why, parent)
        return True


def _forward_server_events(serverapp) -> None:
    async def listener(logger, schema_id: str, data: dict) -> None:
        fields = {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool))}
        subject = str(fields.get("path") or fields.get("kernel_id") or schema_id.rsplit("/", 2)[-2])
        action = "hub.server." + schema_id.rstrip("/").rsplit("/", 2)[-2].replace("_", "-")
        audit(action, subject, {"schema": schema_id, **fields})

    for schema_id in list(serverapp.event_logger.schemas.schema_ids):
        serverapp.event_logger.add_listener(schema_id=schema_id, listener=listener)


def private_tmpdir() -> str:
    """The server's own temporary folder (0700, in the user's home), as ``TMPDIR``: what the
    server writes there is not in the shared /tmp (its kernels get a /tmp of their own)."""
    path = os.path.join(os.path.expanduser("~"), ".enclave", "tmp")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    os.environ["TMPDIR"] = path
    import tempfile

    tempfile.tempdir = None  # forget a default chosen before
    return path


def _load_jupyter_server_extension(serverapp) -> None:
    os.umask(UMASK)  # the server's files and its kernels' (a 0644 file in /tmp was readable)
    try:
        private_tmpdir()
    except OSError as exc:  # umask 077 still keeps what it writes in /tmp private
        log.warning("enclave lock-down: no private TMPDIR (%s)", type(exc).__name__)
    base = serverapp.base_url.rstrip("/")
    handlers = [(f"{base}/{pattern}", RefusedHandler) for pattern in REFUSED_ROUTES]
    serverapp.web_app.add_handlers(".*$", handlers)
    if not isinstance(serverapp.contents_manager, EnclaveContentsManager):
        log.error("enclave lock-down: contents manager is %s, not EnclaveContentsManager",
                  type(serverapp.contents_manager).__name__)
        raise SystemExit("enclave lock-down: the contents manager policy was overridden")
    if not isinstance(serverapp.kernel_manager, EnclaveKernelManager) or not isinstance(
            serverapp.kernel_spec_manager, EnclaveKernelSpecManager):
        raise SystemExit("enclave lock-down: the kernel manager policy was overridden")
    _forward_server_events(serverapp)
    airlock = os.environ.get(relay.AIRLOCK_ENV)
    if airlock:
        serverapp._enclave_relay = relay.serve_relay(serverapp.runtime_dir, airlock)
    serverapp.log.info("enclave lock-down active: %d routes refused, uploads refused",
                       len(handlers))


def _jupyter_server_extension_points():
    return [{"module": "enclave.io.hub.lockdown"}]
