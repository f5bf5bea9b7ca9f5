"""End to end in Chromium: a researcher's output is approved by two stewards in the review page and
downloaded by the researcher (standalone token mode; the hub e2e lives with the hub tests).
Screenshots are kept in test-artifacts/airlock/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave.core.audit import connect, events
from enclave.core.settings import load_settings
from enclave.io.airlock.outbox import outbox_dir
from tests.airlock_support import (
    ADMIN,
    REPO,
    REQUESTER,
    STEWARDS,
    Service,
    consistency_problems,
    make_enclave,
    make_output,
    token_of,
)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = REPO / "test-artifacts" / "airlock"


@pytest.fixture
def browser():
    from playwright import sync_api

    assert CHROMIUM.exists(), "install chromium (apt-get install -y chromium; see .ci/install)"
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def _login(browser, svc, user):
    ctx = browser.new_context(accept_downloads=True)
    page = ctx.new_page()
    page.goto(svc.url + "login")
    page.fill("#token", token_of(user))
    page.click("#signin")
    page.wait_for_url(svc.url + "requests")
    assert page.inner_text("#user") == user
    return ctx, page


def test_two_stewards_approve_in_the_browser_and_the_researcher_downloads(
        tmp_path, monkeypatch, browser):
    monkeypatch.setenv("HOME", str(tmp_path))
    SHOTS.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    tokens = make_enclave(home)
    out = make_output(home, small_cell=True)  # a 3-patient cell: two stewards must review
    svc = Service(home, tokens).start()
    try:
        code, req = svc.submit(REQUESTER, out, "Table 2 of the paper")
        assert code == 201 and req["status"] == "in_review" and req["required"] == 2
        rid = req["request_id"]

        for i, steward in enumerate(STEWARDS[:2]):
            ctx, page = _login(browser, svc, steward)
            page.goto(svc.url)  # the airlock's front door: the requests waiting for my vote
            page.wait_for_selector("#requests")
            assert "waiting for your vote" in page.inner_text("h1")
            page.click(f"text={rid}")
            page.wait_for_selector("#vote-form")
            # the review page shows the query, the airlock's own verdict and per-cell evidence
            assert "SELECT" in page.inner_text("#sql").upper()
            assert page.inner_text("#check-status") in ("review", "fail")
            assert page.inner_text("#required") == "2"
            assert page.locator("#evidence tr").count() > 1
            assert page.inner_text("#evidence-source") == "recomputed by the airlock"
            assert page.locator("table.output tr").count() > 1
            assert page.locator("#votes").count() == 0  # blind: no other vote is shown
            page.screenshot(path=str(SHOTS / f"{i + 1}-review-{steward}.png"), full_page=True)
            page.check("#vote-approve")
            page.fill("#vote-reason", "small cell is a known structural zero")
            page.click("#vote-submit")
            page.wait_for_selector("#status")
            expected = "in review" if i == 0 else "released"
            assert page.inner_text("#status") == expected
            page.screenshot(path=str(SHOTS / f"{i + 1}-voted-{steward}.png"), full_page=True)
            ctx.close()

        ctx, page = _login(browser, svc, REQUESTER)
        page.click(f"text={rid}")
        assert page.inner_text("#status") == "released"
        assert page.locator("#vote-form").count() == 0
        name = next(iter(out["files"]))
        with page.expect_download() as info:
            page.click(f"text=download {name}")
        saved = tmp_path / "downloaded"
        info.value.save_as(saved)
        assert saved.read_bytes() == out["files"][name]
        page.screenshot(path=str(SHOTS / "3-released-researcher.png"), full_page=True)
        ctx.close()
    finally:
        svc.stop()
    settings = load_settings(home)
    assert consistency_problems(settings) == []
    manifest = json.loads((outbox_dir(settings) / rid / "manifest.json").read_text())
    assert "votes" not in manifest  # blind to the requester: the votes stay in the trail
    con = connect(settings)
    assert sorted(e["actor"] for e in events(con, f"request:{rid}")
                  if e["action"] == "request.vote") == sorted(STEWARDS[:2])
    con.close()


def test_the_steward_queue_filters_sorts_and_keeps_a_refused_vote_on_the_form(
        tmp_path, monkeypatch, browser):
    """Issue 19: the queue has filters (state, project, needs my vote), kind, tier and
    justification columns and sorting; a vote without a choice or a reject without a reason is
    shown on the form with what was entered (not a bare 400 page); a decided request does not
    claim that other votes stay hidden."""
    monkeypatch.setenv("HOME", str(tmp_path))
    SHOTS.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    tokens = make_enclave(home)
    svc = Service(home, tokens).start()
    try:
        small = svc.submit(REQUESTER, make_output(home, small_cell=True), "Table 2 of the paper")[1]
        plain = svc.submit(REQUESTER, make_output(home), "Counts for the annual report")[1]
        steward, other = STEWARDS[0], STEWARDS[1]
        ctx, page = _login(browser, svc, steward)
        page.goto(svc.url)
        rows = page.locator("#requests tr[data-status]")
        assert rows.count() == 2 and page.locator(".badge-vote").count() == 2
        header = page.inner_text("#requests tr >> nth=0")
        for column in ("kind", "tier", "justification", "state", "project"):
            assert column in header, column
        assert "desensitized" in page.inner_text("#requests")
        assert "Counts for the annual report" in page.inner_text("#requests")
        # sorting by justification, both ways
        page.click("#requests th >> text=justification")
        first = page.inner_text("#requests tr[data-status] >> nth=0")
        assert "Counts for the annual report" in first
        page.click("#requests th >> text=justification")
        assert "Table 2 of the paper" in page.inner_text("#requests tr[data-status] >> nth=0")
        page.screenshot(path=str(SHOTS / "4-queue-needs-my-vote.png"), full_page=True)

        # no choice at all: said on the form, the reason typed is kept
        page.click(f"text={small['request_id']}")
        page.fill("#vote-reason", "looked at the small cell")
        page.click("#vote-submit")
        page.wait_for_selector("#form-error")
        assert "choose a vote" in page.inner_text("#form-error")
        assert page.input_value("#vote-reason") == "looked at the small cell"
        # a reject without a reason: the form says why and keeps the choice
        page.check("#vote-reject")
        page.fill("#vote-reason", "")
        page.click("#vote-submit")
        page.wait_for_selector("#form-error")
        assert "reason" in page.inner_text("#form-error").lower()
        assert page.is_checked("#vote-reject")
        page.screenshot(path=str(SHOTS / "5-form-error.png"), full_page=True)
        page.check("#vote-approve")
        page.click("#vote-submit")
        page.wait_for_selector("#my-vote")
        assert "stay hidden" in page.inner_text("#my-vote")   # one of two votes: still blind
        # the queue now: nothing of mine waits on that request; filters by state and project
        page.goto(svc.url)
        assert page.locator("#requests tr[data-status]").count() == 1
        page.goto(svc.url + "requests?queue=1")
        page.select_option("#filter-status", "in_review")
        page.select_option("#filter-project", "alpha")
        page.click("#filter-apply")
        assert page.locator("#requests tr[data-status]").count() == 2
        page.select_option("#filter-status", "released")
        page.click("#filter-apply")
        assert page.locator("#requests tr[data-status]").count() == 0
        assert page.is_visible("#empty")
        ctx.close()

        ctx, page = _login(browser, svc, other)
        page.goto(svc.url + f"requests/{small['request_id']}")
        page.check("#vote-approve")
        page.click("#vote-submit")
        page.wait_for_selector("#votes")
        assert page.inner_text("#status") == "released"
        assert "stay hidden" not in page.inner_text("#my-vote")  # decided: the votes are shown
        page.screenshot(path=str(SHOTS / "6-decided.png"), full_page=True)
        assert page.get_attribute("#hub-home", "href").endswith("hub/home")
        assert page.goto(svc.url + "status").status == 403   # a steward is not an admin
        ctx.close()
        assert plain["request_id"] != small["request_id"]

        # an admin's front door is the enclave's status: projects and requests by state
        ctx, page = _login(browser, svc, ADMIN)
        page.goto(svc.url)
        page.wait_for_selector("#projects")
        assert "alpha" in page.inner_text("#projects")
        states = page.inner_text("#request-states")
        assert "released" in states and "in review" in states
        assert "1 request in review" in page.inner_text("#waiting")
        page.screenshot(path=str(SHOTS / "7-admin-status.png"), full_page=True)
        ctx.close()
    finally:
        svc.stop()
