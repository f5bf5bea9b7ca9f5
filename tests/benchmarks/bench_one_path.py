"""Benchmark of the computations that had two implementations (issue 22): the code before against
the code now, in the same run, interleaved.

Run: ``python tests/benchmarks/bench_one_path.py --old /path/to/checkout-before`` (the old
checkout's ``enclave`` package; default ``/work/base-s11``). Options: ``--rows`` (default 1M event
rows), ``--repeats`` (default 5), ``--only evidence,cube,risk,hmac``.

Two worker processes, one per checkout (``PYTHONPATH`` set to it), generate the same data from the
same seed and run each job when the driver asks; the driver alternates old and new, job by job and
repeat by repeat, so both see the same machine load. Each job calls the public API that both
checkouts have (same arguments):

* ``evidence count`` / ``mean`` / ``mean+bounds`` / ``min`` / ``class``: the disclosure evidence
  (:func:`enclave.logic.disclosure.compute_evidence`) of a region × year table (200 cells) over ``--rows``
  rows on a DuckDB connection: counts; a mean (top-2 contributions); a mean with the class
  disclosure bounds; a min (the extremes evidence); a mean with a sensitive column;
* ``cube patients`` / ``cube mean``: an indicator cube (:func:`enclave.io.indicators.check_cube`),
  region × year × sex with all three margins (8 grouping sets), patients with cell keys, and a mean;
* ``risk``: the release risk (:func:`enclave.logic.deid.sets.measure_risk`) of ``--rows``/10 released
  patients against a population twice that size (DuckDB);
* ``hmac pseudonyms`` / ``hmac link keys``: ``--rows``/2 pseudonyms
  (:func:`enclave.io.release.keys.pseudonyms`) and link keys
  (:func:`enclave.io.ingest.linkage.link_keys`).

Prints, per job, the median seconds of old and new and the ratio new / old (acceptance: at most
1.10), and whether the two gave the same result (a digest of the result frame; floats rounded to
9 significant digits, as threads add in different orders).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
NEW_ROOT = HERE.parents[2]
GROUPS = {
    "evidence": ["evidence count", "evidence mean", "evidence mean+bounds", "evidence min",
                 "evidence class"],
    "cube": ["cube patients", "cube mean"],
    "risk": ["risk"],
    "hmac": ["hmac pseudonyms", "hmac link keys"],
}


# --- worker (runs inside one checkout) --------------------------------------------------------
def _data(rows: int):
    import duckdb
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(22)
    n_pat = max(rows // 10, 10)
    events = pl.DataFrame({
        "person_id": rng.integers(0, n_pat, rows),
        "region": rng.integers(0, 40, rows).astype(str),
        "year": rng.integers(2019, 2024, rows),
        "sex": rng.choice(["F", "M"], rows),
        "value": pl.Series(rng.normal(50, 30, rows)).round(2).scatter(
            np.flatnonzero(rng.random(rows) < 0.05), None),
        "dx": rng.choice([f"D{i}" for i in range(12)], rows),
    })
    con = duckdb.connect()
    con.register("_events", events.to_arrow())
    con.sql("CREATE TABLE big AS SELECT * FROM _events")
    con.sql("CREATE TABLE rel AS SELECT person_id, region, year::VARCHAR AS year, sex, value "
            "FROM big")
    con.sql(f"CREATE TABLE rk AS SELECT range AS person_id, hash(range) % 4294967296 AS rkey "
            f"FROM range({n_pat})")
    released = pl.DataFrame({
        "person_id": np.arange(n_pat),
        "age": (rng.integers(0, 20, n_pat) * 5).astype(np.int32),
        "sex": rng.choice(["F", "M"], n_pat),
        "region": rng.choice([f"{i:06d}" for i in range(30)], n_pat),
    })
    others = released.with_columns(pl.col("person_id") + n_pat)
    population = pl.concat([released, others])
    ids = pl.Series("id", rng.permutation(rows // 2) + 10**9)
    return con, events, released, population, ids


def _jobs(rows: int) -> dict:
    import polars as pl

    from enclave.io.engine import duckdb_engine
    from enclave.io.indicators.cube import check_cube
    from enclave.io.ingest.linkage import link_keys
    from enclave.io.release.keys import pseudonyms
    from enclave.logic.deid.sets import measure_risk
    from enclave.logic.disclosure import ACRO, compute_evidence

    con, _, released, population, ids = _data(rows)
    engine = duckdb_engine()
    rel, pop = engine.put("released", released), engine.put("population", population)
    key = bytes(range(32))
    axes = ["region", "year", "sex"]
    g = ["region", "year"]
    return {
        "evidence count": lambda: compute_evidence(con, "big", "person_id", g, complete=True),
        "evidence mean": lambda: compute_evidence(con, "big", "person_id", g, "value",
                                                  complete=True, extremes=False),
        "evidence mean+bounds": lambda: compute_evidence(
            con, "big", "person_id", g, "value", complete=True, extremes=False, bounds=True),
        "evidence min": lambda: compute_evidence(con, "big", "person_id", g, "value",
                                                 complete=True),
        "evidence class": lambda: compute_evidence(con, "big", "person_id", g, "value", "dx",
                                                   complete=True, extremes=False, bounds=True),
        "cube patients": lambda: check_cube(con, "rel", axes, axes, "patients", ACRO,
                                            record_keys="rk").cells,
        "cube mean": lambda: check_cube(con, "rel", axes, axes, "mean", ACRO,
                                        value="value").cells,
        "risk": lambda: pl.DataFrame([measure_risk(engine, rel, ["age", "sex", "region"],
                                                   "person_id", population=pop).__repr__()]),
        "hmac pseudonyms": lambda: pseudonyms(key, "person", ids),
        "hmac link keys": lambda: link_keys(key, ids.cast(pl.String)).to_frame(),
    }


def _digest(out) -> str:
    import polars as pl

    if not isinstance(out, pl.DataFrame):
        out = pl.DataFrame({"x": [repr(out)]})
    keys = [c for c, t in out.schema.items() if not t.is_float()]
    out = out.with_columns(pl.col(c).round_sig_figs(9) for c, t in out.schema.items()
                           if t.is_float())
    out = out.sort(keys, nulls_last=True) if keys else out
    return hashlib.sha256(out.write_csv().encode()).hexdigest()[:16]


def worker(rows: int) -> None:
    jobs = _jobs(rows)
    print(json.dumps({"ready": sorted(jobs)}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        t0 = time.perf_counter()
        out = jobs[name]()
        took = time.perf_counter() - t0
        print(json.dumps({"job": name, "s": took, "digest": _digest(out)}), flush=True)


# --- driver ---------------------------------------------------------------------------------
def _start(root: Path, rows: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(root))
    p = subprocess.Popen([sys.executable, str(HERE), "--worker", "--rows", str(rows)], cwd=root,
                         env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    json.loads(p.stdout.readline())
    return p


def _ask(p: subprocess.Popen, job: str) -> dict:
    p.stdin.write(job + "\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, default=Path("/work/base-s11"),
                    help="checkout of the code before (its enclave package is imported)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default=",".join(GROUPS), help="evidence,cube,risk,hmac")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.rows)
        return
    jobs = [j for grp in args.only.split(",") for j in GROUPS[grp.strip()]]
    sides = {"old": _start(args.old.resolve(), args.rows), "new": _start(NEW_ROOT, args.rows)}
    times = {(s, j): [] for s in sides for j in jobs}
    digests = {}
    try:
        for j in jobs:  # one warm-up run each, not timed
            for s, p in sides.items():
                digests[(s, j)] = _ask(p, j)["digest"]
        for r in range(args.repeats):
            for j in jobs:
                order = list(sides) if r % 2 == 0 else list(sides)[::-1]
                for s in order:
                    times[(s, j)].append(_ask(sides[s], j)["s"])
    finally:
        for p in sides.values():
            p.stdin.close()
            p.wait()
    print(f"{args.rows:,} rows, {args.repeats} repeats, medians in seconds "
          f"(old: {args.old}, new: {NEW_ROOT})")
    print(f"{'job':<22}{'old':>9}{'new':>9}{'new/old':>9}  same result")
    for j in jobs:
        old, new = (statistics.median(times[(s, j)]) for s in ("old", "new"))
        same = "yes" if digests[("old", j)] == digests[("new", j)] else "NO"
        print(f"{j:<22}{old:>9.3f}{new:>9.3f}{new / old:>9.2f}  {same}")


if __name__ == "__main__":
    main()
