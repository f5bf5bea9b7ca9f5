"""The demo hospital population: persons, hospitals, visits and clinical records, vectorized.

:func:`build_population` draws ``patients`` persons (Chinese names, GB 11643 resident IDs whose
region, birth date and sex agree with the person, phones, addresses, insurance numbers), lets each
visit one to three of ``hospitals`` hospitals (about 30 % more than one, each hospital with its own
MRN and its own way of writing the resident ID), and generates 2019–2024 outpatient and inpatient
visits with ICD-10 clinical-version diagnoses, prescriptions, lab tests (some repeated at another
hospital within 30 days), procedures, costs and Chinese free-text notes. Chronic disease
prevalence rises with age; diabetics have higher glucose and HbA1c.

Per hospital it returns frames in the staging contract (without bookkeeping columns) and a list of
:class:`~enclave.io.demo.writers.Defect` instructions that target *extra* rows appended for the
purpose (copies of real rows with fresh ids and no dependent records), except ``duplicate_row``,
which targets a real measurement row that the writer writes twice (nothing is removed either way).
The ``truth`` dict holds the counts the end-to-end tests check; ``identifiers`` holds every direct
identifier that was generated (for the scrubber's tests).

Code systems per dialect: see :data:`enclave.io.demo.clinical.CODE_SYSTEMS`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from enclave.io.demo import clinical as cl
from enclave.io.demo import defects as dft
from enclave.io.demo import names
from enclave.io.demo import records as rec
from enclave.io.demo.records import DISEASES
from enclave.io.demo.writers import WRITERS, Defect, HospitalSpec
from enclave.io.ingest.staging import column_names, kind_schema
from enclave.logic.codes.resident_id import CHECK_CHARS, WEIGHTS

START, END = dt.date(2019, 1, 1), dt.date(2024, 12, 31)
#: resident-ID spelling per hospital (index mod 4): canonical, lower-case x, spaced, legacy 15-digit
ID_STYLES = ("canonical", "lower_x", "spaced", "legacy15")


@dataclass(frozen=True, slots=True)
class Population:
    hospitals: list[HospitalSpec]
    frames: dict[str, dict[str, pl.DataFrame]]  # site id → kind → staging frame
    defects: dict[str, list[Defect]]
    truth: dict
    identifiers: dict[str, list[str]] = field(default_factory=dict)
    #: ground truth of linkage: (site_id, site_patient_id, person) for every real registration
    links: pl.DataFrame | None = None


# ------------------------------------------------------------------------------------- hospitals
def hospital_specs(hospitals: int) -> list[HospitalSpec]:
    dialects = list(WRITERS)
    specs = []
    for i in range(hospitals):
        region = names.REGIONS[(i * 7) % len(names.REGIONS)]
        stem = names.HOSPITAL_STEMS[i % len(names.HOSPITAL_STEMS)]
        specs.append(HospitalSpec(
            site_id=f"h{i + 1}",
            name=f"{region[2].removesuffix('市')}{region[3][:-1]}{stem}" if i >= 8 else f"{region[2]}{stem}",
            dialect=dialects[i % len(dialects)],
            level=names.LEVELS[i % len(names.LEVELS)],
            region_code=region[0],
            glucose_unit="mg/dL" if i % 2 == 1 else "mmol/L",
        ))
    return specs


# ---------------------------------------------------------------------------------------- persons
def _check_chars(digits: np.ndarray) -> np.ndarray:
    total = (digits * np.array(WEIGHTS, dtype=np.int64)).sum(axis=1) % 11
    return np.array(list(CHECK_CHARS))[total]


def _persons(rng: np.random.Generator, n: int) -> pl.DataFrame:
    male = rng.random(n) < 0.5
    span = (dt.date(2020, 12, 31) - dt.date(1930, 1, 1)).days
    birth_days = (rng.beta(2.0, 2.2, n) * span).astype(np.int64)
    weights = np.array([w for _, w in names.SURNAMES], dtype=float)
    surname = rng.choice(len(names.SURNAMES), n, p=weights / weights.sum())
    g_m, g_f, g_a = (np.array(x) for x in (names.GIVEN_MALE, names.GIVEN_FEMALE, names.GIVEN_ANY))
    first = np.where(male, g_m[rng.integers(len(g_m), size=n)], g_f[rng.integers(len(g_f), size=n)])
    second = np.where(rng.random(n) < 0.5, g_a[rng.integers(len(g_a), size=n)],
                      np.where(male, g_m[rng.integers(len(g_m), size=n)], g_f[rng.integers(len(g_f), size=n)]))
    second = np.where(rng.random(n) < 0.3, "", second)
    region = rng.integers(len(names.REGIONS), size=n)
    # namesakes: pairs of distinct persons sharing name, sex and birth date (ID differs)
    n_pairs = n // 200 if n >= 400 else (1 if n >= 4 else 0)
    perm = rng.permutation(n)[: 2 * n_pairs]
    src, dst = perm[:n_pairs], perm[n_pairs:]
    for arr in (male, birth_days, surname, first, second):
        arr[dst] = arr[src]
    # sequence numbers: parity = sex; unique (region, birth, seq)
    seq = 2 * rng.integers(0, 500, size=n) + male.astype(np.int64)
    for _ in range(100):
        key = (region * 100_000 + birth_days) * 1000 + seq
        _, first_idx, _counts = np.unique(key, return_index=True, return_counts=True)
        dup = np.ones(n, bool)
        dup[first_idx] = False
        if not dup.any():
            break
        seq[dup] = 2 * rng.integers(0, 500, size=int(dup.sum())) + male[dup].astype(np.int64)
    sur = np.array([s for s, _ in names.SURNAMES])[surname]
    codes = np.array([r[0] for r in names.REGIONS])[region]
    base = pl.DataFrame({
        "pid": np.arange(n, dtype=np.int64),
        "name": np.char.add(np.char.add(sur, first), second),
        "sex": np.where(male, "M", "F"),
        "birth_date": np.datetime64("1930-01-01") + birth_days.astype("timedelta64[D]"),
        "region_code": codes,
        "seq": seq,
        "region_idx": region,
    }).with_columns(pl.col("birth_date").cast(pl.Date))
    body = (pl.col("region_code") + pl.col("birth_date").dt.strftime("%Y%m%d")
            + pl.col("seq").cast(pl.Utf8).str.zfill(3))
    base = base.with_columns(body.alias("body"))
    digits = np.frombuffer("".join(base["body"].to_list()).encode("ascii"), dtype=np.uint8)
    digits = (digits.reshape(n, 17) - 48).astype(np.int64)
    base = base.with_columns((pl.col("body") + pl.Series(_check_chars(digits))).alias("resident_id"))
    reg = pl.DataFrame({"region_idx": np.arange(len(names.REGIONS)),
                        "place": ["".join(dict.fromkeys(r[1:])) for r in names.REGIONS]})
    streets = np.array(names.STREETS)[rng.integers(len(names.STREETS), size=n)]
    eth_w = np.array([w for _, w in names.ETHNICITIES])
    eth = np.array([e for e, _ in names.ETHNICITIES])[rng.choice(len(eth_w), n, p=eth_w / eth_w.sum())]
    phone = 13_000_000_000 + rng.integers(0, 7, n) * 1_000_000_000 + rng.integers(0, 10**9, n)
    base = base.join(reg, on="region_idx", how="left").sort("pid").with_columns(
        pl.Series("phone", phone.astype(str)),
        (pl.col("place") + pl.Series(streets) + pl.Series(rng.integers(1, 400, n)).cast(pl.Utf8)
         + pl.lit("号") + pl.Series(rng.integers(1, 30, n)).cast(pl.Utf8) + pl.lit("栋")
         + pl.Series(rng.integers(101, 2400, n)).cast(pl.Utf8) + pl.lit("室")).alias("address"),
        pl.Series("ethnicity", eth),
        (pl.lit("YB") + pl.col("region_code")
         + pl.Series(rng.permutation(n) + 10_000_000).cast(pl.Utf8)).alias("insurance_no"),
        (pl.lit(2022) - pl.col("birth_date").dt.year()).alias("age"),
    )
    return base.drop("body", "seq", "region_idx", "place")


def _chronic(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    a = age.astype(float)
    prev = {
        "htn": np.clip(0.01 + 0.009 * (a - 25), 0, 0.6), "dm": np.clip(0.005 + 0.004 * (a - 25), 0, 0.25),
        "lipid": np.clip(0.01 + 0.005 * (a - 25), 0, 0.35), "chd": np.clip(0.003 * (a - 40), 0, 0.2),
        "ckd": np.clip(0.002 * (a - 30), 0, 0.12), "asthma": np.full(len(a), 0.03),
        "stroke": np.clip(0.002 * (a - 50), 0, 0.08), "af": np.clip(0.0012 * (a - 55), 0, 0.05),
        "hf": np.clip(0.0012 * (a - 60), 0, 0.05),
    }
    return np.column_stack([rng.random(len(a)) < prev[d.key] for d in cl.CHRONIC])


# ------------------------------------------------------------------------------------ enrolments
def _enrolments(rng: np.random.Generator, n: int, specs: list[HospitalSpec]) -> pl.DataFrame:
    m = len(specs)
    k = np.minimum(rng.choice([1, 2, 3], n, p=[0.7, 0.22, 0.08]), m)
    w = np.array([3.0 if s.level == "三级甲等" else 2.0 if s.level == "二级甲等" else 1.0 for s in specs])
    h1 = rng.choice(m, n, p=w / w.sum())
    o2 = rng.integers(1, max(m, 2), n)
    o3 = rng.integers(1, max(m - 1, 2), n)
    o3 = np.where(o3 >= o2, o3 + 1, o3)
    pid = np.arange(n)
    parts = [pl.DataFrame({"pid": pid, "h": h1, "slot": 0})]
    if m >= 2:
        s2 = k >= 2
        parts.append(pl.DataFrame({"pid": pid[s2], "h": (h1[s2] + o2[s2]) % m, "slot": 1}))
    if m >= 3:
        s3 = k >= 3
        parts.append(pl.DataFrame({"pid": pid[s3], "h": (h1[s3] + o3[s3]) % m, "slot": 2}))
    enr = pl.concat(parts).with_columns(pl.col("h").cast(pl.Int64), pl.col("slot").cast(pl.Int64))
    enr = enr.with_columns(pl.Series("r", rng.random(enr.height)))
    enr = enr.with_columns(pl.col("r").rank("ordinal").over("h").cast(pl.Int64).alias("rank"))
    return enr.with_columns(
        ((pl.col("h") + 11).cast(pl.Utf8) + pl.lit("0") + pl.col("rank").cast(pl.Utf8).str.zfill(7))
        .alias("site_patient_id")
    ).drop("r", "rank")


def _id_spelling(enr: pl.DataFrame, rng: np.random.Generator) -> pl.Expr:
    """How hospital ``h`` writes the resident ID: ``ID_STYLES[h % 4]`` (legacy 15-digit numbers only
    for about 40 % of persons born before 2000)."""
    rid = pl.col("resident_id")
    style = pl.col("h") % 4
    legacy = (pl.col("birth_date").dt.year() < 2000) & pl.Series(rng.random(enr.height) < 0.4)
    spaced = rid.str.slice(0, 6) + " " + rid.str.slice(6, 8) + " " + rid.str.slice(14, 4)
    return (pl.when(style == 1).then(rid.str.to_lowercase())
            .when(style == 2).then(spaced)
            .when((style == 3) & legacy).then(rid.str.slice(0, 6) + rid.str.slice(8, 9))
            .otherwise(rid))


# ---------------------------------------------------------------------------------------- visits
def _visits(rng: np.random.Generator, enr: pl.DataFrame, n_chronic: np.ndarray) -> pl.DataFrame:
    nc = n_chronic[enr["pid"].to_numpy()]
    n_out = 1 + rng.poisson(0.6 + 0.6 * nc)
    n_in = rng.binomial(2, np.clip(0.03 + 0.04 * nc, 0, 0.5))
    idx = np.arange(enr.height)
    rows = np.concatenate([np.repeat(idx, n_out), np.repeat(idx, n_in)])
    inpatient = np.concatenate([np.zeros(n_out.sum(), bool), np.ones(n_in.sum(), bool)])
    return _visit_frame(rng, enr, rows, inpatient, None)


def _visit_frame(rng, enr, rows, inpatient, start_days) -> pl.DataFrame:
    v = len(rows)
    span = (END - START).days
    if start_days is None:
        start_days = rng.integers(0, span + 1, v)
    start = np.datetime64(START.isoformat()) + start_days.astype("timedelta64[D]")
    minutes = np.where(inpatient, rng.integers(0, 24 * 60, v), rng.integers(8 * 60, 17 * 60, v))
    los = np.where(inpatient, 1 + rng.poisson(6, v), 0)
    start_ts = start.astype("datetime64[m]") + minutes.astype("timedelta64[m]")
    end_ts = start_ts + (los * 1440 + rng.integers(-300, 300, v) * inpatient).astype("timedelta64[m]")
    out_cost = np.round(np.exp(rng.normal(5.3, 0.7, v)), 2)
    in_cost = np.round(np.exp(rng.normal(9.4, 0.6, v)), 2)
    cost = np.where(inpatient, in_cost, out_cost)
    e = enr[rows.tolist()] if v else enr.clear()
    return e.with_columns(
        pl.Series("inpatient", inpatient),
        pl.Series("start_datetime", start_ts.astype("datetime64[us]")).cast(pl.Datetime("us")),
        pl.Series("end_datetime", end_ts.astype("datetime64[us]")).cast(pl.Datetime("us")),
        pl.Series("total_cost", cost),
        pl.Series("paid_by_patient", np.round(cost * rng.uniform(0.15, 0.5, v), 2)),
        pl.Series("dx_r", rng.random(v)),
        pl.Series("lab_r", rng.random(v)),
    )


#: the columns :func:`_visit_frame` adds to enrolment rows (plus the main diagnosis, added later)
_VISIT_COLUMNS = ("inpatient", "start_datetime", "end_datetime", "total_cost", "paid_by_patient",
                  "dx_r", "lab_r", "main")


def _main_diagnosis(rng, visits: pl.DataFrame, chronic: np.ndarray) -> np.ndarray:
    """Index into CHRONIC + ACUTE of each visit's main diagnosis."""
    flags = chronic[visits["pid"].to_numpy()]
    v = visits.height
    pick = np.where(flags, rng.random(flags.shape), -1.0).argmax(axis=1) if v else np.zeros(0, int)
    has = flags.any(axis=1) if v else np.zeros(0, bool)
    inpatient = visits["inpatient"].to_numpy()
    acute_w = np.array([3, 3, 2, 1, 1, 1], float)
    acute = rng.choice(len(cl.ACUTE), v, p=acute_w / acute_w.sum())
    acute = np.where(inpatient & (rng.random(v) < 0.6), 3, acute)  # inpatient: pneumonia often
    use_chronic = has & (visits["dx_r"].to_numpy() < 0.75)
    return np.where(use_chronic, pick, len(cl.CHRONIC) + acute)


# ---------------------------------------------------------------------------------- orchestration
def build_population(patients: int, hospitals: int, seed: int) -> Population:
    """Build the demo population (deterministic for a seed)."""

    if patients < 1 or hospitals < 1:
        raise ValueError("patients and hospitals must be at least 1")
    rng = np.random.default_rng(seed)
    specs = hospital_specs(hospitals)
    persons = _persons(rng, patients)
    chronic = _chronic(rng, persons["age"].to_numpy())
    enr = _enrolments(rng, patients, specs)
    enr = enr.join(persons.select("pid", "resident_id", "birth_date"), on="pid", how="left",
                   maintain_order="left")
    enr = enr.with_columns(_id_spelling(enr, rng).alias("rid_written")).drop("resident_id", "birth_date")
    visits = _visits(rng, enr, chronic.sum(axis=1))
    visits = visits.with_columns(pl.Series("main", _main_diagnosis(rng, visits, chronic)))
    visits = pl.concat([visits, _repeat_visits(rng, visits, enr)], how="vertical")
    visits = pl.concat([visits, _readmissions(np.random.default_rng([seed, 30]), visits)], how="vertical")
    visits = _number_visits(visits, specs, persons)
    conds = rec.conditions(rng, visits, chronic)
    drugs = rec.drugs(rng, conds, specs)
    meas = rec.measurements(rng, visits, chronic, specs)
    procs = rec.procedures(rng, visits)
    notes = rec.notes(rng, visits, persons)
    people = enr.join(persons, on="pid", how="left", maintain_order="left").with_columns(
        pl.col("resident_id").alias("canonical_id"), pl.col("rid_written").alias("resident_id"),
        pl.lit(None, pl.Date).alias("death_date"))
    frames: dict[str, dict[str, pl.DataFrame]] = {}
    defects: dict[str, list[Defect]] = {}
    global_ = {"person": people, "visit": visits, "condition": conds, "drug": drugs,
               "measurement": meas, "procedure": procs, "note": notes}
    events = {"condition", "drug", "measurement", "procedure", "note"}
    for h, spec in enumerate(specs):
        # an event repeated verbatim (same drug twice in one visit ...) is one record: the loader
        # would merge it, so the clean frames hold it once and truth counts stay exact
        site = {k: _contract(k, f.filter(pl.col("h") == h)) for k, f in global_.items()}
        site = {k: f.unique(maintain_order=True) if k in events else f for k, f in site.items()}
        site.update(_care_sites_and_providers(spec, h, rng))
        canonical = people.filter(pl.col("h") == h)["canonical_id"]
        site, planted = dft.plant(rng, h, site, canonical)
        frames[spec.site_id], defects[spec.site_id] = site, planted
    truth = {
        "persons": patients,
        "patients_per_hospital": {s.site_id: int((enr["h"] == i).sum()) for i, s in enumerate(specs)},
        "linked_persons": int((enr.group_by("pid").len()["len"] >= 2).sum()),
        "namesakes": int(persons.group_by("name", "birth_date").len().filter(pl.col("len") >= 2)["len"].sum()),
        "repeat_tests_30d": dft.repeat_tests(meas, enr),
        "definitions": {
            "namesakes": "persons whose name and birth date equal those of another distinct person",
            "repeat_tests_30d": "lab results (by LOINC analyte) of a person that follow a result of "
                                "the same analyte for the same person at a different hospital 1-30 "
                                "days earlier (by date)",
        },
        "seed": seed, "patients": patients, "hospitals": hospitals,
    }
    identifiers = {
        "names": persons["name"].unique().sort().to_list(),
        "resident_ids": persons["resident_id"].to_list(),
        "phones": persons["phone"].to_list(),
        "addresses": persons["address"].to_list(),
        "mrns": enr["site_patient_id"].to_list(),
        "insurance_nos": persons["insurance_no"].to_list(),
    }
    links = enr.select(
        pl.col("h").replace_strict(list(range(len(specs))), [s.site_id for s in specs],
                                   return_dtype=pl.Utf8).alias("site_id"),
        "site_patient_id", pl.col("pid").alias("person"))
    return Population(specs, frames, defects, truth, identifiers, links)


def _repeat_visits(rng: np.random.Generator, visits: pl.DataFrame, enr: pl.DataFrame) -> pl.DataFrame:
    """Outpatient follow-ups at another of the person's hospitals 1–29 days later, same lab panel."""
    k = enr.group_by("pid").agg(pl.len().alias("k"))
    with_labs = pl.Series([len(d.labs) > 0 for d in DISEASES])
    cand = visits.join(k, on="pid").filter(
        (pl.col("k") >= 2) & ~pl.col("inpatient") & (pl.col("lab_r") < 0.55)
        & pl.col("main").map_batches(lambda s: with_labs.gather(s), return_dtype=pl.Boolean))
    n = min(cand.height, max(1, round(0.05 * cand.height))) if cand.height else 0
    if n == 0:
        return visits.clear()
    pick = cand[rng.choice(cand.height, n, replace=False).tolist()]
    step = 1 + (rng.random(n) * (pick["k"].to_numpy() - 1)).astype(np.int64)
    target = pick.select("pid", ((pl.col("slot") + pl.Series(step)) % pl.col("k")).alias("slot"),
                         "main", pl.col("start_datetime").dt.date().alias("d0"))
    target = target.join(enr, on=["pid", "slot"], how="left", maintain_order="left")
    days = (target["d0"].to_numpy() - np.datetime64(START.isoformat())).astype(np.int64)
    offset = rng.integers(1, 30, n)
    span = (END - START).days
    days = np.where(days + offset <= span, days + offset, days - offset)  # stay inside 2019–2024
    out = _visit_frame(rng, target.drop("main", "d0"), np.arange(n), np.zeros(n, bool), days)
    return out.with_columns(pl.lit(0.0).alias("lab_r"), target["main"]).select(visits.columns)


def _readmissions(rng: np.random.Generator, visits: pl.DataFrame, share: float = 0.12) -> pl.DataFrame:
    """Unplanned readmissions: about ``share`` of inpatient stays are followed by another stay at
    the same hospital 2–29 days after discharge, for the same main diagnosis (own generator, so the
    rest of the population does not change with it)."""
    stays = visits.filter(pl.col("inpatient"))
    if stays.height == 0:
        return visits.clear()
    pick = stays.filter(pl.Series(rng.random(stays.height) < share))
    days = (pick["end_datetime"].dt.date().to_numpy() - np.datetime64(START.isoformat())).astype(np.int64)
    days = days + rng.integers(2, 30, pick.height)
    keep = days <= (END - START).days  # stay inside 2019–2024
    pick, days = pick.filter(pl.Series(keep)), days[keep]
    n = pick.height
    enr_cols = [c for c in visits.columns if c not in _VISIT_COLUMNS]
    out = _visit_frame(rng, pick.select(enr_cols), np.arange(n), np.ones(n, bool), days)
    return out.with_columns(pick["main"]).select(visits.columns)


def _number_visits(visits: pl.DataFrame, specs, persons: pl.DataFrame) -> pl.DataFrame:
    """Visit ids per hospital in date order; department, provider and care site of each visit."""
    depts = list(cl.DEPARTMENTS)
    dept = np.array([depts.index(d.department) for d in DISEASES])[visits["main"].to_numpy()]
    ages = persons["age"].to_numpy()[visits["pid"].to_numpy()]
    acute = visits["main"].to_numpy() >= len(cl.CHRONIC)
    dept = np.where(acute & (ages < 16), depts.index("EK"), dept)
    doctor = (visits["dx_r"].to_numpy() * 1000).astype(np.int64) % 3
    site = pl.lit("h") + (pl.col("h") + 1).cast(pl.Utf8)
    visits = visits.with_columns(
        pl.Series("dept", np.array(depts)[dept]),
        pl.Series("provider_no", dept * 3 + doctor + 1),
    ).sort("h", "start_datetime", maintain_order=True)
    return visits.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("vid"),
        (pl.when(pl.col("inpatient")).then(pl.lit("ZY")).otherwise(pl.lit("MZ"))
         + (pl.col("h") + 1).cast(pl.Utf8).str.zfill(2)
         + pl.int_range(pl.len()).over("h").cast(pl.Utf8).str.zfill(8)).alias("site_visit_id"),
        pl.when(pl.col("inpatient")).then(pl.lit("inpatient")).otherwise(pl.lit("outpatient"))
        .alias("visit_type"),
        pl.col("start_datetime").dt.date().alias("start_date"),
        pl.when(pl.col("inpatient")).then(pl.col("end_datetime").dt.date()).alias("end_date"),
        pl.when(pl.col("inpatient")).then(pl.col("end_datetime")).alias("end_datetime"),
        pl.col("dept").replace_strict(cl.DEPARTMENTS).alias("department"),
        (site + pl.lit("-D") + pl.col("provider_no").cast(pl.Utf8).str.zfill(3)).alias("provider_id"),
        (site + pl.lit("-") + pl.col("dept")).alias("care_site_id"),
    )


def _care_sites_and_providers(spec: HospitalSpec, h: int, rng: np.random.Generator) -> dict:
    depts = list(cl.DEPARTMENTS)
    care = pl.DataFrame({
        "care_site_id": [spec.site_id] + [f"{spec.site_id}-{d}" for d in depts],
        "name": [spec.name] + [spec.name + cl.DEPARTMENTS[d] for d in depts],
        "level": spec.level, "region_code": spec.region_code,
    })
    n = 3 * len(depts)
    surnames = np.array([s for s, _ in names.SURNAMES[:30]])[rng.integers(30, size=n)]
    given = np.array(names.GIVEN_MALE + names.GIVEN_FEMALE)[rng.integers(60, size=n)]
    prov = pl.DataFrame({
        "provider_id": [f"{spec.site_id}-D{i + 1:03d}" for i in range(n)],
        "name": np.char.add(surnames, given),
        "specialty": [cl.DEPARTMENTS[depts[i // 3]] for i in range(n)],
        "care_site_id": [f"{spec.site_id}-{depts[i // 3]}" for i in range(n)],
    })
    return {"care_site": _contract("care_site", care), "provider": _contract("provider", prov)}


def _contract(kind: str, frame: pl.DataFrame) -> pl.DataFrame:
    """The staging columns of ``kind`` (contract types, no bookkeeping), missing ones as nulls."""
    schema = kind_schema(kind)
    return frame.select([
        (pl.col(c) if c in frame.columns else pl.lit(None)).cast(schema[c]).alias(c)
        for c in column_names(kind)
    ])
