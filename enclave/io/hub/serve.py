"""Starting, stopping and reporting the hub (and everything it started) for one enclave home.

``start_hub`` runs JupyterHub detached, in its own session, logging to ``<home>/hub/hub.log``, and
records what it started in ``<home>/hub/run.json``. ``stop_hub`` stops the hub, then every process
that descended from it (proxy, user servers, kernels, services) that is still alive, and waits until
they are gone and the ports are free: ``enclave down`` returns only when nothing of ours runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from enclave.core.errors import ConfigurationError
from enclave.core.settings import Settings
from enclave.io.hub import preflight, registry
from enclave.io.hub.config import hub_dir, write_hub_config


def _run_file(settings: Settings) -> Path:
    return hub_dir(settings) / "run.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (by parent links in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def hub_ready(settings: Settings) -> bool:
    url = f"http://{settings.hub.ip}:{settings.hub.port}/hub/api/"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def status(settings: Settings) -> dict:
    run = _load_run(settings)
    pid = run.get("pid")
    alive = bool(pid) and _alive(pid)
    return {
        "home": str(settings.home),
        "hub": {"pid": pid if alive else None, "running": alive,
                "url": f"http://{settings.hub.ip}:{settings.hub.port}/",
                "responding": alive and hub_ready(settings),
                "processes": len(descendants(pid)) if alive else 0},
        "log": str(hub_dir(settings) / "hub.log"),
    }


def _load_run(settings: Settings) -> dict:
    try:
        return json.loads(_run_file(settings).read_text())
    except (OSError, ValueError):
        return {}


def start_hub(settings: Settings, *, dashboards: list[str] | None = None,
              airlock: bool = True, wait_s: float = 60.0) -> int:
    """Start the hub detached; returns its pid once it answers (refused when one already runs,
    when a service user or researcher cannot reach what it needs: :mod:`.preflight`, when
    another enclave home owns its names or another program listens on its ports:
    :mod:`.registry`)."""
    preflight.check_hub(settings, planned=False, airlock=airlock,
                        dashboards=bool(dashboards), researchers=preflight.researchers(settings))
    run = _load_run(settings)
    if run.get("pid") and _alive(run["pid"]):
        raise ConfigurationError(f"the hub of {settings.home} already runs (pid {run['pid']}); "
                                 "'enclave down' stops it")
    registry.claim(settings, write=False)
    # the ports the hub and the services it starts listen on (an airlock or dashboards run
    # elsewhere, as by the tests' stand-ins, is not the hub's to check)
    check_ports_free(settings, ["port", "hub_port", "proxy_api_port"]
                              + (["airlock_port"] if airlock else [])
                              + (["dashboards_port", "dashboards_app_port"] if dashboards else []))
    registry.claim(settings)
    cfg = write_hub_config(settings, dashboards=dashboards, airlock=airlock)
    log = open(hub_dir(settings) / "hub.log", "ab")
    jupyterhub = Path(sys.executable).with_name("jupyterhub")
    proc = subprocess.Popen([str(jupyterhub), "-f", str(cfg)], cwd=hub_dir(settings),
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    _run_file(settings).write_text(json.dumps({"pid": proc.pid, "started": time.time()}))
    deadline, seen = time.monotonic() + wait_s, set()
    while time.monotonic() < deadline:
        seen.update(descendants(proc.pid))
        if proc.poll() is not None:
            # what it started before dying (proxy, services) is orphaned now: stop it too
            orphans = [p for p in seen if _alive(p)]
            for p in orphans:
                _signal(p, signal.SIGTERM)
            _wait(orphans, 10)
            raise ConfigurationError(f"the hub exited at start (code {proc.returncode}); see "
                                     f"{hub_dir(settings) / 'hub.log'}")
        if hub_ready(settings):
            return proc.pid
        time.sleep(0.3)
    stop_hub(settings)
    raise ConfigurationError(f"the hub did not answer within {wait_s:.0f} s; see the hub log")


def stop_hub(settings: Settings, *, wait_s: float = 60.0) -> list[int]:
    """Stop the hub and everything below it; returns the pids that were stopped."""
    run = _load_run(settings)
    pid = run.get("pid")
    if not pid or not _alive(pid):
        _run_file(settings).unlink(missing_ok=True)
        return []
    below = descendants(pid)
    os.kill(pid, signal.SIGTERM)
    _wait([pid], wait_s)
    leftover = [p for p in below if _alive(p)]
    for p in leftover:
        _signal(p, signal.SIGTERM)
    _wait(leftover, 10)
    for p in [p for p in [pid, *below] if _alive(p)]:
        _signal(p, signal.SIGKILL)
    _wait([pid, *below], 10)
    try:  # reap if the hub is our child (tests start and stop it in one process)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    for port in (settings.hub.port, settings.hub.hub_port, settings.hub.proxy_api_port):
        deadline = time.monotonic() + 10
        while port_open(port) and time.monotonic() < deadline:
            time.sleep(0.2)
    _run_file(settings).unlink(missing_ok=True)
    return [pid, *below]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait(pids: list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)


def check_ports_free(settings: Settings, names: Iterable[str] = registry.PORT_SETTINGS) -> None:
    """Refuse when a port of ``names`` (the [hub] port settings) is in use while this home's
    hub is not running: another program, or an enclave from before this registry, holds it."""
    if status(settings)["hub"]["running"]:
        return
    taken = [(n, getattr(settings.hub, n)) for n in names if port_open(getattr(settings.hub, n))]
    if taken:
        raise registry.NameConflictError(
            f"the enclave at {settings.home} (instance {settings.hub.instance}) cannot serve: "
            + ", ".join(f"port {p} (hub.{n})" for n, p in taken)
            + " is in use by another program; nothing was done.\n  fix: stop what listens there "
            f"(ss -ltnp shows it), or choose other ports in {settings.home / 'settings.toml'} "
            "[hub] (or another hub.instance, whose port block differs)")
