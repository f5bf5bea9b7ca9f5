"""Benchmark: ingest of a >=10M-row GB18030 hospital CSV set vs DuckDB's own read_csv of the same rows.

    python tests/benchmarks/bench_ingest_gb18030.py [--patients 900000] [--repeats 3] [--work DIR]

Generates one demo hospital in the GB18030 / pinyin / D8 dialect (``enclave demo generate`` with one
hospital), writes a UTF-8 copy of every file, then measures in the same run:

* reference: DuckDB ``CREATE TABLE ... AS SELECT * FROM read_csv(file_utf8)`` for every file into a
  fresh database file (type auto-detection, ``null_padding`` so the planted truncated line is read),
* ours: ``enclave ingest`` of the GB18030 files into a fresh enclave home (decode, parse, normalize,
  validate, link, map codes, convert units, write OMOP + lineage + rejects, one transaction).

Prints the row count, the medians and the ratio ours / reference (target <= 3).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb


def count_rows(folder: Path) -> int:
    total = 0
    for f in folder.glob("*.csv"):
        with open(f, "rb") as fh:
            total += sum(1 for _ in fh) - 1
    return total


def utf8_copy(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.csv"):
        (dst / f.name).write_bytes(f.read_bytes().decode("gb18030").encode("utf-8"))


def duckdb_reference(folder: Path, work: Path) -> float:
    db = work / "reference.duckdb"
    if db.exists():
        db.unlink()
    con = duckdb.connect(str(db))
    start = time.perf_counter()
    for i, f in enumerate(sorted(folder.glob("*.csv"))):
        con.execute(
            f"CREATE TABLE t{i} AS SELECT * FROM read_csv('{f}', header = true, null_padding = true)"
        ).fetchall()
    con.execute("CHECKPOINT").fetchall()
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


def ours(folder: Path, work: Path) -> float:
    from enclave.core.settings import load_settings
    from enclave.io.ingest.pipeline import ingest_path

    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    settings = load_settings(home)
    start = time.perf_counter()
    reports = ingest_path(settings, folder, "h1", progress=False)
    elapsed = time.perf_counter() - start
    assert all(r.read == r.loaded + r.rejected_total + r.merged_duplicates for r in reports)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=900_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temp dir)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    extracts = work / "extracts"
    if not (extracts / "h1").exists():
        from enclave.io.demo.generate import generate

        t = time.perf_counter()
        generate(extracts, patients=args.patients, hospitals=1, seed=7, progress=False)
        print(f"generated {args.patients:,} persons in {time.perf_counter() - t:.1f} s")
    gb = extracts / "h1"
    utf = work / "utf8"
    if not utf.exists():
        utf8_copy(gb, utf)
    rows = count_rows(gb)
    size = sum(f.stat().st_size for f in gb.glob("*.csv"))
    print(f"rows: {rows:,} in {len(list(gb.glob('*.csv')))} GB18030 files ({size / 1e6:,.0f} MB)")
    ref, mine = [], []
    for i in range(args.repeats):
        ref.append(duckdb_reference(utf, work))
        mine.append(ours(gb, work))
        print(f"run {i + 1}: duckdb read_csv {ref[-1]:.2f} s, enclave ingest {mine[-1]:.2f} s")
    r, m = statistics.median(ref), statistics.median(mine)
    print(f"median duckdb read_csv (UTF-8) : {r:.2f} s  ({rows / r / 1e6:.2f} M rows/s)")
    print(f"median enclave ingest (GB18030): {m:.2f} s  ({rows / m / 1e6:.2f} M rows/s)")
    print(f"ratio ours / reference: {m / r:.2f} (target <= 3)")


if __name__ == "__main__":
    main()
