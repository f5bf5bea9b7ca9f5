"""Issue 8 acceptance: the policymaker dashboards on the demo indicators (AppTest + Chromium)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time

import pytest
from streamlit.testing.v1 import AppTest

from dashboards.common import COUNT_COLUMNS, SUPPRESSED
from dashboards.data import ALL, FILTERS, FilterError, IndicatorTable
from enclave.disclosure import policy_from_settings
from enclave.settings import load_settings
from tests.conftest import REPO
from tests.unit.test_indicators_build import demo_indicators

APP = REPO / "dashboards" / "app.py"
PAGES = {"overview": "", "prevalence": "prevalence", "visits": "visits",
         "readmission": "readmission", "repeat_tests": "repeat-tests", "costs": "costs",
         "medicines": "medicines"}
#: page-specific selectboxes (key → dimension of its values)
PAGE_SELECTS = {"prevalence": ("condition", "condition"), "repeat_tests": ("test", "test")}
COUNT_METRICS = ("People in the records", "Visits", "Inpatient stays")
ODD = ["' OR 1=1 --", "110000'; DROP TABLE indicators; --", "999999", "<script>x</script>",
       'All" OR "1"="1', "%", "", "北京市", "All; SELECT 1"]
ARTIFACTS = REPO / "test-artifacts" / "dashboards"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    home = tmp_path_factory.mktemp("dash-home")
    demo_indicators(home)
    path = home / "releases" / "indicators" / "v1"
    threshold = policy_from_settings(load_settings(home).disclosure).min_patients
    return path, threshold


@pytest.fixture
def app(published, monkeypatch):
    monkeypatch.setenv("ENCLAVE_INDICATORS", str(published[0]))
    return AppTest.from_file(str(APP), default_timeout=60)


def open_page(at: AppTest, page: str) -> AppTest:
    at.run()
    at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def scan(at: AppTest, threshold: int) -> int:
    """Every displayed count is withheld or at least the threshold; returns how many were seen."""
    seen = 0
    for df in at.dataframe:
        frame = df.value
        for col in [c for c in frame.columns if c in COUNT_COLUMNS]:
            for v in frame[col].tolist():
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    continue
                assert v >= threshold, f"{col} shows {v} < {threshold}"
                seen += 1
        if "status" in frame.columns:  # a withheld value is marked and explained
            marked = frame["status"].astype(str).str.contains(SUPPRESSED)
            assert (frame.loc[marked, "why"].astype(str).str.len() > 0).all()
    for m in at.metric:
        if m.label in COUNT_METRICS and m.value not in (SUPPRESSED, "not available", "no data"):
            assert int(str(m.value).replace(",", "")) >= threshold
            seen += 1
    return seen


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "title", "subheader", "info", "warning", "metric"):
        for el in getattr(at, kind):
            parts.append(str(getattr(el, "value", "")))
    parts += [df.value.to_csv() for df in at.dataframe]
    return "\n".join(parts)


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_shows_checked_figures_with_provenance(app, published, page):
    _, threshold = published
    at = open_page(app, page)
    captions = " ".join(c.value for c in at.caption)
    assert "indicators/v1" in captions and "alpha/v1" in captions and "acro" in captions
    assert len(at.dataframe) >= 1
    assert len(at.get("download_button")) == len(at.dataframe)  # each table downloadable
    assert scan(at, threshold) > 0 or page == "costs"  # costs shows means, no counts
    if page in ("overview", "prevalence", "visits"):
        assert len(at.get("vega_lite_chart")) >= 2  # charts and the province tile map


@pytest.mark.parametrize("page", list(PAGES))
def test_every_filter_value_on_every_page(app, published, page):
    path, threshold = published
    tbl = IndicatorTable(path / "indicators.duckdb")
    at = open_page(app, page)
    for dim in FILTERS:
        for value in [ALL, *tbl.known(dim)]:
            at.selectbox(key=f"f_{dim}").select(value)
            at.run()
            assert not at.exception, (dim, [e.message for e in at.exception])
            assert at.selectbox(key=f"f_{dim}").value == value
            scan(at, threshold)
        at.selectbox(key=f"f_{dim}").select(ALL)
    if page in PAGE_SELECTS:
        key, dim = PAGE_SELECTS[page]
        for value in tbl.known(dim):
            at.selectbox(key=key).select(value)
            at.run()
            assert not at.exception
            scan(at, threshold)
    tbl.close()


def test_filters_change_the_figures(app, published):
    path, _ = published
    tbl = IndicatorTable(path / "indicators.duckdb")
    region = next(r for r in tbl.known("region")
                  if not tbl.cells("people", {"region": r})["suppressed"][0])
    want = tbl.cells("people", {"region": region})["value"][0]
    at = open_page(app, "overview")
    total = next(m.value for m in at.metric if m.label == "People in the records")
    at.selectbox(key="f_region").select(region)
    at.run()
    shown = next(m.value for m in at.metric if m.label == "People in the records")
    assert shown == f"{want:,.0f}" and shown != total
    tbl.close()


@pytest.mark.parametrize("odd", ODD)
def test_odd_filter_input_is_ignored_without_error_or_echo(app, published, odd):
    path, threshold = published
    tbl = IndicatorTable(path / "indicators.duckdb")
    rows_before = tbl.cells("people", {}, ["region"]).height
    for dim in FILTERS:
        app.query_params[dim] = odd
    at = open_page(app, "overview")
    for dim in FILTERS:
        assert at.selectbox(key=f"f_{dim}").value == ALL
    assert len(at.sidebar.warning) == len(FILTERS)
    if len(odd) > 3:
        assert odd not in texts(at)
    scan(at, threshold)
    assert tbl.cells("people", {}, ["region"]).height == rows_before
    tbl.close()


def test_data_layer_checks_every_filter_before_a_query(published):
    path, _ = published
    tbl = IndicatorTable(path / "indicators.duckdb")
    for odd in ODD:
        if odd == "":
            continue
        with pytest.raises(FilterError):
            tbl.cells("people", {"region": odd})
    with pytest.raises(FilterError):
        tbl.cells("people; DROP TABLE indicators", {})
    with pytest.raises(FilterError):
        tbl.cells("people", {"region\" = region --": ALL})
    with pytest.raises(FilterError):
        tbl.cells("people", {}, ["sex\" IS NOT NULL --"])
    assert tbl.cells("people", {})["value"][0] > 0
    tbl.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chromium_screenshot_of_every_page(published):
    from playwright.sync_api import sync_playwright

    path, _ = published
    port = _free_port()
    env = dict(os.environ, ENCLAVE_INDICATORS=str(path))
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.2)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            for name, url_path in PAGES.items():
                page.goto(f"http://127.0.0.1:{port}/{url_path}")
                page.get_by_text("Data: indicators/v1").first.wait_for(timeout=60_000)
                page.get_by_text("consistent rounding").first.wait_for(timeout=60_000)
                page.wait_for_function(  # tables and charts have replaced their skeletons
                    "document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0",
                    timeout=60_000)
                page.wait_for_timeout(1000)  # charts finish drawing
                assert page.get_by_text("Page not found").count() == 0, name
                assert page.locator('[data-testid="stException"]').count() == 0, name
                shot = ARTIFACTS / f"{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 20_000
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_a_table_that_differs_from_its_manifest_is_refused(published, tmp_path):
    import shutil

    from enclave.errors import BadInputError

    path, _ = published
    copy = tmp_path / "v1"
    shutil.copytree(path, copy)
    os.chmod(copy / "indicators.duckdb", 0o640)
    with open(copy / "indicators.duckdb", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BadInputError, match="does not match its manifest"):
        IndicatorTable(copy / "indicators.duckdb")


def test_answers_are_remembered_per_request_and_equal_to_the_query(published, monkeypatch):
    path, _ = published
    tbl = IndicatorTable(path / "indicators.duckdb")
    queries = []
    real = tbl._frame
    monkeypatch.setattr(tbl, "_frame", lambda sql, params=None: queries.append(sql) or
                        real(sql, params))
    flt = {"year": ALL, "region": tbl.known("region")[0], "level": ALL}
    first = tbl.cells("people", flt, ["age_band", "sex"])
    again = tbl.cells("people", dict(reversed(flt.items())), ["age_band", "sex"])
    assert len(queries) == 1 and again.equals(first)  # same request, filters in any order
    tbl.cells("people", {**flt, "region": ALL}, ["age_band", "sex"])
    tbl.cells("people", flt, ["sex", "age_band"])
    assert len(queries) == 3  # another filter value or axis order is another request
    again.columns = [c.upper() for c in again.columns]  # a caller's change stays its own
    assert tbl.cells("people", flt, ["age_band", "sex"]).columns == first.columns
    tbl.forget()
    assert tbl.cells("people", flt, ["age_band", "sex"]).equals(first) and len(queries) == 4
    with pytest.raises(FilterError):  # validation still comes first
        tbl.cells("people", {"region": "' OR 1=1 --"})
    tbl.close()


def test_streamlit_reads_the_serving_options_beside_the_app():
    """The options in dashboards/.streamlit/config.toml (no full garbage collection after every
    run, no file watcher) apply whatever directory the server starts in."""
    from streamlit import config

    try:
        config._main_script_path = str(APP)
        config.get_config_options(force_reparse=True)
        assert config.get_option("runner.postScriptGC") is False
        assert config.get_option("server.fileWatcherType") == "none"
        assert config.get_option("client.toolbarMode") == "viewer"
    finally:
        config._main_script_path = None
        config.get_config_options(force_reparse=True)
