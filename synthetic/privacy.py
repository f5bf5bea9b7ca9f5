"""SDMetrics' privacy metrics, computed in DuckDB: the same measures, on samples 10-100x larger.

SDMetrics computes distance to closest record (DCR) with pandas cross merges and new-row synthesis
with one ``DataFrame.query`` per synthetic row: O(rows x rows) in Python, so a few hundred rows per
table was all a build could afford, and the scores of two samples that small differ by more than the
privacy bar's tolerance (a twin could be refused, or published, by chance). The definitions below are
SDMetrics 0.32's, line for line (``sdmetrics.single_table.privacy.dcr_utils.calculate_dcr``,
``DCRBaselineProtection``, ``DCROverfittingProtection``, ``NewRowSynthesis``); a unit test checks
each against SDMetrics on the same rows.

- DCR of a row: the smallest, over reference rows, mean over columns of the column distance:
  numerical ``min(|a - b| / range, 1)`` with ``range`` that of the reference (``a != b`` when the
  range is 0), categorical ``a != b``; both null: 0, one null: 1.
- DCR baseline protection: median DCR of the synthetic rows to the real ones over the median DCR of
  random rows (uniform within each real column's range or over its values) to the real ones, at most 1.
- DCR overfitting protection: ``min(2 (1 - p), 1)`` with ``p`` the share of synthetic rows closer
  to the training rows than to the holdout's.
- New-row synthesis: the share of synthetic rows that no real row matches (categorical equal,
  numerical within ``tolerance * |value|``, null matches null).

Frames handed in carry only numerical (dates as numbers) and categorical columns; ``kinds`` says
which is which. Nothing here prints a value.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

NUMERICAL, CATEGORICAL = "numerical", "categorical"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _connect(**frames: pl.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name, f in frames.items():
        con.register(name, f.with_row_index("_i").to_arrow())
    return con


def _ranges(ref: pl.DataFrame, kinds: dict[str, str]) -> dict[str, float]:
    out = {}
    for c, k in kinds.items():
        if k == NUMERICAL:
            s = ref[c].drop_nulls()
            out[c] = float(s.max() - s.min()) if s.len() else 0.0
    return out


def _distance_sql(kinds: dict[str, str], ranges: dict[str, float]) -> str:
    parts = []
    for c, k in kinds.items():
        a, b = f"d.{_q(c)}", f"r.{_q(c)}"
        if k == NUMERICAL:
            span = ranges[c]
            diff = (f"least(abs({a} - {b}) / {span!r}, 1.0)" if span > 0
                    else f"CAST(({a} <> {b}) AS DOUBLE)")
            parts.append(f"(CASE WHEN {a} IS NULL AND {b} IS NULL THEN 0.0 "
                         f"WHEN {a} IS NULL OR {b} IS NULL THEN 1.0 ELSE {diff} END)")
        else:
            parts.append(f"(CASE WHEN {a} IS NOT DISTINCT FROM {b} THEN 0.0 ELSE 1.0 END)")
    return f"({' + '.join(parts)}) / {len(parts)}.0"


def dcr(data: pl.DataFrame, ref: pl.DataFrame, kinds: dict[str, str]) -> np.ndarray:
    """Distance of each row of ``data`` to its closest row of ``ref`` (in ``data``'s row order)."""
    if not kinds:
        raise ValueError("no columns to measure distances on")
    cols = list(kinds)
    con = _connect(d=data.select(cols), r=ref.select(cols))
    try:
        rows = con.execute(f"SELECT d._i, min({_distance_sql(kinds, _ranges(ref, kinds))}) "
                           "FROM d CROSS JOIN r GROUP BY d._i ORDER BY d._i").fetchall()
    finally:
        con.close()
    return np.array([r[1] for r in rows], dtype=float)


def random_like(real: pl.DataFrame, n: int, rng: np.random.Generator) -> pl.DataFrame:
    """Random rows within each real column's range (numbers) or values (categories), with its share
    of nulls: SDMetrics' ``DCRBaselineProtection`` baseline."""
    cols = {}
    for c, dtype in real.schema.items():
        s = real[c].drop_nulls()
        if not s.len():
            values = pl.Series(c, [None] * n, dtype=dtype)
        elif dtype.is_integer():
            values = pl.Series(c, rng.integers(int(s.min()), int(s.max()) + 1, size=n)).cast(dtype)
        elif dtype.is_float():
            values = pl.Series(c, rng.uniform(float(s.min()), float(s.max()), size=n))
        else:
            uniq = s.unique(maintain_order=True)
            values = uniq.gather(rng.integers(0, uniq.len(), size=n)).alias(c)
        nulls = rng.random(n) < real[c].null_count() / max(real.height, 1)
        cols[c] = pl.select(pl.when(pl.Series(nulls)).then(None).otherwise(values).alias(c)).to_series()
    return pl.DataFrame(cols)


def dcr_baseline_protection(real: pl.DataFrame, synthetic: pl.DataFrame, kinds: dict[str, str],
                            rng: np.random.Generator) -> float:
    baseline = random_like(real.select(list(kinds)), synthetic.height, rng)
    random_median = float(np.median(dcr(baseline, real, kinds)))
    if random_median == 0.0:
        return float("nan")
    return min(float(np.median(dcr(synthetic, real, kinds))) / random_median, 1.0)


def dcr_overfitting_protection(train: pl.DataFrame, synthetic: pl.DataFrame, holdout: pl.DataFrame,
                               kinds: dict[str, str]) -> float:
    closer = float(np.mean(dcr(synthetic, train, kinds) < dcr(synthetic, holdout, kinds)))
    return min((1.0 - closer) * 2, 1.0)


def new_row_synthesis(real: pl.DataFrame, synthetic: pl.DataFrame, kinds: dict[str, str],
                      tolerance: float = 0.01) -> float:
    """Share of ``synthetic`` rows no row of ``real`` matches."""
    cols = list(kinds)
    con = _connect(s=synthetic.select(cols), r=real.select(cols))
    try:
        return new_row_synthesis_in(con, "s", "r", kinds, tolerance)
    finally:
        con.close()


def new_row_synthesis_in(con: duckdb.DuckDBPyConnection, synthetic: str, real: str,
                         kinds: dict[str, str], tolerance: float = 0.01) -> float:
    """:func:`new_row_synthesis` of two relations of ``con`` (table names or parenthesized
    queries): a hash join on the categorical columns, then the numerical tolerance, so the real side
    can be every training row."""
    total = con.execute(f"SELECT count(*) FROM {synthetic}").fetchall()[0][0]
    if not total:
        return 1.0
    conds = []
    for c, k in kinds.items():
        a, b = f"s.{_q(c)}", f"r.{_q(c)}"
        if k == NUMERICAL:
            conds.append(f"(({a} IS NULL AND {b} IS NULL) OR abs({b} - {a}) <= abs({tolerance!r} * {a}))")
        else:
            conds.append(f"{a} IS NOT DISTINCT FROM {b}")
    matched = con.execute(f"SELECT count(*) FROM {synthetic} AS s WHERE EXISTS (SELECT 1 FROM {real} AS r "
                          f"WHERE {' AND '.join(conds)})").fetchall()[0][0]
    return (total - matched) / total
