"""Benchmark of the set-based work on both engines: DuckDB (embedded) and Spark (local mode).

Run: ``python tests/benchmarks/bench_engines.py`` (10M event rows; ``--rows 1000000`` for a smoke
run; ``--engines duckdb`` to skip Spark). The data are generated once and written to Parquet, which
both engines read (DuckDB through a view, Spark as a DataFrame), so each engine pays its own scan:

* ``events``: ``--rows`` rows (person_id over rows/10 patients, region of 40, year of 5, sex, age
  band of 10, a value with 5 % missing), the input of outputs and indicators;
* ``patients`` (rows/10, the released patient table) and ``population`` (rows/5 patients: the
  released ones and as many others), for the release risk;
* ``person`` / ``location`` / ``condition_occurrence`` (rows/10, 2,000, rows) for the release
  builder's one-row-per-patient table.

Parts, each the same ibis expression on both engines (:mod:`enclave.logic.disclosure.evidence`,
:mod:`enclave.io.indicators.cells`, :mod:`enclave.logic.deid.sets`):

* ``evidence count`` / ``evidence mean``: the disclosure evidence of a region × year table (200
  cells), count and mean (with the per-patient top-2 contributions); on DuckDB also
  :func:`enclave.logic.disclosure.compute_evidence` (the same expression compiled once to a statement on
  a DuckDB connection, as outputs and the airlock run it),
* ``cube``: an indicator cube, patients by region × year × sex with all three margins (8 grouping
  sets): the relation computed once, then evidence + cell keys + rules + secondary suppression +
  rounding (as ``enclave indicators build`` does),
* ``risk``: equivalence classes of the released patients and prosecutor / journalist / marketer risk
  against the population,
* ``patient table``: the release builder's one row per patient (age, sex, region, main condition),
* ``ingest checks`` / ``ingest map + units``: the loader's row-level transforms
  (:mod:`enclave.io.ingest.transforms`) over ``--rows`` staged laboratory results: unknown patient /
  visit and invalid code checks and the exact-duplicate merge, then the concept mapping and unit
  conversion; summed per outcome (rows, sum of batch positions, sum of converted values).

``--indicators HOME:P/vN`` instead builds the indicator table of a release on both engines and
says whether the published tables are identical (a 3,000-patient demo release: yes, 82,728 cells;
DuckDB 6.7 s, Spark local[2] 263 s on a loaded 2-core machine).

Prints the median of ``--repeats`` runs per part and engine (Spark's first, warm-up run of each
part excluded), the ratio Spark / DuckDB, and whether the two engines' results agree row for row
(counts exactly, float sums within 1e-9 relative: the engines add in different orders). Spark
local mode on 2 cores is expected to be slower than DuckDB; the point is that it runs and agrees.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from enclave.core.settings import EngineSettings
from enclave.io.engine import duckdb_engine, spark_engine
from enclave.io.indicators.cube import check_cube_on
from enclave.io.ingest import transforms
from enclave.logic.codes import units as unit_codes
from enclave.logic.deid.sets import class_sizes_expr, measure_risk, patient_expr
from enclave.logic.disclosure import ACRO, compute_evidence, evidence_frame

QIS = ["age_band", "sex", "region"]


def generate(rows: int, folder: Path, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    patients = max(rows // 10, 10)
    regions = [f"{110000 + 10000 * i}" for i in range(40)]
    bands = [f"{10 * i}-{10 * i + 9}" for i in range(10)]
    value = rng.gamma(2.0, 50.0, rows).round(2)
    pl.DataFrame({
        "person_id": rng.integers(0, patients, rows),
        "region": pl.Series(rng.choice(regions, rows)),
        "year": pl.Series(rng.choice(["2019", "2020", "2021", "2022", "2023"], rows)),
        "sex": pl.Series(rng.choice(["F", "M"], rows)),
        "age_band": pl.Series(rng.choice(bands, rows)),
        "value": pl.Series(value).scatter(np.flatnonzero(rng.random(rows) < 0.05), None),
    }).write_parquet(folder / "events.parquet", row_group_size=1_000_000)
    ids = np.arange(patients)
    pl.DataFrame({"person_id": ids,
                  "rkey": rng.integers(0, 1 << 32, patients, dtype=np.int64)}
                 ).write_parquet(folder / "record_keys.parquet")
    released = pl.DataFrame({
        "person_id": ids, "age_band": rng.choice(bands, patients).tolist(),
        "sex": rng.choice(["F", "M"], patients).tolist(),
        "region": rng.choice(regions, patients).tolist()})
    released.write_parquet(folder / "patients.parquet")
    others = released.with_columns(pl.col("person_id") + patients,
                                   pl.Series("sex", rng.choice(["F", "M"], patients)))
    pl.concat([released, others]).write_parquet(folder / "population.parquet")
    pl.DataFrame({
        "person_id": ids, "year_of_birth": rng.integers(1920, 2024, patients),
        "gender_concept_id": rng.choice([8507, 8532, 0], patients, p=[.49, .5, .01]),
        "location_id": rng.integers(0, 2000, patients)}).write_parquet(folder / "person.parquet")
    pl.DataFrame({"location_id": np.arange(2000),
                  "county": [f"{110101 + i}" if i % 50 else None for i in range(2000)]}
                 ).write_parquet(folder / "location.parquet")
    pl.DataFrame({"person_id": rng.integers(0, patients, rows),
                  "condition_concept_id": rng.integers(1, 60, rows) * 1000}
                 ).write_parquet(folder / "condition_occurrence.parquet")
    staged_measurements(rows, patients, folder, rng)


def staged_measurements(rows: int, patients: int, folder: Path, rng) -> None:
    """A staged batch of laboratory results as the loader sees it after parsing: ``rows`` rows
    (1 % exact duplicates, about 1 % unknown patients and 1 % unknown visits, 1 % invalid codes,
    2 % units the analyte cannot be given in) and the lookups: the site's patients and visits,
    the invalid codes, the code map, the unit conversions and the UCUM units."""
    conv = unit_codes.conversion_table()
    loincs = sorted(set(conv["loinc"].to_list()))
    visits = rows // 3
    n = rows - rows // 100
    pid = rng.integers(0, patients + patients // 100, n)
    unit = rng.choice(np.array(conv["unit"].to_list() + ["g"], dtype=object), n,
                      p=[0.98 / conv.height] * conv.height + [0.02])
    frame = pl.DataFrame({
        "site_patient_id": pl.Series([f"p{i}" for i in pid]),
        "site_visit_id": pl.Series([f"v{i}" for i in rng.integers(0, visits + visits // 100, n)]),
        "code_system": "LOINC",
        "code": pl.Series(rng.choice(np.array(loincs + ["BAD-1"], dtype=object), n,
                                     p=[0.99 / len(loincs)] * len(loincs) + [0.01])),
        "date": pl.Series(rng.integers(18000, 20000, n)).cast(pl.Date),
        "unit": pl.Series(unit, dtype=pl.String),
        "value": rng.gamma(2.0, 3.0, n).round(2), "range_low": 3.9, "range_high": 6.1,
        "_row": np.arange(n) + 2, "_fid": 1,
    })
    frame = pl.concat([frame, frame.sample(rows - n, seed=1)])  # exact duplicates
    frame.with_row_index("_i").with_columns(
        pl.col("_i").cast(pl.Int64), pl.lit(None, pl.String).alias("_reject"),
        pl.lit(None, pl.String).alias("_reject_column"), pl.lit(False).alias("_dup"),
    ).write_parquet(folder / "staged.parquet", row_group_size=1_000_000)
    pl.DataFrame({"site_patient_id": [f"p{i}" for i in range(patients)],
                  "person_id": np.arange(patients)}).write_parquet(folder / "site_patients.parquet")
    pl.DataFrame({"site_visit_id": [f"v{i}" for i in range(visits)],
                  "visit_occurrence_id": np.arange(visits)}).write_parquet(folder / "site_visits.parquet")
    pl.DataFrame({"code_system": ["LOINC"], "code": ["BAD-1"], "_why": ["invalid_code"],
                  "_why_column": ["code"]}).write_parquet(folder / "code_checks.parquet")
    pl.DataFrame({"code_system": "LOINC", "code": loincs, "std_system": "LOINC", "std_code": loincs,
                  "_target": np.arange(len(loincs)) + 3000000,
                  "source_concept_id": np.arange(len(loincs)) + 3000000}
                 ).write_parquet(folder / "code_map.parquet")
    conv.write_parquet(folder / "conversions.parquet")
    pl.DataFrame({"concept_code": sorted(set(conv["unit"].to_list())),
                  "concept_id": np.arange(conv["unit"].n_unique()) + 8000}
                 ).write_parquet(folder / "ucum.parquet")


def load(engine, folder: Path) -> dict:
    return {p.stem: engine.read_parquet(p.stem, p) for p in sorted(folder.glob("*.parquet"))}


def parts(engine, t: dict) -> dict:
    ev = t["events"]
    return {
        "evidence count": lambda: evidence_frame(engine, ev, "person_id", ["region", "year"]),
        "evidence mean": lambda: evidence_frame(engine, ev, "person_id", ["region", "year"],
                                                "value", extremes=False),
        "cube": lambda: _cube(engine, t),
        "ingest checks": lambda: _ingest(engine, t, mapped=False),
        "ingest map + units": lambda: _ingest(engine, t, mapped=True),
        "risk": lambda: _risk(engine, t),
        "patient table": lambda: engine.to_polars(patient_expr(
            t["person"], t["location"], t["condition_occurrence"], 2026)),
    }


def _cube(engine, t: dict) -> pl.DataFrame:
    """As the indicator build does it: the cube's relation computed once (DuckDB: a temp table;
    Spark: a cached view), then evidence and cell keys of its 8 grouping sets."""
    ev = t["events"]
    rel = engine.materialize("_cube_rel", ev.select("person_id", "region", "year", "sex"))
    try:
        return check_cube_on(engine, rel, ["region", "year", "sex"], ["region", "year", "sex"],
                             "patients", ACRO, record_keys=t["record_keys"]).cells
    finally:
        engine.drop("_cube_rel")


def _ingest(engine, t: dict, mapped: bool) -> pl.DataFrame:
    """The loader's row-level transforms over the staged measurements: checks and duplicate merge
    (and concept mapping and unit conversion), summed per outcome so that the result is small:
    rows, the sum of their batch positions (which rows got which outcome) and of the values."""
    rows = transforms.check_events(t["staged"], t["site_patients"], t["site_visits"],
                                   t["code_checks"])
    keys = ["_reject", "_reject_column", "_dup"]
    if mapped:
        rows = transforms.convert_units(transforms.map_concepts(rows, t["code_map"]),
                                        t["conversions"], t["ucum"], unit_codes.UNIT_SYNONYMS)
        keys += ["target_concept_id", "unit_concept_id"]
    out = rows.group_by(keys).aggregate(rows=rows.count(), positions=rows._i.sum(),
                                        **({"values": rows.value_converted.sum()} if mapped else {}))
    return engine.to_polars(out)


def _risk(engine, t: dict) -> pl.DataFrame:
    r = measure_risk(engine, t["patients"], QIS, "person_id", population=t["population"])
    sizes = engine.to_polars(class_sizes_expr(t["patients"], QIS, "person_id"))
    return sizes.with_columns(pl.lit(r.prosecutor_max).alias("prosecutor_max"),
                              pl.lit(r.journalist_max).alias("journalist_max"),
                              pl.lit(r.marketer).alias("marketer"))


KEYS = {"evidence count": ["region", "year"], "evidence mean": ["region", "year"],
        "cube": ["region", "year", "sex"], "risk": QIS, "patient table": ["person_id"],
        "ingest checks": ["_reject", "_reject_column", "_dup"],
        "ingest map + units": ["_reject", "_reject_column", "_dup", "target_concept_id",
                               "unit_concept_id"]}


def agree(a: pl.DataFrame, b: pl.DataFrame, keys: list[str]) -> str:
    if a.columns != b.columns or a.height != b.height:
        return f"NO (shape {a.shape} vs {b.shape})"
    a, b = a.sort(keys, nulls_last=True), b.sort(keys, nulls_last=True)
    for col in a.columns:
        x, y = a[col], b[col]
        if x.dtype.is_float() or y.dtype.is_float():
            xs, ys = x.cast(pl.Float64).to_numpy(), y.cast(pl.Float64).to_numpy()
            if not (np.isnan(xs) == np.isnan(ys)).all() or not np.allclose(
                    np.nan_to_num(xs), np.nan_to_num(ys), rtol=1e-9, atol=0):
                return f"NO (column {col})"
        elif x.to_list() != y.to_list():
            return f"NO (column {col})"
    return f"yes ({a.height} rows)"


def indicator_builds(home: str, release: str) -> None:
    """``enclave indicators build`` of one release on each engine (published as two versions of
    that home's indicator table), timed, and whether the two tables are the same."""
    import dataclasses

    import duckdb

    from enclave.core.settings import load_settings
    from enclave.io.indicators.build import build_indicators

    base = load_settings(home)
    tables = {}
    for backend in ("duckdb", "pyspark"):
        s = dataclasses.replace(base, engine=dataclasses.replace(
            base.engine, backend=backend, spark_shuffle_partitions=4))
        started = time.perf_counter()
        manifest = build_indicators(s, release, skip_missing=True)
        took = time.perf_counter() - started
        path = s.releases_dir / "indicators" / f"v{manifest['version']}" / "indicators.duckdb"
        con = duckdb.connect(str(path), read_only=True)
        tables[backend] = pl.from_arrow(con.sql("SELECT * FROM indicators").to_arrow_table())
        con.close()
        print(f"indicator build on {backend}: {took:.1f} s, {tables[backend].height:,} cells "
              f"(published as {manifest['release']})")
    keys = [c for c in tables["duckdb"].columns if c not in ("value", "suppressed", "reason")]
    a, b = (t.sort(keys, nulls_last=True) for t in tables.values())
    print(f"indicator tables identical on both engines: {'yes' if a.equals(b) else 'NO'}")


def timed(fn) -> tuple[float, pl.DataFrame]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engines", default="duckdb,pyspark")
    ap.add_argument("--parts", default="evidence count,evidence mean,cube,risk,patient table,"
                                       "ingest checks,ingest map + units")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--indicators", metavar="HOME:RELEASE",
                    help="instead: build the indicator table of RELEASE (P/vN) in enclave HOME on "
                         "both engines and compare them (publishes two indicator versions there)")
    args = ap.parse_args()
    if args.indicators:
        home, _, release = args.indicators.rpartition(":")
        indicator_builds(home, release)
        return
    wanted = [p.strip() for p in args.parts.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    results: dict[str, dict[str, pl.DataFrame]] = {}
    medians: dict[str, dict[str, float]] = {}
    try:
        started = time.perf_counter()
        generate(args.rows, folder)
        print(f"{args.rows:,} event rows generated in {time.perf_counter() - started:.1f} s "
              f"({sum(p.stat().st_size for p in folder.iterdir()) / 1e6:.0f} MB of Parquet)")
        for name in args.engines.split(","):
            started = time.perf_counter()
            if name == "duckdb":
                engine = duckdb_engine()
            else:
                es = EngineSettings(spark_master=args.master, spark_shuffle_partitions=4,
                                    spark_driver_memory=args.driver_memory)
                engine = spark_engine(es, scratch=folder / "spark")
            print(f"{name}: engine up in {time.perf_counter() - started:.1f} s")
            try:
                tables = load(engine, folder)
                jobs = {k: v for k, v in parts(engine, tables).items() if k in wanted}
                if name == "duckdb" and "evidence count" in wanted:
                    con = engine.raw
                    jobs["evidence count (SQL fast path)"] = lambda con=con: compute_evidence(
                        con, "events", "person_id", ["region", "year"])
                    jobs["evidence mean (SQL fast path)"] = lambda con=con: compute_evidence(
                        con, "events", "person_id", ["region", "year"], "value",
                        extremes=False)
                for label, fn in jobs.items():
                    times = []
                    warm = 1 if name == "pyspark" else 0
                    for i in range(args.repeats + warm):
                        s, out = timed(fn)
                        if i >= warm:
                            times.append(s)
                    results.setdefault(label, {})[name] = out
                    medians.setdefault(label, {})[name] = statistics.median(times)
                    print(f"  {label:<32} median {statistics.median(times):8.2f} s "
                          f"(runs: {', '.join(f'{x:.2f}' for x in times)})", flush=True)
            finally:
                engine.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nmedians of {args.repeats} runs, {args.rows:,} rows, load average {load_avg}, "
          f"{os.cpu_count()} cores")
    print(f"{'part':<32} {'duckdb s':>9} {'spark s':>9} {'spark/duckdb':>13}  agree")
    for label, by in medians.items():
        d, s = by.get("duckdb", math.nan), by.get("pyspark", math.nan)
        res = results[label]
        key = KEYS.get(label.replace(" (SQL fast path)", ""), [])
        if "SQL" in label:
            same = agree(res["duckdb"], results[label.replace(" (SQL fast path)", "")]["duckdb"],
                         key) + " with the ibis expression on DuckDB"
        elif len(res) == 2:
            same = agree(res["duckdb"], res["pyspark"], key)
        else:
            same = "-"
        print(f"{label:<32} {d:9.2f} {s:9.2f} {s / d:13.1f}  {same}")


if __name__ == "__main__":
    main()
