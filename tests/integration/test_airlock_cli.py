"""The airlock through the command line and the client (direct and over HTTP), and the service's
hub mode (hub OAuth) without a hub: it must send browsers to the hub and refuse the token table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from enclave.core.errors import PermissionDeniedError
from enclave.core.settings import load_settings
from enclave.io.airlock.client import submit_export
from tests.airlock_support import (
    REPO,
    REQUESTER,
    STEWARDS,
    Service,
    cli,
    free_port,
    make_enclave,
    make_output,
    token_of,
)


@pytest.fixture
def enclave(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ENCLAVE_AIRLOCK_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    home = tmp_path / "home"
    return home, make_enclave(home)


def test_client_direct_mode_acts_as_the_os_user(enclave):
    home, _ = enclave
    settings = load_settings(home)
    out = make_output(home)
    with pytest.raises(PermissionDeniedError, match="not a member"):  # root is no member
        submit_export(out["record"], out["files"], "paper", settings=settings)
    cli(home, "project", "member", "add", "alpha", "root", "--as", STEWARDS[0])
    got = submit_export(out["record"], out["files"], "paper", settings=settings)
    assert got["status"] == "in_review" and got["requester"] == "root"
    rid = got["request_id"]

    # stewards work from the command line
    res = cli(home, "airlock", "list", "--as", STEWARDS[0], "--json")
    assert [r["id"] for r in json.loads(res.stdout)] == [rid]
    assert json.loads(cli(home, "airlock", "list", "--as", REQUESTER, "--json").stdout) == []
    shown = json.loads(cli(home, "airlock", "show", rid, "--as", STEWARDS[0], "--json").stdout)
    assert shown["checks"]["ok"] and shown["required"] == 1
    res = cli(home, "airlock", "reject", rid, "--as", STEWARDS[0], check=False)
    assert res.returncode == 2 and "--reason" in res.stderr
    res = cli(home, "airlock", "approve", rid, check=False)
    assert res.returncode == 3 and "not a data steward" in res.stderr
    cli(home, "airlock", "role", "add", "root", "steward")
    res = cli(home, "airlock", "approve", rid, check=False)  # root requested it: no self-review
    assert res.returncode == 3 and "own request" in res.stderr
    res = cli(home, "airlock", "approve", rid, "--as", STEWARDS[0])
    assert "released" in res.stdout
    res = cli(home, "airlock", "revoke", rid, "--as", STEWARDS[1], "--reason", "wrong table")
    assert "revoked" in res.stdout
    res = cli(home, "airlock", "approve", rid, "--as", STEWARDS[2], check=False)
    assert res.returncode == 4 and "it is final" in res.stderr
    assert "intact" in cli(home, "audit", "verify").stdout
    log = json.loads(cli(home, "audit", "log", "--subject", f"request:{rid}", "--json").stdout)
    assert [e["action"] for e in log] == [
        "request.submit", "request.checks_passed", "request.vote", "request.decide_approve",
        "request.release", "request.revoke"]
    assert [e["actor"] for e in log] == ["root", "airlock", "sam", "airlock", "airlock", "sue"]


def test_client_over_http_with_the_hub_token(enclave, monkeypatch):
    home, tokens = enclave
    out = make_output(home)
    svc = Service(home, tokens).start()
    try:
        monkeypatch.setenv("ENCLAVE_AIRLOCK_URL", svc.url)
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token_of(REQUESTER))
        got = submit_export(out["record"], out["files"], "paper")
        assert got["status"] == "in_review" and got["requester"] == REQUESTER
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token_of("nora"))
        with pytest.raises(PermissionDeniedError, match="not a member"):
            submit_export(out["record"], out["files"], "paper")
    finally:
        svc.stop()


def test_only_root_acts_for_others():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = ("import sys; from enclave.cli.airlock import acting_user; import os; "
            "os.seteuid(65534); print(acting_user('sam'))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=False)
    assert res.returncode != 0 and "only root may act as another user" in res.stderr


def _hub_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env.update({"JUPYTERHUB_API_TOKEN": "x" * 32, "JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api",
                "JUPYTERHUB_BASE_URL": "/", "JUPYTERHUB_SERVICE_PREFIX": "/services/airlock/",
                "JUPYTERHUB_CLIENT_ID": "service-airlock", "JUPYTERHUB_HOST": "",
                "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/airlock/oauth_callback",
                "JUPYTERHUB_SERVICE_NAME": "airlock", **extra})
    return env


def test_hub_mode_refuses_the_token_table(enclave):
    home, tokens = enclave
    res = subprocess.run([sys.executable, "-m", "enclave", "--home", str(home), "airlock", "serve",
                          "--port", str(free_port()), "--tokens", str(tokens)],
                         capture_output=True, text=True, cwd=REPO, env=_hub_env(), timeout=60,
                         check=False)
    assert res.returncode == 2 and "standalone use only" in res.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    res = subprocess.run([sys.executable, "-m", "enclave", "--home", str(home), "airlock", "serve",
                          "--port", str(free_port())], capture_output=True, text=True, cwd=REPO,
                         env=env, timeout=60, check=False)
    assert res.returncode == 2 and "no way to authenticate" in res.stderr


def test_hub_mode_sends_browsers_to_the_hub_and_refuses_unknown_tokens(enclave):
    home, _ = enclave
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "enclave", "--home", str(home), "airlock",
                             "serve", "--port", str(port)], cwd=REPO, env=_hub_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "hub OAuth" in line, line
        base = f"http://127.0.0.1:{port}/services/airlock/"

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(base + "requests", timeout=30)
        assert err.value.code == 302
        assert "oauth2/authorize" in err.value.headers["Location"]
        assert "client_id=service-airlock" in err.value.headers["Location"]
        req = urllib.request.Request(base + "api/requests", headers={
            "Authorization": "token not-a-hub-token"})
        with pytest.raises(urllib.error.HTTPError) as err:  # no hub to vouch for it: closed
            opener.open(req, timeout=60)
        assert err.value.code == 500 and b"Hub API" in err.value.read()
        # token calls pass the xsrf check (and then need the hub); cookie forms need the token
        req = urllib.request.Request(base + "api/audit", method="POST", data=b"{}", headers={
            "Authorization": "token not-a-hub-token"})
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(req, timeout=60)
        assert err.value.code == 500 and b"Hub API" in err.value.read()
        req = urllib.request.Request(base + "requests/r-1/vote", method="POST", data=b"vote=a")
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(req, timeout=60)
        assert err.value.code == 403 and b"xsrf" in err.value.read().lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
