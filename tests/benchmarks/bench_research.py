"""Benchmark of the researcher API: ``crosstab`` through ``enclave.research`` on 1M rows × 200 cells.

Run: ``python tests/benchmarks/bench_research.py``. Same table as ``bench_disclosure.py`` (1M rows,
100k patients, 20 × 10 cells, a few small cells), written as a release under a temporary home and
opened through ``workspace()``. Prints the median of REPEATS runs, in the same process, of:

* a bare DuckDB ``GROUP BY`` computing count and mean (the floor),
* :func:`enclave.disclosure.check_table` on the table (evidence, rules, secondary suppression),
* ``crosstab`` (count) and ``crosstab(values=, aggfunc="mean")`` through the API: ibis
  compilation, the same check over the compiled SQL as a subquery, the record, and the local
  differencing ledger (who is in each published cell: a DISTINCT over the rows, a join with the
  earlier outputs, and an insert) — the ledger grows with every run, as it would in a session,
* the same two outputs with the ledger's share measured apart.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import duckdb

from enclave.crypto import file_sha256
from enclave.db import frame, run
from enclave.disclosure import ACRO, check_table
from enclave.release.manifest import write_manifest
from tests.benchmarks.bench_disclosure import BUILD, ROWS, THIN, median_s

REPEATS = 5


def make_home(root: Path) -> Path:
    home = root / "home"
    d = home / "releases" / "desensitized" / "bench" / "v1"
    d.mkdir(parents=True)
    con = duckdb.connect(str(d / "release.duckdb"))
    run(con, BUILD.format(rows=ROWS, negatives="FALSE"))
    con.execute(THIN)
    run(con, "CREATE TABLE visit AS SELECT pid AS person_id, r, c, v FROM big")
    run(con, "DROP TABLE big")
    run(con, "CREATE TABLE person AS SELECT DISTINCT person_id FROM visit")
    run(con, "CHECKPOINT")
    con.close()
    write_manifest(d / "manifest.json", {
        "release": "bench/v1", "project": "bench", "tier": "desensitized", "version": 1,
        "files": {"release.duckdb": {"sha256": file_sha256(d / "release.duckdb"),
                                     "bytes": (d / "release.duckdb").stat().st_size}}})
    return home


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HOME"] = str(Path(tmp) / "user")  # the local ledger goes under ~/.enclave
        home = make_home(Path(tmp))
        from enclave.research import crosstab, workspace
        from enclave.outputs.evaluation import evaluate

        ws = workspace(home)
        t = ws.table("visit")
        con = ws.backend().con
        n = frame(con, "SELECT count(*) AS n, count(DISTINCT (r, c)) AS cells FROM visit")
        print(f"table: {n['n'][0]:,} rows, {n['cells'][0]} cells; median of {REPEATS} runs")

        bare = median_s(lambda: frame(con, "SELECT r, c, count(*), avg(v) FROM visit "
                                           "GROUP BY r, c"), REPEATS)
        core_count = median_s(lambda: check_table(con, "visit", "person_id", ["r", "c"], "count",
                                                  ACRO), REPEATS)
        core_mean = median_s(lambda: check_table(con, "visit", "person_id", ["r", "c"], "mean",
                                                 ACRO, value="v"), REPEATS)
        api_count = median_s(lambda: crosstab(t, "r", "c"), REPEATS)
        api_mean = median_s(lambda: crosstab(t, "r", "c", values="v", aggfunc="mean"), REPEATS)
        out = crosstab(t, "r", "c")
        sql, spec = out.record["sql"], out.record["spec"]

        def no_ledger():
            evaluate(con, sql, spec, ACRO)

        def ledger_only():
            ev = evaluate(con, sql, spec, ACRO)
            t0 = time.perf_counter()
            ev.members()
            return time.perf_counter() - t0

        eval_count = median_s(no_ledger, REPEATS)
        members = sorted(ledger_only() for _ in range(REPEATS))[REPEATS // 2]
        print(f"{'bare GROUP BY (count, mean)':42s} {bare:8.3f} s")
        print(f"{'check_table count':42s} {core_count:8.3f} s  ({core_count / bare:5.1f}x bare)")
        print(f"{'check_table mean':42s} {core_mean:8.3f} s  ({core_mean / bare:5.1f}x bare)")
        print(f"{'research.crosstab count (all in)':42s} {api_count:8.3f} s  "
              f"({api_count / bare:5.1f}x bare, {api_count / core_count:4.2f}x check_table)")
        print(f"{'research.crosstab mean (all in)':42s} {api_mean:8.3f} s  "
              f"({api_mean / bare:5.1f}x bare, {api_mean / core_mean:4.2f}x check_table)")
        print(f"{'  of which: evaluate (no ledger), count':42s} {eval_count:8.3f} s")
        print(f"{'  of which: ledger members (DISTINCT)':42s} {members:8.3f} s")
        ws.close()


if __name__ == "__main__":
    main()
