"""Planted defects of the demo population, and truth counts that need the generated records.

:func:`plant` appends *extra* rows to a hospital's staging frames (copies of real rows with fresh
ids and no dependent records) and returns :class:`Defect` instructions targeting them, a few of each
:class:`DefectKind` (3–10, growing slowly with the hospital's size). ``duplicate_row`` instead
targets a real measurement row: the writer writes it twice, so nothing real is ever lost.
``truncated_line`` targets one extra row in each of up to three files (measurement, drug, note):
only the last line of a file can be cut short.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from enclave.io.demo.writers import Defect, DefectKind


def defect_count(patients_at_site: int) -> int:
    return min(10, max(3, round(math.log2(patients_at_site + 1) / 2)))


def plant(
    rng: np.random.Generator, h: int, frames: dict[str, pl.DataFrame], canonical_ids: pl.Series
) -> tuple[dict[str, pl.DataFrame], list[Defect]]:
    frames = dict(frames)
    defects: list[Defect] = []
    n = defect_count(frames["person"].height)
    counters = {"mrn": 0, "MZ": 0, "ZY": 0}

    def fresh(kind: str, k: int) -> list[str]:
        start = counters[kind]
        counters[kind] += k
        if kind == "mrn":
            return [f"{h + 11}8{i + 1:07d}" for i in range(start, start + k)]
        return [f"{kind}{h + 1:02d}9{i + 1:07d}" for i in range(start, start + k)]

    def append(frame_kind: str, rows: pl.DataFrame, kind: DefectKind) -> None:
        base = frames[frame_kind].height
        frames[frame_kind] = pl.concat([frames[frame_kind], rows], how="vertical")
        defects.extend(Defect(kind, frame_kind, base + i) for i in range(rows.height))

    def sample(frame: pl.DataFrame, k: int) -> np.ndarray:
        return rng.choice(frame.height, k, replace=frame.height < k)

    person = frames["person"]
    if person.height:
        for kind in (DefectKind.BAD_ID_CHECKSUM, DefectKind.IDENTITY_CONFLICT):
            src = sample(person, n)
            rows = person[src.tolist()].with_columns(
                pl.Series("site_patient_id", fresh("mrn", n)),
                canonical_ids.gather(src).alias("resident_id"))
            append("person", rows, kind)
    visit = frames["visit"]
    out = visit.filter(pl.col("visit_type") == "outpatient")
    inp = visit.filter(pl.col("visit_type") == "inpatient")
    for kind, pool in ((DefectKind.IMPOSSIBLE_DATE, out), (DefectKind.DATE_ORDER, inp if inp.height else out),
                       (DefectKind.MISSING_REQUIRED, out), (DefectKind.UNKNOWN_PATIENT, out)):
        if pool.height:
            rows = pool[sample(pool, n).tolist()]
            prefix = "ZY" if pool is inp else "MZ"
            append("visit", rows.with_columns(pl.Series("site_visit_id", fresh(prefix, n))), kind)
    cond = frames["condition"]
    if cond.height:
        rows = cond[sample(cond, n).tolist()].with_columns(pl.lit(False).alias("primary"))
        append("condition", rows, DefectKind.UNKNOWN_CODE)
    target = "measurement" if frames["measurement"].height else "condition"
    if frames[target].height:
        real = rng.choice(frames[target].height, min(n, frames[target].height), replace=False)
        defects.extend(Defect(DefectKind.DUPLICATE_ROW, target, int(r)) for r in sorted(real))
    for kind_name in ("measurement", "drug", "note")[: min(3, n)]:
        frame = frames[kind_name]
        if frame.height:
            append(kind_name, frame[[int(rng.integers(frame.height))]], DefectKind.TRUNCATED_LINE)
    return frames, defects


def repeat_tests(meas: pl.DataFrame, enrolments: pl.DataFrame) -> int:
    """Lab results that follow the same analyte for the same person at another hospital 1–30 days
    earlier (by date). ``meas`` needs pid, h, loinc, date."""
    m = meas.select("pid", "h", "loinc", pl.col("date").cast(pl.Int32).alias("day")).join(
        enrolments.select("pid", "h", "slot"), on=["pid", "h"], how="left"
    ).with_row_index("mid")
    found = []
    for slot in range(3):
        right = m.filter(pl.col("slot") == slot).select("pid", "loinc", "day").unique().sort("day")
        if right.height == 0:
            continue
        left = m.filter(pl.col("slot") != slot).select(
            "mid", "pid", "loinc", (pl.col("day") - 1).alias("key")).sort("key")
        joined = left.join_asof(right, left_on="key", right_on="day", by=["pid", "loinc"],
                                strategy="backward", tolerance=29, check_sortedness=False)
        found.append(joined.filter(pl.col("day").is_not_null())["mid"])
    return int(pl.concat(found).n_unique()) if found else 0
