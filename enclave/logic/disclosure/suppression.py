"""Secondary (complementary) suppression on a two-way table with margins.

After primary suppression (the rules), a suppressed cell could often be recovered by subtracting
the published cells of its row or column from the published total. :func:`secondary_suppression`
suppresses further cells until no suppressed value can be recovered that way:

1. greedy by lines: while some row or column (the total row and column included) holds exactly one
   suppressed cell, suppress the smallest other cell of that line (inner cells before totals,
   non-zero before zero);
2. exactness check: a suppressed cell is still recoverable when it is pinned by the linear system of
   all row and column equations (it lies on no cycle of suppressed cells). For such a cell the
   cheapest rectangle through it is suppressed, which puts it on a cycle; repeat.

Tables are small (cells of one output), so the loops run over cells, never over rows of data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from enclave.core.errors import BadInputError


@dataclass(frozen=True, slots=True)
class SuppressedTable:
    """A table with margins: ``values`` and masks are (rows + 1) × (cols + 1), totals last."""

    row_labels: tuple
    col_labels: tuple
    values: np.ndarray
    primary: np.ndarray
    suppressed: np.ndarray

    @property
    def secondary(self) -> np.ndarray:
        return self.suppressed & ~self.primary


def with_margins(inner: np.ndarray) -> np.ndarray:
    """Append a total column and a total row (and the grand total)."""
    inner = np.asarray(inner, dtype=float)
    full = np.zeros((inner.shape[0] + 1, inner.shape[1] + 1))
    full[:-1, :-1] = inner
    full[:-1, -1] = inner.sum(axis=1)
    full[-1, :-1] = inner.sum(axis=0)
    full[-1, -1] = inner.sum()
    return full


def equations(shape: tuple[int, int]) -> np.ndarray:
    """Coefficient matrix (equations × cells, row-major) of 'inner cells sum to the total'."""
    m, n = shape  # with margins
    eqs = []
    for i in range(m):
        a = np.zeros((m, n))
        a[i, :-1], a[i, -1] = 1, -1
        eqs.append(a.ravel())
    for j in range(n):
        a = np.zeros((m, n))
        a[:-1, j], a[-1, j] = 1, -1
        eqs.append(a.ravel())
    return np.array(eqs)


def recoverable(suppressed: np.ndarray) -> np.ndarray:
    """Mask of suppressed cells whose value the published cells and margins pin down exactly."""
    unknown = np.flatnonzero(suppressed.ravel())
    out = np.zeros(suppressed.size, dtype=bool)
    if unknown.size == 0:
        return out.reshape(suppressed.shape)
    a = equations(suppressed.shape)[:, unknown]
    _, sv, vt = np.linalg.svd(a)
    rank = int((sv > 1e-9).sum())
    null = vt[rank:]  # basis of the null space (rows)
    pinned = np.abs(null).sum(axis=0) < 1e-9 if null.size else np.ones(unknown.size, bool)
    out[unknown[pinned]] = True
    return out.reshape(suppressed.shape)


def _cost(values: np.ndarray, i: int, j: int) -> tuple:
    m, n = values.shape
    total = i == m - 1 or j == n - 1
    v = abs(values[i, j])
    return (total, v == 0, v, i, j)


def _greedy_lines(values: np.ndarray, sup: np.ndarray) -> None:
    m, n = values.shape
    changed = True
    while changed:
        changed = False
        for line in [[(i, j) for j in range(n)] for i in range(m)] + \
                    [[(i, j) for i in range(m)] for j in range(n)]:
            if sum(sup[c] for c in line) != 1:
                continue
            free = [c for c in line if not sup[c]]
            if free:
                sup[min(free, key=lambda c: _cost(values, *c))] = True
                changed = True


def _rectangle(values: np.ndarray, sup: np.ndarray, i: int, j: int) -> None:
    m, n = values.shape
    best, best_cost = None, None
    for i2 in range(m):
        for j2 in range(n):
            if i2 == i or j2 == j:
                continue
            cells = [(i, j2), (i2, j), (i2, j2)]
            cost = tuple(sum(x) for x in zip(*[(0, 0, 0) if sup[c] else
                                                 (_cost(values, *c)[0], 1, abs(values[c]))
                                                 for c in cells]))
            if best_cost is None or cost < best_cost:
                best, best_cost = cells, cost
    for c in best or []:
        sup[c] = True


def secondary_suppression(inner: np.ndarray, primary: np.ndarray,
                          margin_primary: np.ndarray | None = None,
                          row_labels: Sequence = (), col_labels: Sequence = ()) -> SuppressedTable:
    """Suppress complementary cells of ``inner`` (m × n) given the primary mask (m × n, or the
    full (m+1) × (n+1) mask in ``margin_primary`` when margins themselves failed a rule)."""
    inner = np.asarray(inner, dtype=float)
    primary = np.asarray(primary, dtype=bool)
    if inner.ndim != 2 or primary.shape != inner.shape:
        raise BadInputError("suppression needs a 2-D table and a primary mask of the same shape")
    values = with_margins(inner)
    prim = np.zeros(values.shape, dtype=bool)
    prim[:-1, :-1] = primary
    if margin_primary is not None:
        prim |= np.asarray(margin_primary, dtype=bool)
    sup = prim.copy()
    for _ in range(sup.size):
        _greedy_lines(values, sup)
        pinned = np.argwhere(recoverable(sup))
        if pinned.size == 0:
            break
        _rectangle(values, sup, *pinned[0])
    return SuppressedTable(tuple(row_labels), tuple(col_labels), values, prim, sup)


def suppress_frame(cells: pl.DataFrame, row: str, col: str, weight: str = "weight",
                   margin_failures: pl.DataFrame | None = None
                   ) -> tuple[pl.DataFrame, SuppressedTable]:
    """Apply secondary suppression to a checked long table (one row per ``row`` × ``col`` cell,
    with ``outcome`` and ``value``). Secondarily suppressed cells get outcome ``suppress``, a
    reason, and a null value. Returns the updated frame and the table with margins (whose
    additive weights, e.g. row counts, decided which complements were cheapest).

    ``margin_failures`` (columns ``row``, ``col``, ``level`` as from
    :func:`enclave.logic.disclosure.evidence.margin_evidence`) lists margins that failed a rule
    themselves: they are suppressed first, as primary cells."""
    wide = cells.pivot(on=col, index=row, values=weight, aggregate_function="first",
                       sort_columns=True).sort(row, nulls_last=True)
    rows_ = wide[row].to_list()
    cols_ = [c for c in wide.columns if c != row]
    prim_w = cells.with_columns((pl.col("outcome") == "suppress").alias("_p")).pivot(
        on=col, index=row, values="_p", aggregate_function="first", sort_columns=True
    ).sort(row, nulls_last=True)
    inner = wide.select(cols_).fill_null(0).to_numpy()
    primary = prim_w.select(cols_).fill_null(False).to_numpy().astype(bool)
    margin = np.zeros((len(rows_) + 1, len(cols_) + 1), dtype=bool)
    for r_, c_, level in (margin_failures.select(row, col, "level").rows()
                          if margin_failures is not None else []):
        if level == "total":
            margin[-1, -1] = True
        elif level == "row" and r_ in rows_:
            margin[rows_.index(r_), -1] = True
        elif level == "column" and str(c_) in cols_:
            margin[-1, cols_.index(str(c_))] = True
    table = secondary_suppression(inner, primary, margin, row_labels=rows_, col_labels=cols_)
    sec = np.argwhere(table.secondary[:-1, :-1])
    if sec.size == 0:
        return cells, table
    col_dtype = cells.schema[col]
    keys = pl.DataFrame({row: [rows_[i] for i, _ in sec], "_c": [cols_[j] for _, j in sec]},
                        schema_overrides={row: cells.schema[row]}).with_columns(
        pl.col("_c").cast(col_dtype).alias(col), pl.lit(True).alias("_sec")).drop("_c")
    out = cells.join(keys, on=[row, col], how="left", nulls_equal=True).with_columns(
        pl.col("_sec").fill_null(False))
    out = out.with_columns(
        pl.when("_sec").then(pl.lit("suppress")).otherwise("outcome").alias("outcome"),
        pl.when("_sec").then(pl.col("reasons").list.concat(pl.lit(
            [("suppressed as a complement, so that suppressed cells cannot be recovered from "
             "the totals (secondary suppression)")]))).otherwise("reasons").alias("reasons"),
        pl.when("_sec").then(None).otherwise("value").alias("value"),
    ).drop("_sec")
    return out, table
