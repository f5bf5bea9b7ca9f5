"""Issues 8 and 19 acceptance: the policymaker dashboards on the demo indicators (AppTest +
Chromium), in both languages; withheld values read as withheld, and no wording singles out
zeros."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import urllib.request

import duckdb
import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from dashboards.common import COUNT_COLUMNS, NO_DATA_TEXTS, WITHHELD_TEXTS
from dashboards.data import ALL, FILTERS, ORDERED, FilterError, IndicatorTable
from dashboards.i18n import LANGUAGES, TEXT, t
from enclave.core.settings import load_settings
from enclave.io.indicators.cube import WITHHELD_REASON
from enclave.logic.disclosure import policy_from_settings
from tests.conftest import REPO
from tests.dashboards_support import BASE, served
from tests.unit.test_indicators_build import demo_indicators

APP = REPO / "dashboards" / "app.py"
PAGES = {"overview": "", "prevalence": "prevalence", "visits": "visits",
         "readmission": "readmission", "repeat_tests": "repeat-tests", "costs": "costs",
         "medicines": "medicines"}
#: page-specific selectboxes (key → dimension of its values)
PAGE_SELECTS = {"prevalence": ("condition", "condition"), "repeat_tests": ("test", "test")}
COUNT_METRICS = {TEXT[k][i] for k in ("m_people", "m_visits", "m_stays", "m_repeats")
                 for i in (0, 1)}
ODD = ["' OR 1=1 --", "110000'; DROP TABLE indicators; --", "999999", "<script>x</script>",
       'All" OR "1"="1', "%", "", "北京市", "All; SELECT 1"]
ARTIFACTS = REPO / "test-artifacts" / "dashboards"
#: wording that would tell a reader a withheld cell is empty (or tell empty cells apart)
ZERO_WORDING = re.compile(r"no people|nobody|no one|empty|zero|\b0 people|没有人|无人|为零|零人|"
                          r"为空|空单元", re.IGNORECASE)
#: what a value cell must never show: a withheld or missing value is said in words
BLANK_VALUES = {"", "None", "none", "nan", "NaN", "null", "<NA>", "NaT"}
#: the demo the dashboards are tested on: four hospitals (三级甲等, 二级甲等, 一级), enough
#: patients for repeat tests to be published at the hospital-level margins
DEMO_PATIENTS, DEMO_HOSPITALS = 4000, 4


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    home = tmp_path_factory.mktemp("dash-home")
    demo_indicators(home, patients=DEMO_PATIENTS, hospitals=DEMO_HOSPITALS)
    path = home / "releases" / "indicators" / "v1"
    threshold = policy_from_settings(load_settings(home).disclosure).min_patients
    return path, threshold


@pytest.fixture
def app(published, monkeypatch):
    monkeypatch.setenv("ENCLAVE_INDICATORS", str(published[0]))
    return AppTest.from_file(str(APP), default_timeout=60)


def open_page(at: AppTest, page: str, lang: str | None = None) -> AppTest:
    if lang:
        at.query_params["lang"] = lang
    at.run()
    at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def scan_rows(header: list[str], rows: list[list[str]], threshold: int, where: str) -> dict:
    """One table as shown (or its CSV): every value cell is a number, or says withheld or no
    data in words; every count shown is at least the threshold; no wording singles out zeros."""
    seen = {"counts": 0, "withheld": 0}
    values = [i for i, h in enumerate(header) if h in VALUE_COLUMNS]
    for row in rows:
        for i, cell in enumerate(row):
            cell = str(cell)
            assert not ZERO_WORDING.search(cell), (where, header[i], cell)
            if i not in values:
                continue
            assert cell not in BLANK_VALUES, (where, header[i], cell)
            if cell in WITHHELD_TEXTS:
                seen["withheld"] += 1
            elif cell not in NO_DATA_TEXTS:
                x = _number(cell)
                if header[i] in COUNT_COLUMNS:
                    assert x >= threshold, (where, header[i], cell)
                    seen["counts"] += 1
    return seen


VALUE_COLUMNS = {TEXT[k][i] for k in TEXT if k.startswith("c_") for i in (0, 1)}


def scan(at: AppTest, threshold: int) -> dict:
    """Every table and metric on the page (see :func:`scan_rows`); returns what was seen."""
    seen = {"counts": 0, "withheld": 0}
    for df in at.dataframe:
        frame = df.value
        got = scan_rows(list(frame.columns), frame.astype(str).values.tolist(), threshold,
                        "table")
        for k in seen:
            seen[k] += got[k]
    for m in at.metric:
        assert str(m.value) not in BLANK_VALUES, m.label
        if str(m.value) in WITHHELD_TEXTS:
            seen["withheld"] += 1
        elif m.label in COUNT_METRICS and str(m.value) not in NO_DATA_TEXTS | {
                t("not_available", lang) for lang in LANGUAGES}:
            assert _number(str(m.value)) >= threshold
            seen["counts"] += 1
    return seen


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "title", "subheader", "info", "warning", "error",
                 "metric"):
        for el in getattr(at, kind):
            parts.append(str(getattr(el, "value", "")))
    parts += [df.value.to_csv() for df in at.dataframe]
    return "\n".join(parts)


@pytest.mark.parametrize("lang", list(LANGUAGES))
@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_shows_checked_figures_with_provenance(app, published, page, lang):
    _, threshold = published
    at = open_page(app, page, lang)
    captions = " ".join(c.value for c in at.caption)
    assert "indicators/v1" in captions and "alpha/v1" in captions and "acro" in captions
    assert at.title[0].value == t({"overview": "ov_title", "prevalence": "pr_title",
                                   "visits": "vi_title", "readmission": "re_title",
                                   "repeat_tests": "rt_title", "costs": "co_title",
                                   "medicines": "me_title"}[page], lang)
    assert len(at.dataframe) >= 1
    assert len(at.get("download_button")) == len(at.dataframe)  # each table downloadable
    seen = scan(at, threshold)
    assert seen["counts"] > 0 or page == "costs"  # costs shows means, no counts
    assert not ZERO_WORDING.search(texts(at))
    assert len(at.error) == 0  # no "this release does not hold what these indicators need"
    if page in ("overview", "prevalence", "visits", "repeat_tests"):
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
            assert not ZERO_WORDING.search(texts(at))
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
    at = open_page(app, "overview", "en")
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
    app.query_params["lang"] = odd  # an unknown language: the default, never echoed
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


def _release_db(published) -> str:
    return str(published[0].parents[1] / "desensitized" / "alpha" / "v1" / "release.duckdb")


#: the repeat tests of the demo release, written by hand (the oracle of the ibis definition):
#: a lab result repeating one of the same concept for the same person at another hospital
#: (care site code before ":") 1-30 days earlier
REPEATS_SQL = """
    WITH t AS (SELECT m.measurement_id AS id, m.person_id AS p, m.measurement_concept_id AS c,
                      m.measurement_date AS d,
                      coalesce(split_part(cs.care_site_source_value, ':', 1), 'unknown') AS h,
                      coalesce(cs.place_of_service_source_value, 'unknown') AS lv
               FROM measurement m
               JOIN visit_occurrence v ON v.visit_occurrence_id = m.visit_occurrence_id
               JOIN person pe ON pe.person_id = m.person_id
               LEFT JOIN care_site cs ON cs.care_site_id = v.care_site_id),
         r AS (SELECT DISTINCT b.id, b.p, b.lv FROM t a JOIN t b ON a.p = b.p AND a.c = b.c
               AND a.h <> b.h AND date_diff('day', a.d, b.d) BETWEEN 1 AND 30)
    SELECT {cols} count(*) AS n, count(DISTINCT r.p) AS people,
           coalesce(sum(cost), 0) AS cost
    FROM r LEFT JOIN (SELECT cost_event_id, sum(total_cost) AS cost FROM cost
                      WHERE cost_domain_id = 'Measurement' GROUP BY 1) k ON k.cost_event_id = r.id
    {group}"""


def _published(path, indicator: str, **axes: str) -> tuple[float | None, bool]:
    con = duckdb.connect(str(path / "indicators.duckdb"), read_only=True)
    try:
        dims = pl.from_arrow(con.sql(f"SELECT * FROM indicators WHERE indicator = '{indicator}' "
                                     "LIMIT 1").to_arrow_table())
        where = ["indicator = ?", *(f"{d} = ?" for d in axes)]
        params = [indicator, *axes.values()]
        for d in ("year", "region", "level", "test", "medicine", "pair"):
            if d not in axes and dims[d][0] is not None:
                where.append(f"{d} = 'All'")
        row = con.execute(f"SELECT value, suppressed FROM indicators WHERE {' AND '.join(where)}",
                          params).fetchone()
    finally:
        con.close()
    return row[0], row[1]


def test_repeat_tests_page_shows_checked_figures(app, published):
    path, threshold = published
    base = policy_from_settings(load_settings(path.parents[2]).disclosure).round_base
    rel = duckdb.connect(_release_db(published), read_only=True)
    n, people, cost = rel.execute(REPEATS_SQL.format(cols="", group="")).fetchone()
    by_level = {lv: (k, p) for lv, k, p, _ in
                rel.execute(REPEATS_SQL.format(cols="lv,", group="GROUP BY lv")).fetchall()}
    tests = rel.execute("SELECT count(*) FROM measurement JOIN visit_occurrence "
                    "USING (visit_occurrence_id)").fetchone()[0]
    rel.close()
    assert people >= threshold  # the demo plants repeats: the headline figure is published
    reps, sup = _published(path, "repeat_tests")
    labs, _ = _published(path, "lab_tests")
    share, _ = _published(path, "repeat_test_share")
    pub_cost, _ = _published(path, "repeat_tests_cost")
    assert not sup and abs(reps - n) < base and reps % base == 0
    assert abs(labs - tests) < base
    assert share == round(reps / labs * 100, 1)
    assert pub_cost == round(cost)
    at = open_page(app, "repeat_tests", "en")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Repeat tests"] == f"{reps:,.0f}"
    assert metrics["Share repeated %"] == f"{share:,.1f}"
    assert metrics["Cost of repeats (CNY)"] == f"{pub_cost:,.0f}"
    tables = {tuple(df.value.columns): df.value for df in at.dataframe}
    level_table = next(v for k, v in tables.items() if k[0] == "hospital level")
    levels = level_table["hospital level"].tolist()
    assert levels == sorted(levels, key=lambda s: ("Primary" not in s, "Secondary" not in s, s))
    assert any("Primary" in lv for lv in levels) and any("Tertiary" in lv for lv in levels)
    for code, (k, p) in by_level.items():
        value, withheld = _published(path, "repeat_tests", level=code)
        row = level_table[level_table["hospital level"].str.contains(code)].iloc[0]
        if withheld:
            assert row["repeat tests"] in WITHHELD_TEXTS
        else:
            assert abs(value - k) < base and row["repeat tests"] == f"{value:,.0f}"
    pairs = next(v for k, v in tables.items() if k[0].startswith("hospital pair"))
    shown = [x for x in pairs["repeat tests"] if x not in WITHHELD_TEXTS]
    assert shown and [_number(x) for x in shown] == sorted((_number(x) for x in shown),
                                                            reverse=True)
    assert all(" → " in x for x in pairs.iloc[:, 0])


def test_medicines_page_shows_checked_figures(app, published):
    from enclave.io.indicators.definitions import MEDICINE_GROUPS

    path, threshold = published
    base = policy_from_settings(load_settings(path.parents[2]).disclosure).round_base
    rel = duckdb.connect(_release_db(published), read_only=True)
    raw = {}
    for group, keys in MEDICINE_GROUPS.items():
        like = " OR ".join(f"lower(c.concept_name) LIKE '%{k}%'" for k in keys)
        raw[group] = rel.execute(f"SELECT count(DISTINCT d.person_id) FROM drug_exposure d "
                             f"JOIN concept c ON c.concept_id = d.drug_concept_id "
                             f"JOIN person pe ON pe.person_id = d.person_id WHERE {like}"
                             ).fetchone()[0]
    rel.close()
    at = open_page(app, "medicines", "en")
    groups = next(df.value for df in at.dataframe
                  if list(df.value.columns) == ["medicine group", "people"])
    shown = dict(zip(groups["medicine group"], groups["people"]))
    checked = 0
    for group, n in raw.items():
        if n == 0:
            continue
        value, withheld = _published(path, "medicine_patients", medicine=group)
        if withheld:
            assert shown[group] in WITHHELD_TEXTS
            continue
        assert abs(value - n) < base and value >= threshold
        assert shown[group] == f"{value:,.0f}"
        checked += 1
    assert checked >= 4


def test_chromium_every_page_in_both_languages_screenshots_and_csvs(published, tmp_path):
    """Every page in Chinese and English in a real browser: a screenshot of each, and every CSV
    download read back and scanned (withheld cells in words, no zero wording, counts at least
    the threshold); the language switch changes the page."""
    from playwright.sync_api import sync_playwright

    path, threshold = published
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    withheld = csvs = 0
    with served(path, timeout=60) as port:  # as the hub serves it, under the hub's base path
        base = f"http://127.0.0.1:{port}{BASE}"
        # the page preloads the chunks the dashboards draw with once it has loaded
        # (dashboards.serve; the links themselves are checked in the browser below)
        with urllib.request.urlopen(f"{base}/overview") as r:
            assert re.search(r'addEventListener\("load".*"Selectbox\.[\w-]+\.js"',
                             r.read().decode())
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            ctx = browser.new_context(viewport={"width": 1400, "height": 4000},
                                      accept_downloads=True)
            page = ctx.new_page()
            for lang, marks in (("zh", ("数据：indicators/", "一致性舍入")),
                                ("en", ("Data: indicators/", "consistent rounding"))):
                for name, url_path in PAGES.items():
                    page.goto(f"{base}/{url_path}?lang={lang}")
                    for mark in marks:
                        page.get_by_text(mark).first.wait_for(timeout=60_000)
                    page.wait_for_function(  # tables and charts have replaced their skeletons
                        "document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0",
                        timeout=60_000)
                    page.wait_for_timeout(1000)  # charts finish drawing
                    assert page.get_by_text("Page not found").count() == 0, name
                    assert page.locator('[data-testid="stException"]').count() == 0, name
                    assert page.locator('link[rel="modulepreload"][href*="Selectbox."]').count() \
                        == 1, name  # the preload script ran once the page had loaded
                    shot = ARTIFACTS / f"{name}_{lang}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    assert shot.stat().st_size > 20_000
                    buttons = page.locator('[data-testid="stDownloadButton"] button')
                    assert buttons.count() >= 1, name
                    for i in range(buttons.count()):
                        with page.expect_download() as info:
                            buttons.nth(i).click()
                        with open(info.value.path(), encoding="utf-8-sig") as fh:
                            text = fh.read()
                        rows = list(csv.reader(io.StringIO(text)))
                        seen = scan_rows(rows[0], rows[1:], threshold,
                                         f"{name}/{lang}/{info.value.suggested_filename}")
                        withheld += seen["withheld"]
                        csvs += 1
            # the switch: Chinese → English on the same page
            page.goto(f"{base}/?lang=zh")
            page.get_by_text(t("ov_title", "zh")).first.wait_for(timeout=60_000)
            page.get_by_text("English", exact=True).first.click()
            page.get_by_text(t("ov_title", "en")).first.wait_for(timeout=60_000)
            browser.close()
    assert csvs >= 2 * len(PAGES) and withheld > 0  # the demo has withheld cells, in words


def test_one_public_wording_for_every_withheld_cell(published):
    path, _ = published
    con = duckdb.connect(str(path / "indicators.duckdb"), read_only=True)
    reasons = {r for (r,) in con.sql("SELECT DISTINCT reason FROM indicators "
                                     "WHERE suppressed").fetchall()}
    con.close()
    assert reasons == {WITHHELD_REASON}


def test_a_table_that_differs_from_its_manifest_is_refused(published, tmp_path):
    import shutil

    from enclave.core.errors import BadInputError

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
    real = tbl._query_cells
    monkeypatch.setattr(tbl, "_query_cells", lambda *request: queries.append(request) or
                        real(*request))
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


def test_cells_held_in_memory_equal_a_query_of_the_published_table(published):
    """The in-memory filter answers exactly what a parameterized SQL query of the published
    table answers (same rows, same order, same types), for every indicator."""
    import duckdb
    path, _ = published
    tbl = IndicatorTable(path / "indicators.duckdb")
    con = duckdb.connect(str(path / "indicators.duckdb"), read_only=True)
    rng = random.Random(5)
    checked = 0
    for indicator in sorted(tbl.indicators):
        axes = sorted(json.loads(tbl.tile(indicator)["axes"]))
        plain = [a for a in axes if a not in ORDERED]
        for by in ([], plain[:1], plain[1:3]):
            flt = {d: rng.choice([ALL, *tbl.known(d)]) for d in ("year", "region", "level")
                   if d not in by}
            where, params = ['"indicator" = ?'], [indicator]
            for dim in axes:
                where.append(f'"{dim}" <> ?' if dim in by else f'"{dim}" = ?')
                params.append(ALL if dim in by else flt.get(dim, ALL))
            cols = ", ".join(f'"{d}"' for d in by)
            sql = (f"SELECT {cols + ', ' if cols else ''}value, suppressed, reason "
                   f"FROM indicators WHERE {' AND '.join(where)} ORDER BY {cols or 'value'}")
            expected = pl.from_arrow(con.execute(sql, params).to_arrow_table())
            assert tbl.cells(indicator, flt, by).equals(expected), (indicator, flt, by)
            checked += 1
    con.close()
    tbl.close()
    assert checked >= 3 * len(tbl.indicators)


def test_a_table_opened_before_the_server_listens_is_taken_once(published):
    """dashboards.serve opens the table before listening; the first page takes that one (the
    same object, already loaded), later pages open their own through the shared cache."""
    from dashboards.data import preopen, take_preopened
    path, _ = published
    table_path = path / "indicators.duckdb"
    assert take_preopened(table_path) is None
    preopen(table_path)
    first = take_preopened(str(table_path))
    assert isinstance(first, IndicatorTable) and first.known("region")
    assert take_preopened(table_path) is None
    first.close()


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
