"""Benchmark of output checking: 1M rows × 200 cells, count and mean, with all evidence and suppression.

Run: ``python tests/benchmarks/bench_disclosure.py`` (about a minute on 2 cores with ACRO).
``--negatives`` makes 1 % of the values negative (refunds): our evidence does the same work either
way, while ACRO's mean check became about ten times slower (52 s in one probe on random data), so
the default compares on positive values, as the DESIGN reference did.
Prints the median of REPEATS runs (in rounds: each job once per round) of, in the same process
and on the same table:

* a bare DuckDB ``GROUP BY`` computing count and mean (the floor: no disclosure evidence at all),
* the same ``GROUP BY`` with ``count(DISTINCT patient)`` (what a patient threshold costs at least),
* one hand-written DuckDB statement computing the same evidence as ours, per statistic (the
  DESIGN reference "a single DuckDB GROUP BY computing the same evidence"): for a count, rows and
  distinct patients per cell; for a mean, also non-missing values, patients with a value, the sum,
  the two largest per-patient contributions and their total (a GROUP BY cell × patient, then cell).
  The issue's "≤ 1.5× the bare GROUP BY" is judged against this one: it is what the rules need, so
  the ratio is the price of checking (rules, margins, suppression, the Python around them) on top
  of the unavoidable query; the ratio to the count+mean floor is printed too,
* :func:`enclave.logic.disclosure.check_table` for a count and for a mean: the one-statement evidence
  (distinct patients, non-missing values, per-patient top-2 contributions, …; patients at the
  extremes are skipped, as for any output without a min/max), exact margin evidence where the cells
  cannot vouch for a total, every rule of the ACRO preset and secondary suppression with margins;
  also split into its parts, and the margin evidence of all margins (its worst case),
* ACRO 1.0.x ``crosstab`` (count) and ``crosstab(aggfunc="mean")`` with suppression, run by the
  interpreter in ``$ACRO_PYTHON`` (or this one if it imports ``acro``) on the same rows, read from a
  Parquet file before timing. ACRO is not a project dependency; install it in a throw-away venv:
  ``python -m venv /tmp/acro-venv && /tmp/acro-venv/bin/pip install acro pyarrow``.
  Without it the ACRO part is skipped and says so.

Reference (DESIGN.md, ACRO 1.0.2, 2-core machine): count 2.1–4.2 s; mean with NK + p % +
suppression 5.3–11.2 s; one DuckDB GROUP BY computing the same evidence 0.14–0.5 s.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from enclave.io.db import frame, run
from enclave.logic.disclosure import (
    ACRO,
    check_cells,
    check_table,
    compute_evidence,
    margin_evidence,
    suppress_frame,
)

ROWS = 1_000_000
REPEATS = 9
ACRO_REPEATS = 3

BUILD = """
CREATE TABLE big AS
SELECT pid, (pid % 20)::INTEGER AS r,
       least(9, floor(10 * pow(u, 1.6)))::INTEGER AS c,
       CASE WHEN {negatives} AND hash(i * 5) % 100 = 0 THEN -v ELSE v END AS v
FROM (SELECT i, (i // 10)::INTEGER AS pid, (hash(i * 3) % 1000000) / 1000000.0 AS u,
             round(exp((hash(i * 7) % 1000) / 250.0) * 10, 2) AS v
      FROM range({rows}) t(i))
"""
# a few small cells, so that primary and secondary suppression have work to do
THIN = """
DELETE FROM big WHERE (r = 19 AND c = 9) OR (r = 7 AND c = 8) OR (r = 3 AND c = 0);
INSERT INTO big SELECT 19 + 20 * k, 19, 9, 10.0 * k FROM range(4) t(k);       -- 4 patients
INSERT INTO big SELECT 7 + 20 * (k % 3), 7, 8, 5.0 + k FROM range(12) t(k);    -- 12 rows, 3 patients
INSERT INTO big SELECT 3 + 20 * k, 3, 0, 100.0 FROM range(9) t(k);             -- 9 patients
"""

# the evidence the rules need, written by hand as one statement each (the reference)
SAME_COUNT = "SELECT r, c, count(*) AS n, count(DISTINCT pid) AS p FROM big GROUP BY r, c"
SAME_MEAN = """
SELECT r, c, sum(n) AS n, count(*) AS p, sum(nv) AS nv, count(*) FILTER (WHERE nv > 0) AS vp,
       sum(s) AS s, sum(s) / sum(nv) AS m, max(a, 2) AS top, sum(a) AS total
FROM (SELECT r, c, pid, count(*) AS n, count(v) AS nv, sum(v) AS s, sum(abs(v)) AS a
      FROM big GROUP BY r, c, pid)
GROUP BY r, c
"""

ACRO_SCRIPT = """
import json, statistics, sys, time, logging
import pandas as pd
logging.disable(logging.CRITICAL)
import acro
df = pd.read_parquet(sys.argv[1])
repeats = int(sys.argv[2])
session = acro.ACRO(suppress=True)
from importlib.metadata import version
out = {"version": version("acro")}
for label, kw in [("count", {}), ("mean", {"values": df.v, "aggfunc": "mean"})]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.crosstab(df.r, df.c, margins=True, **kw)
        times.append(time.perf_counter() - t0)
    out[label] = statistics.median(times)
print("ACRO-RESULT " + json.dumps(out))
"""


def median_s(fn, repeats: int = REPEATS) -> float:
    """Median seconds of ``repeats`` runs of ``fn`` (bench_research.py uses it too)."""
    return interleaved_medians({"fn": fn}, repeats)["fn"]


def interleaved_medians(jobs: dict, repeats: int = REPEATS) -> dict[str, float]:
    """Median seconds of each job, run in rounds (every job once per round), so that a change of
    machine load during the run weighs on every job alike and the ratios stay fair."""
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for k, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def acro_python() -> str | None:
    if os.environ.get("ACRO_PYTHON"):
        return os.environ["ACRO_PYTHON"]
    try:
        import acro  # noqa: F401
        return sys.executable
    except ImportError:
        default = Path("/tmp/acro-venv/bin/python")
        return str(default) if default.exists() else None


def run_acro(con: duckdb.DuckDBPyConnection) -> dict | None:
    python = acro_python()
    if python is None:
        print("ACRO: not installed (set ACRO_PYTHON or see the module docstring) — ACRO part skipped")
        return None
    tmp = Path(tempfile.mkdtemp(prefix="bench-acro-"))
    try:
        run(con, f"COPY (SELECT r, c, v FROM big) TO '{tmp / 'big.parquet'}' (FORMAT parquet)")
        (tmp / "acro_bench.py").write_text(ACRO_SCRIPT)
        proc = subprocess.run([python, str(tmp / "acro_bench.py"), str(tmp / "big.parquet"),
                               str(ACRO_REPEATS)], capture_output=True, text=True, cwd=tmp,
                              check=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for line in proc.stdout.splitlines():
        if line.startswith("ACRO-RESULT "):
            return json.loads(line.removeprefix("ACRO-RESULT "))
    print(f"ACRO: failed to run (exit {proc.returncode}) — ACRO part skipped")
    print(proc.stderr[-2000:])
    return None


def main() -> None:
    con = duckdb.connect()
    negatives = "--negatives" in sys.argv
    run(con, BUILD.format(negatives=str(negatives).upper(), rows=ROWS))
    for statement in THIN.split(";"):
        code = "\n".join(ln.split("--")[0] for ln in statement.splitlines())
        if code.strip():
            run(con, code)
    n_rows = frame(con, "SELECT count(*) AS n FROM big")["n"][0]
    n_cells = frame(con, "SELECT count(*) AS n FROM (SELECT DISTINCT r, c FROM big)")["n"][0]
    print(f"negative values: {'1 %' if negatives else 'none'}")
    print(f"table: {n_rows:,} rows, {n_cells} cells (20 × 10), 100,000 patients; "
          f"DuckDB threads {frame(con, 'SELECT current_setting(' + repr('threads') + ') AS t')['t'][0]}")

    def ours(stat: str, value: str | None):
        return check_table(con, "big", "pid", ["r", "c"], stat, ACRO, value=value)

    ev_count = compute_evidence(con, "big", "pid", ["r", "c"], None, complete=True,
                                extremes=False)
    ev_mean = compute_evidence(con, "big", "pid", ["r", "c"], "v", complete=True,
                                extremes=False)
    jobs = {
        "bare GROUP BY count+mean": (
            lambda: frame(con, "SELECT r, c, count(*) AS n, avg(v) AS m FROM big GROUP BY r, c")),
        "GROUP BY + count(DISTINCT patient)": (lambda: frame(
            con, "SELECT r, c, count(*) AS n, avg(v) AS m, count(DISTINCT pid) AS p "
                 "FROM big GROUP BY r, c")),
        "same evidence by hand, count": (lambda: frame(con, SAME_COUNT)),
        "same evidence by hand, mean": (lambda: frame(con, SAME_MEAN)),
        "ours count: evidence": (
            lambda: compute_evidence(con, "big", "pid", ["r", "c"], None, complete=True,
                                extremes=False)),
        "margin evidence, all margins (worst case)": (
            lambda: margin_evidence(con, "big", "pid", "r", "c")),
        "ours count: rules+suppression": (
            lambda: suppress_frame(check_cells(ev_count, "count", ACRO, ["r", "c"]), "r", "c")),
        "ours count: total": (lambda: ours("count", None)),
        "ours mean: evidence": (
            lambda: compute_evidence(con, "big", "pid", ["r", "c"], "v", complete=True,
                                extremes=False)),
        "ours mean: rules+suppression": (
            lambda: suppress_frame(check_cells(ev_mean, "mean", ACRO, ["r", "c"]), "r", "c")),
        "ours mean: total": (lambda: ours("mean", "v")),
    }
    t = interleaved_medians(jobs)
    for stat, value in (("count", None), ("mean", "v")):
        cells = ours(stat, value).cells
        counts = cells.group_by("outcome").len().sort("outcome").rows()
        sec = cells.filter(cells["reasons"].list.join(" ").str.contains("secondary")).height
        print(f"{stat}: outcomes {counts}, of which secondary {sec}")
    acro = run_acro(con)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nmedians of {REPEATS} runs (ACRO: {ACRO_REPEATS}); load average {load} on "
          f"{os.cpu_count()} cores:")
    for k, v in t.items():
        print(f"  {k:<38} {v * 1000:9.1f} ms")
    bare = t["bare GROUP BY count+mean"]
    for stat in ("count", "mean"):
        ours_t = t[f"ours {stat}: total"]
        same = t[f"same evidence by hand, {stat}"]
        line = (f"  {stat}: ours / same evidence by hand = {ours_t / same:4.2f}× (target ≤ 1.5×); "
                f"ours / bare count+mean GROUP BY = {ours_t / bare:5.1f}×")
        if acro:
            line += (f"; ACRO {acro['version']} {acro[stat] * 1000:.1f} ms, "
                     f"ACRO / ours = {acro[stat] / ours_t:5.1f}× (target ≥ 20×)")
        print(line)
    if acro is None:
        print("  ACRO could not be measured in this run.")


if __name__ == "__main__":
    main()
