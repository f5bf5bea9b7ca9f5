"""Privacy criteria evaluated on equivalence classes, vectorized (numpy; no I/O).

The input table (one row per patient) is encoded once: every quasi-identifier becomes an integer
leaf code of its hierarchy, every sensitive attribute an integer category code (a ``pl.Enum``
column through its categories, like ARX's dictionary-encoded data); every row keeps weight 1. A
lattice node (one level per QI) maps leaf codes to level codes with a table lookup; the level codes
are combined into one key per row and densified with presence masks (:func:`classes_of`, linear
time), which gives the equivalence classes. The search itself groups rows once, at the lowest node,
and rolls classes up from there (:mod:`enclave.logic.deid.classes`). Criteria are then whole-array tests on class sizes and on per-class
histograms of the sensitive attribute:

* k-anonymity: class size ≥ k.
* ℓ-diversity (Machanavajjhala et al.): *distinct* (≥ ℓ different values), *entropy*
  (entropy ≥ log ℓ) and *recursive (c, ℓ)* (``r1 < c · (r_ℓ + … + r_m)`` with ``r`` the value counts
  in descending order).
* t-closeness (Li et al.): Earth Mover's Distance between a class's distribution and the whole
  table's ≤ t; *equal* ground distance for categorical values (``½ Σ |p − q|``), *ordered* distance
  for ordinal / numeric values (``Σ |cumsum(p − q)| / (m − 1)``), *hierarchical* distance for
  categorical values with a hierarchy (moving mass between two leaves costs the height of their
  lowest common ancestor / the hierarchy's height; ARX's default for categorical attributes).

Suppression: records of classes that violate any criterion are suppressed; a node satisfies the
policy when the number of suppressed records stays within the limit. The t-closeness reference is
the distribution over the whole input (before suppression), as in ARX.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from enclave.core.errors import BadInputError, ConfigurationError
from enclave.logic.deid.hierarchy import Hierarchy

_EPS = 1e-12


@dataclass(frozen=True, slots=True)
class LDiversity:
    """ℓ-diversity of ``attribute`` in every class; ``c`` is used by the recursive variant only."""

    attribute: str
    l: int
    variant: Literal["distinct", "entropy", "recursive"] = "distinct"
    c: float = 1.0

    def __post_init__(self) -> None:
        if self.l < 1 or self.variant not in ("distinct", "entropy", "recursive") or self.c <= 0:
            raise ConfigurationError("ℓ-diversity needs l ≥ 1, c > 0 and a known variant")


@dataclass(frozen=True, slots=True)
class TCloseness:
    """t-closeness of ``attribute``; ``order`` fixes the value order of the ordered distance
    (default: numeric order for numeric columns, text order otherwise); ``hierarchy`` is required
    by (and only used by) the hierarchical distance."""

    attribute: str
    t: float
    distance: Literal["equal", "ordered", "hierarchical"] = "equal"
    order: tuple[str, ...] | None = None
    hierarchy: Hierarchy | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.t <= 1 or self.distance not in ("equal", "ordered", "hierarchical"):
            raise ConfigurationError(
                "t-closeness needs 0 ≤ t ≤ 1 and distance equal|ordered|hierarchical"
            )
        if (self.distance == "hierarchical") != (self.hierarchy is not None):
            raise ConfigurationError("t-closeness: a hierarchy goes with the hierarchical distance")


@dataclass(frozen=True, slots=True)
class Criteria:
    """The privacy models a node must satisfy (all of them)."""

    k: int = 1
    l_diversity: LDiversity | None = None
    t_closeness: TCloseness | None = None

    @property
    def sensitive(self) -> tuple[str, ...]:
        names = [c.attribute for c in (self.l_diversity, self.t_closeness) if c is not None]
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class Microdata:
    """The encoded table: per row (in the frame's order) QI leaf codes, sensitive codes, weight."""

    n: int
    qis: tuple[str, ...]
    hierarchies: tuple[Hierarchy, ...]
    leaf_codes: np.ndarray  # (m, Q) int32
    weights: np.ndarray  # (m,) float64
    sensitive: tuple[str, ...]
    sensitive_codes: np.ndarray  # (m, A) int64
    sensitive_cards: tuple[int, ...]
    #: whole-table distribution of each sensitive attribute (t-closeness reference)
    sensitive_dists: tuple[np.ndarray, ...]

    @property
    def distinct_rows(self) -> int:
        return int(self.weights.size)

    #: every weight is 1 (as :func:`encode` makes them): counts are plain integer counts
    unit_weights: bool = False
    #: per QI, whether its column is text (``pl.String``)
    text_qis: tuple[bool, ...] = ()

    def level_codes(self, q: int, level: int) -> np.ndarray:
        """Level code of every row for QI ``q`` at ``level`` (int64; at level 0, the leaf codes
        themselves: a leaf's level-0 code is its index)."""
        if level == 0:
            return self.leaf_codes[:, q]
        return self.hierarchies[q].codes[level].astype(np.int64)[self.leaf_codes[:, q]]

    def counts(self, codes: np.ndarray, size: int, repeat: int = 1) -> np.ndarray:
        """Weighted count of every code ``0..size-1`` over the rows (float64; ``codes`` holds
        one code per row, or ``repeat`` blocks of one per row); the integer count when every
        weight is 1, which is exact and faster."""
        if self.unit_weights:
            return np.bincount(codes, minlength=size).astype(np.float64)
        weights = np.tile(self.weights, repeat) if repeat > 1 else self.weights
        return np.bincount(codes, weights=weights, minlength=size)


def _mask_limit(m: int) -> int:
    """Largest key range grouped with a presence mask (cost ~ range) rather than a sort."""
    return max(16 * m, 1 << 12)


def _densify(key: np.ndarray, bound: int) -> tuple[np.ndarray, int]:
    """Dense ids ``0..d-1`` of ``key`` (values in ``0..bound-1``), in key order: a presence mask
    when the range is small, else one sort of the keys with the row number packed in their low
    bits (a plain integer sort, much faster than an argsort or ``np.unique``)."""
    m = key.size
    if bound <= max(_mask_limit(m), 1 << 16):
        present = np.zeros(bound, dtype=bool)
        present[key] = True
        dense = np.cumsum(present, dtype=np.int32)
        return dense[key].astype(np.int64) - 1, int(dense[-1]) if bound else 0
    rbits = max(1, (m - 1).bit_length())
    if bound > 1 << (62 - rbits):
        uniq, inverse = np.unique(key, return_inverse=True)
        return inverse.reshape(-1), int(uniq.size)
    packed = (key << rbits) | np.arange(m, dtype=np.int64)
    packed.sort()
    order = packed & ((1 << rbits) - 1)
    packed >>= rbits
    first = np.empty(m, dtype=bool)
    first[0] = True
    np.not_equal(packed[1:], packed[:-1], out=first[1:])
    ids = np.cumsum(first, dtype=np.int64)
    out = np.empty(m, dtype=np.int64)
    out[order] = ids - 1
    return out, int(ids[-1])


#: up to this many rows, rows are grouped with one sort of their packed key (when it fits)
_SORT_ROWS = 1 << 17


def classes_of(columns: Sequence[np.ndarray], cards: Sequence[int],
               m: int) -> tuple[np.ndarray, int]:
    """Class id of each of ``m`` rows grouped by several code columns (``cards``: codes per
    column), and the number of classes. Small tables (up to ``_SORT_ROWS`` rows) pack the codes
    into one key and sort it once (:func:`_densify`); larger ones stay in linear time: the
    combined key is re-densified with a presence mask whenever its range would outgrow ``16 m``,
    the columns taken by increasing cardinality so that the mask stays small. Class ids follow
    key order."""
    if m == 0:
        return np.zeros(0, dtype=np.int64), 0
    total = 1
    for card in cards:
        total *= max(card, 1)
    limit = total if m <= _SORT_ROWS and total <= 1 << 40 else _mask_limit(m)
    key = np.zeros(m, dtype=np.int64)
    bound = 1
    for q in sorted(range(len(cards)), key=lambda i: cards[i]):
        card = cards[q]
        if card <= 1:
            continue
        if bound * card > limit and bound > 1:
            key, bound = _densify(key, bound)
        key *= card
        key += columns[q]
        bound *= card
    return _densify(key, bound)


def _encode_sensitive(values: pl.Series, order: tuple[str, ...] | None) -> tuple[np.ndarray, int]:
    if values.null_count():
        raise BadInputError(
            f"column {values.name!r}: {values.null_count()} missing value(s) in a sensitive "
            "attribute"
        )
    if order is not None:
        codes = values.cast(pl.String).replace_strict(
            list(order), list(range(len(order))), default=-1, return_dtype=pl.Int64
        ).to_numpy()
        if (codes < 0).any():
            raise BadInputError(
                f"column {values.name!r}: {int((codes < 0).sum())} value(s) not in the given order"
            )
        return codes, len(order)
    dtype = values.dtype
    if isinstance(dtype, pl.Enum):  # dictionary-encoded: rank the categories only
        cats = dtype.categories.to_list()  # few: sorted in Python (code point = byte order)
        rank = np.empty(len(cats), dtype=np.int64)
        rank[sorted(range(len(cats)), key=cats.__getitem__)] = np.arange(len(cats))
        return rank[values.to_physical().to_numpy()], len(cats)
    if dtype == pl.String:  # dense rank in text order, without sorting every row
        uniq = values.unique().sort()
        codes = values.cast(pl.Enum(uniq)).to_physical().cast(pl.Int64).to_numpy()
        return codes, uniq.len()
    codes = (values.rank("dense") - 1).cast(pl.Int64).to_numpy()
    return codes, int(codes.max()) + 1 if codes.size else 0


def encode(frame: pl.DataFrame, hierarchies: Mapping[str, Hierarchy],
           criteria: Criteria) -> Microdata:
    """Encode ``frame`` (one row per patient): QIs and the criteria's sensitive columns."""
    missing = [c for c in (*hierarchies, *criteria.sensitive) if c not in frame.columns]
    if missing:
        raise BadInputError(f"columns not in the table: {', '.join(map(repr, missing))}")
    n = frame.height
    qis = tuple(hierarchies)
    hier = tuple(hierarchies[q] for q in qis)
    schema = frame.collect_schema()
    leaf = _leaf_codes(frame, schema, qis, hier)
    sens, cards = [], []
    tc = criteria.t_closeness
    for name in criteria.sensitive:
        col = frame.get_column(name)
        if tc is not None and tc.attribute == name and tc.hierarchy is not None:
            codes, card = tc.hierarchy.encode(col).astype(np.int64), len(tc.hierarchy.leaves)
        else:
            order = tc.order if tc is not None and tc.attribute == name else None
            codes, card = _encode_sensitive(col, order if tc and tc.distance == "ordered" else None)
        sens.append(codes)
        cards.append(card)
    # identical rows are not collapsed first (that costs a sort of the whole table): the search
    # works on class tables (enclave.logic.deid.classes), which group the rows once
    weights = np.ones(n)
    leaf_codes = leaf if qis else np.zeros((n, 0), np.int32)
    sens_codes = np.column_stack(sens) if sens else np.zeros((n, 0), np.int64)
    dists = tuple(np.bincount(s, minlength=c) / max(n, 1) for s, c in zip(sens, cards, strict=True))
    return Microdata(n, qis, hier, leaf_codes, weights, criteria.sensitive,
                     sens_codes.astype(np.int64, copy=False), tuple(cards), dists,
                     unit_weights=True, text_qis=tuple(schema[q] == pl.String for q in qis))


def _leaf_codes(frame: pl.DataFrame, schema: pl.Schema, qis: Sequence[str],
                hierarchies: Sequence[Hierarchy]) -> np.ndarray:
    """Leaf index of every value of every QI (rows × QIs, int32), the columns cast in one
    (parallel) polars pass; an unknown or missing value raises as :meth:`Hierarchy.encode`.
    ``schema``: the frame's."""
    if not qis:
        return np.zeros((frame.height, 0), np.int32)
    enum = [isinstance(schema[q], pl.Enum) for q in qis]
    # text columns cast to the hierarchy's leaves in one (parallel) polars pass; Enum columns
    # give their own codes (mapped per category below)
    cast = frame.select(
        (pl.col(q) if schema[q] == pl.String else pl.col(q).cast(pl.String))
        .cast(pl.Enum(h.leaves), strict=False).to_physical().alias(f"_{i}")
        for i, (q, h, is_enum) in enumerate(zip(qis, hierarchies, enum, strict=True))
        if not is_enum
    ) if not all(enum) else None
    physical = frame.select(pl.col(q).to_physical().alias(f"_{i}")  # one query for all
                            for i, (q, is_enum) in enumerate(zip(qis, enum, strict=True))
                            if is_enum) if any(enum) else None
    out = np.empty((frame.height, len(qis)), dtype=np.int32, order="F")
    for i, (q, h, is_enum) in enumerate(zip(qis, hierarchies, enum, strict=True)):
        col = (physical if is_enum else cast).get_column(f"_{i}")
        bad = col.null_count() > 0
        if not bad:
            codes = col.to_numpy()
            if is_enum:  # category → leaf, one lookup per category, into the column itself
                lut = np.array([h.index.get(c, -1) for c in schema[q].categories.to_list()],
                               dtype=np.int32)
                if codes.size:  # (physical codes are valid positions: no bounds check needed)
                    np.take(lut, codes, out=out[:, i], mode="clip")
                bad = bool((lut < 0).any()) and bool((out[:, i] < 0).any())
            else:
                out[:, i] = codes
        if bad:
            h.encode(frame.get_column(q))  # raises, naming the column and the hierarchy
            raise AssertionError(f"column {q!r}: encoding disagrees with Hierarchy.encode")
    return out


@dataclass(frozen=True, slots=True)
class Partition:
    """Equivalence classes of a node: class of every row, class sizes (records)."""

    levels: tuple[int, ...]
    cls: np.ndarray
    sizes: np.ndarray


def partition(micro: Microdata, levels: Sequence[int]) -> Partition:
    """Group the rows by their QI codes at ``levels``."""
    cols = [micro.level_codes(q, lv) for q, lv in enumerate(levels)]
    cards = [h.cardinality(lv) for h, lv in zip(micro.hierarchies, levels, strict=True)]
    cls, c = classes_of(cols, cards, micro.distinct_rows)
    sizes = micro.counts(cls, c)
    return Partition(tuple(levels), cls, sizes)


def _histograms(micro: Microdata, part: Partition, a: int) -> np.ndarray:
    card = micro.sensitive_cards[a]
    c = part.sizes.size
    flat = part.cls * card + micro.sensitive_codes[:, a]
    return micro.counts(flat, c * card).reshape(c, card)


def l_diverse(hist: np.ndarray, crit: LDiversity) -> np.ndarray:
    """Which classes (rows of ``hist``, value counts) satisfy ``crit``."""
    if crit.variant == "distinct":
        return (hist > 0).sum(axis=1) >= crit.l
    if crit.variant == "entropy":
        total = hist.sum(axis=1, keepdims=True)
        p = hist / np.where(total > 0, total, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
        return ent >= np.log(crit.l) - _EPS
    desc = -np.sort(-hist, axis=1)
    tail = desc[:, crit.l - 1:].sum(axis=1)
    return desc[:, 0] < crit.c * tail


def emd(hist: np.ndarray, reference: np.ndarray, distance: str,
        hierarchy: Hierarchy | None = None) -> np.ndarray:
    """Earth Mover's Distance of every class distribution (rows of ``hist``) to ``reference``."""
    total = hist.sum(axis=1, keepdims=True)
    diff = hist / np.where(total > 0, total, 1)
    diff -= reference  # in place: subtracting a broadcast row from a temporary is slow in numpy
    if distance == "hierarchical" and hierarchy is not None:
        return _hierarchical_emd(diff, hierarchy)
    if distance == "equal":
        return 0.5 * np.abs(diff).sum(axis=1)
    m = hist.shape[1]
    if m <= 1:
        return np.zeros(hist.shape[0])
    return np.abs(np.cumsum(diff, axis=1)[:, :-1]).sum(axis=1) / (m - 1)


@functools.lru_cache(maxsize=32)
def _tree(hierarchy: Hierarchy) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per level ``j ≥ 1`` of ``hierarchy``: the level-(j−1) codes ordered by parent, and where
    each parent's children start in that order (made once per hierarchy)."""
    out = []
    for j in range(1, hierarchy.height + 1):
        parent = np.zeros(hierarchy.cardinality(j - 1), dtype=np.int64)
        parent[hierarchy.codes[j - 1]] = hierarchy.codes[j]  # parent of every level-(j-1) code
        order = np.argsort(parent, kind="stable")
        out.append((order, np.flatnonzero(np.r_[True, np.diff(parent[order]) != 0])))
    return tuple(out)


def _hierarchical_emd(extra: np.ndarray, hierarchy: Hierarchy) -> np.ndarray:
    """Li et al.'s hierarchical EMD: Σ over inner nodes N of height(N)/H · min(pos(N), neg(N)),
    where pos/neg sum the positive/negative surplus ``p − q`` of N's children."""
    h = hierarchy.height
    out = np.zeros(extra.shape[0])
    if h == 0:
        return out
    child = extra  # surplus of every node of the level below, per class
    for j, (order, starts) in enumerate(_tree(hierarchy), start=1):
        pos = np.add.reduceat(np.maximum(child[:, order], 0.0), starts, axis=1)
        neg = np.add.reduceat(np.maximum(-child[:, order], 0.0), starts, axis=1)
        out += (j / h) * np.minimum(pos, neg).sum(axis=1)
        child = pos - neg  # surplus of the level-j nodes (parents in order of their codes)
    return out


@dataclass(frozen=True, slots=True)
class Verdict:
    """Which classes violate the criteria and how many records that suppresses."""

    violating: np.ndarray  # (classes,) bool
    suppressed: int
    k_suppressed: int  # records suppressed by k-anonymity alone


def judge(micro: Microdata, part: Partition, criteria: Criteria) -> Verdict:
    """Evaluate all criteria on the classes of ``part``."""
    return verdict(micro, part.sizes, lambda a: _histograms(micro, part, a), criteria)


def verdict(micro: Microdata, sizes: np.ndarray, hist: Callable[[int], np.ndarray],
            criteria: Criteria) -> Verdict:
    """Evaluate all criteria on classes given by their ``sizes`` (records) and ``hist(a)``, the
    class × value counts of sensitive attribute ``a`` of ``micro`` (computed only when needed)."""
    k_bad = sizes < criteria.k
    bad = k_bad.copy()
    if criteria.l_diversity is not None:
        a = micro.sensitive.index(criteria.l_diversity.attribute)
        bad |= ~l_diverse(hist(a), criteria.l_diversity)
    if criteria.t_closeness is not None:
        tc = criteria.t_closeness
        a = micro.sensitive.index(tc.attribute)
        dist = emd(hist(a), micro.sensitive_dists[a], tc.distance, tc.hierarchy)
        bad |= dist > tc.t + _EPS
    k_supp = int(round(sizes[k_bad].sum()))
    supp = int(round(sizes[bad].sum())) if criteria.sensitive else k_supp
    return Verdict(bad, supp, k_supp)
