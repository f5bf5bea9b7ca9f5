"""Issue 7 acceptance: a real JupyterHub, real PAM logins, real Unix users and real kernels.

One hub for the module (a free block of ports). Researcher r0 is in project alpha, r1 in beta; a
steward, a policymaker and an outsider (a Unix user in no enclave group) complete the cast. The
airlock's place (its port) is taken by a local stub listener that records what the hub side
forwards (audit events, relayed airlock calls); the dashboards' place by a static page behind the
real hub-OAuth gate. Needs root.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import threading
import time

import pytest
import requests

from enclave.core import audit
from tests.integration import hubbed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a real hub with real Unix users needs root"),
]

PORTS = hubbed.port_block()


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    page = tmp_path_factory.mktemp("dash")
    # the app behind the gate serves under the service's prefix (as Streamlit does with baseUrlPath)
    (page / "services" / "dashboards").mkdir(parents=True)
    (page / "services" / "dashboards" / "index.html").write_text("<h1>indicator dashboards</h1>")
    b = hubbed.make_bed(PORTS, dashboards_dir=page)
    yield b
    hubbed.teardown(b)


def _events(bed, action: str) -> list[dict]:
    return [r for r in bed.audit.requests
            if r["path"].endswith("/api/audit") and (r["body"] or {}).get("action") == action]


def _wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def _token_owner(bed, authorization: str) -> str:
    token = authorization.split(" ", 1)[1]
    r = requests.get(f"{bed.base}/hub/api/user", headers={"Authorization": f"token {token}"},
                     timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["name"]


def test_login_is_allowed_by_group_and_refused_otherwise(bed):
    assert bed.login("r0")[0] == 302
    assert bed.login("policymaker")[0] == 302
    assert bed.login("steward")[0] == 302
    assert bed.login("outsider")[0] == 403          # right password, no enclave group
    assert bed.login("r0", password="not-the-password")[0] == 403
    # every attempt is in the audit trail (written by the hub itself), passwords never
    logins = [e for e in audit.events(audit.connect(bed.settings)) if e["action"].startswith("hub.login")]
    seen = {(e["action"], e["actor"]) for e in logins}
    assert {("hub.login", bed.name("r0")), ("hub.login", bed.name("steward")),
            ("hub.login_refused", bed.name("outsider")), ("hub.login_refused", bed.name("r0"))} <= seen
    assert not any("not-the-password" in json.dumps(e) for e in logins)


def test_only_researchers_get_a_notebook_server(bed):
    steward = bed.name("steward")
    bed.hub.ensure_user(steward)
    with pytest.raises(Exception, match="failed to start|500|400"):
        bed.hub.spawn(steward, timeout=20)


def test_a_researcher_gets_the_examples_and_their_project(bed):
    out = bed.server("r0").run("import os; print(os.environ.get('ENCLAVE_PROJECT'), "
                               "sorted(os.listdir(os.path.expanduser('~/examples'))))")
    project, examples = out["stdout"].strip().split(" ", 1)
    assert project == bed.projects["alpha"]
    shipped = sorted(p.name for p in (hubbed.REPO / "notebooks").glob("*.ipynb"))
    assert shipped and examples == repr(shipped)


def test_a_kernel_reads_its_projects_release_and_nothing_else(bed):
    code = f"""
import duckdb, errno, os
con = duckdb.connect({str(bed.release('alpha'))!r}, read_only=True)
print("alpha persons", con.sql("select count(*) from person").fetchall()[0][0])
con.close()
for what, path in [("beta", {str(bed.release('beta'))!r}),
                   ("restricted", {str(bed.settings.restricted_dir)!r}),
                   ("store", {str(bed.settings.store_path)!r}),
                   ("control", {str(bed.settings.control_path)!r})]:
    try:
        os.listdir(path) if os.path.isdir(path) else open(path, "rb").read(1)
        print(what, "READABLE")
    except PermissionError as exc:
        print(what, "EACCES" if exc.errno == errno.EACCES else exc.errno)
"""
    out = bed.server("r0").run(code)
    assert out["error"] is None, out
    lines = dict(line.rsplit(" ", 1) for line in out["stdout"].strip().splitlines())
    assert int(lines["alpha persons"]) > 0
    assert lines["beta"] == "EACCES"
    assert lines["restricted"] == "EACCES"
    assert lines["store"] == "EACCES"
    assert lines["control"] == "EACCES"
    # the modes behind it: read-only group files, group-owned 0750 folders
    st = os.stat(bed.release("alpha"))
    assert oct(st.st_mode & 0o777) == "0o440"
    assert oct(os.stat(bed.release("alpha").parent.parent).st_mode & 0o777) == "0o750"
    # and the other researcher reads beta but not alpha (the check is symmetric)
    out = bed.server("r1").run(f"""
import os
try:
    open({str(bed.release('alpha'))!r}, 'rb'); print('alpha READABLE')
except PermissionError:
    print('alpha EACCES')
print('beta', len(open({str(bed.release('beta'))!r}, 'rb').read(16)))""")
    assert out["stdout"].split() == ["alpha", "EACCES", "beta", "16"], out


@pytest.mark.parametrize("method,path", [
    ("GET", "files/x.csv"), ("GET", "view/x.html"), ("GET", "nbconvert/html/a.ipynb"),
    ("GET", "api/nbconvert"), ("GET", "terminals/1"), ("GET", "api/terminals"),
    ("POST", "api/terminals"), ("GET", "lab/api/extensions"),
])
def test_download_export_and_terminal_routes_are_refused_and_audited(bed, method, path):
    server = bed.server("r0")
    r = server.request(method, path, headers={"Content-Type": "application/json"})
    assert r.status_code == 403, (path, r.status_code)
    events = _wait_for(lambda: [e for e in _events(bed, "hub.route_refused")
                                if e["body"]["subject"].endswith("/" + path)
                                and e["body"]["detail"]["method"] == method])
    assert events, f"no audit event for {method} {path}"
    assert _token_owner(bed, events[-1]["authorization"]) == bed.name("r0")


def test_uploads_and_binary_downloads_are_refused(bed):
    server = bed.server("r0")
    data = base64.b64encode(b"id,value\n1,2\n" * 10).decode()
    up = server.request("PUT", "api/contents/smuggled.csv",
                        json={"type": "file", "format": "base64", "content": data})
    assert up.status_code == 403
    big = server.request("PUT", "api/contents/big.txt", json={
        "type": "file", "format": "text", "content": "x" * (bed.settings.hub.upload_max_bytes + 1)})
    assert big.status_code == 403
    small = server.request("PUT", "api/contents/notes.txt",
                           json={"type": "file", "format": "text", "content": "my notes"})
    assert small.status_code in (200, 201), small.text        # editing text still works
    nb = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    saved = server.request("PUT", "api/contents/analysis.ipynb",
                           json={"type": "notebook", "format": "json", "content": nb})
    assert saved.status_code in (200, 201), saved.text
    # a binary file made inside (e.g. by a kernel) cannot be fetched as base64
    out = server.run("open('blob.bin', 'wb').write(bytes(range(256))); print('ok')")
    assert out["stdout"].strip() == "ok"
    down = server.request("GET", "api/contents/blob.bin?content=1")
    assert down.status_code == 403
    assert server.request("GET", "api/contents/blob.bin?content=1&format=base64").status_code == 403
    # a large text file written by a kernel cannot be opened (fetched) by the browser either
    out = server.run(f"open('dump.csv', 'w').write('1,2\\n' * {bed.settings.hub.upload_max_bytes})")
    assert server.request("GET", "api/contents/dump.csv?content=1&format=text").status_code == 403
    assert server.request("GET", "api/contents/notes.txt?content=1").status_code == 200
    assert not os.path.exists(f"/home/{bed.name('r0')}/smuggled.csv")
    refused = _wait_for(lambda: _events(bed, "hub.upload_refused"))
    assert {e["body"]["subject"] for e in refused} >= {"smuggled.csv", "big.txt", "blob.bin"}


def test_server_events_reach_the_audit_trail_with_the_user(bed):
    server = bed.server("r0")
    server.request("PUT", "api/contents/event-probe.txt",
                   json={"type": "file", "format": "text", "content": "probe"})
    events = _wait_for(lambda: [r for r in bed.audit.requests if r["body"] and
                                r["body"].get("action", "").startswith("hub.server.")
                                and r["body"]["subject"].endswith("event-probe.txt")])
    assert events
    assert _token_owner(bed, events[-1]["authorization"]) == bed.name("r0")
    assert "content" not in events[-1]["body"]["detail"]


def test_a_kernel_cannot_reach_the_network(bed):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.2", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.2", port), timeout=5):   # the listener works
            pass
        assert _wait_for(lambda: accepted)
        out = bed.server("r0").run(f"""
import socket
s = socket.socket(); s.settimeout(5)
print(s.connect_ex(("127.0.0.2", {port})), s.connect_ex(("127.0.0.1", {bed.settings.hub.hub_port})))
print([name for _, name in socket.if_nameindex()])""")
        codes, names = out["stdout"].strip().splitlines()
        assert all(int(c) != 0 for c in codes.split()), out
        assert names == "['lo']"
        assert len(accepted) == 1       # nothing from the kernel arrived
    finally:
        listener.close()


def test_a_kernel_reaches_the_airlock_only_through_the_relay(bed):
    before = len(bed.audit.requests)
    out = bed.server("r0").run("""
import os, urllib.request, urllib.error
base = os.environ["ENCLAVE_AIRLOCK_URL"]
req = urllib.request.Request(base + "/api/requests",
                             headers={"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]})
print(urllib.request.urlopen(req, timeout=10).status)
try:
    urllib.request.urlopen(base.rsplit("/services", 1)[0] + "/hub/api/users", timeout=10)
except urllib.error.HTTPError as exc:
    print(exc.code)""")
    assert out["stdout"].split() == ["200", "403"], out
    got = [r for r in bed.audit.requests[before:] if r["path"].endswith("/api/requests")]
    assert got and _token_owner(bed, got[-1]["authorization"]) == bed.name("r0")


def test_release_reads_by_kernels_reach_the_audit_trail_with_the_user(bed):
    before = len(bed.audit.requests)
    out = bed.server("r0").run(f"""
from enclave.research import workspace
ws = workspace(project={bed.projects['alpha']!r})
print(ws.table("person").count().execute() > 0)""")
    assert out["stdout"].split() == ["True"], out
    reads = _wait_for(lambda: [r for r in _events(bed, "release.read")
                               if bed.audit.requests.index(r) >= before])
    assert reads and reads[-1]["body"]["subject"] == f"release:{bed.projects['alpha']}/v1"
    assert _token_owner(bed, reads[-1]["authorization"]) == bed.name("r0")


def test_egress_rule_denies_researcher_uids(bed):
    from enclave.io.hub import egress

    if not os.path.exists("/usr/sbin/nft"):
        pytest.skip("nftables is not installed (apt-get install nftables)")
    listener = socket.socket()
    listener.bind(("127.0.0.2", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    probe = ["runuser", "-u", bed.name("r0"), "--", "/usr/bin/python3", "-c",
             f"import socket; s=socket.socket(); s.settimeout(5); print(s.connect_ex(('127.0.0.2', {port})))"]
    try:
        assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "0"
        egress.apply_egress(bed.settings)
        try:
            assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() != "0"
            # a researcher's notebook server still answers through the proxy (replies pass)
            assert bed.server("r0").request("GET", "api/status").status_code == 200
        finally:
            egress.remove_egress(bed.settings)
    finally:
        listener.close()


def test_hostile_user_config_is_ignored(bed):
    name = bed.name("r1")
    home = f"/home/{name}"
    hostile = (
        "c.ServerApp.jpserver_extensions = {'enclave.io.hub.lockdown': False}\n"
        "c.ServerApp.terminals_enabled = True\n"
        "c.ServerApp.contents_manager_class = "
        "'jupyter_server.services.contents.largefilemanager.AsyncLargeFileManager'\n"
        "c.KernelSpecManager.allowed_kernelspecs = set()\n")
    files = {
        f"{home}/.jupyter/jupyter_server_config.py": hostile,
        f"{home}/.jupyter/jupyter_server_config.json": json.dumps(
            {"ServerApp": {"jpserver_extensions": {"enclave.io.hub.lockdown": False}}}),
        f"{home}/jupyter_server_config.py": hostile,
        f"{home}/.local/share/jupyter/kernels/open/kernel.json": json.dumps(
            {"argv": ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
             "display_name": "open", "language": "python"}),
        f"{home}/.local/lib/python3.11/site-packages/zz_hostile.pth":
            "import os; os.environ['ENCLAVE_HOSTILE'] = '1'\n",
        f"{home}/jupyterhub.py": "raise SystemExit('shadowed')\n",
    }
    for path, text in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    subprocess.run(["chown", "-R", f"{name}:{name}", home], check=True)
    bed.hub.stop(name)
    server = bed.server("r1")                       # a fresh server with the hostile files present
    assert server.request("GET", "files/x").status_code == 403
    assert server.request("GET", "api/terminals").status_code == 403
    specs = server.request("GET", "api/kernelspecs").json()["kernelspecs"]
    assert set(specs) == {"enclave"}
    assert server.request("PUT", "api/contents/up.bin", json={
        "type": "file", "format": "base64", "content": "AAAA"}).status_code == 403
    out = server.run("import os, socket; print(os.environ.get('ENCLAVE_HOSTILE'), "
                     "[n for _, n in socket.if_nameindex()])")
    assert out["stdout"].strip() == "None ['lo']", out


def test_dashboards_for_policymakers_only(bed):
    status, session = bed.login("policymaker")
    assert status == 302
    r = session.get(f"{bed.base}/services/dashboards/", timeout=30)
    assert r.status_code == 200 and "indicator dashboards" in r.text
    status, session = bed.login("r0")
    r = session.get(f"{bed.base}/services/dashboards/", timeout=30)
    assert r.status_code == 403
    assert "indicator dashboards" not in r.text
    # without a login there is no way round the gate either
    anon = requests.get(f"{bed.base}/services/dashboards/", timeout=30)
    assert "/hub/login" in anon.url and "indicator dashboards" not in anon.text
