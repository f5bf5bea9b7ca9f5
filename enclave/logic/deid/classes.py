"""Equivalence classes of lattice nodes rolled up from finer nodes (numpy; no I/O, no logging).

Grouping the rows of the table again for every node the search checks costs a pass over
all rows per node. A node's classes are unions of the classes of any *finer* node (one whose level is
≤ on every quasi-identifier), so — as ARX does with its snapshots of checked nodes — a
:class:`ClassTable` keeps, per class, its level codes, its size and its histograms of the sensitive
attributes; the table of a coarser node is computed from the smallest cached finer table by mapping
its codes one level up and summing sizes and histograms per new class (:meth:`ClassCache.table`).
The criteria then run once per class on those histograms (:func:`enclave.logic.deid.privacy.verdict`),
so a check costs a pass over the classes of the finer node, not over the rows. The top-down search
checks a batch of nodes at once (:meth:`ClassCache.counts_many`): one pass over the table of their
meet (their lowest levels) gives the class sizes and histograms of all of them.

Contract: for every node, the classes, sizes and histograms equal those of grouping the
rows directly (:func:`enclave.logic.deid.privacy.partition`) — counts are sums of integer weights, exact
in float64 — so the search sees the same verdicts as without the cache. Class order differs.
Only counts and codes are held, never patient values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from enclave.core.errors import EnclaveError
from enclave.logic.deid.metrics import CellCosts
from enclave.logic.deid.privacy import Microdata, classes_of, partition

#: memory the cache may hold (bytes); the bottom table is kept whatever its size
CACHE_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class ClassTable:
    """The classes of one node: ``codes[q, c]`` (level code of class ``c`` for QI ``q`` at
    ``levels[q]``), ``sizes[c]`` (records) and, per sensitive attribute, ``hists[a][c, v]``."""

    levels: tuple[int, ...]
    codes: np.ndarray  # (Q, C) int64
    sizes: np.ndarray  # (C,) float64
    hists: tuple[np.ndarray, ...]  # (C, card_a) float64 each
    #: per sensitive attribute, its non-empty cells (class, value, count), made when the table
    #: is first rolled up (:func:`_cells`)
    cells: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=list, compare=False, repr=False)

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.sizes.nbytes + sum(h.nbytes for h in self.hists)


def _cells(table: ClassTable) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The non-empty (class, value) cells of every histogram of ``table``: rolling a table up
    sums its cells, not its whole class × value histograms (most of whose cells are empty when
    there are many small classes)."""
    if len(table.cells) < len(table.hists):
        for hist in table.hists[len(table.cells):]:
            flat = np.flatnonzero(hist)
            cls, value = np.divmod(flat, hist.shape[1])
            table.cells.append((cls, value, hist.reshape(-1)[flat]))
    return table.cells


def sum_rows(cls: np.ndarray, c: int, values: np.ndarray) -> np.ndarray:
    """Per-class sums of the rows of ``values`` (rows × card) grouped by ``cls``."""
    card = values.shape[1]
    flat = (cls[:, None] * card + np.arange(card)).reshape(-1)
    return np.bincount(flat, weights=values.reshape(-1), minlength=c * card).reshape(c, card)


def _representatives(cls: np.ndarray, c: int) -> np.ndarray:
    rep = np.empty(c, dtype=np.int64)
    rep[cls] = np.arange(cls.size)
    return rep


def _group(cols: list[np.ndarray], cards: list[int], m: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Class of each of ``m`` rows grouped by ``cols``, the number of classes and each class's
    codes (Q × classes). When the combined key range is small (coarse nodes) the codes are read
    back from the present keys — and when every key is present (common near the top of the
    lattice) the key itself is the class; otherwise from one representative row per class.
    Columns with one code (a QI at its top level) add nothing to the key and are skipped."""
    bound = 1
    for card in cards:
        bound *= max(card, 1)
    if bound <= max(16 * m, 1 << 16):
        key = None
        for col, card in zip(cols, cards, strict=True):
            if card <= 1:
                continue
            if key is None:
                key = col.astype(np.int64)
            else:
                key *= card
                key += col
        if key is None:
            key = np.zeros(m, dtype=np.int64)
        present = np.zeros(bound, dtype=bool)
        present[key] = True
        uniq = np.flatnonzero(present)
        if uniq.size == bound:
            cls = key
        else:
            lookup = np.empty(bound, dtype=np.int64)
            lookup[uniq] = np.arange(uniq.size)
            cls = lookup[key]
        live = [q for q, card in enumerate(cards) if card > 1]
        codes = np.zeros((len(cols), uniq.size), dtype=np.int64)
        if live:
            codes[live] = np.unravel_index(uniq, [cards[q] for q in live])
        return cls, int(uniq.size), codes
    cls, c = classes_of(cols, cards, m)
    rep = _representatives(cls, c)
    codes = np.empty((len(cols), c), dtype=np.int64)
    for q, col in enumerate(cols):
        np.take(col, rep, out=codes[q])
    return cls, c, codes


def _bottom(micro: Microdata, levels: Sequence[int]) -> tuple[ClassTable, np.ndarray]:
    """The classes of ``levels`` grouped from the rows of ``micro``, and the class of every row."""
    part = partition(micro, levels)
    c = part.sizes.size
    rep = _representatives(part.cls, c)
    codes = np.empty((len(levels), c), dtype=np.int64)
    for q, lv in enumerate(levels):
        codes[q] = micro.hierarchies[q].codes[lv][micro.leaf_codes[rep, q]]
    hists = []
    for a, card in enumerate(micro.sensitive_cards):
        flat = part.cls * card + micro.sensitive_codes[:, a]
        hists.append(micro.counts(flat, c * card).reshape(c, card))
    return ClassTable(tuple(int(v) for v in levels), codes, part.sizes, tuple(hists)), part.cls


class ClassCache:
    """Class tables of checked nodes; :meth:`table` rolls a node up from the best finer one.

    At most ``slots`` tables and ``limit`` bytes are kept besides the bottom table; when full, the
    table with the most classes goes first (small tables are the cheapest bases)."""

    def __init__(self, micro: Microdata, lowest: Sequence[int], limit: int = CACHE_BYTES,
                 slots: int = 64) -> None:
        self.micro = micro
        self.limit = limit
        self.bottom, self._bottom_rows = _bottom(micro, lowest)
        self._tables: list[ClassTable | None] = [None] * slots
        self._levels = np.zeros((slots, len(lowest)), dtype=np.int64)
        self._classes = np.full(slots, np.inf)  # classes per slot, inf when empty
        self._used = 0
        self._maps: dict[tuple[int, int, int], np.ndarray] = {}

    def _up(self, q: int, lo: int, hi: int) -> np.ndarray:
        """Level-``hi`` code of every level-``lo`` code of QI ``q``."""
        key = (q, lo, hi)
        if key not in self._maps:
            h = self.micro.hierarchies[q]
            parent = np.zeros(h.cardinality(lo), dtype=np.int64)
            parent[h.codes[lo]] = h.codes[hi]
            self._maps[key] = parent
        return self._maps[key]

    def _bottom_column(self, q: int, level: int) -> np.ndarray:
        """Level-``level`` code of QI ``q`` of every bottom class (kept: the bottom table is the
        base of many roll-ups)."""
        key = (q, -1, level)
        if key not in self._maps:
            self._maps[key] = self._up(q, self.bottom.levels[q], level)[self.bottom.codes[q]]
        return self._maps[key]

    def _base(self, levels: np.ndarray) -> ClassTable:
        """The cached table with the fewest classes among the nodes finer than ``levels``."""
        fallback = self.bottom
        finer = (self._levels <= levels).all(axis=1)
        if finer.any():
            classes = np.where(finer, self._classes, np.inf)
            slot = int(classes.argmin())
            if classes[slot] < fallback.sizes.size:
                table = self._tables[slot]
                if table is None:  # a slot's class count is set only with its table
                    raise EnclaveError(f"the class-table cache's slot {slot} counts classes but "
                                       "holds no table (a bug of enclave.logic.deid.classes)")
                return table
        return fallback

    def rows_at(self, levels: Sequence[int]) -> tuple[ClassTable, np.ndarray]:
        """The classes of ``levels`` rolled up from the bottom table (not cached) and the class
        of every row of ``micro`` in that table — the same grouping as
        :func:`enclave.logic.deid.privacy.partition`, without grouping the rows again."""
        table, up = self._roll(self.bottom, tuple(int(v) for v in levels))
        return table, up[self._bottom_rows]

    def counts_many(self, nodes: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...],
                                                      np.ndarray]:
        """Sizes and sensitive histograms of the classes of several nodes (rows of ``nodes``),
        enough to judge them, laid end to end, and the node (row) of every class.

        They are rolled up together from the table of the nodes' meet (their lowest levels, a
        node finer than each; cached like any table), which has far fewer classes than the bottom
        table when the nodes are near each other. A node whose key range is no larger than the
        meet's table gets its classes indexed by key, empty ones included (size 0: no criterion
        counts records of theirs as suppressed), which saves numbering them; the others get the
        classes of :meth:`_roll`."""
        base = self.table(nodes.min(axis=0))
        hierarchies, m = self.micro.hierarchies, base.sizes.size
        cards = np.array([[h.cardinality(v) for h, v in zip(hierarchies, row, strict=True)]
                          for row in nodes.tolist()], dtype=np.int64).reshape(len(nodes), -1)
        bounds = cards.prod(axis=1)
        small = np.flatnonzero(bounds <= m)
        parts: list[tuple[np.ndarray, tuple[np.ndarray, ...]]] = []
        owner: list[np.ndarray] = []
        if small.size:
            total = int(bounds[small].sum())
            # int32 keys when they fit: numpy's int64 broadcast arithmetic is several times slower
            widest = total * max([1, *(h.shape[1] for h in base.hists)])
            dtype = np.int32 if widest < 2**31 else np.int64
            key = np.zeros((small.size, m), dtype=dtype)
            for q in range(nodes.shape[1]):
                card = cards[small, q].astype(dtype)
                if (card > 1).any():
                    levels = nodes[small, q].tolist()
                    column = {v: self._column(base, q, v).astype(dtype) for v in set(levels)}
                    key *= card[:, None]
                    key += np.stack([column[v] for v in levels])
            start = (np.cumsum(bounds[small]) - bounds[small]).astype(dtype)
            key += start[:, None]
            sizes = np.bincount(key.ravel(), weights=np.tile(base.sizes, small.size),
                                minlength=total)
            hists = []
            for h, (cell_cls, value, count) in zip(base.hists, _cells(base), strict=True):
                card = h.shape[1]
                flat = key[:, cell_cls]
                flat *= card
                flat += value.astype(dtype)
                hists.append(np.bincount(flat.ravel(), weights=np.tile(count, small.size),
                                         minlength=total * card).reshape(total, card))
            parts.append((sizes, tuple(hists)))
            owner.append(np.repeat(small, bounds[small]))
        for i in np.flatnonzero(bounds > m).tolist():
            table, _ = self._roll(base, tuple(int(v) for v in nodes[i]))
            parts.append((table.sizes, table.hists))
            owner.append(np.full(table.sizes.size, i))
        if len(parts) == 1:
            return parts[0][0], parts[0][1], owner[0]
        return (np.concatenate([p[0] for p in parts]),
                tuple(np.concatenate(h) for h in zip(*(p[1] for p in parts), strict=True)),
                np.concatenate(owner))

    def _column(self, base: ClassTable, q: int, level: int) -> np.ndarray:
        """Level-``level`` code of QI ``q`` of every class of ``base`` (a finer table)."""
        if level == base.levels[q]:
            return base.codes[q]
        if base is self.bottom:
            return self._bottom_column(q, level)
        return self._up(q, base.levels[q], level)[base.codes[q]]

    def table(self, levels: Sequence[int]) -> ClassTable:
        """The classes of ``levels`` (rolled up, then cached)."""
        wanted = np.asarray(levels, dtype=np.int64)
        base = self._base(wanted)
        if tuple(int(v) for v in wanted) == base.levels:
            return base
        table, _ = self._roll(base, tuple(int(v) for v in wanted))
        self._keep(table)
        return table

    def _roll(self, base: ClassTable, lv: tuple[int, ...]) -> tuple[ClassTable, np.ndarray]:
        """The table of node ``lv`` from the finer ``base``, and the new class of each base class."""
        hierarchies = self.micro.hierarchies
        cols = [self._column(base, q, v) for q, v in enumerate(lv)]
        cards = [h.cardinality(v) for h, v in zip(hierarchies, lv, strict=True)]
        cls, c, codes = _group(cols, cards, base.sizes.size)
        sizes = np.bincount(cls, weights=base.sizes, minlength=c)
        if base is self.bottom:  # many small classes, most cells empty: sum the non-empty ones
            hists = tuple(
                np.bincount(cls[cell_cls] * h.shape[1] + value, weights=count,
                            minlength=c * h.shape[1]).reshape(c, h.shape[1])
                for h, (cell_cls, value, count) in zip(base.hists, _cells(base), strict=True))
        else:
            hists = tuple(sum_rows(cls, c, h) for h in base.hists)
        return ClassTable(lv, codes, sizes, hists), cls

    def _keep(self, table: ClassTable) -> None:
        size = table.nbytes
        while True:
            empty = np.flatnonzero(np.isinf(self._classes))
            if empty.size and self._used + size <= self.limit:
                break
            if np.isinf(self._classes).all():
                return  # larger than the whole budget: not cached
            slot = int(np.where(np.isinf(self._classes), -1, self._classes).argmax())
            victim = self._tables[slot]
            if victim is None or victim.sizes.size <= table.sizes.size:
                return  # every cached table is a better base than this one
            self._used -= victim.nbytes
            self._tables[slot] = None
            self._classes[slot] = np.inf
        slot = int(empty[0])
        self._tables[slot] = table
        self._levels[slot] = table.levels
        self._classes[slot] = table.sizes.size
        self._used += size


def suppression_penalties(costs: Sequence[CellCosts], leaf_counts: Sequence[np.ndarray],
                          micro: Microdata) -> list[list[np.ndarray]]:
    """``pen[q][level][code]``: extra loss of suppressing one record whose QI ``q`` has ``code``
    at ``level`` instead of generalizing it (weighted like the measure).

    For each measure this difference is the same for every leaf under one generalized value (height:
    ``1 − level/height``; Iyengar's loss: ``1 − (group − 1)/(leaves − 1)``; non-uniform entropy:
    ``log2(n / records of the group)``), so a node's loss with suppression is its lower bound plus
    ``Σ_q Σ_suppressed classes size · pen[q][level][code]``, computed per class.
    """
    out = []
    for q, cost in enumerate(costs):
        h = micro.hierarchies[q]
        counts = leaf_counts[q]
        per_level = []
        for lv, level_cost in enumerate(cost.levels):
            codes = h.codes[lv]
            c = h.cardinality(lv)
            total = np.bincount(codes, weights=counts, minlength=c)
            diff = np.bincount(codes, weights=counts * (cost.suppressed - level_cost), minlength=c)
            per_level.append(np.divide(diff, total, out=np.zeros(c), where=total > 0) * cost.weight)
        out.append(per_level)
    return out


def suppressed_loss(penalties: list[list[np.ndarray]], table: ClassTable,
                    suppressed: np.ndarray) -> float:
    """Loss added by suppressing the classes marked in ``suppressed`` (see above)."""
    sizes = table.sizes[suppressed]
    total = 0.0
    for q, lv in enumerate(table.levels):
        total += float(np.multiply(sizes, penalties[q][lv][table.codes[q][suppressed]]).sum())
    return total
