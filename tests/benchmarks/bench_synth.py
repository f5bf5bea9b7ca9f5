"""Benchmark: our synthesizer chain versus SDV's HMASynthesizer on a 3-table EMR.

    python tests/benchmarks/bench_synth.py [--patients 20000] [--hma-patients 300] [--repeats 1]
                                           [--million]

The EMR is generated here (numpy, no real data): patients (sex, age band, region), ~5 visits per
patient (type, care site, start, length), ~2 lab results per visit (analyte, value by analyte, date
within the visit). Both synthesizers get the same rows. HMASynthesizer (community edition, default
settings) accepts only a star schema, so labs hang off the patient for it; our chain hangs them off
the visit. Quality is the same SDMetrics multi-table QualityReport for both, on the star schema,
against a sample of real patients.

HMA costs ~0.1 s per patient, so it runs on ``--hma-patients`` and its time is extrapolated linearly
to the full population (stated in the output). ``--million`` also times fitting on 20k patients and
sampling 1M patients (in chunks of 50k, not written) and reports the peak RSS.
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

from enclave.settings import SynthSettings
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


def star(frames: dict[str, pl.DataFrame]) -> dict:
    return {t: _to_pandas(frames[t].select(list(STAR["tables"][t]["columns"]))) for t in STAR["tables"]}


def subset(frames: dict[str, pl.DataFrame], n: int, seed: int = 2) -> dict[str, pl.DataFrame]:
    ids = frames["person"].sample(n, seed=seed)["person_id"].implode()
    return {t: f.filter(pl.col("person_id").is_in(ids)) for t, f in frames.items()}


def quality(real: dict[str, pl.DataFrame], syn: dict[str, pl.DataFrame], n: int = 3000) -> float:
    from sdmetrics.reports.multi_table import QualityReport

    real = subset(real, min(n, real["person"].height))
    syn = subset(syn, min(n, syn["person"].height), seed=3)
    report = QualityReport()
    report.generate(star(real), star(syn), STAR, verbose=False)
    return float(report.get_score())


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


def hma(frames: dict[str, pl.DataFrame]) -> tuple[float, float, dict]:
    from sdv.metadata import Metadata
    from sdv.multi_table import HMASynthesizer

    meta = Metadata.load_from_dict(STAR)
    synth = HMASynthesizer(meta)
    t0 = time.perf_counter()
    synth.fit(star(frames))
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = synth.sample(num_rows=frames["person"].height, main_table_name="person")
    sample_s = time.perf_counter() - t0
    return fit_s, sample_s, {t: pl.from_pandas(df) for t, df in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=20_000)
    ap.add_argument("--hma-patients", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--million", action="store_true")
    ap.add_argument("--million-measure", type=int, default=1_000_000,
                    help="patients actually sampled for the 1M figure (time extrapolated linearly when less)")
    ap.add_argument("--skip-hma", action="store_true")
    args = ap.parse_args()
    settings = SynthSettings()
    emr = make_emr(args.patients)
    print(f"EMR: {emr['person'].height:,} patients, {emr['visit_occurrence'].height:,} visits, "
          f"{emr['measurement'].height:,} labs")
    times, scores = [], []
    for _ in range(args.repeats):
        s, out = ours(emr, args.patients, settings)
        times.append(s)
        scores.append(quality(emr, out))
    ours_s, ours_q = statistics.median(times), statistics.median(scores)
    print(f"ours, all {args.patients:,} patients: fit+sample {ours_s:.1f} s (median of {args.repeats}), "
          f"quality {ours_q:.3f}")
    if not args.skip_hma:
        small = subset(emr, args.hma_patients)
        s_small, out_small = ours(small, args.hma_patients, settings)
        print(f"ours, {args.hma_patients} patients: {s_small:.1f} s, quality {quality(small, out_small):.3f}")
        fit_s, sample_s, out = hma(small)
        hma_q = quality(small, out)
        extrapolated = (fit_s + sample_s) / args.hma_patients * args.patients
        print(f"HMASynthesizer (defaults), {args.hma_patients} patients: fit {fit_s:.1f} s + sample {sample_s:.1f} s, "
              f"quality {hma_q:.3f}")
        print(f"HMA extrapolated linearly to {args.patients:,} patients: {extrapolated:.0f} s (NOT measured)")
        print(f"speed-up ours vs HMA (extrapolated): {extrapolated / ours_s:.1f}x; "
              f"quality ours {ours_q:.3f} vs HMA {hma_q:.3f}")
    if args.million:
        t0 = time.perf_counter()
        chain = ChainModel.fit(subset(emr, min(20_000, args.patients)), settings)
        fit_s = time.perf_counter() - t0
        rng = np.random.default_rng(1)
        t0 = time.perf_counter()
        rows, done = 0, 0
        while done < args.million_measure:
            n = min(settings.sample_chunk_patients, args.million_measure - done)
            part = chain.sample(n, {}, rng)
            rows += sum(f.height for f in part.values())
            done += n
        sample_s = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        scale = 1_000_000 / done
        note = "measured" if done >= 1_000_000 else f"extrapolated linearly from {done:,} patients sampled"
        print(f"1M patients: fit {fit_s:.1f} s (on 20k) + sample {sample_s * scale:.0f} s ({note}; "
              f"{rows * scale:,.0f} rows), peak RSS {peak:.0f} MB (chunks of {settings.sample_chunk_patients:,})")


if __name__ == "__main__":
    main()
