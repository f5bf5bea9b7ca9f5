"""JupyterHub configuration for one enclave home, as data applied to the traitlets config object.

``write_hub_config`` writes ``<home>/hub/jupyterhub_config.py``, a two-line file calling
:func:`configure`, so the policy lives here (reviewed, tested), not in a hand-edited file.

Policy summary: PAM login for the enclave role groups only; only researchers get a notebook server
(run as their own Unix user from the user environment, with ``disable_user_config``, isolated
Python and the lock-down extension); hub roles give the airlock to researchers and stewards and the
dashboards to policymakers; idle servers are culled. The services (airlock, dashboards, culler) run
as their own system users from the service environment, never as root.
"""

from __future__ import annotations

import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

from enclave.core.errors import ConfigurationError
from enclave.core.settings import Settings
from enclave.io.hub import egress, welcome
from enclave.io.hub.anchor import schedule_anchors

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = Path(__file__).resolve().parent / "templates"
CHP = REPO / "node_modules" / ".bin" / "configurable-http-proxy"


def hub_dir(settings: Settings) -> Path:
    return settings.home / "hub"


def proxy_command() -> list[str]:
    found = CHP if CHP.exists() else shutil.which("configurable-http-proxy")
    if not found:
        raise ConfigurationError(
            "configurable-http-proxy is missing: run .ci/install (npm install configurable-http-proxy)")
    return [str(found)]


def service_python(settings: Settings) -> str:
    """The interpreter the services run from: the service environment (world-readable; the admin
    venv under /root is closed to the service users)."""
    return str(Path(settings.hub.serviceenv_dir) / "bin" / "python")


def _as(user: str, *, cwd: str | None = None) -> dict[str, str]:
    """``user``/``cwd`` of a managed service: the hub (root) drops to that Unix user (its own
    groups) before exec; the working folder is the user's home, not the hub's 0700 state."""
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ConfigurationError(f"service user '{user}' is missing: run 'enclave hub sync' "
                                 "(or 'enclave up') as root") from None
    if pw.pw_uid == 0:
        raise ConfigurationError(f"service user '{user}' is root: the hub services never run as "
                                 "root (see the hub.*_user settings)")
    return {"user": user, "cwd": cwd or (pw.pw_dir if Path(pw.pw_dir).is_dir() else "/")}


def service_specs(settings: Settings, *, airlock: bool, dashboards: list[str] | None) -> list[dict]:
    """Hub-managed services, each as its own Unix user from the service environment.

    ``dashboards``: the command serving the Streamlit app (run as the dashboards user), or None.
    """
    h, home = settings.hub, str(settings.home)
    py = service_python(settings)
    enclave = [py, "-I", "-m", "enclave"]
    path = {"PATH": f"{Path(py).parent}:/usr/bin:/bin"}
    services: list[dict[str, Any]] = [{
        "name": "idle-culler", **_as(h.culler_user, cwd="/"), "environment": path,
        "command": [py, "-I", "-m", "jupyterhub_idle_culler",
                    f"--timeout={h.idle_timeout_s}", f"--cull-every={h.cull_every_s}"],
    }]
    # the one service that runs as root: changing Unix groups and stopping other users' processes
    # needs it; it listens on no port and reads nothing but the control database
    services.append({
        "name": "enclave-access", "environment": path,
        "command": [sys.executable, "-I", "-m", "enclave", "--home", home, "hub", "watch",
                    "--every", str(h.access_check_interval_s)],
    })
    if airlock:
        services.append({
            "name": "airlock", "url": f"http://127.0.0.1:{h.airlock_port}", "oauth_no_confirm": True,
            **_as(h.airlock_user), "environment": path,
            "command": enclave + ["--home", home, "airlock", "serve", "--port", str(h.airlock_port)],
        })
    if dashboards:
        services.append({
            "name": "dashboards", "url": f"http://127.0.0.1:{h.dashboards_port}",
            "oauth_no_confirm": True, **_as(h.dashboards_user), "environment": path,
            "command": enclave + ["--home", home, "hub", "gate", "--port", str(h.dashboards_port),
                                  "--upstream", f"http://127.0.0.1:{h.dashboards_app_port}"],
        })
        # the app script is the repository's dashboards/app.py: its package comes from there too
        services.append({"name": "dashboards-app", "command": dashboards,
                         **_as(h.dashboards_user),
                         "environment": {**path, "ENCLAVE_HOME": home, "PYTHONPATH": str(REPO)}})
    return services


def _unix_members(group: str) -> list[str]:
    import grp

    try:
        return sorted(grp.getgrnam(group).gr_mem)
    except KeyError:
        return []


def roles(settings: Settings, services: list[dict]) -> list[dict]:
    h = settings.hub
    names = {s["name"] for s in services}
    out = [
        # every user: their own name, groups and tokens, but no notebook server ...
        {"name": "user", "scopes": ["read:users!user", "users:activity!user", "tokens!user"]},
        # ... which only researchers get (a steward's or policymaker's spawn is refused, 403):
        # through the hub group (synced at each login) and, for those who have not signed in
        # since the hub started (tokens an operator makes), as the Unix group's members
        {"name": "enclave-lab", "groups": [h.researchers_group],
         "users": _unix_members(h.researchers_group),
         "scopes": ["servers!user", "access:servers!user"]},
        {"name": "idle-culler", "services": ["idle-culler"],
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}]
    if "airlock" in names:
        out.append({"name": "enclave-airlock-users", "groups": [h.researchers_group, h.stewards_group],
                    "scopes": ["access:services!service=airlock"]})
        out.append({"name": "enclave-airlock-service", "services": ["airlock"],
                    "scopes": ["list:users", "read:users", "read:groups"]})
    if "enclave-ops" in names:
        out.append({"name": "enclave-ops", "services": ["enclave-ops"],
                    "scopes": ["admin:users", "admin:servers", "tokens", "list:users",
                               "read:users", "access:servers"]})
    if "dashboards" in names:
        out.append({"name": "enclave-dashboards-viewers", "groups": [h.policymakers_group],
                    "scopes": ["access:services!service=dashboards"]})
    return out


def configure(c: Any, settings: Settings, *, airlock: bool = True,
              dashboards: list[str] | None = None) -> None:
    """Apply the enclave policy to a JupyterHub config object ``c``."""
    h, state = settings.hub, hub_dir(settings)
    env = Path(h.userenv_dir)
    if not (env / "bin" / "python").exists():
        raise ConfigurationError(f"no user environment at {env}: run 'enclave hub userenv'")
    if not Path(service_python(settings)).exists():
        raise ConfigurationError(f"no service environment at {h.serviceenv_dir}: run "
                                 "'enclave hub serviceenv'")
    services = service_specs(settings, airlock=airlock, dashboards=dashboards)

    c.JupyterHub.ip, c.JupyterHub.port = h.ip, h.port
    c.JupyterHub.hub_ip, c.JupyterHub.hub_port = "127.0.0.1", h.hub_port
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.cleanup_proxy = True
    c.ConfigurableHTTPProxy.command = proxy_command()
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{h.proxy_api_port}"
    c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")

    c.JupyterHub.authenticator_class = "enclave.io.hub.auth.EnclaveAuthenticator"
    c.Authenticator.allowed_groups = {h.researchers_group, h.stewards_group, h.policymakers_group}
    c.Authenticator.manage_groups = True
    c.Authenticator.admin_users = set()
    c.EnclaveAuthenticator.group_prefix = h.project_group_prefix
    c.EnclaveAuthenticator.enclave_home = str(settings.home)
    c.PAMAuthenticator.open_sessions = False

    c.JupyterHub.spawner_class = "localprocess"
    c.Spawner.cmd = [str(env / "bin" / "python"), "-I", "-m", "jupyterhub.singleuser"]
    c.Spawner.args = ["--ServerApp.terminals_enabled=False"]
    c.Spawner.disable_user_config = True
    c.Spawner.default_url = f"/lab/tree/{welcome.WELCOME}"  # written before each spawn
    c.Spawner.notebook_dir = "~"
    c.Spawner.ip = "127.0.0.1"
    c.Spawner.start_timeout = h.spawn_timeout_s
    c.Spawner.http_timeout = h.spawn_timeout_s
    c.Spawner.env_keep = ["LANG", "LC_ALL", "TZ"]
    c.Spawner.environment = {
        "PATH": f"{env / 'bin'}:/usr/bin:/bin",
        "PYTHONNOUSERSITE": "1",
        "ENCLAVE_HOME": str(settings.home),
        "ENCLAVE_AUDIT_URL": f"http://127.0.0.1:{h.airlock_port}/services/airlock/api/audit",
        "ENCLAVE_AIRLOCK_URL": f"http://127.0.0.1:{h.airlock_port}/services/airlock",
        # the daily egress budget through the browser, and the largest single kernel output
        "ENCLAVE_EGRESS_BUDGET_BYTES": str(h.egress_budget_bytes),
        "ENCLAVE_IOPUB_MAX_MESSAGE_BYTES": str(h.iopub_max_message_bytes),
    }
    # the server's own token may also call the airlock (audit events, relayed export requests)
    c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server",
                                     "access:services!service=airlock"]
    c.Spawner.pre_spawn_hook = _prepare_spawn(settings)

    ops = state / "ops_token"
    if ops.exists():  # the admin's own token (root-only file): status, tests, benchmarks
        services.append({"name": "enclave-ops", "api_token": ops.read_text().strip()})
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles(settings, services)
    c.JupyterHub.default_url = _landing(settings)
    # the home page per role (templates/home.html): only researchers see a start button
    c.JupyterHub.template_paths = [str(TEMPLATES)]
    c.JupyterHub.template_vars = {"enclave": _home_vars(settings)}

    schedule_anchors(settings)  # root-side audit anchors; nothing outside the hub's event loop


def _prepare_spawn(settings: Settings):
    """Only researchers get a server; one whose Unix groups name exactly one project gets it as
    ``ENCLAVE_PROJECT`` (the research API's default project); the egress rule is refreshed first,
    so a researcher added since the last refresh is covered before their server runs."""
    group, project_prefix = settings.hub.researchers_group, settings.hub.project_group_prefix

    def hook(spawner) -> None:
        import grp
        import os
        import pwd

        name = spawner.user.name
        pw = pwd.getpwnam(name)
        groups = {grp.getgrgid(g).gr_name for g in os.getgrouplist(name, pw.pw_gid)}
        if group not in groups:
            raise PermissionError(f"{name} is not a researcher: no notebook server")

        egress.refresh(settings)
        welcome.write_welcome(settings, name)
        projects = sorted(g[len(project_prefix):] for g in groups if g.startswith(project_prefix))
        if len(projects) == 1:
            spawner.environment = {**spawner.environment, "ENCLAVE_PROJECT": projects[0]}
    return hook


def _groups(user) -> set[str] | None:
    return {g.name for g in user.groups} if user else None


def _landing(settings: Settings):
    def default_url(handler) -> str:
        return welcome.landing_url(settings, _groups(handler.current_user))
    return default_url


def _home_vars(settings: Settings):
    def home(user) -> dict:
        return welcome.home_for(settings, _groups(user) or set())
    return home


def write_hub_config(settings: Settings, *, dashboards: list[str] | None = None,
                     airlock: bool = True) -> Path:
    """Write ``<home>/hub/jupyterhub_config.py`` (0600) and the proxy token; returns the file."""
    state = hub_dir(settings)
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    token = state / "proxy_token"
    for secret in (token, state / "ops_token"):
        if not secret.exists():
            secret.write_text(secrets.token_hex(32))
            secret.chmod(0o600)
    cfg = state / "jupyterhub_config.py"
    cfg.write_text(
        "# generated by enclave (enclave/io/hub/config.py): edit settings.toml, not this file\n"
        "from enclave.io.hub.config import configure\n"
        "from enclave.core.settings import load_settings\n"
        f"configure(c, load_settings({str(settings.home)!r}), airlock={airlock!r}, "
        f"dashboards={dashboards!r})\n"
        f"c.ConfigurableHTTPProxy.auth_token = open({str(token)!r}).read().strip()\n",
        encoding="utf-8")
    cfg.chmod(0o600)
    return cfg
