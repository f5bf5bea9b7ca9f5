"""Issues 6 and 7 end to end with the REAL airlock behind the hub (a free block of ports; root only).

The airlock runs as a hub-managed service under its own system user, from the service
environment. A researcher logs in on the hub page in Chromium, opens an example notebook from
``~/examples``, runs it in the no-network kernel; its last cell asks for an export, which the kernel
relays to the airlock with the user's hub token; the airlock re-runs the query on the twin in its
own process. Both stewards log in on the hub page and approve in the airlock's review page (hub
OAuth); the researcher downloads the released file. Screenshots go to test-artifacts/hub/.

This enclave's policy asks two stewards for every output (``airlock.approvals_pass = 2``), so the
test does not depend on which status the small twin gives the notebook's table.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from enclave.core import audit
from enclave.io.airlock.outbox import outbox_dir
from enclave.io.hub import serve
from tests.integration import hubbed

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a real hub with real Unix users needs root"),
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium"),
]

PORTS = hubbed.port_block()
NOTEBOOK = "02_diabetes_prevalence.ipynb"
ARTIFACTS = hubbed.ARTIFACTS
# the twin of a 600-patient release (what the notebooks read): a small evaluation sample and a
# privacy bar this fixture can meet (the bar itself is tested in tests/unit/test_synthetic.py)
SETTINGS = """[airlock]
approvals_pass = 2

[synthetic]
eval_patients = 600
min_dcr_overfitting_protection = 0.7
"""
TABLES = ("person", "visit_occurrence", "condition_occurrence")


@pytest.fixture(scope="module")
def bed():
    b = hubbed.make_bed(PORTS, researchers=2, stewards=2, real_airlock=True, twin=True,
                        extra_settings=SETTINGS)
    if Path("/usr/sbin/nft").exists():  # as 'enclave up' serves: researchers' egress denied
        from enclave.io.hub import egress

        try:
            egress.apply_egress(b.settings)
        except BaseException:
            hubbed.teardown(b)
            raise
    yield b
    hubbed.teardown(b)


browser = pytest.fixture(scope="module")(hubbed.chromium)


def _service_process(bed, needle: str) -> int:
    pid = serve._load_run(bed.settings)["pid"]
    for p in serve.descendants(pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmd:
            return p
    raise AssertionError(f"no process '{needle}' below the hub")


def _ids(pid: int) -> dict[str, list[int]]:
    """Uid, Gid and Groups lines of /proc/<pid>/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            out[key] = [int(v) for v in value.split()]
    return out


def _login(browser, bed, short: str):
    name, password = bed.users[short]
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(f"{bed.base}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_load_state("networkidle")
    return ctx, page


def test_the_airlock_and_the_culler_run_as_their_own_users(bed):
    air = pwd.getpwnam(bed.settings.hub.airlock_user)
    ids = _ids(_service_process(bed, "airlock serve"))
    assert ids["Uid"] == [air.pw_uid] * 4 and air.pw_uid != 0          # real, effective, saved, fs
    assert ids["Gid"][0] == air.pw_gid and 0 not in ids["Groups"]
    assert ids["Groups"], "the airlock joined the project groups to re-run outputs"
    culler = _ids(_service_process(bed, "jupyterhub_idle_culler"))
    assert culler["Uid"][0] == pwd.getpwnam(bed.settings.hub.culler_user).pw_uid != 0
    # the airlock runs from the service environment, not the admin venv under /root
    exe = os.readlink(f"/proc/{_service_process(bed, 'airlock serve')}/exe")
    assert not exe.startswith("/root")
    assert audit.airlock_dir(bed.settings).stat().st_uid == air.pw_uid


def test_the_airlock_user_gets_eacces_on_the_restricted_zone(bed):
    """With exactly the identity the hub gave the running service (uid, gid, groups)."""
    ids = _ids(_service_process(bed, "airlock serve"))
    probe = ("import os, sys\n"
             "for p in sys.argv[1:]:\n"
             "    try:\n"
             "        open(p, 'rb').read(1) if os.path.isfile(p) else os.listdir(p)\n"
             "        print('read', p)\n"
             "    except OSError as e:\n"
             "        print(e.errno, p)\n")
    s = bed.settings
    paths = [s.restricted_dir, s.store_path, s.keys_dir, s.home / "hub", bed.release("alpha")]
    proc = subprocess.run(["/usr/bin/python3", "-I", "-c", probe, *map(str, paths)],
                          capture_output=True, text=True, user=ids["Uid"][0], group=ids["Gid"][0],
                          extra_groups=ids["Groups"], cwd="/", timeout=30, check=False)
    got = dict(reversed(line.split(" ", 1)) for line in proc.stdout.splitlines())
    for p in paths[:4]:
        assert got[str(p)] == str(errno.EACCES), (p, proc.stdout, proc.stderr)
    assert got[str(bed.release("alpha"))] == "read"       # what the re-runs need


def test_researcher_runs_an_example_notebook_and_two_stewards_release_its_export(bed, browser):
    name = bed.name("r0")
    ctx, page = _login(browser, bed, "r0")
    page.wait_for_url("**/user/**/lab**", timeout=120_000)
    page.goto(f"{bed.base}/user/{name}/lab/tree/examples/{NOTEBOOK}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_selector("text=/enclave, no network\\) \\| Idle/", timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "airlock-01-notebook-open.png"))
    page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
    # the last cell shows the request the airlock answered: its id, state and a link to its page
    # (the notebook itself asserts that the airlock reproduced the output: in review)
    out = page.wait_for_selector(".jp-OutputArea-output:has-text('open the request page')",
                                 timeout=300_000)
    rid = out.query_selector("code").inner_text().strip()
    href = out.query_selector("a:has-text('open the request page')").get_attribute("href")
    text = out.inner_text()
    out.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "airlock-02-notebook-exported.png"))
    ctx.close()
    # the airlock reproduced the output in its own process: in review, two approvals needed
    assert rid.startswith("r-") and "in review" in text, text
    assert href.endswith(f"services/airlock/requests/{rid}"), href

    for i, short in enumerate(("steward", "steward2")):
        ctx, page = _login(browser, bed, short)
        landing = page.goto(f"{bed.base}/services/airlock/requests?queue=1")   # after hub OAuth
        assert landing.status == 200
        assert page.inner_text("#user") == bed.name(short)
        page.click(f"text={rid}")
        page.wait_for_selector("#vote-form")
        assert "SELECT" in page.inner_text("#sql").upper()
        assert page.inner_text("#evidence-source") == "recomputed by the airlock"
        assert page.inner_text("#required") == "2"
        assert page.locator("#votes").count() == 0          # blind: no other vote is shown
        page.screenshot(path=str(ARTIFACTS / f"airlock-03-review-steward{i + 1}.png"),
                        full_page=True)
        page.check("#vote-approve")
        page.fill("#vote-reason", "aggregate prevalence by broad age group")
        page.click("#vote-submit")
        page.wait_for_selector("#status")
        assert page.inner_text("#status") == ("in review" if i == 0 else "released")
        page.screenshot(path=str(ARTIFACTS / f"airlock-04-voted-steward{i + 1}.png"),
                        full_page=True)
        ctx.close()

    ctx, page = _login(browser, bed, "r0")
    page.goto(f"{bed.base}/services/airlock/requests/{rid}")
    assert page.inner_text("#status") == "released"
    assert page.locator("#vote-form").count() == 0
    link = page.locator("a:has-text('download ')").first
    file_name = link.inner_text().removeprefix("download ").strip()
    with page.expect_download() as info:
        link.click()
    saved = bed.settings.home / "downloaded"
    info.value.save_as(saved)
    page.screenshot(path=str(ARTIFACTS / "airlock-05-released-researcher.png"), full_page=True)
    ctx.close()

    # what was downloaded is what the airlock released, written by its own user
    released = outbox_dir(bed.settings) / rid
    assert saved.read_bytes() == (released / file_name).read_bytes() and saved.stat().st_size
    assert released.stat().st_uid == pwd.getpwnam(bed.settings.hub.airlock_user).pw_uid
    manifest = json.loads((released / "manifest.json").read_text())
    assert "votes" not in manifest  # blind to the requester: the votes stay in the trail
    assert sorted(e["actor"] for e in audit.events(audit.connect(bed.settings), f"request:{rid}")
                  if e["action"] == "request.vote") == sorted(
        [bed.name("steward"), bed.name("steward2")])
    assert json.loads(hubbed.enclave(bed.settings.home, "audit", "verify", "--json"))["ok"]
    actions = {e["action"] for e in audit.events(audit.connect(bed.settings))}
    assert {"request.submit", "request.checks_passed", "request.vote", "request.release",
            "request.download"} <= actions, actions


def test_a_new_projects_release_reaches_the_running_airlock(bed):
    """A process keeps the groups it started with: ``enclave hub sync`` after a new project's
    release makes the airlock join its group and restarts it, and the hub starts it again."""
    import grp
    import time

    import requests

    old = _service_process(bed, "airlock serve")
    pid = f"{bed.prefix}-gamma"
    args = ["project", "create", "--id", pid, "--title", "Study gamma", "--purpose", "diabetes",
            "--pi", bed.name("r0"), "--member", bed.name("r0"), "--tier", "desensitized",
            "--sharing", "enclave", "--expires", "2099-12-31"]
    for t in TABLES:
        args += ["--table", t]
    hubbed.enclave(bed.settings.home, *args)
    hubbed.enclave(bed.settings.home, "release", "build", "--project", pid)
    out = hubbed.enclave(bed.settings.home, "hub", "sync")
    assert "airlock joined new project groups: restarted" in out
    gid = grp.getgrnam(f"{bed.settings.hub.project_group_prefix}{pid}").gr_gid
    deadline, new = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        try:
            new = _service_process(bed, "airlock serve")
        except AssertionError:
            new = None
        if new and new != old and gid in _ids(new)["Groups"]:
            break
        time.sleep(1)
    assert new and new != old and gid in _ids(new)["Groups"], "the airlock was not restarted"
    token = bed.hub.user_token(bed.name("r0"))
    for _ in range(60):  # and it answers again, behind the hub
        r = requests.get(f"{bed.base}/services/airlock/api/requests", timeout=30,
                         headers={"Authorization": f"token {token}"})
        if r.status_code == 200:
            break
        time.sleep(1)
    assert r.status_code == 200 and r.json()["requests"], r.text[:300]
