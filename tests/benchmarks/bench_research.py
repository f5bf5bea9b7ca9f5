"""Benchmark of the researcher's call: ``enclave.research.crosstab`` / ``pivot_table`` on 1M rows ×
200 cells against ACRO 1.0.x ``crosstab`` with suppression, side by side in the same run.

Run: ``python tests/benchmarks/bench_research.py`` (a few minutes on 2 cores). Same table as
``bench_disclosure.py`` (1M rows, 100k patients, 20 × 10 cells, a few small cells), written as a
release under a temporary home and opened through ``workspace()``, so what is timed is exactly
what a researcher's notebook runs: ibis compilation, SQL validation and patient lineage, the
disclosure evidence, rules and secondary suppression, the record, and the local differencing
ledger (the new output's profile against every earlier output of the session — the ledger grows
with every call, as it would in a session).

ACRO runs in its own interpreter (``$ACRO_PYTHON``, or ``/tmp/acro-venv/bin/python``: ``python -m
venv /tmp/acro-venv && /tmp/acro-venv/bin/pip install acro pyarrow``), reading the same rows from
a Parquet file once, then answering one ``crosstab(..., margins=True)`` per request on a pipe.
Rounds are interleaved — ours count, ACRO count, ours mean, ACRO mean, ours pivot mean, in every
round, after one warm-up round — so a change of machine load weighs on both sides alike.

Prints per job the median and p95 of ``REPEATS`` rounds, ACRO / ours per statistic (target ≥ 10×,
longer-term 20×), and the split of our time (``Output.timings``: compile, evaluate, ledger,
record; and of ``evaluate``: the SQL checks, the per-patient table that the evidence and the
ledger share, and evidence + rules + suppression from it, measured apart).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import duckdb

from enclave.core.crypto import file_sha256
from enclave.core.publish import write_manifest
from enclave.io.db import frame, run
from tests.benchmarks.bench_disclosure import BUILD, ROWS, THIN, acro_python

REPEATS = 15

ACRO_SERVER = """
import json, sys, time, logging
import pandas as pd
logging.disable(logging.CRITICAL)
import acro
from importlib.metadata import version
df = pd.read_parquet(sys.argv[1])
session = acro.ACRO(suppress=True)
print(json.dumps({"version": version("acro")}), flush=True)
for line in sys.stdin:
    kw = {} if line.strip() == "count" else {"values": df.v, "aggfunc": "mean"}
    t0 = time.perf_counter()
    session.crosstab(df.r, df.c, margins=True, **kw)
    print(json.dumps({"s": time.perf_counter() - t0}), flush=True)
"""


def make_home(root: Path) -> Path:
    home = root / "home"
    d = home / "releases" / "desensitized" / "bench" / "v1"
    d.mkdir(parents=True)
    con = duckdb.connect(str(d / "release.duckdb"))
    run(con, BUILD.format(rows=ROWS, negatives="FALSE"))
    for statement in THIN.split(";"):
        code = "\n".join(ln.split("--")[0] for ln in statement.splitlines())
        if code.strip():
            run(con, code)
    run(con, "CREATE TABLE visit AS SELECT pid AS person_id, r, c, v FROM big")
    run(con, f"COPY (SELECT r, c, v FROM big) TO '{root / 'big.parquet'}' (FORMAT parquet)")
    run(con, "DROP TABLE big")
    run(con, "CREATE TABLE person AS SELECT DISTINCT person_id FROM visit")
    run(con, "CHECKPOINT")
    con.close()
    write_manifest(d / "manifest.json", {
        "release": "bench/v1", "project": "bench", "tier": "desensitized", "version": 1,
        "files": {"release.duckdb": {"sha256": file_sha256(d / "release.duckdb"),
                                     "bytes": (d / "release.duckdb").stat().st_size}}})
    return home


class Acro:
    """ACRO in its own interpreter, one crosstab per request."""

    def __init__(self, python: str, parquet: Path, folder: Path):
        script = folder / "acro_server.py"
        script.write_text(ACRO_SERVER)
        self.proc = subprocess.Popen([python, str(script), str(parquet)], cwd=folder, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.version = json.loads(self.proc.stdout.readline())["version"]

    def __call__(self, stat: str) -> float:
        self.proc.stdin.write(stat + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["s"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HOME"] = str(Path(tmp) / "user")  # the local ledger goes under ~/.enclave
        home = make_home(Path(tmp))
        from enclave.io.outputs.membership import materialize
        from enclave.io.outputs.sql import check_output_query
        from enclave.logic.disclosure import ACRO, check_table
        from enclave.research import crosstab, pivot_table, workspace

        ws = workspace(home)
        t = ws.table("visit")
        con = ws.backend().con
        n = frame(con, "SELECT count(*) AS n, count(DISTINCT (r, c)) AS cells FROM visit")
        python = acro_python()
        acro = Acro(python, Path(tmp) / "big.parquet", Path(tmp)) if python else None
        print(f"table: {n['n'][0]:,} rows, {n['cells'][0]} cells, 100,000 patients; "
              f"{REPEATS} interleaved rounds after one warm-up; ACRO "
              f"{acro.version if acro else 'not installed: its part is skipped'}")

        ours = {"count": lambda: crosstab(t, "r", "c"),
                "mean": lambda: crosstab(t, "r", "c", values="v", aggfunc="mean"),
                "pivot mean": lambda: pivot_table(t, ["r", "c"], "v", "mean")}
        times: dict[str, list[float]] = {f"ours {k}": [] for k in ours}
        times |= {f"ACRO {k}": [] for k in ("count", "mean")} if acro else {}
        laps: dict[str, list[dict]] = {k: [] for k in ours}
        for rnd in range(REPEATS + 1):
            for k, fn in ours.items():
                t0 = time.perf_counter()
                out = fn()
                took = time.perf_counter() - t0
                if rnd:
                    times[f"ours {k}"].append(took)
                    laps[k].append(out.timings)
                if acro and k in ("count", "mean"):
                    took = acro(k)
                    if rnd:
                        times[f"ACRO {k}"].append(took)
        # the parts of evaluate, measured apart on the same compiled SQL
        sql = crosstab(t, "r", "c").record["sql"]
        sql_mean = crosstab(t, "r", "c", values="v", aggfunc="mean").record["sql"]
        parts: dict[str, list[float]] = {}

        def timed(label, fn):
            t0 = time.perf_counter()
            out = fn()
            parts.setdefault(label, []).append(time.perf_counter() - t0)
            return out

        for _ in range(REPEATS):
            timed("SQL checks (validation, lineage)",
                  lambda: check_output_query(con, sql, "person_id", patients=False))
            for label, q, value, stat in (("count", sql, None, "count"),
                                          ("mean", sql_mean, "v", "mean")):
                table = timed(f"per-patient table, {label}",
                              lambda q=q, value=value: materialize(con, q, "person_id",
                                                                   ["r", "c"], value))
                timed(f"evidence+rules+suppression, {label}",
                      lambda table=table, value=value, stat=stat: check_table(
                          con, table, "_person", ["r", "c"], stat, ACRO, value=value,
                          per_patient=True))
                con.execute(f"DROP TABLE {table}").fetchall()
        if acro:
            acro.close()
        ws.close()

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average {load} on {os.cpu_count()} cores")
    print(f"  {'job':<28} {'median':>9} {'p95':>9}")
    for k, v in times.items():
        print(f"  {k:<28} {statistics.median(v) * 1000:8.1f}ms {p95(v) * 1000:8.1f}ms")
    if acro:
        for k in ("count", "mean"):
            ratio = statistics.median(times[f"ACRO {k}"]) / statistics.median(times[f"ours {k}"])
            print(f"  ACRO / ours, crosstab {k}: {ratio:5.1f}×  (target ≥ 10×; goal 20×)")
    print("\nsplit of our time (medians):")
    for k, rows in laps.items():
        split = ", ".join(f"{p} {statistics.median(r[p] for r in rows) * 1000:.1f} ms"
                          for p in rows[0])
        print(f"  {k:<12} {split}")
    for label, v in parts.items():
        print(f"  evaluate part: {label:<36} {statistics.median(v) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
