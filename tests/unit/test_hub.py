"""The hub's policy pieces, each on its own: hub config, lab/server policy, the contents manager's
refusals, audit forwarding (to a real listener on 127.0.0.1), the kernel launcher failing closed,
the egress ruleset, release permissions (root), and when ``enclave up`` serves."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import secrets
import shutil
import stat
import string
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from tornado import web
from traitlets.config import Config

from enclave.core.settings import load_settings
from enclave.io.hub import audit, config, egress, userenv
from tests.integration.hubbed import AuditStub


@pytest.fixture
def hub_settings(tmp_path):
    env = tmp_path / "userenv"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").touch()
    senv = tmp_path / "serviceenv"
    (senv / "bin").mkdir(parents=True)
    (senv / "bin" / "python").touch()
    home = tmp_path / "home"
    home.mkdir()
    (home / "settings.toml").write_text(
        f'[hub]\nuserenv_dir = "{env}"\nserviceenv_dir = "{senv}"\nport = 18990\n'
        'airlock_user = "nobody"\ndashboards_user = "daemon"\nculler_user = "nobody"\n')
    return load_settings(home)


def test_hub_config_carries_the_policy(hub_settings):
    c = Config()
    config.configure(c, hub_settings, airlock=True, dashboards=["streamlit", "run", "app.py"])
    h = hub_settings.hub
    assert c.JupyterHub.authenticator_class == "enclave.io.hub.auth.EnclaveAuthenticator"
    assert c.Authenticator.allowed_groups == {h.researchers_group, h.stewards_group,
                                              h.policymakers_group}
    assert c.Authenticator.manage_groups is True and not c.Authenticator.admin_users
    assert c.Spawner.disable_user_config is True
    assert c.Spawner.cmd[1] == "-I" and c.Spawner.cmd[0].startswith(h.userenv_dir)
    assert c.Spawner.environment["PYTHONNOUSERSITE"] == "1"
    assert c.JupyterHub.ip == "127.0.0.1" and c.JupyterHub.port == 18990
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert set(services) == {"idle-culler", "airlock", "dashboards", "dashboards-app",
                             "enclave-access"}
    assert "url" not in services["dashboards-app"]          # only reachable through the gate
    assert f"--timeout={h.idle_timeout_s}" in services["idle-culler"]["command"]
    assert f"--cull-every={h.cull_every_s}" in services["idle-culler"]["command"]
    # the access watch is the one root service: no port, no input, it changes Unix groups
    access = services.pop("enclave-access")
    assert "user" not in access and "url" not in access
    assert access["command"][-4:] == ["hub", "watch", "--every", str(h.access_check_interval_s)]
    # no other service runs as root, nor from the admin venv (closed to the service users)
    assert {n: s["user"] for n, s in services.items()} == {
        "idle-culler": "nobody", "airlock": "nobody", "dashboards": "daemon",
        "dashboards-app": "daemon"}
    for name in ("idle-culler", "airlock", "dashboards"):
        assert services[name]["command"][0] == f"{h.serviceenv_dir}/bin/python", name
        assert services[name]["command"][1] == "-I", name
    assert services["airlock"]["environment"]["PATH"].startswith(f"{h.serviceenv_dir}/bin:")
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["enclave-dashboards-viewers"]["groups"] == [h.policymakers_group]
    assert roles["enclave-dashboards-viewers"]["scopes"] == ["access:services!service=dashboards"]
    assert set(roles["enclave-airlock-users"]["groups"]) == {h.researchers_group, h.stewards_group}
    assert "delete:servers" in roles["idle-culler"]["scopes"]
    assert "access:services!service=airlock" in c.Spawner.server_token_scopes


def test_hub_config_refuses_a_missing_user_environment(tmp_path):
    from enclave.core.errors import ConfigurationError

    s = load_settings(tmp_path)
    (tmp_path / "settings.toml").write_text(f'[hub]\nuserenv_dir = "{tmp_path / "none"}"\n')
    with pytest.raises(ConfigurationError, match="user environment"):
        config.configure(Config(), load_settings(tmp_path))
    assert s.hub.userenv_dir == "/opt/enclave/userenv"


def test_hub_config_refuses_a_missing_service_environment_or_user(hub_settings, tmp_path):
    from dataclasses import replace

    from enclave.core.errors import ConfigurationError

    h = hub_settings.hub
    gone = replace(hub_settings, hub=replace(h, serviceenv_dir=str(tmp_path / "none")))
    with pytest.raises(ConfigurationError, match="service environment"):
        config.configure(Config(), gone)
    nobody = replace(hub_settings, hub=replace(h, airlock_user="zz-no-such-user"))
    with pytest.raises(ConfigurationError, match="service user 'zz-no-such-user' is missing"):
        config.configure(Config(), nobody, airlock=True)
    root = replace(hub_settings, hub=replace(h, dashboards_user="root"))
    with pytest.raises(ConfigurationError, match="never run as root"):
        config.configure(Config(), root, dashboards=["streamlit"])


def test_lab_plugins_that_move_data_out_are_disabled_and_locked():
    policy = userenv.lab_policy()
    assert policy["disabledExtensions"] == policy["lockedExtensions"]
    blocked = set(policy["lockedExtensions"])
    for plugin in ("@jupyterlab/docmanager-extension:download",
                   "@jupyterlab/filebrowser-extension:download",
                   "@jupyterlab/filebrowser-extension:open-url",
                   "@jupyterlab/notebook-extension:export", "@jupyterlab/terminal-extension"):
        assert plugin in blocked


def test_server_policy_allows_one_kernel_and_no_terminals():
    p = userenv.server_policy()
    assert p["ServerApp"]["terminals_enabled"] is False
    assert p["ServerApp"]["jpserver_extensions"]["enclave.io.hub.lockdown"] is True
    assert p["ServerApp"]["jpserver_extensions"]["jupyter_server_terminals"] is False
    assert p["ServerApp"]["contents_manager_class"].endswith("EnclaveContentsManager")
    assert p["KernelSpecManager"]["allowed_kernelspecs"] == ["enclave"]
    assert p["KernelManager"]["transport"] == "ipc"
    spec = userenv.kernel_spec(Path("/opt/x"))
    assert spec["argv"][:4] == ["/opt/x/bin/python", "-I", "-m", "enclave.io.hub.kernel"]


@pytest.fixture
def stub():
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listener = AuditStub(port)
    yield listener, f"http://127.0.0.1:{port}/services/airlock/api/audit"
    listener.close()


def test_audit_events_are_posted_with_the_users_token(stub):
    listener, url = stub
    assert audit.forward_event("hub.route_refused", "/user/ann/files/x", {"method": "GET"},
                               url=url, token="tok-123", user="ann")
    (req,) = listener.requests
    assert req["method"] == "POST" and req["path"] == "/services/airlock/api/audit"
    assert req["authorization"] == "token tok-123"
    body = req["body"]
    assert body["action"] == "hub.route_refused" and body["subject"] == "/user/ann/files/x"
    assert body["detail"]["method"] == "GET" and body["detail"]["server_user"] == "ann"


def test_audit_forward_failure_is_reported_not_raised(stub, caplog):
    listener, url = stub
    listener.close()
    assert audit.forward_event("hub.route_refused", "/x", {}, url=url, token="t") is False
    assert "audit forward failed" in caplog.text


def test_contents_manager_refuses_uploads_and_binary_downloads(tmp_path, stub, monkeypatch):
    pytest.importorskip("jupyter_server")
    from enclave.io.hub.lockdown import EnclaveContentsManager

    listener, url = stub
    monkeypatch.setenv(audit.AUDIT_URL_ENV, url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "tok-cm")
    cm = EnclaveContentsManager(root_dir=str(tmp_path), upload_max_bytes=100)

    async def run():
        with pytest.raises(web.HTTPError) as exc:
            await cm.save({"type": "file", "format": "base64", "content": "AAAA"}, "in.bin")
        assert exc.value.status_code == 403
        with pytest.raises(web.HTTPError):
            await cm.save({"type": "file", "format": "text", "content": "x" * 101}, "big.txt")
        await cm.save({"type": "file", "format": "text", "content": "x" * 100}, "ok.txt")
        (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
        with pytest.raises(web.HTTPError):
            await cm.get("blob.bin", content=True)
        model = await cm.get("blob.bin", content=False)     # listing it is fine
        assert model["name"] == "blob.bin"
        (tmp_path / "made-by-kernel.csv").write_text("1,2\n" * 50)   # 200 bytes of text
        with pytest.raises(web.HTTPError):
            await cm.get("made-by-kernel.csv", content=True)
        assert (await cm.get("ok.txt", content=True))["content"] == "x" * 100
        await asyncio.sleep(0.5)  # forwarding runs in the executor

    asyncio.run(run())
    assert not (tmp_path / "in.bin").exists() and not (tmp_path / "big.txt").exists()
    assert (tmp_path / "ok.txt").read_text() == "x" * 100
    subjects = {r["body"]["subject"] for r in listener.requests}
    assert subjects == {"in.bin", "big.txt", "blob.bin", "made-by-kernel.csv"}
    assert {r["authorization"] for r in listener.requests} == {"token tok-cm"}


def test_kernel_launcher_refuses_tcp_channels(tmp_path):
    cf = tmp_path / "kernel.json"
    cf.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1", "shell_port": 1}))
    proc = subprocess.run([sys.executable, "-I", "-m", "enclave.io.hub.kernel", "-f", str(cf)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "ipc transport" in proc.stderr
    proc = subprocess.run([sys.executable, "-I", "-m", "enclave.io.hub.kernel"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "connection file" in proc.stderr


def test_kernel_launcher_enters_an_empty_network_namespace(tmp_path):
    """The launcher's re-exec, stopped right before ipykernel would start: no network but its own
    loopback, and a /tmp of its own (a file written there is not on the host's /tmp)."""
    if not shutil.which("unshare"):
        pytest.skip("util-linux unshare missing")
    # sockets in /tmp are refused: the kernel's /tmp is its own, the server could not connect
    in_tmp = tmp_path / "kernel.json"
    in_tmp.write_text(json.dumps({"transport": "ipc", "ip": str(tmp_path / "k")}))
    refused = subprocess.run([sys.executable, "-I", "-m", "enclave.io.hub.kernel", "-f", str(in_tmp)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 3 and "must not be in /tmp" in refused.stderr
    runtime = Path(tempfile.mkdtemp(dir="/var/tmp"))  # where a user's runtime folder would be
    cf = runtime / "kernel.json"
    cf.write_text(json.dumps({"transport": "ipc", "ip": str(runtime / "k")}))
    code = ("import sys, socket, enclave.io.hub.kernel as k\n"
            "sys.modules['ipykernel'] = None\n"  # make the final import fail after the checks
            "try:\n    k.main(sys.argv[1:])\n"
            "except ImportError:\n    print(sorted(n for _, n in socket.if_nameindex()))\n"
            "import os\nprint(sorted(os.listdir('/tmp')))\n"
            f"open('/tmp/{tmp_path.name}-inside', 'w').write('x')\n")
    proc = subprocess.run([sys.executable, "-c", code, "--enclave-netns", "-f", str(cf)],
                          capture_output=True, text=True, timeout=60)
    # invoked with the marker but outside a namespace: refused, never run with the network
    assert proc.returncode == 3 and "still attached" in proc.stderr
    # without its own mount namespace it refuses: /tmp cannot be made private
    shared = subprocess.run(["unshare", "--user", "--map-current-user", "--net", "--keep-caps",
                             "--", sys.executable, "-c", code, "--enclave-netns", "-f", str(cf)],
                            capture_output=True, text=True, timeout=60)
    assert shared.returncode == 3 and "private /tmp" in shared.stderr
    inner = subprocess.run(["unshare", "--user", "--map-current-user", "--net", "--mount",
                            "--propagation", "private", "--keep-caps", "--",
                            sys.executable, "-c", code, "--enclave-netns", "-f", str(cf)],
                           capture_output=True, text=True, timeout=60)
    assert inner.returncode == 0, inner.stderr
    assert inner.stdout.split("\n")[:2] == ["['lo']", "[]"]   # loopback only; an empty /tmp
    assert not (Path("/tmp") / f"{tmp_path.name}-inside").exists()
    shutil.rmtree(runtime)


def test_egress_ruleset_names_each_uid_and_only_the_hub_ports(hub_settings):
    text = egress.ruleset(hub_settings, [1001, 1002])
    assert "elements = { 1001, 1002 }" in text
    assert f"dport {{ {hub_settings.hub.hub_port}, {hub_settings.hub.airlock_port} }} accept" in text
    assert "meta skuid @researchers counter reject" in text
    assert "elements" not in egress.ruleset(hub_settings, [])


def test_enclave_up_serves_unless_told_not_to(monkeypatch):
    from enclave.cli.up import _serve_default

    monkeypatch.delenv("ENCLAVE_UP_SERVE", raising=False)
    assert _serve_default() is True                # also under a test runner: tests say --data-only
    for off in ("0", "no", "false"):
        monkeypatch.setenv("ENCLAVE_UP_SERVE", off)
        assert _serve_default() is False
    monkeypatch.setenv("ENCLAVE_UP_SERVE", "1")
    assert _serve_default() is True


@pytest.mark.skipif(os.geteuid() != 0, reason="chown/chgrp need root")
def test_release_permissions_follow_projects_and_zones():
    from enclave.io.hub import permissions

    prefix = "zz" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4))
    home = Path(tempfile.mkdtemp(prefix=f"enclave-{prefix}-", dir="/tmp"))
    (home / "settings.toml").write_text(
        f'[hub]\nresearchers_group = "{prefix}-res"\nproject_group_prefix = "{prefix}p-"\n'
        f'airlock_user = "{prefix}-air"\ndashboards_user = "{prefix}-dash"\n')
    s = load_settings(home)
    try:
        from tests.airlock_support import cli  # alpha is active; beta has no project record

        cli(home, "project", "create", "--id", "alpha", "--title", "T", "--purpose", "P", "--pi",
            "alice", "--tier", "desensitized", "--sharing", "enclave", "--expires", "2099-12-31",
            "--table", "person")
        cli(home, "airlock", "role", "add", "sam", "steward")
        cli(home, "project", "approve", "alpha", "--as", "sam")
        cli(home, "project", "activate", "alpha")
        closed = s.releases_dir / "desensitized" / "beta" / "v1"
        closed.mkdir(parents=True)
        (closed / "release.duckdb").write_bytes(b"x")
        rel = s.releases_dir / "desensitized" / "alpha" / "v1"
        rel.mkdir(parents=True)
        (rel / "release.duckdb").write_bytes(b"x")
        (rel.parent / ".lock").write_text("")
        syn = s.releases_dir / "synthetic" / "alpha" / "v1"
        syn.mkdir(parents=True)
        (syn / "release.duckdb").write_bytes(b"x")
        (s.releases_dir / "indicators" / "v1").mkdir(parents=True)
        s.restricted_dir.mkdir(mode=0o755)
        (s.restricted_dir / "cdm.duckdb").write_bytes(b"x")
        s.control_path.parent.mkdir(exist_ok=True)
        (s.control_path.parent / "outbox").mkdir()      # written by root (the CLI) before
        uids = permissions.ensure_service_users(s)
        permissions.apply_release_permissions(s)

        def mode(p: Path) -> str:
            return oct(stat.S_IMODE(p.stat().st_mode))

        def group(p: Path) -> str:
            return grp.getgrgid(p.stat().st_gid).gr_name

        assert mode(home) == "0o711" and mode(s.restricted_dir) == "0o700"
        assert mode(s.releases_dir / "desensitized") == "0o711"
        assert mode(rel.parent) == "0o750" and group(rel.parent) == f"{prefix}p-alpha"
        assert mode(rel / "release.duckdb") == "0o440" and group(rel / "release.duckdb") == f"{prefix}p-alpha"
        assert mode(rel.parent / ".lock") == "0o600" and group(rel.parent / ".lock") == "root"
        # a project that is not active (here: not even recorded) has its releases closed
        assert mode(closed.parent) == "0o700" and group(closed.parent) == "root"
        assert group(syn / "release.duckdb") == f"{prefix}-res" and mode(syn) == "0o750"
        # the dashboards user reads the indicators, through its own group
        indicators = s.releases_dir / "indicators"
        assert mode(indicators) == "0o750" and group(indicators) == f"{prefix}-dash"
        # the airlock user owns its folder, joined alpha's group and the researchers' (twins)
        air = pwd.getpwnam(f"{prefix}-air")
        assert air.pw_shell == "/usr/sbin/nologin" and mode(Path(air.pw_dir)) == "0o700"
        for p in (s.control_path.parent, s.control_path.parent / "outbox"):
            assert p.stat().st_uid == uids[f"{prefix}-air"] and mode(p) == "0o700"
        assert {f"{prefix}p-alpha", f"{prefix}-res"} <= permissions.groups_of(air.pw_name)
        assert f"{prefix}p-alpha" not in permissions.groups_of(f"{prefix}-dash")
        assert f"{prefix}-air" not in {u.name for u in permissions.list_users(s)}

        def reads(user: str, path: Path) -> str:
            """Read ``path`` as ``user`` (its own groups, like the hub starts a service)."""
            code = f"open({str(path)!r}, 'rb').read(1); print('read')"
            proc = subprocess.run(["/usr/bin/python3", "-I", "-c", code], capture_output=True,
                                  text=True, user=user, extra_groups=sorted(
                                      permissions.groups_of(user)), cwd="/")
            return proc.stdout.strip() or proc.stderr.strip().splitlines()[-1]

        assert reads(air.pw_name, rel / "release.duckdb") == "read"
        assert reads(air.pw_name, syn / "release.duckdb") == "read"
        assert "PermissionError" in reads(air.pw_name, s.restricted_dir / "cdm.duckdb")
        assert "PermissionError" in reads(f"{prefix}-dash", rel / "release.duckdb")
        assert "PermissionError" in reads(f"{prefix}-dash", s.restricted_dir / "cdm.duckdb")
    finally:
        for name in (f"{prefix}-air", f"{prefix}-dash"):
            permissions.remove_user(name)
        shutil.rmtree(home, ignore_errors=True)
        for g in [g.gr_name for g in grp.getgrall() if g.gr_name.startswith(prefix)]:
            subprocess.run(["groupdel", g], capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_what_root_writes_in_the_airlock_folder_goes_back_to_the_service_user(tmp_path):
    """The CLI (root) approving a request writes the outbox; the service (its own user) must
    still read it, and its database files."""
    from enclave.core.audit import airlock_dir
    from enclave.io.airlock.exports import Airlock

    s = load_settings(tmp_path)
    folder = airlock_dir(s)
    folder.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    with Airlock(s):
        (folder / "outbox" / "r-1").mkdir(parents=True)           # as root, like write_outbox
        (folder / "outbox" / "r-1" / "table.csv").write_text("a,b\n")
    owners = {p.relative_to(folder).as_posix(): p.stat().st_uid for p in folder.rglob("*")}
    assert "airlock.sqlite" in owners and "outbox/r-1/table.csv" in owners
    assert set(owners.values()) == {nobody.pw_uid}, owners
