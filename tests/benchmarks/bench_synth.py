"""Benchmark: our synthesizer chain versus SDV's HMASynthesizer, both measured, never extrapolated.

    python tests/benchmarks/bench_synth.py [--sizes 2000,5000] [--repeats 1] [--skip-hma]
                                           [--release PATH/release.duckdb] [--million]

The EMR is generated here (numpy, no real data): patients (sex, age band, region), ~5 visits per
patient (type, care site, start, length), ~2 lab results per visit (analyte, value by analyte, date
within the visit).

**Head to head**, at every size of ``--sizes``: HMASynthesizer (community edition, default settings)
refuses schemas of relationship depth greater than 2 (patient → visit → lab is 3), so both sides
get the same depth-2 schema, patients → visits, the same rows, and the same SDMetrics multi-table
QualityReport against a sample of the real patients. Both are timed from fit to sampled rows, after
the libraries are imported (imports are counted on neither side). HMA is *measured* at every size
printed, never extrapolated (its cost per patient falls with size).

**Ours on deeper schemas**, printed separately: the three-table chain (labs under their visit) at
each size, and with ``--release`` the full schema of a desensitized release (person, visit,
condition, drug, measurement): fit + sample + quality report. ``--million`` also times fitting on
20k patients and sampling 1M patients of the three-table chain (in chunks, not written) with the
peak RSS; the twin of a real 1M-patient release is ``enclave synth build`` (docs/synthetic.md).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
warnings.filterwarnings("ignore")

from enclave.core.settings import SynthSettings
from synthetic.chain import ChainModel
from synthetic.evaluate import _to_pandas

ANALYTES = {3004501: (6.0, 1.5), 3004410: (6.5, 1.2), 3016723: (80.0, 25.0), 3022192: (1.6, 0.8),
            3023103: (4.2, 0.5), 3019550: (140.0, 3.0), 3027114: (4.8, 1.0), 3013682: (5.5, 2.0)}
START = np.datetime64("2018-01-01")


def _dates(days: np.ndarray) -> pl.Series:
    return pl.Series(START + days.astype("timedelta64[D]")).cast(pl.Date)


def make_emr(n: int, seed: int = 1) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    age = rng.choice([f"{a}-{a + 9}" for a in range(0, 90, 10)], n, p=np.array([2, 3, 6, 8, 10, 14, 16, 12, 9]) / 80)
    person = pl.DataFrame({"person_id": np.arange(1, n + 1), "sex": sex, "age_band": age,
                           "gender_concept_id": np.where(sex == "M", 8507, 8532),
                           "region": rng.choice(["110000", "310000", "440000", "510000"], n)})
    nv = rng.poisson(4.0, n) + 1
    pid = np.repeat(person["person_id"].to_numpy(), nv)
    m = pid.size
    first = np.repeat(rng.integers(0, 2000, n), nv)
    inpatient = rng.random(m) < 0.15
    start = np.minimum(first + rng.exponential(200, m).astype(int), 2400)
    length = np.where(inpatient, rng.integers(1, 15, m), 0)
    visit = pl.DataFrame({
        "visit_occurrence_id": np.arange(1, m + 1), "person_id": pid,
        "visit_concept_id": np.where(inpatient, 9201, 9202),
        "care_site_id": rng.integers(1, 12, m),
        "visit_start_date": _dates(start), "visit_end_date": _dates(start + length),
    })
    nl = rng.poisson(np.where(inpatient, 4.0, 1.4))
    vid = np.repeat(visit["visit_occurrence_id"].to_numpy(), nl)
    k = vid.size
    concept = rng.choice(list(ANALYTES), k)
    mean = np.array([ANALYTES[c][0] for c in concept])
    sd = np.array([ANALYTES[c][1] for c in concept])
    vs = np.repeat(start, nl)
    ln = np.repeat(length, nl)
    lab = pl.DataFrame({
        "measurement_id": np.arange(1, k + 1), "visit_occurrence_id": vid, "person_id": np.repeat(pid, nl),
        "measurement_concept_id": concept,
        "value_as_number": np.round(rng.normal(mean, sd).clip(0), 2),
        "measurement_date": _dates(vs + (rng.random(k) * (ln + 1)).astype(int).clip(0, ln)),
    })
    return {"person": person, "visit_occurrence": visit, "measurement": lab}


STAR = {"METADATA_SPEC_VERSION": "V1", "tables": {
    "person": {"primary_key": "person_id", "columns": {
        "person_id": {"sdtype": "id"}, "sex": {"sdtype": "categorical"}, "age_band": {"sdtype": "categorical"},
        "gender_concept_id": {"sdtype": "categorical"}, "region": {"sdtype": "categorical"}}},
    "visit_occurrence": {"primary_key": "visit_occurrence_id", "columns": {
        "visit_occurrence_id": {"sdtype": "id"}, "person_id": {"sdtype": "id"},
        "visit_concept_id": {"sdtype": "categorical"}, "care_site_id": {"sdtype": "categorical"},
        "visit_start_date": {"sdtype": "datetime", "datetime_format": "%Y-%m-%d"},
        "visit_end_date": {"sdtype": "datetime", "datetime_format": "%Y-%m-%d"}}},
    "measurement": {"primary_key": "measurement_id", "columns": {
        "measurement_id": {"sdtype": "id"}, "person_id": {"sdtype": "id"},
        "measurement_concept_id": {"sdtype": "categorical"}, "value_as_number": {"sdtype": "numerical"},
        "measurement_date": {"sdtype": "datetime", "datetime_format": "%Y-%m-%d"}}}},
    "relationships": [
        {"parent_table_name": "person", "parent_primary_key": "person_id", "child_table_name": "visit_occurrence",
         "child_foreign_key": "person_id"},
        {"parent_table_name": "person", "parent_primary_key": "person_id", "child_table_name": "measurement",
         "child_foreign_key": "person_id"}]}


def subset(frames: dict[str, pl.DataFrame], n: int, seed: int = 2) -> dict[str, pl.DataFrame]:
    ids = frames["person"].sample(n, seed=seed)["person_id"].implode()
    return {t: f.filter(pl.col("person_id").is_in(ids)) for t, f in frames.items()}


def ours(frames: dict[str, pl.DataFrame], n_out: int, settings: SynthSettings) -> tuple[float, dict]:
    t0 = time.perf_counter()
    np.random.seed(settings.seed)
    chain = ChainModel.fit(frames, settings)
    rng = np.random.default_rng(settings.seed)
    parts, done = [], 0
    while done < n_out:
        n = min(settings.sample_chunk_patients, n_out - done)
        first = {t: sum(p[t].height for p in parts) + 1 for t in frames}
        parts.append(chain.sample(n, first, rng))
        done += n
    out = {t: pl.concat([p[t] for p in parts]) for t in frames}
    return time.perf_counter() - t0, out


TWO = {"METADATA_SPEC_VERSION": "V1",
       "tables": {t: STAR["tables"][t] for t in ("person", "visit_occurrence")},
       "relationships": STAR["relationships"][:1]}
CHAIN3 = {"METADATA_SPEC_VERSION": "V1", "tables": {
    **{t: STAR["tables"][t] for t in ("person", "visit_occurrence")},
    "measurement": {"primary_key": "measurement_id", "columns": {
        **{c: v for c, v in STAR["tables"]["measurement"]["columns"].items() if c != "person_id"},
        "visit_occurrence_id": {"sdtype": "id"}}}},
    "relationships": STAR["relationships"][:1] + [
        {"parent_table_name": "visit_occurrence", "parent_primary_key": "visit_occurrence_id",
         "child_table_name": "measurement", "child_foreign_key": "visit_occurrence_id"}]}


def as_pandas(frames: dict[str, pl.DataFrame], meta: dict) -> dict:
    return {t: _to_pandas(frames[t].select(list(meta["tables"][t]["columns"]))) for t in meta["tables"]}


def quality(real: dict[str, pl.DataFrame], syn: dict[str, pl.DataFrame], meta: dict, n: int = 3000) -> float:
    """SDMetrics multi-table quality of ``syn`` against ``real`` (samples of ``n`` patients)."""
    from sdmetrics.reports.multi_table import QualityReport

    real = subset(real, min(n, real["person"].height))
    syn = subset(syn, min(n, syn["person"].height), seed=3)
    report = QualityReport()
    report.generate(as_pandas(real, meta), as_pandas(syn, meta), meta, verbose=False)
    return float(report.get_score())


def hma(frames: dict[str, pl.DataFrame], meta: dict) -> tuple[float, float, dict]:
    from sdv.metadata import Metadata
    from sdv.multi_table import HMASynthesizer

    synth = HMASynthesizer(Metadata.load_from_dict(meta), verbose=False)
    t0 = time.perf_counter()
    synth.fit(as_pandas(frames, meta))
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = synth.sample(num_rows=frames["person"].height, main_table_name="person")
    sample_s = time.perf_counter() - t0
    return fit_s, sample_s, {t: pl.from_pandas(df) for t, df in out.items()}


def full_schema(release: str, settings: SynthSettings) -> None:
    """Our chain on every chain table of a desensitized release: fit + sample + quality report."""
    import duckdb

    from enclave.io import db
    from synthetic import build
    from synthetic.chain import chain_tables
    from synthetic.evaluate import fidelity

    con = duckdb.connect()
    db.run(con, f"ATTACH '{release}' AS rel (READ_ONLY)")
    tables = [r[0] for r in db.rows(con, "SELECT table_name FROM information_schema.tables "
                                         "WHERE table_catalog = 'rel'")]
    links = chain_tables(set(tables))
    build._read_split(con, links, tables, settings)
    frames = build._fit_frames(con, links, tables, settings)
    n = frames["person"].height
    t0 = time.perf_counter()
    chain = ChainModel.fit(frames, settings)
    out = chain.sample(n, {}, np.random.default_rng(settings.seed))
    fit_sample = time.perf_counter() - t0
    real = {x.table: frames[x.table] for x in links}
    pid = real["person"]["person_id"].sample(min(settings.eval_patients, n), seed=1).implode()
    sid = out["person"]["person_id"].sample(min(settings.eval_patients, n), seed=2).implode()
    real = {t: f.filter(pl.col("person_id").is_in(pid)) for t, f in real.items()}
    t0 = time.perf_counter()
    q, _ = fidelity(real, {x.table: out[x.table].filter(pl.col("person_id").is_in(sid)) for x in links},
                    real, links, settings)
    print(f"ours, full schema ({len(links)} chain tables, {n:,} training patients): fit+sample "
          f"{fit_sample:.1f} s, quality {q['score']:.3f} {q['properties']} (report {time.perf_counter() - t0:.1f} s)")


def million(settings: SynthSettings) -> None:
    emr = make_emr(20_000)
    t0 = time.perf_counter()
    chain = ChainModel.fit(emr, settings)
    fit_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    n_rows, done = 0, 0
    while done < 1_000_000:
        n = min(settings.sample_chunk_patients, 1_000_000 - done)
        n_rows += sum(f.height for f in chain.sample(n, {}, rng).values())
        done += n
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"1M patients (3-table chain, not written): fit {fit_s:.1f} s (on 20k) + sample "
          f"{time.perf_counter() - t0:.0f} s ({n_rows:,} rows), peak RSS {peak:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,5000", help="patients per head-to-head run (comma-separated)")
    ap.add_argument("--repeats", type=int, default=1, help="our runs per size (the median is printed)")
    ap.add_argument("--skip-hma", action="store_true", help="ours only (the table then shows no ratio)")
    ap.add_argument("--release", help="a desensitized release.duckdb: our full-schema time and quality")
    ap.add_argument("--million", action="store_true")
    args = ap.parse_args()
    settings = SynthSettings()
    import sdmetrics.reports.multi_table  # noqa: F401  (imports are timed on neither side)
    import sdv.multi_table  # noqa: F401

    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        emr = make_emr(n)
        print(f"EMR: {n:,} patients, {emr['visit_occurrence'].height:,} visits, {emr['measurement'].height:,} labs",
              flush=True)
        two = {t: emr[t] for t in ("person", "visit_occurrence")}
        times, scores = [], []
        for _ in range(args.repeats):
            s, out = ours(two, n, settings)
            times.append(s)
            scores.append(quality(two, out, TWO))
        ours_s, ours_q = statistics.median(times), statistics.median(scores)
        s3, out3 = ours(emr, n, settings)
        q3 = quality(emr, out3, CHAIN3)
        print(f"  ours, patients → visits: fit+sample {ours_s:.2f} s, quality {ours_q:.3f}; "
              f"three-table chain (labs under visits): {s3:.2f} s, quality {q3:.3f}", flush=True)
        hma_s = hma_q = None
        if not args.skip_hma:
            fit_s, sample_s, out = hma(two, TWO)
            hma_s, hma_q = fit_s + sample_s, quality(two, out, TWO)
            print(f"  HMASynthesizer, patients → visits (measured): fit {fit_s:.1f} s + sample {sample_s:.1f} s, "
                  f"quality {hma_q:.3f}", flush=True)
        rows.append((n, ours_s, ours_q, hma_s, hma_q, s3, q3))
    print("\n| patients | ours (s) | HMA, measured (s) | speed-up | quality ours | quality HMA "
          "| ours, 3-table chain: s, quality |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, o, oq, h, hq, s3, q3 in rows:
        print(f"| {n:,} | {o:.2f} | {'not run' if h is None else f'{h:.0f}'} | "
              f"{'-' if h is None else f'{h / o:.0f}x'} | {oq:.3f} | {'-' if hq is None else f'{hq:.3f}'} "
              f"| {s3:.2f}, {q3:.3f} |")
    if args.release:
        full_schema(args.release, settings)
    if args.million:
        million(settings)


if __name__ == "__main__":
    main()
