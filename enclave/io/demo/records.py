"""Clinical records of the demo population (vectorized): diagnoses, prescriptions, lab tests,
procedures and free-text notes for a frame of visits.

Every function takes the global visit frame (one row per visit with ``vid`` = row index, ``pid``,
``h``, ``site_patient_id``, ``site_visit_id``, ``inpatient``, ``start_datetime``, ``end_datetime``,
``main`` = index into ``CHRONIC + ACUTE``) and returns a frame with ``h`` plus staging columns.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from enclave.io.demo import clinical as cl
from enclave.io.demo.writers import HospitalSpec

DISEASES = cl.CHRONIC + cl.ACUTE
LAB_CODES = list(cl.LABS)
INPATIENT_PANEL = (cl.GLU, cl.CREA, cl.WBC, cl.HGB, cl.K, cl.NA)


def conditions(rng: np.random.Generator, visits: pl.DataFrame, chronic: np.ndarray) -> pl.DataFrame:
    main = visits["main"].to_numpy()
    flags = chronic[visits["pid"].to_numpy()] & (rng.random((visits.height, len(cl.CHRONIC))) < 0.5)
    if visits.height:
        flags[np.arange(visits.height)[main < len(cl.CHRONIC)], main[main < len(cl.CHRONIC)]] = False
    v_sec, d_sec = np.nonzero(flags)
    vid = np.concatenate([np.arange(visits.height), v_sec])
    dis = np.concatenate([main, d_sec])
    primary = np.concatenate([np.ones(visits.height, bool), np.zeros(len(v_sec), bool)])
    return _with_visit(visits, vid).with_columns(
        pl.lit("ICD10CN").alias("code_system"),
        pl.Series("code", np.array([d.code for d in DISEASES])[dis]),
        pl.Series("description", np.array([d.name for d in DISEASES])[dis]),
        pl.col("start_datetime").dt.date().alias("start_date"),
        pl.lit(None, pl.Date).alias("end_date"),
        pl.Series("primary", primary),
        pl.Series("dis", dis),
    ).sort("vid", "primary", descending=[False, True], maintain_order=True)


def _with_visit(visits: pl.DataFrame, vid: np.ndarray) -> pl.DataFrame:
    return visits.select("vid", "pid", "h", "site_patient_id", "site_visit_id", "inpatient",
                         "start_datetime", "end_datetime")[vid.tolist()]


def drugs(rng: np.random.Generator, conds: pl.DataFrame, specs: list[HospitalSpec]) -> pl.DataFrame:
    dis = conds["dis"].to_numpy()
    n = len(dis)
    choice = rng.random(n)
    counts = np.array([len(d.drugs) for d in DISEASES])[dis]
    take = (counts > 0) & (rng.random(n) < 0.85)
    pick = np.minimum((choice * np.maximum(counts, 1)).astype(int), np.maximum(counts - 1, 0))
    rx = _vector_pick(dis, pick)
    rows = conds.filter(pl.Series(take)).drop("code", "description", "code_system").with_columns(
        pl.Series("rx", rx[take].astype(str)))
    info = pl.DataFrame(cl.drugs()).select(
        "rxnorm", pl.col("name_zh").alias("description"),
        pl.col("unit_price_cny").cast(pl.Float64).alias("price"))
    special = {"106892": ("支", "皮下注射"), "2123111": ("瓶", "吸入"), "705129": ("瓶", "舌下喷雾")}
    m = rows.height
    chronic = np.array([d.chronic for d in DISEASES])[rows["dis"].to_numpy()] if m else np.zeros(0, bool)
    los = ((rows["end_datetime"] - rows["start_datetime"]).dt.total_days().to_numpy() if m
           else np.zeros(0, int))
    days = np.where(rows["inpatient"].to_numpy(), np.maximum(los, 1),
                    np.where(chronic, rng.choice([30, 60, 90], m), rng.integers(3, 8, m)))
    rows = rows.join(info, left_on="rx", right_on="rxnorm", how="left", maintain_order="left")
    rx_s = pl.col("rx")
    qty = pl.when(rx_s.is_in(list(special))).then(pl.lit(1.0) + pl.Series(rng.integers(0, 3, m)))
    qty = qty.otherwise(pl.Series(days).cast(pl.Float64) * pl.Series(rng.choice([1.0, 2.0], m)))
    sys_by_h = [cl.CODE_SYSTEMS[s.dialect][1] for s in specs]
    local = {s.dialect: {d["rxnorm"]: cl.local_drug_code(s.dialect, d["rxnorm"]) for d in cl.drugs()}
             for s in specs}
    code_tab = pl.DataFrame(
        [(h, d["rxnorm"], local[s.dialect][d["rxnorm"]] if sys_by_h[h] == "LOCAL" else d["rxnorm"])
         for h, s in enumerate(specs) for d in cl.drugs()],
        schema={"h": pl.Int64, "rx": pl.Utf8, "code": pl.Utf8}, orient="row")
    rows = rows.join(code_tab, on=["h", "rx"], how="left", maintain_order="left")
    return rows.with_columns(
        pl.Series("code_system", np.array(sys_by_h, dtype=object)[rows["h"].to_numpy()].astype(str)
                  if m else np.zeros(0, str)),
        pl.Series("days_supply", days).cast(pl.Int64),
        qty.alias("quantity"),
        rx_s.replace_strict({k: v[0] for k, v in special.items()}, default="片").alias("dose_unit"),
        rx_s.replace_strict({k: v[1] for k, v in special.items()}, default="口服").alias("route"),
    ).with_columns(
        (pl.col("quantity") * pl.col("price")).round(2).alias("cost"),
        (pl.col("start_date") + pl.duration(days=pl.col("days_supply") - 1)).alias("end_date"),
    )


def _vector_pick(dis: np.ndarray, pick: np.ndarray) -> np.ndarray:
    width = max(len(d.drugs) for d in DISEASES)
    table = np.array([list(d.drugs) + [""] * (width - len(d.drugs)) for d in DISEASES], dtype=object)
    return table[dis, pick]


def measurements(rng: np.random.Generator, visits: pl.DataFrame, chronic: np.ndarray,
                 specs: list[HospitalSpec]) -> pl.DataFrame:
    main = visits["main"].to_numpy()
    inpatient = visits["inpatient"].to_numpy()
    d2a = np.array([[lo in d.labs for lo in LAB_CODES] for d in DISEASES])
    base = np.array([lo in INPATIENT_PANEL for lo in LAB_CODES])
    has = visits["lab_r"].to_numpy() < np.where(inpatient, 1.0, 0.55)
    mask = (d2a[main] | (inpatient[:, None] & base[None, :])) & has[:, None]
    v_idx, a_idx = np.nonzero(mask)
    n = len(v_idx)
    keys = [d.key for d in DISEASES]
    chronic_keys = [d.key for d in cl.CHRONIC]
    lab = [cl.LABS[lo] for lo in LAB_CODES]
    dkey = np.array([row[4] for row in lab])[a_idx]
    pids = visits["pid"].to_numpy()[v_idx]
    sick = np.zeros(n, bool)
    for key in set(dkey):
        sel = dkey == key
        if key in chronic_keys:
            sick[sel] = chronic[pids[sel], chronic_keys.index(key)]
        else:
            sick[sel] = main[v_idx[sel]] == keys.index(key)
    mean = np.where(sick, np.array([r[3] for r in lab])[a_idx], np.array([r[1] for r in lab])[a_idx])
    sd = np.array([r[2] for r in lab])[a_idx] * np.where(sick, 1.5, 1.0)
    value = np.abs(rng.normal(mean, sd))
    low = np.array([r[6] for r in lab])[a_idx]
    high = np.array([r[7] for r in lab])[a_idx]
    decimals = np.array([r[5] for r in lab])[a_idx]
    # hospital units
    h = visits["h"].to_numpy()[v_idx]
    mgdl_h = np.array([s.glucose_unit == "mg/dL" for s in specs])[h]
    info = {a["loinc"]: a for a in cl.analytes()}
    factor = np.array([float(info[lo]["factor_to_canonical"] or 1) for lo in LAB_CODES])[a_idx]
    convert = mgdl_h & np.array([lo in cl.MG_DL_ANALYTES for lo in LAB_CODES])[a_idx]
    value, low, high = (np.where(convert, x / factor, x) for x in (value, low, high))
    decimals = np.where(convert, np.where(factor > 1, 2, 0), decimals)
    scale = 10.0 ** decimals
    value, low, high = (np.round(x * scale) / scale for x in (value, low, high))
    canon = np.array([cl.UNIT_TEXT.get(info[lo]["canonical_unit"], info[lo]["canonical_unit"])
                      for lo in LAB_CODES])[a_idx]
    unit = np.where(convert, "mg/dL", canon)
    systems = np.array([cl.CODE_SYSTEMS[s.dialect][0] for s in specs])[h]
    local = np.array([[cl.local_lab_code(s.dialect, lo) for lo in LAB_CODES] for s in specs])
    loinc = np.array(LAB_CODES)[a_idx]
    code = np.where(systems == "LOCAL", local[h, a_idx] if n else loinc, loinc)
    cost = np.array([r[8] for r in lab])[a_idx]
    minutes = rng.integers(0, 180, n).astype("timedelta64[m]")
    day = visits["start_datetime"].dt.date().to_numpy()[v_idx].astype("datetime64[m]")
    when = day + np.timedelta64(8 * 60, "m") + minutes
    return _with_visit(visits, v_idx).with_columns(
        pl.Series("loinc", loinc),
        pl.Series("code_system", systems),
        pl.Series("code", code),
        pl.Series("description", np.array([info[lo]["name_zh"] for lo in LAB_CODES])[a_idx]),
        pl.Series("datetime", when.astype("datetime64[us]")).cast(pl.Datetime("us")),
        pl.Series("value", value),
        pl.lit(None, pl.Utf8).alias("value_text"),
        pl.Series("unit", unit),
        pl.Series("range_low", low),
        pl.Series("range_high", high),
        pl.Series("cost", np.where(cost > 0, cost, np.nan)).fill_nan(None),
    ).with_columns(pl.col("datetime").dt.date().alias("date"))


def procedures(rng: np.random.Generator, visits: pl.DataFrame) -> pl.DataFrame:
    inp = visits.filter(pl.col("inpatient"))
    keys = np.array([d.key for d in DISEASES])
    main_key = keys[inp["main"].to_numpy()] if inp.height else np.zeros(0, str)
    parts = []
    for code, name, follows, p in cl.PROCEDURES:
        sel = np.isin(main_key, follows) & (rng.random(inp.height) < p)
        if sel.any():
            part = inp.filter(pl.Series(sel))
            offset = rng.integers(0, 3, part.height)
            parts.append(part.with_columns(
                pl.lit("ICD9Proc").alias("code_system"), pl.lit(code).alias("code"),
                pl.lit(name).alias("description"),
                pl.min_horizontal(pl.col("start_datetime").dt.date() + pl.duration(days=pl.Series(offset)),
                                  pl.col("end_datetime").dt.date()).alias("date"),
                pl.lit(None, pl.Float64).alias("cost")))
    cols = ["vid", "h", "site_patient_id", "site_visit_id", "code_system", "code", "description",
            "date", "cost"]
    if not parts:
        return pl.DataFrame(schema={"vid": pl.Int64, "h": pl.Int64, "site_patient_id": pl.Utf8,
                                    "site_visit_id": pl.Utf8, "code_system": pl.Utf8, "code": pl.Utf8,
                                    "description": pl.Utf8, "date": pl.Date, "cost": pl.Float64})
    return pl.concat([p.select(cols) for p in parts]).sort("vid", maintain_order=True)


def notes(rng: np.random.Generator, visits: pl.DataFrame, persons: pl.DataFrame) -> pl.DataFrame:
    keep = visits["inpatient"].to_numpy() | (rng.random(visits.height) < 0.25)
    v = visits.filter(pl.Series(keep)).join(
        persons.select("pid", "name", "sex", "birth_date", "resident_id", "phone", "address"),
        on="pid", how="left", maintain_order="left")
    m = v.height
    names_ = np.array([d.name for d in DISEASES])
    inpatient = pl.col("inpatient")
    date = pl.when(inpatient).then(pl.col("end_datetime").dt.date()).otherwise(
        pl.col("start_datetime").dt.date())
    age = (pl.col("start_datetime").dt.year() - pl.col("birth_date").dt.year()).cast(pl.Utf8)

    def maybe(p: float, text: pl.Expr) -> pl.Expr:
        return pl.when(pl.Series(rng.random(m) < p)).then(text).otherwise(pl.lit(""))

    title = pl.when(inpatient).then(pl.lit("出院小结")).otherwise(pl.lit("门诊病历"))
    text = pl.concat_str([
        title, pl.lit("：患者"), pl.col("name"), pl.lit("，"),
        pl.when(pl.col("sex") == "M").then(pl.lit("男")).otherwise(pl.lit("女")), pl.lit("，"), age,
        pl.lit("岁。因"), pl.Series(names_[v["main"].to_numpy()] if m else np.zeros(0, str)),
        pl.when(inpatient).then(pl.lit("入院，予对症治疗后好转出院。")).otherwise(
            pl.lit("就诊，予药物治疗，嘱定期复查。")),
        maybe(0.3, pl.lit("身份证号：") + pl.col("resident_id") + pl.lit("。")),
        maybe(0.3, pl.lit("联系电话：") + pl.col("phone") + pl.lit("。")),
        maybe(0.3, pl.lit("病案号：") + pl.col("site_patient_id") + pl.lit("。")),
        maybe(0.2, pl.lit("现住址：") + pl.col("address") + pl.lit("。")),
    ])
    return v.select("vid", "h", "site_patient_id", "site_visit_id", date.alias("date"),
                    title.alias("title"), text.alias("text"))
