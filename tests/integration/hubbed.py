"""A real enclave with a real hub for the hub tests and the hub benchmark (root only).

Everything it creates is named with a random prefix — Unix users, role groups (through the
settings), project ids and groups, the nftables table — and listens on a block of ports found free
for this run (:func:`port_block`), so runs do not collide with each other or with a demo on the
same machine, and ``teardown`` removes exactly what it made: the hub and every process below it,
the users with their homes, the groups, the nftables table, the home's record in the registry of
machine-wide names (a per-run one: ``tests/conftest.py``), the enclave home.
"""

from __future__ import annotations

import grp
import http.server
import json
import os
import random
import secrets
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from enclave.core.settings import Settings, load_settings
from enclave.io.hub import permissions, registry, serve
from enclave.io.hub.client import Hub, UserServer, login
from enclave.io.hub.config import service_python
from enclave.io.hub.userenv import build_serviceenv, build_userenv

TABLES = ("person", "visit_occurrence", "condition_occurrence")
REPO = Path(__file__).resolve().parents[2]
#: the browser tests' screenshots, and how they launch the system Chromium (no browser download)
ARTIFACTS = REPO / "test-artifacts" / "hub"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium():
    """A Playwright Chromium for one test module (use as a module-scoped fixture)."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


#: where the test beds' port blocks lie: below the blocks derived for enclave instances (20000+)
#: and Linux's ephemeral ports (32768+)
PORT_RANGE = (11000, 20000)
_handed_out: set[int] = set()


def port_free(port: int) -> bool:
    """Nothing listens on (or holds) 127.0.0.1:``port`` now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_block(size: int = 10) -> int:
    """The first port of a random block of ``size`` ports that are free now and were not handed
    out before in this run (each test module takes one at import, instead of a fixed base)."""
    rng = random.SystemRandom()
    for _ in range(500):
        base = rng.randrange(PORT_RANGE[0], PORT_RANGE[1] - size, 10)
        if base not in _handed_out and all(port_free(p) for p in range(base, base + size)):
            _handed_out.add(base)
            return base
    raise RuntimeError(f"no {size} free ports in a row between {PORT_RANGE[0]} and {PORT_RANGE[1]}")


def enclave(home: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "enclave", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


class AuditStub:
    """A plain HTTP listener on 127.0.0.1 standing where the airlock listens: records every request
    (path, method, Authorization header, JSON body) so tests see what the hub side forwarded."""

    def __init__(self, port: int):
        self.requests: list[dict] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                stub.requests.append({"method": self.command, "path": self.path, "body": parsed,
                                      "authorization": self.headers.get("Authorization", "")})
                out = json.dumps({"seq": len(stub.requests), "requests": []}).encode()
                self.send_response(201 if self.command == "POST" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _record

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Bed:
    settings: Settings
    prefix: str
    projects: dict[str, str]             # short name -> project id
    users: dict[str, tuple[str, str]]    # short name -> (unix name, password)
    base: str = ""
    hub: Hub | None = None
    audit: AuditStub | None = None
    extra_groups: list[str] = field(default_factory=list)

    def name(self, short: str) -> str:
        return self.users[short][0]

    def login(self, short: str, password: str | None = None):
        name, pw = self.users[short]
        return login(self.base, name, password if password is not None else pw)

    def server(self, short: str) -> UserServer:
        name = self.name(short)
        assert self.hub is not None
        self.hub.ensure_user(name)
        if not self.hub.api("GET", f"/users/{name}").get("servers"):
            self.hub.spawn(name)
        return UserServer(self.base, name, self.hub.user_token(name))

    def release(self, short: str) -> Path:
        return (self.settings.releases_dir / "desensitized" / self.projects[short] / "v1"
                / "release.duckdb")


def new_prefix() -> str:
    """A random prefix for the names a test run makes (``zz`` and four letters)."""
    return "zz" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4))


def isolated_home(port_base: int | None = None, hub_settings: str = "",
                  extra_settings: str = "", prefix: str | None = None) -> tuple[str, Path]:
    """A random name prefix and a fresh enclave home under /tmp (0711) whose settings give every
    machine-wide name (groups, service users, nftables table, demo users) that prefix and the hub
    the ports port_base .. port_base+5 (None: a free block, :func:`port_block`); ``hub_settings``
    goes into [hub], ``extra_settings`` after; ``prefix``: the run's (else a new one)."""
    port_base = port_block() if port_base is None else port_base
    prefix = prefix or new_prefix()
    home = Path(tempfile.mkdtemp(prefix=f"enclave-{prefix}-", dir="/tmp"))
    os.chmod(home, 0o711)
    (home / "settings.toml").write_text(
        "[hub]\n"
        f"port = {port_base}\nhub_port = {port_base + 1}\nproxy_api_port = {port_base + 2}\n"
        f"airlock_port = {port_base + 3}\ndashboards_port = {port_base + 4}\n"
        f"dashboards_app_port = {port_base + 5}\n"
        f'researchers_group = "{prefix}-res"\nstewards_group = "{prefix}-stw"\n'
        f'policymakers_group = "{prefix}-pol"\nproject_group_prefix = "{prefix}p-"\n'
        f'egress_table = "{prefix}_egress"\ndemo_user_prefix = "{prefix}-"\n'
        f'airlock_user = "{prefix}-air"\ndashboards_user = "{prefix}-dash"\n'
        + hub_settings + "\n" + extra_settings)
    return prefix, home


def make_bed(port_base: int | None = None, *, researchers: int = 2, patients: int = 600,
             dashboards_dir: Path | None = None, audit_stub: bool = True,
             hub_settings: str = "", real_dashboards: bool = False, real_airlock: bool = False,
             stewards: int = 1, twin: bool = False, extra_settings: str = "",
             prefix: str | None = None) -> Bed:
    """Build data, users and permissions, and start the hub on ports port_base .. port_base+9
    (None: a free block, :func:`port_block`).

    ``real_airlock``: the real airlock service runs behind the hub (as its own user) instead of
    the :class:`AuditStub`, and both projects are approved and active; ``twin``: alpha's release
    gets its synthetic twin (what the example notebooks read); ``stewards``: how many stewards
    (``steward``, ``steward2`` ...); ``extra_settings``: more TOML sections of settings.toml."""
    prefix, home = isolated_home(port_base, hub_settings, extra_settings, prefix)
    settings = load_settings(home)
    build_userenv(settings, echo=lambda _: None)
    build_serviceenv(settings, echo=lambda _: None)
    users = {f"r{i}": (f"{prefix}r{i}", secrets.token_urlsafe(10)) for i in range(researchers)}
    users.update({("steward" if i == 0 else f"steward{i + 1}"):
                  (f"{prefix}st" + ("" if i == 0 else str(i + 1)), secrets.token_urlsafe(10))
                  for i in range(stewards)})
    users.update({"policymaker": (f"{prefix}pm", secrets.token_urlsafe(10)),
                  "outsider": (f"{prefix}ou", secrets.token_urlsafe(10))})
    projects = {"alpha": f"{prefix}-alpha", "beta": f"{prefix}-beta"}
    bed = Bed(settings, prefix, projects, users)
    try:
        enclave(home, "up", "--data-only", "--patients", str(patients), "--hospitals", "2",
                "--seed", "3")
        # r0 works on alpha, r1 on beta; further researchers (benchmark) on alpha
        members = {"alpha": [u for k, (u, _) in users.items() if k.startswith("r") and k != "r1"],
                   "beta": [users["r1"][0]] if researchers > 1 else []}
        for short, pid in projects.items():
            args = ["project", "create", "--id", pid, "--title", f"Study {short}", "--purpose",
                    "diabetes care", "--pi", users["r0"][0], "--tier", "desensitized",
                    "--sharing", "enclave", "--expires", "2099-12-31"]
            for m in members[short]:
                args += ["--member", m]
            for t in TABLES:
                args += ["--table", t]
            enclave(home, *args)
            enclave(home, "release", "build", "--project", pid)
        for short, (name, pw) in users.items():
            if short == "outsider":  # a real Unix user with a password, in no enclave group
                subprocess.run(["useradd", "--create-home", "-K", "HOME_MODE=0700", name], check=True)
                subprocess.run(["chpasswd"], input=f"{name}:{pw}\n", text=True, check=True)
                continue
            role = "researcher" if short.startswith("r") else short.rstrip("0123456789")
            mine = tuple(pid for p, pid in projects.items() if name in members[p])
            permissions.add_user(settings, name, role, projects=mine, password=pw)
        # a steward approves both projects, the admin activates them (until then their releases
        # are closed to everyone)
        if stewards:
            for pid in projects.values():
                enclave(home, "project", "approve", pid, "--as", users["steward"][0])
                enclave(home, "project", "activate", pid)
        if twin:
            enclave(home, "synth", "build", "--release", f"{projects['alpha']}/v1")
        if real_dashboards:  # the Streamlit app on an indicator table built from alpha's release
            # alpha releases three tables: the indicators that need others are skipped on purpose
            enclave(home, "indicators", "build", "--release", f"{projects['alpha']}/v1",
                    "--skip-missing")
        permissions.ensure_service_users(settings)
        permissions.apply_release_permissions(settings)
        if audit_stub and not real_airlock:
            bed.audit = AuditStub(settings.hub.airlock_port)
        dashboards = None
        if real_dashboards:
            from enclave.workflows.enclave_up import dashboards_command

            dashboards = dashboards_command(settings)
        elif dashboards_dir is not None:  # served by the dashboards user: a copy it can read
            page = home / "dash-page"
            shutil.copytree(dashboards_dir, page)
            subprocess.run(["chown", "-R", f"{settings.hub.dashboards_user}:", str(page)],
                           check=True)
            dashboards = [service_python(settings), "-m", "http.server", "--bind", "127.0.0.1",
                          "--directory", str(page), str(settings.hub.dashboards_app_port)]
        serve.start_hub(settings, airlock=real_airlock, dashboards=dashboards)
        bed.base = f"http://127.0.0.1:{settings.hub.port}"
        bed.hub = Hub(bed.base, (home / "hub" / "ops_token").read_text().strip())
    except BaseException:
        log = home / "hub" / "hub.log"
        if log.exists():  # the hub's own words, before teardown removes the home
            sys.stderr.write(log.read_text(errors="replace")[-6000:])
        teardown(bed)
        raise
    return bed


def teardown(bed: Bed) -> None:
    from enclave.io.hub import egress

    serve.stop_hub(bed.settings)
    try:
        egress.remove_egress(bed.settings)
    except Exception:  # noqa: BLE001  (the table was never made, or nft is missing)
        pass
    if bed.audit is not None:
        bed.audit.close()
    for name, _ in bed.users.values():
        permissions.remove_user(name)
    for name in (bed.settings.hub.airlock_user, bed.settings.hub.dashboards_user):
        if name.startswith(bed.prefix):  # the bed's own service users, never a real install's
            permissions.remove_user(name)
    groups = [g.gr_name for g in grp.getgrall() if g.gr_name.startswith(bed.prefix)]
    for g in groups:
        subprocess.run(["groupdel", g], capture_output=True)
    registry.release(bed.settings.home)
    shutil.rmtree(bed.settings.home, ignore_errors=True)
