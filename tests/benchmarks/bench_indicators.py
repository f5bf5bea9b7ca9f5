"""Benchmark of the policymaker indicators at 10M visits: build, filter interaction, first render.

Run: ``python tests/benchmarks/bench_indicators.py [--visits N] [--changes C] [--queries Q]
[--sessions S] [--keep DIR] [--only PART ...]`` (about 10 minutes on 2 cores at 10M visits).
``--keep DIR`` keeps the generated enclave in ``DIR``; when ``DIR`` already holds a built
indicator table (from an earlier ``--keep DIR`` run) generation and build are skipped and it is
reused, so the interaction and render parts can be re-measured without the 10M-visit build.

Generates a release-shaped DuckDB directly (vectorized SQL over ``range()``, deterministic hashes,
no Python loops): 1 person per 10 visits, 40 hospitals in 3 levels across 31 provinces, 5%
inpatient visits, 0.3 diagnoses, 0.5 lab results and 0.4 prescriptions per visit, a cost row per
visit and per lab result. Then prints:

* **build** — ``build_indicators`` on it (one run; per-indicator cube timings from the log), and
  as the reference in the same run one DuckDB ``GROUP BY`` of distinct people by year × province
  over the visits (the floor of any indicator);
* **filter interaction** — (a) the dashboards' data function ``IndicatorTable.cells`` for random
  filter values on every indicator (median, p95), against the same figure aggregated from the
  release on the fly (the reference: what a dashboard without an indicator table would pay);
  (b) ``AppTest`` re-run time after a filter change on every page (median, p95) — the server side
  of one interaction: the page script, its queries, its charts;
* **first page render** in Chromium — ``streamlit run`` on a loopback port; time from navigation
  to the page's footer being drawn (the script's last element: the whole page is laid out, and
  charts and tables show a placeholder until their script chunks have loaded), and to every
  chart and table being drawn as well: the first visit after the server started (cold: the first
  session imports the page modules) and new sessions on the running server (median), against a
  bare Streamlit page served and measured the same way in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from enclave.core.crypto import file_sha256
from enclave.core.settings import load_settings
from enclave.io.db import run, scalar
from enclave.io.indicators import build_indicators
from enclave.io.indicators.definitions import CHRONIC_CONDITIONS
from enclave.io.indicators.regions import PROVINCES

LEVELS = ("三级甲等", "二级甲等", "一级")
LABS = {3000905: "Leukocytes [#/volume] in Blood by Automated count",
        3004501: "Glucose [Mass/volume] in Serum or Plasma",
        3004410: "Hemoglobin A1c/Hemoglobin.total in Blood",
        3027114: "Cholesterol [Mass/volume] in Serum or Plasma",
        3016723: "Creatinine [Mass/volume] in Serum or Plasma",
        3023103: "Potassium [Moles/volume] in Serum or Plasma"}
DRUGS = {40163924: "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
         1332419: "amlodipine 5 MG Oral Tablet", 1545959: "atorvastatin 80 MG Oral Tablet",
         19059056: "aspirin 81 MG Oral Tablet", 19073188: "amoxicillin 500 MG Oral Tablet",
         19078461: "ibuprofen 200 MG Oral Tablet", 19080128: "lisinopril 10 MG Oral Tablet"}
PAGES = ("overview", "prevalence", "visits", "readmission", "repeat_tests", "costs", "medicines")


def lst(values) -> str:
    return "[" + ", ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in values) + "]"


def generate(path: Path, visits: int) -> dict[str, int]:
    """A release-shaped DuckDB (the columns the indicators read) with ``visits`` visits."""
    persons = max(1000, visits // 10)
    codes = [c + ".900" for cs in CHRONIC_CONDITIONS.values() for c in cs[:1]] + ["J20.900",
                                                                                 "J02.900"]
    con = duckdb.connect(str(path))
    run(con, "SET preserve_insertion_order = false")
    run(con, "CREATE TEMP MACRO rnd(x, s, n) AS (hash(x, s) % n)::BIGINT")
    run(con, f"""CREATE TABLE person AS SELECT i::BIGINT AS person_id,
        {lst([f'{10 * a}-{10 * a + 9}' for a in range(10)])}[1 + rnd(i, 1, 10)] AS age_band,
        CASE WHEN rnd(i, 2, 2) = 0 THEN 'F' ELSE 'M' END AS sex,
        {lst(list(PROVINCES)[:31])}[1 + rnd(i, 3, 31)] AS region
        FROM range({persons}) t(i)""")
    hosp = [(h, f"h{h + 1}", f"医院{h + 1}", LEVELS[h % 3]) for h in range(40)]
    rows = []
    for h, code, name, level in hosp:
        rows.append(f"({h * 10 + 1}, '{name}', '{code}', '{level}')")
        rows += [f"({h * 10 + 2 + d}, '{name}科{d}', '{code}:{code}-D{d}', '{level}')"
                 for d in range(8)]
    run(con, "CREATE TABLE care_site (care_site_id INTEGER, care_site_name VARCHAR, "
             "care_site_source_value VARCHAR, place_of_service_source_value VARCHAR)")
    run(con, f"INSERT INTO care_site VALUES {', '.join(rows)}")
    # a person visits 1-3 hospitals: their "home" hospital and two neighbours
    run(con, f"""CREATE TABLE visit_occurrence AS
        SELECT i::BIGINT AS visit_occurrence_id, p::BIGINT AS person_id,
               CASE WHEN rnd(i, 5, 100) < 5 THEN 9201 ELSE 9202 END AS visit_concept_id,
               (DATE '2019-01-01' + (rnd(i, 6, 2190))::INTEGER) AS visit_start_date,
               (DATE '2019-01-01' + (rnd(i, 6, 2190))::INTEGER
                 + CASE WHEN rnd(i, 5, 100) < 5 THEN (1 + rnd(i, 7, 14))::INTEGER ELSE 0 END)
                 AS visit_end_date,
               (((hash(p, 8) + rnd(i, 9, 3)) % 40) * 10 + 2 + rnd(i, 10, 8))::INTEGER
                 AS care_site_id
        FROM (SELECT i, rnd(i, 4, {persons}) AS p FROM range({visits}) t(i))""")
    run(con, f"""CREATE TABLE condition_occurrence AS
        SELECT i::BIGINT AS condition_occurrence_id, v.person_id,
               {lst(codes)}[1 + rnd(i, 11, {len(codes)})] AS condition_source_value,
               v.visit_start_date AS condition_start_date
        FROM (SELECT i, rnd(i, 12, {visits}) AS vid FROM range({int(visits * 0.3)}) t(i)) s
        JOIN visit_occurrence v ON v.visit_occurrence_id = s.vid""")
    # lab results: half the visits; a person's results of the same test repeat across visits
    run(con, f"""CREATE TABLE measurement AS
        SELECT i::BIGINT AS measurement_id, v.person_id,
               {lst(list(LABS))}[1 + rnd(v.person_id, 13 + i % 2, {len(LABS)})]
                 AS measurement_concept_id,
               v.visit_start_date AS measurement_date, v.visit_occurrence_id
        FROM (SELECT i, rnd(i, 14, {visits}) AS vid FROM range({visits // 2}) t(i)) s
        JOIN visit_occurrence v ON v.visit_occurrence_id = s.vid""")
    run(con, f"""CREATE TABLE drug_exposure AS
        SELECT i::BIGINT AS drug_exposure_id, v.person_id,
               {lst(list(DRUGS))}[1 + rnd(i, 15, {len(DRUGS)})] AS drug_concept_id,
               v.visit_start_date AS drug_exposure_start_date, v.visit_occurrence_id
        FROM (SELECT i, rnd(i, 16, {visits}) AS vid FROM range({int(visits * 0.4)}) t(i)) s
        JOIN visit_occurrence v ON v.visit_occurrence_id = s.vid""")
    run(con, """CREATE TABLE cost AS
        SELECT visit_occurrence_id AS cost_event_id, 'Visit' AS cost_domain_id,
               round(CASE WHEN visit_concept_id = 9201 THEN 8000 + hash(visit_occurrence_id, 17)
                     % 20000 ELSE 80 + rnd(visit_occurrence_id, 17, 600) END, 2)::DOUBLE
                 AS total_cost FROM visit_occurrence
        UNION ALL
        SELECT measurement_id, 'Measurement', (5 + rnd(measurement_id, 18, 60))::DOUBLE
        FROM measurement""")
    run(con, "CREATE TABLE concept (concept_id INTEGER, concept_name VARCHAR)")
    vals = ", ".join(f"({k}, '{v}')" for k, v in {**LABS, **DRUGS}.items())
    run(con, f"INSERT INTO concept VALUES {vals}")
    run(con, "CHECKPOINT")
    counts = {t: scalar(con, f"SELECT count(*) FROM {t}") for t in
              ("person", "visit_occurrence", "condition_occurrence", "measurement",
               "drug_exposure", "cost")}
    con.close()
    return counts


def publish_release(home: Path, db: Path, counts: dict) -> None:
    rel = home / "releases" / "desensitized" / "bench" / "v1"
    rel.mkdir(parents=True)
    shutil.move(str(db), rel / "release.duckdb")
    manifest = {"release": "bench/v1", "project": "bench", "tier": "desensitized",
                "created_at": "2026-01-01T00:00:00+00:00", "tables": counts,
                "files": {"release.duckdb": {"sha256": file_sha256(rel / "release.duckdb"),
                                             "bytes": (rel / "release.duckdb").stat().st_size}}}
    (rel / "manifest.json").write_text(json.dumps(manifest))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def bench_data(table_path: Path, release_db: Path, n: int) -> None:
    from dashboards.data import ALL, IndicatorTable

    tbl = IndicatorTable(table_path)
    rng = random.Random(7)
    times, refs = [], []
    inds = sorted(tbl.indicators)
    for _ in range(n):
        ind = rng.choice(inds)
        flt = {d: rng.choice([ALL, *tbl.known(d)]) for d in ("year", "region", "level")}
        tbl.forget()  # time the query, not the remembered answer
        t = time.perf_counter()
        tbl.cells(ind, flt, ["region"] if tbl.applies(ind, "region") else [])
        times.append(time.perf_counter() - t)
    rel = duckdb.connect(str(release_db), read_only=True)
    for _ in range(max(3, n // 50)):
        year = rng.choice(tbl.known("year"))
        t = time.perf_counter()
        rel.execute("""SELECT p.region, count(*), count(DISTINCT v.person_id)
                       FROM visit_occurrence v JOIN person p USING (person_id)
                       WHERE year(v.visit_start_date) = ?::INTEGER GROUP BY 1""",
                    [year]).fetchall()
        refs.append(time.perf_counter() - t)
    rel.close()
    tbl.close()
    print(f"filter data function IndicatorTable.cells ({n} random filter changes): "
          f"median {statistics.median(times) * 1000:.1f} ms, p95 {pct(times, 0.95) * 1000:.1f} ms")
    print(f"  reference, one figure aggregated from the release on the fly: median "
          f"{statistics.median(refs) * 1000:.0f} ms "
          f"(ratio {statistics.median(refs) / statistics.median(times):.0f}×)")


def bench_apptest(table_path: Path, changes: int) -> None:
    from streamlit.testing.v1 import AppTest

    from dashboards.data import ALL, IndicatorTable

    os.environ["ENCLAVE_INDICATORS"] = str(table_path)
    tbl = IndicatorTable(table_path)
    rng = random.Random(8)
    per_page = {}
    for page in PAGES:
        at = AppTest.from_file(str(REPO / "dashboards" / "app.py"), default_timeout=120)
        at.run()
        at.switch_page(f"views/{page}.py")
        at.run()
        times = []
        for _ in range(changes):
            dim = rng.choice(("year", "region", "level"))
            at.selectbox(key=f"f_{dim}").select(rng.choice([ALL, *tbl.known(dim)]))
            t = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t)
            assert not at.exception, [e.message for e in at.exception]
        per_page[page] = times
    tbl.close()
    every = [x for ts in per_page.values() for x in ts]
    print(f"AppTest re-run after a filter change ({changes} per page): median "
          f"{statistics.median(every) * 1000:.0f} ms, p95 {pct(every, 0.95) * 1000:.0f} ms")
    for page, ts in per_page.items():
        print(f"  {page:13s} median {statistics.median(ts) * 1000:5.0f} ms, "
              f"p95 {pct(ts, 0.95) * 1000:5.0f} ms")


REFERENCE_APP = """import streamlit as st
st.title("reference")
st.caption("consistent rounding")
"""


#: the page is drawn in full when its footer is there and every chart and table has drawn its
#: canvas (Vega-Lite and the data grid come in script chunks the browser loads on first use)
DRAWN_JS = """([charts, tables]) => document.body.innerText.includes('consistent rounding')
    && document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length >= charts
    && document.querySelectorAll('[data-testid="stDataFrame"] canvas').length >= tables"""
#: charts and tables on the overview page: the tile map and two tables (on the generated table
#: every national age × sex cell of ``people`` is withheld, so that chart says so in words
#: instead of drawing an empty frame)
OVERVIEW_DRAWN = (1, 2)


def _render_times(script: Path, table_path: Path, sessions: int, drawn: tuple[int, int]
                  ) -> dict[str, object]:
    """Cold first visit, new-session and same-tab reload times of ``script``'s first page: until
    the footer shows (``fresh``, ``reload``) and until every chart and table is drawn too
    (``full``)."""
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, ENCLAVE_INDICATORS=str(table_path))
    # the dashboards as the hub serves them (dashboards.serve); the reference page as is
    serve = (["-m", "dashboards.serve"] if script == REPO / "dashboards" / "app.py" else
             ["-m", "streamlit", "run", str(script)])
    server = subprocess.Popen(
        [sys.executable, *serve, "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fresh, full, reload = [], [], []
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            for _ in range(sessions + 1):
                ctx = browser.new_context(viewport={"width": 1400, "height": 1800})
                page = ctx.new_page()
                t = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/?lang=en")  # the footer in English
                page.get_by_text("consistent rounding").first.wait_for(timeout=120_000)
                fresh.append(time.perf_counter() - t)
                page.wait_for_function(DRAWN_JS, arg=list(drawn), timeout=120_000, polling=10)
                full.append(time.perf_counter() - t)
                t = time.perf_counter()
                page.reload()
                page.get_by_text("consistent rounding").first.wait_for(timeout=120_000)
                reload.append(time.perf_counter() - t)
                ctx.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    return {"cold": fresh[0], "fresh": fresh[1:], "full": full[1:], "reload": reload[1:]}


def bench_render(table_path: Path, sessions: int) -> None:
    """Time from navigation until the page's footer is drawn (the footer is the page script's
    last element: every element is on the page, charts and tables may still be loading their
    script chunks) and until every chart and table has drawn as well, for the dashboards and for
    a bare Streamlit page as the reference (measured in the same run, just before)."""
    with tempfile.TemporaryDirectory() as tmp:
        ref_app = Path(tmp) / "reference.py"
        ref_app.write_text(REFERENCE_APP)
        ref = _render_times(ref_app, table_path, sessions, (0, 0))
        ours = _render_times(REPO / "dashboards" / "app.py", table_path, sessions, OVERVIEW_DRAWN)
    load = os.getloadavg()
    for name, r in (("reference: bare Streamlit page", ref), ("dashboards overview page", ours)):
        fresh, rel = r["fresh"], r["reload"]
        print(f"first page render in Chromium, {name}: cold (first session after server start) "
              f"{r['cold']:.2f} s; new browser session, median {statistics.median(fresh):.2f} s "
              f"(min {min(fresh):.2f}); reload in the same tab, median "
              f"{statistics.median(rel):.2f} s (over {len(fresh)})")
    print(f"  overview with every chart and table drawn, new session: median "
          f"{statistics.median(ours['full']):.2f} s (min {min(ours['full']):.2f})")
    print(f"  ratio overview / bare page (new session, median): "
          f"{statistics.median(ours['fresh']) / statistics.median(ref['fresh']):.2f}× "
          f"(load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--visits", type=int, default=10_000_000)
    ap.add_argument("--changes", type=int, default=20, help="AppTest filter changes per page")
    ap.add_argument("--queries", type=int, default=400, help="random data-function calls")
    ap.add_argument("--sessions", type=int, default=5, help="Chromium sessions (warm)")
    ap.add_argument("--keep", type=Path, help="keep the generated enclave here (and reuse it "
                    "when it already holds a built indicator table)")
    ap.add_argument("--only", action="append", choices=("build", "data", "apptest", "render"),
                    help="run only these parts (repeatable; build always runs unless reused)")
    args = ap.parse_args()
    parts = set(args.only or ("build", "data", "apptest", "render"))
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-indicators-"))
    home = work / "home"
    table_path = home / "releases" / "indicators" / "v1" / "indicators.duckdb"
    release_db = home / "releases" / "desensitized" / "bench" / "v1" / "release.duckdb"
    try:
        if args.keep and table_path.exists():
            con = duckdb.connect(str(release_db), read_only=True)
            visits = scalar(con, "SELECT count(*) FROM visit_occurrence")
            con.close()
            print(f"reusing the indicator table built earlier in {work} ({visits:,} visits; "
                  "no generation, no build)")
        else:
            _build(work, home, args.visits)
        if "data" in parts:
            bench_data(table_path, release_db, args.queries)
        if "apptest" in parts:
            bench_apptest(table_path, args.changes)
        if "render" in parts:
            bench_render(table_path, args.sessions)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _build(work: Path, home: Path, visits: int) -> None:
    """Generate the release, publish it, build the indicator table; print the build figures."""
    home.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    counts = generate(work / "release.duckdb", visits)
    print(f"generated release-shaped DuckDB in {time.perf_counter() - t:.1f} s: "
          + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    publish_release(home, work / "release.duckdb", counts)
    release_db = home / "releases" / "desensitized" / "bench" / "v1" / "release.duckdb"
    con = duckdb.connect(str(release_db), read_only=True)
    t = time.perf_counter()
    con.execute("SELECT year(visit_start_date), p.region, count(DISTINCT v.person_id) "
                "FROM visit_occurrence v JOIN person p USING (person_id) GROUP BY ALL"
                ).fetchall()
    ref = time.perf_counter() - t
    con.close()
    settings = load_settings(home)
    t = time.perf_counter()
    manifest = build_indicators(settings, "bench/v1")
    build = time.perf_counter() - t
    cells = sum(s["cells"] for s in manifest["indicators"].values())
    sup = sum(s["suppressed"] for s in manifest["indicators"].values())
    print(f"indicator build: {build:.1f} s (one run; {len(manifest['indicators'])} "
          f"indicators, {cells:,} cells, {sup:,} suppressed); reference one GROUP BY of "
          f"distinct people by year × province: {ref:.2f} s (ratio {build / ref:.0f}×)")
    print("  per indicator (relation + evidence + rules + secondary suppression + keys): "
          + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in manifest["indicators"].items()
                      if "seconds" in v))


if __name__ == "__main__":
    main()
