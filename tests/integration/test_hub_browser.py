"""End to end in Chromium (the part that does not depend on the airlock UI): a researcher logs in on
the hub's real login page, JupyterLab opens, a notebook querying the project's release runs in
the no-network kernel and shows its result, and the lab offers no download, export or
open-from-URL entries; a policymaker sees the Streamlit dashboards (HTTP and websocket through
the hub-OAuth gate) and a researcher is refused there. Screenshots go to test-artifacts/hub/.

A free block of ports; needs root and /usr/bin/chromium (Playwright's Python package, no browser
download).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration import hubbed

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a real hub with real Unix users needs root"),
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium"),
]

ARTIFACTS = hubbed.ARTIFACTS


@pytest.fixture(scope="module")
def bed():
    b = hubbed.make_bed(hubbed.port_block(), researchers=2, real_dashboards=True,
                        real_airlock=True)
    yield b
    hubbed.teardown(b)


browser = pytest.fixture(scope="module")(hubbed.chromium)


def _notebook(release: Path) -> dict:
    cell = ("import duckdb\n"
            f"con = duckdb.connect({str(release)!r}, read_only=True)\n"
            "n = con.sql('select count(*) from person').fetchall()[0][0]\n"
            "print(f'persons in the release: {n}')")
    return {"cells": [{"cell_type": "code", "source": cell, "metadata": {}, "outputs": [],
                       "execution_count": None}],
            "metadata": {"kernelspec": {"name": "enclave", "display_name": "enclave",
                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def test_researcher_logs_in_runs_a_notebook_and_finds_no_way_out(bed, browser):
    name, password = bed.users["r0"]
    server = bed.server("r0")
    saved = server.request("PUT", "api/contents/analysis.ipynb", json={
        "type": "notebook", "format": "json", "content": _notebook(bed.release("alpha"))})
    assert saved.status_code in (200, 201), saved.text
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{bed.base}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.screenshot(path=str(ARTIFACTS / "01-login.png"))
    page.click("#login_submit")
    page.wait_for_url("**/user/**/lab**", timeout=120_000)
    page.goto(f"{bed.base}/user/{name}/lab/tree/analysis.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_selector("text=/enclave, no network\\) \\| Idle/", timeout=120_000)
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.keyboard.press("Shift+Enter")
    result = "text=/persons in the release: \\d+/"
    try:
        out = page.wait_for_selector(result, timeout=45_000)
    except playwright.TimeoutError:  # the key press can land before the editor has focus
        page.screenshot(path=str(ARTIFACTS / "02a-before-run-all.png"))
        page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        out = page.wait_for_selector(result, timeout=120_000)
    assert int(out.inner_text().rsplit(" ", 1)[1]) > 0
    page.screenshot(path=str(ARTIFACTS / "02-notebook-ran.png"))
    # the plugins that move data out are disabled and locked in the page's own config
    config = json.loads(page.locator("#jupyter-config-data").inner_text())
    for plugin in ("@jupyterlab/docmanager-extension:download",
                   "@jupyterlab/filebrowser-extension:download",
                   "@jupyterlab/filebrowser-extension:open-url",
                   "@jupyterlab/notebook-extension:export"):
        assert plugin in config["disabledExtensions"], plugin
        assert plugin in config["lockedExtensions"], plugin
    # and the File menu shows no download / export / open-from-URL entries
    page.click("div.lm-MenuBar-itemLabel:text-is('File')")
    menu = page.locator(".lm-Menu").first
    menu.wait_for(timeout=10_000)
    entries = menu.inner_text()
    page.screenshot(path=str(ARTIFACTS / "03-file-menu.png"))
    for word in ("Download", "Save and Export", "Open from URL"):
        assert word not in entries, word
    assert "Save" in entries                                   # the menu itself is there
    page.keyboard.press("Escape")
    page.close()


def test_policymaker_sees_the_dashboards_through_the_gate_and_a_researcher_does_not(bed, browser):
    for short, shot in (("policymaker", "04-dashboards-policymaker.png"),
                        ("r0", "05-dashboards-researcher.png")):
        name, password = bed.users[short]
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(f"{bed.base}/hub/login")
        page.fill("#username_input", name)
        page.fill("#password_input", password)
        page.click("#login_submit")
        page.wait_for_load_state("networkidle")
        landing = page.goto(f"{bed.base}/services/dashboards/")   # the response after OAuth
        if short == "policymaker":
            assert landing.status == 200
            # rendered by Streamlit over its websocket (proxied by the gate): the app's navigation
            page.wait_for_selector("[data-testid='stSidebarNav']", timeout=120_000)
            nav = page.inner_text("[data-testid='stSidebarNav']")
            assert "Overview" in nav or "概览" in nav  # [dashboards] language: zh by default
            page.wait_for_selector("[data-testid='stMain'] [data-testid='stHeading']",
                                   timeout=120_000)
        else:
            assert landing.status == 403
            assert "stSidebarNav" not in page.content()
        page.screenshot(path=str(ARTIFACTS / shot))
        context.close()


#: where each role lands after arriving at the hub's root and signing in, and what proves it
LANDINGS = {
    "r0": ("**/user/*/lab/tree/Welcome.ipynb",
           ".jp-RenderedMarkdown h1:has-text('Welcome to the research enclave')"),
    "steward": ("**/services/airlock/requests?queue=1&needs_my_vote=1",
                "h1:has-text('waiting for your vote')"),
    "policymaker": ("**/services/dashboards/", "[data-testid='stSidebarNav']"),
}


def test_every_role_arrives_at_the_root_and_lands_where_it_works(bed, browser):
    """Issue 19: each role, arriving at ``/``, signs in and lands on its own page (researcher: the
    lab with the welcome notebook; steward: the requests waiting for their vote; policymaker: the
    dashboards); the hub home page names the role's places, and no role but researchers sees a
    start button or can start a server (403, never JupyterHub's 500)."""
    for short, (url, proof) in LANDINGS.items():
        name, password = bed.users[short]
        context = browser.new_context(viewport={"width": 1300, "height": 850})
        page = context.new_page()
        page.goto(f"{bed.base}/")
        assert "/hub/login" in page.url
        page.fill("#username_input", name)
        page.fill("#password_input", password)
        page.click("#login_submit")
        page.wait_for_url(url, timeout=180_000)
        page.wait_for_selector(proof, timeout=120_000)
        page.screenshot(path=str(ARTIFACTS / f"10-landing-{short}.png"))
        page.goto(f"{bed.base}/hub/home")
        role = page.get_attribute("#enclave-home", "data-role")
        assert role == ("researcher" if short == "r0" else short)
        links = page.inner_text("#enclave-links")
        page.screenshot(path=str(ARTIFACTS / f"11-home-{short}.png"))
        if short == "r0":
            assert page.locator("#start").count() == 1 and "My export requests" in links
        else:
            assert page.locator("#start").count() == 0
            spawn = page.goto(f"{bed.base}/hub/spawn")
            assert spawn.status == 403, spawn.status
            assert ("Requests waiting for my vote" if short == "steward" else "Dashboards") in links
        context.close()
    # a Unix user in no enclave group cannot sign in at all
    name, password = bed.users["outsider"]
    page = browser.new_page()
    page.goto(f"{bed.base}/")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_load_state("networkidle")
    assert "/hub/login" in page.url
    page.close()
