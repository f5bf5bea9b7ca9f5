"""``enclave up`` beyond the data: the demo project, its release, twin and indicators, the demo
users, and the hub serving it all; ``enclave down`` and ``enclave status``.

Stages, each safe to run again (done work is recognised and kept):

1. data — generate and ingest the demo hospitals (:func:`enclave.workflows.demo_up.bring_up`);
2. project ``demo`` with the demo researcher as member, its desensitized release ``demo/v1``,
   the synthetic twin and the indicator table (each through its own ``enclave`` command, so a
   missing optional part — the ``synthetic`` extra, say — is reported and skipped, not fatal);
3. (serving only, root) the user and service environments, the service users (airlock,
   dashboards), the demo users with fresh passwords written to a root-only file in the
   restricted zone (:func:`write_demo_credentials`; never printed unless asked),
   the project approved by a demo steward and activated, release permissions, the egress rule,
   and the hub (with airlock and dashboards) started detached on ``hub.ip:hub.port``.

Other processes' commands are run as subprocesses of the same interpreter: this module never
imports ``synthetic`` or ``dashboards``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from enclave.core.settings import Settings
from enclave.io.hub import egress, permissions, preflight, registry, serve
from enclave.io.hub.config import service_python
from enclave.io.hub.userenv import build_serviceenv, build_userenv
from enclave.io.projects import SqlProjectStore
from enclave.io.store import ensure_restricted_zone

DEMO_PROJECT = "demo"
DEMO_ROLES = (("researcher", "researcher"), ("steward1", "steward"), ("steward2", "steward"),
              ("policymaker", "policymaker"))
#: the demo project's release: what the example notebooks read plus every table an indicator
#: reads (``enclave.io.indicators.definitions.INDICATOR_TABLES``; a test holds the two together),
#: so ``enclave up`` builds every indicator from it
DEMO_TABLES = ("person", "visit_occurrence", "condition_occurrence", "measurement",
               "drug_exposure", "cost", "care_site", "concept", "death", "observation_period")
REPO = Path(__file__).resolve().parents[2]
CREDENTIALS = "demo-credentials.txt"


def credentials_path(settings: Settings) -> Path:
    """Where ``enclave up`` leaves the demo users' passwords: the restricted zone (root, 0700)."""
    return settings.restricted_dir / CREDENTIALS


def write_demo_credentials(settings: Settings, users: dict[str, dict]) -> Path:
    """Write ``{name: {"role", "password"}}`` to :func:`credentials_path` (0600, replaced
    atomically, never world-readable for a moment); returns the path."""

    ensure_restricted_zone(settings)
    path = credentials_path(settings)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    lines = ["# enclave up: the demo users (user role password); root only. Delete it once the",
             "# passwords are handed over; 'enclave up' writes new ones each time it serves."]
    lines += [f"{name} {u['role']} {u['password']}" for name, u in users.items()]
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, ("\n".join(lines) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def demo_users(settings: Settings) -> list[tuple[str, str]]:
    """(Unix name, role) of the demo users, named with the ``hub.demo_user_prefix`` setting."""
    return [(settings.hub.demo_user_prefix + suffix, role) for suffix, role in DEMO_ROLES]


def _enclave(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enclave", "--home", str(settings.home), *args],
                          capture_output=True, text=True)


def _has_command(settings: Settings, name: str) -> bool:
    return _enclave(settings, name, "--help").returncode == 0


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


def build_demo_project(settings: Settings, echo: Callable[[str], None]) -> dict:
    """Project ``demo``, release ``demo/v1``, its twin and indicators (each once)."""

    out: dict = {"project": DEMO_PROJECT}
    if DEMO_PROJECT not in {p.id for p in SqlProjectStore(settings).list()}:
        args = ["project", "create", "--id", DEMO_PROJECT, "--title", "Demo study",
                "--purpose", "chronic disease care across hospitals", "--pi", demo_users(settings)[0][0],
                "--tier", "desensitized", "--sharing", "enclave", "--expires", "2099-12-31"]
        for t in DEMO_TABLES:
            args += ["--table", t]
        proc = _enclave(settings, *args)
        if proc.returncode != 0:
            raise RuntimeError(f"creating the demo project failed: {_last_line(proc)}")
        echo(f"project {DEMO_PROJECT} recorded")
    rel = settings.releases_dir / "desensitized" / DEMO_PROJECT / "v1"
    if not (rel / "manifest.json").exists():
        proc = _enclave(settings, "release", "build", "--project", DEMO_PROJECT)
        if proc.returncode != 0:
            raise RuntimeError(f"building the demo release failed: {_last_line(proc)}")
        echo(proc.stdout.strip())
    out["release"] = f"{DEMO_PROJECT}/v1"
    twin = settings.releases_dir / "synthetic" / DEMO_PROJECT / "v1"
    if (twin / "manifest.json").exists():
        out["twin"] = f"synthetic/{DEMO_PROJECT}/v1"
    elif _has_command(settings, "synth"):
        proc = _enclave(settings, "synth", "build", "--release", f"{DEMO_PROJECT}/v1")
        out["twin"] = f"synthetic/{DEMO_PROJECT}/v1" if proc.returncode == 0 else None
        echo(proc.stdout.strip() if proc.returncode == 0 else f"twin skipped: {_last_line(proc)}")
    else:
        out["twin"] = None
        echo("twin skipped: the synthetic extra is not installed")
    indicators = settings.releases_dir / "indicators"
    if indicators.exists() and any(indicators.glob("v*")):
        out["indicators"] = max((p.name for p in indicators.glob("v*")),
                                key=lambda n: int(n[1:]) if n[1:].isdigit() else -1)
    elif _has_command(settings, "indicators"):
        # every indicator or none: a release that lacks a table is refused by the build, and
        # that failure is the command's (a dashboard page with a notice helps no policymaker)
        proc = _enclave(settings, "indicators", "build", "--release", f"{DEMO_PROJECT}/v1")
        if proc.returncode != 0:
            raise RuntimeError(f"building the demo indicators failed: {_last_line(proc)}")
        out["indicators"] = "built"
        echo(proc.stdout.strip())
    else:
        out["indicators"] = None
        echo("indicators skipped: no 'enclave indicators' command")
    return out


def dashboards_command(settings: Settings) -> list[str] | None:
    """The Streamlit command serving the dashboards behind the gate, when the app exists (the hub
    gives it ``ENCLAVE_HOME``; it reads the newest indicator table there)."""

    app = REPO / "dashboards" / "app.py"
    if not app.exists():
        return None
    # run as the dashboards user from the service environment (the admin venv is closed to it)
    # dashboards.serve: streamlit run app.py, with the app's imports done before the first visit
    return [service_python(settings), "-m", "dashboards.serve", "--server.headless=true",
            f"--server.port={settings.hub.dashboards_app_port}", "--server.address=127.0.0.1",
            "--server.baseUrlPath=services/dashboards", "--browser.gatherUsageStats=false",
            "--", "--language", settings.dashboards.language]


def check_can_serve(settings: Settings, echo: Callable[[str], None] = lambda _: None) -> None:
    """What a serving ``enclave up`` checks before any work: the service users and researchers
    (the demo researcher, who may not exist yet, and every existing one) can pass through every
    folder on the way to what they need (:mod:`enclave.io.hub.preflight`), root runs it, no other
    program listens on its ports, and no other enclave home owns its users, groups, nftables
    table or ports — which it then claims (:mod:`enclave.io.hub.registry`)."""

    names = [n for n, role in demo_users(settings) if role == "researcher"]
    preflight.check_hub(settings, planned=True, airlock=True,
                        dashboards=dashboards_command(settings) is not None,
                        researchers=names + preflight.researchers(settings))
    if os.geteuid() != 0:
        raise permissions.PermissionDeniedError(
            "serving the hub creates Unix users: run 'enclave up' as root (or use --no-serve)")
    users = [n for n, _ in demo_users(settings)]
    registry.claim(settings, users=users, write=False)  # another home's names: named as such
    serve.check_ports_free(settings)
    registry.claim(settings, users=users, echo=echo)


def serve_demo(settings: Settings, echo: Callable[[str], None]) -> dict:
    """Users, permissions, egress rule and the hub (root only). Returns users and their passwords
    (also written to :func:`credentials_path`; echoed nowhere)."""

    if os.geteuid() != 0:
        raise permissions.PermissionDeniedError(
            "serving the hub creates Unix users: run 'enclave up' as root (or use --no-serve)")
    build_userenv(settings, echo=echo)
    build_serviceenv(settings, echo=echo)
    permissions.ensure_service_users(settings)
    passwords = {}
    for name, role in demo_users(settings):
        password = secrets.token_urlsafe(9)
        if permissions.user_exists(name):
            subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        else:
            projects = (DEMO_PROJECT,) if role == "researcher" else ()
            permissions.add_user(settings, name, role, projects=projects, password=password)
        passwords[name] = {"role": role, "password": password}
    echo(f"demo users' passwords written to {write_demo_credentials(settings, passwords)} "
         "(root only)")
    for step in (["project", "approve", DEMO_PROJECT, "--as", demo_users(settings)[1][0]],
                 ["project", "activate", DEMO_PROJECT]):
        proc = _enclave(settings, *step)
        if proc.returncode != 0 and "cannot" not in _last_line(proc).lower():
            echo(f"{' '.join(step[:2])}: {_last_line(proc)}")
    permissions.apply_release_permissions(settings)
    try:
        echo(egress.apply_egress(settings))
    except Exception as exc:  # noqa: BLE001  (reported plainly; kernels stay network-less)
        echo(f"egress rule NOT applied: {exc}")
    status = serve.status(settings)
    if status["hub"]["running"]:
        echo(f"hub already running (pid {status['hub']['pid']})")
    else:
        pid = serve.start_hub(settings, dashboards=dashboards_command(settings))
        echo(f"hub started (pid {pid})")
    return passwords


def bring_down(settings: Settings) -> list[int]:

    return serve.stop_hub(settings)
