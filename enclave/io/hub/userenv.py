"""The user environment: the one Python that user servers and kernels run from.

Why a separate environment: the admin venv lives under /root (0700), which researchers' processes
cannot even enter, and researchers must not import the admin tooling anyway. The user environment
is built from the system Python in a world-readable, root-owned path (users can run it, not change
it), with JupyterLab, the single-user server of the same JupyterHub version as the hub, the enclave
package (research API + the lock-down extension) and the analysis libraries.

Its third-party packages are exactly those of its lock, ``requirements/userenv.lock`` (see
:mod:`enclave.io.envlock`; DuckDB, polars, ibis, pandas, pyarrow and JupyterHub in the admin lock's
versions). Building takes minutes, so it is cached in two layers, each keyed by a hash recorded in
the environment: the lock (and the system Python), then the enclave package itself (reinstalled,
without dependencies, whenever its sources change). The JupyterLab plugin lock-down and the server
policy are written at sys-prefix level, where ``disable_user_config`` leaves users no way to
override them.

The service environment (``hub.serviceenv_dir``) is built the same way for the hub services, which
run as their own system users and cannot enter /root either: the airlock (and its re-runs), the
dashboards (Streamlit) and the idle culler. It has no JupyterLab and no kernel; its lock is
``requirements/serviceenv.lock``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from enclave.core.errors import ConfigurationError
from enclave.core.settings import Settings
from enclave.io.envlock import LOCKS, compare, installed, read_lock, sync

REPO = Path(__file__).resolve().parents[3]
STAMP = "enclave-userenv.json"


def _hash(items: list[str]) -> str:
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


def source_hash(root: Path = REPO) -> str:
    """Hash of the enclave package's sources (and pyproject): when it changes, reinstall enclave."""
    h = hashlib.sha256((root / "pyproject.toml").read_bytes())
    for f in sorted((root / "enclave").rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _stamp(env: Path) -> dict:
    try:
        return json.loads((env / STAMP).read_text())
    except (OSError, ValueError):
        return {}


def _run(cmd: list[str], echo: Callable[[str], None]) -> None:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigurationError(
            f"building the user environment failed at: {' '.join(cmd[:4])} ...\n{proc.stderr[-3000:]}")


def lab_policy() -> dict:
    """JupyterLab page_config: plugins that download, export or fetch URLs are disabled AND locked."""
    blocked = [
        "@jupyterlab/docmanager-extension:download",
        "@jupyterlab/filebrowser-extension:download",
        "@jupyterlab/filebrowser-extension:open-url",
        "@jupyterlab/filebrowser-extension:open-browser-tab",
        "@jupyterlab/filebrowser-extension:share-file",
        "@jupyterlab/notebook-extension:export",
        "@jupyterlab/help-extension:open",
        "@jupyterlab/terminal-extension",
        "@jupyterlab/extensionmanager-extension",
        "@jupyterlab/apputils-extension:print",
        "@jupyterlab/apputils-extension:announcements",
    ]
    return {"disabledExtensions": {p: True for p in blocked},
            "lockedExtensions": {p: True for p in blocked}}


def server_policy() -> dict:
    """Jupyter server config at sys-prefix level (the user cannot override it: disable_user_config)."""
    return {
        "ServerApp": {
            # terminals are refused anyway; the language-server scan only slows the spawn down
            "jpserver_extensions": {"enclave.io.hub.lockdown": True, "jupyter_lsp": False,
                                    "jupyter_server_terminals": False},
            "terminals_enabled": False,
            "allow_remote_access": False,
            "contents_manager_class": "enclave.io.hub.lockdown.EnclaveContentsManager",
            "kernel_manager_class": "enclave.io.hub.lockdown.EnclaveKernelManager",
            "kernel_spec_manager_class": "enclave.io.hub.lockdown.EnclaveKernelSpecManager",
            "kernel_websocket_connection_class":
                "enclave.io.hub.lockdown.EnclaveWebsocketConnection",
        },
        # no package installs and no calls home from the lab server (egress is denied anyway)
        "LabApp": {"extension_manager": "readonly", "news_url": None,
                   "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"},
        "KernelSpecManager": {"allowed_kernelspecs": ["enclave"], "ensure_native_kernel": False},
        "MappingKernelManager": {"cull_idle_timeout": 0, "default_kernel_name": "enclave"},
        "KernelManager": {"transport": "ipc"},
        "ContentsManager": {"allow_hidden": False},
    }


def write_policy(env: Path, settings: Settings) -> None:
    """Kernel spec, server policy and lab page_config into the environment's sys-prefix dirs."""
    etc = env / "etc" / "jupyter"
    (etc / "jupyter_server_config.d").mkdir(parents=True, exist_ok=True)
    policy = server_policy()
    policy["EnclaveContentsManager"] = {"upload_max_bytes": settings.hub.upload_max_bytes,
                                        "notebook_max_bytes": settings.hub.notebook_max_bytes}
    policy["ZMQChannelsWebsocketConnection"] = {
        "limit_rate": True, "iopub_data_rate_limit": float(settings.hub.iopub_data_rate_limit),
        "iopub_msg_rate_limit": 1000.0, "rate_limit_window": 3.0}
    # conf.d files only enable extensions; the policy itself must be the sys-prefix config file
    (etc / "jupyter_server_config.d" / "enclave-lockdown.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": policy["ServerApp"]["jpserver_extensions"]}}, indent=2))
    # conf.d files are read in name order and a later one wins: ours must come last
    for other in (etc / "jupyter_server_config.d").glob("*.json"):
        if other.name.startswith(("jupyter-lsp", "jupyter_lsp", "jupyter_server_terminals")):
            other.unlink()
    (etc / "jupyter_server_config.json").write_text(json.dumps(policy, indent=2))
    (etc / "labconfig").mkdir(parents=True, exist_ok=True)
    (etc / "labconfig" / "page_config.json").write_text(json.dumps(lab_policy(), indent=2))
    # the only kernel: the no-network one (see enclave.io.hub.kernel)
    share = env / "share" / "jupyter" / "kernels"
    if share.exists():
        shutil.rmtree(share)
    spec_dir = share / "enclave"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps(kernel_spec(env), indent=2))
    for d, _, files in os.walk(env / "etc"):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(Path(d) / f, 0o644)
    for d, _, files in os.walk(env / "share" / "jupyter" / "kernels"):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(Path(d) / f, 0o644)


def kernel_spec(env: Path) -> dict:
    return {
        "argv": [str(env / "bin" / "python"), "-I", "-m", "enclave.io.hub.kernel", "-f", "{connection_file}"],
        "display_name": "Python 3 (enclave, no network)",
        "language": "python",
        "metadata": {"debugger": False},
    }


def _build(env: Path, lock: Path, settings: Settings, *, force: bool,
           echo: Callable[[str], None]) -> dict:
    """Create or reuse a venv at ``env`` from the system Python holding exactly ``lock`` (rebuilt
    when the lock changed, or when the environment no longer holds it), then (re)install the
    enclave package when its sources changed; returns the stamp to write when done."""
    req_hash = _hash([lock.read_text(), settings.hub.system_python])
    src_hash, stamp, python = source_hash(), _stamp(env), env / "bin" / "python"
    stale = force or stamp.get("requirements") != req_hash or not python.exists()
    if not stale and not (diff := compare(installed(python), read_lock(lock))).matches:
        echo(f"{env} {diff.describe(lock.name)}: rebuilding it")
        stale = True
    if stale:
        echo(f"building the Python environment {env} from {lock.name} (a few minutes) ...")
        if env.exists():
            shutil.rmtree(env)
        env.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(env.parent, os.stat(env.parent).st_mode | 0o755)
        _run([settings.hub.system_python, "-m", "venv", str(env)], echo)
        sync(python, lock, echo=echo)
        stamp = {"requirements": req_hash}
    else:
        echo(f"Python environment {env}: matches {lock.name} (built before)")
    if force or stamp.get("enclave") != src_hash:
        echo(f"installing the enclave package into {env} ...")
        _run([str(python), "-m", "pip", "install", "-q", "--no-deps",
              "--disable-pip-version-check", "--force-reinstall", str(REPO)], echo)
        stamp["enclave"] = src_hash
    return stamp


def _finish(env: Path, stamp: dict) -> Path:
    (env / STAMP).write_text(json.dumps(stamp))
    subprocess.run(["chmod", "-R", "a+rX,go-w", str(env)], check=True)
    return env


def build_userenv(settings: Settings, *, env: Path | None = None, force: bool = False,
                  echo: Callable[[str], None] = print) -> Path:
    """Build (or reuse) the user environment; returns its path. Needs root for a path under /opt."""
    env = Path(env or settings.hub.userenv_dir)
    stamp = _build(env, LOCKS["userenv"].path, settings, force=force, echo=echo)
    write_policy(env, settings)
    _run([str(env / "bin" / "jupyter"), "labextension", "lock", "--level=sys_prefix",
          *lab_policy()["lockedExtensions"]], echo)
    return _finish(env, stamp)


def build_serviceenv(settings: Settings, *, env: Path | None = None, force: bool = False,
                     echo: Callable[[str], None] = print) -> Path:
    """Build (or reuse) the service environment the hub services run from as their own users
    (the admin venv under /root is closed to them). Needs root for a path under /opt."""
    env = Path(env or settings.hub.serviceenv_dir)
    return _finish(env, _build(env, LOCKS["serviceenv"].path, settings, force=force,
                               echo=echo))
