"""Generalization hierarchies for quasi-identifiers.

A hierarchy enumerates its leaf values (level 0, the values that occur in data) and, for each higher
level, the label every leaf generalizes to; the last level is normally ``*`` (fully suppressed).
Each level must be a coarsening of the one below it (a value maps to exactly one parent).

Sources:

* ARX-style CSV (:func:`read_hierarchy`): ``;``-separated, no header, one row per leaf, columns =
  levels (``39;35-39;30-39;20-39;*``).
* Built-in generators: :func:`age_bands` (1 → 5 → 10 → 20 years → ``*``), :func:`interval_bands`
  (integer ranges in nested bands), :func:`region_codes` (GB/T 2260 administrative divisions:
  county ``110105`` → city ``110100`` → province ``110000`` → ``*``) and :func:`date_granularity`
  (day → month → quarter → year → ``*``).

Leaves are strings; :meth:`Hierarchy.encode` casts a column to text (dates become ISO
``YYYY-MM-DD``, integers their decimal form) and maps it to leaf indices in one vectorized pass.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from enclave.core.errors import BadInputError, ConfigurationError

TOP = "*"


def _dense(labels: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Dense codes in order of first appearance, and the label of each code."""
    uniq, first, inverse = np.unique(np.asarray(labels, dtype=object), return_index=True,
                                     return_inverse=True)
    order = np.argsort(first, kind="stable")  # code k = k-th label to appear
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse].astype(np.int32), tuple(str(u) for u in uniq[order])


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """A generalization hierarchy: ``levels[j][i]`` is the label of leaf ``i`` at level ``j``."""

    name: str
    levels: tuple[tuple[str, ...], ...]
    #: ``codes[j, i]``: dense code of leaf ``i`` at level ``j`` (derived).
    codes: np.ndarray = field(init=False, repr=False, compare=False)
    #: ``labels[j][c]``: label of code ``c`` at level ``j`` (derived).
    labels: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)
    #: ``index[leaf]``: position of a leaf value (derived).
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.levels or not self.levels[0]:
            raise ConfigurationError(f"hierarchy {self.name!r}: no values")
        n = len(self.levels[0])
        if any(len(level) != n for level in self.levels):
            raise ConfigurationError(f"hierarchy {self.name!r}: levels have different lengths")
        if len(set(self.levels[0])) != n:
            raise ConfigurationError(f"hierarchy {self.name!r}: leaf values are not unique")
        codes, labels = zip(*(_dense(level) for level in self.levels), strict=True)
        stacked = np.vstack(codes)
        for j in range(1, stacked.shape[0]):
            # coarsening: every code of level j-1 has exactly one parent at level j
            pairs = np.unique(stacked[j - 1].astype(np.int64) * (n + 1) + stacked[j])
            if pairs.size != len(labels[j - 1]):
                raise ConfigurationError(
                    f"hierarchy {self.name!r}: level {j} is not a generalization of level {j - 1} "
                    "(a value has two parents)"
                )
        object.__setattr__(self, "codes", stacked)
        object.__setattr__(self, "labels", tuple(labels))
        object.__setattr__(self, "index", {v: i for i, v in enumerate(self.levels[0])})

    @property
    def leaves(self) -> tuple[str, ...]:
        return self.levels[0]

    @property
    def height(self) -> int:
        """Index of the most general level (number of levels − 1)."""
        return len(self.levels) - 1

    def cardinality(self, level: int) -> int:
        return len(self.labels[level])

    def group_sizes(self, level: int) -> np.ndarray:
        """For each leaf, how many leaves share its label at ``level``."""
        codes = self.codes[level]
        return np.bincount(codes)[codes]

    def encode(self, values: pl.Series) -> np.ndarray:
        """Leaf index of every value (int32); raise naming the column if any value is unknown.

        A dictionary-encoded column (``pl.Enum``) is mapped through its categories: one lookup
        per category, then one gather of the physical codes."""
        if isinstance(values.dtype, pl.Enum):
            bad = values.null_count()
            out = None
            if not bad:
                index = self.index
                lut = np.array([index.get(c, -1) for c in values.dtype.categories.to_list()],
                               dtype=np.int32)
                out = lut[values.to_physical().to_numpy()] if values.len() else lut[:0]
                bad = int((out < 0).sum())
                out = None if bad else out
        else:
            text = values.cast(pl.String) if values.dtype != pl.String else values
            as_leaf = text.cast(pl.Enum(self.leaves), strict=False)
            bad = as_leaf.null_count()
            out = None if bad else as_leaf.to_physical().to_numpy().astype(np.int32)
        if out is None:
            raise BadInputError(
                f"column {values.name!r}: {bad} value(s) are missing or not leaves of hierarchy "
                f"{self.name!r}; extend the hierarchy or clean the column"
            )
        return out


def read_hierarchy(path: Path, name: str | None = None) -> Hierarchy:
    """Read an ARX-style hierarchy CSV (``;``-separated, one row per leaf, columns = levels)."""
    rows: list[list[str]] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cells = line.split(";")
            if rows and len(cells) != len(rows[0]):
                raise BadInputError(
                    f"{path}: row {number} has {len(cells)} levels, row 1 has {len(rows[0])}"
                )
            rows.append(cells)
    if not rows:
        raise BadInputError(f"{path}: empty hierarchy file")
    levels = tuple(tuple(col) for col in zip(*rows, strict=True))
    try:
        return Hierarchy(name or path.stem, levels)
    except ConfigurationError as exc:
        raise BadInputError(f"{path}: {exc}") from exc


def interval_bands(name: str, lo: int, hi: int, widths: Sequence[int]) -> Hierarchy:
    """Integers ``lo..hi`` in nested bands aligned at ``lo`` (each width divides the next), ``*``.

    ``interval_bands("x", 0, 99, (5, 10))``: ``37`` → ``35-39`` → ``30-39`` → ``*``.
    """
    if hi < lo:
        raise ConfigurationError(f"hierarchy {name!r}: empty range")
    for a, b in zip(widths, widths[1:], strict=False):
        if a <= 0 or b % a:
            raise ConfigurationError(f"hierarchy {name!r}: band widths must nest ({a} ∤ {b})")
    values = np.arange(lo, hi + 1)
    levels = [tuple(str(v) for v in values)]
    for w in widths:
        start = lo + (values - lo) // w * w
        levels.append(tuple(f"{a}-{a + w - 1}" for a in start))
    levels.append((TOP,) * values.size)
    return Hierarchy(name, tuple(levels))


def age_bands(name: str = "age", max_age: int = 120,
              widths: Sequence[int] = (5, 10, 20)) -> Hierarchy:
    """Ages in whole years 0..``max_age``: 1 → 5 → 10 → 20 years → ``*``."""
    return interval_bands(name, 0, max_age, widths)


def region_codes(name: str, codes: Iterable[str]) -> Hierarchy:
    """GB/T 2260 six-digit codes: county → city (``xxxx00``) → province (``xx0000``) → ``*``."""
    leaves = sorted(set(codes))
    bad = sum(1 for c in leaves if len(c) != 6 or not c.isdigit())
    if bad:
        raise ConfigurationError(f"hierarchy {name!r}: {bad} code(s) are not six digits")
    return Hierarchy(
        name,
        (
            tuple(leaves),
            tuple(c[:4] + "00" for c in leaves),
            tuple(c[:2] + "0000" for c in leaves),
            (TOP,) * len(leaves),
        ),
    )


def date_granularity(name: str, start: dt.date, end: dt.date) -> Hierarchy:
    """Every day ``start..end`` (ISO): day → month ``2023-04`` → quarter ``2023-Q2`` → year → *."""
    if end < start:
        raise ConfigurationError(f"hierarchy {name!r}: empty date range")
    days = pl.date_range(start, end, interval="1d", eager=True)
    frame = pl.DataFrame({"d": days}).select(
        pl.col("d").dt.strftime("%Y-%m-%d").alias("day"),
        pl.col("d").dt.strftime("%Y-%m").alias("month"),
        (pl.col("d").dt.year().cast(pl.String) + "-Q" + pl.col("d").dt.quarter().cast(pl.String))
        .alias("quarter"),
        pl.col("d").dt.year().cast(pl.String).alias("year"),
    )
    levels = [tuple(frame[c].to_list()) for c in frame.columns]
    levels.append((TOP,) * frame.height)
    return Hierarchy(name, tuple(levels))
