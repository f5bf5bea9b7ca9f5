"""The generalization lattice and an optimal search over it (pure numpy, no data access).

A node assigns one generalization level to every quasi-identifier; node ``a`` is a predecessor of
``b`` when ``a ≤ b`` level by level. The search finds the node that satisfies the privacy policy
with the least information loss, given

* ``lower_bound[i]``: the node's loss ignoring suppression — monotone along the lattice, and a lower
  bound of its real loss (a suppressed record costs at least as much as a generalized one);
* ``check(i)``: evaluates a node on the data and returns a :class:`NodeCheck`.

Algorithm (best-first branch and bound with Flash-style predictive tagging):

1. Visit nodes in increasing lower bound; stop as soon as the bound reaches the best loss found —
   no later node can be cheaper, so the result is optimal.
2. For a *monotone* policy (no suppression, or k-anonymity alone with suppression) anonymity is
   inherited upward: when a node is anonymous all its successors are, when it is not none of its
   predecessors is. An untagged node is resolved by building a path of untagged nodes upward from
   it (always the successor with the smallest bound) and binary-searching the path for its lowest
   anonymous node; every check tags whole sub-lattices, so most nodes are never evaluated.
3. For a non-monotone policy (ℓ-diversity / t-closeness with suppression) only the failure of the
   k-anonymity part is inherited downward; other nodes are checked one by one in bound order.

When the loss of every anonymous node equals its bound (``exact``: no suppression allowed) and the
policy is monotone, the search is top-down instead (:func:`_search_exact`): the answer is the first
anonymous node in the order (bound, height, position), and only nodes before the best one found so
far can beat it. Of those, the untagged node with the greatest height (then the greatest bound) is
checked next: it is near the top of the region left, so a failure tags a large cone below it, and a
success lowers the bound of the region. Nodes tagged anonymous never need evaluating at all. Its
next candidates are checked eight at a time when the caller can check several nodes at once (one
pass over a class table for all of them); a candidate an earlier one would have tagged costs a
check, never a wrong answer. The anonymizer runs the search on the sub-lattice at or above its
floor (:meth:`enclave.logic.deid._Engine.floor`). On Adult with the benchmark's criteria
(``tests/benchmarks/bench_deid_adult.py``) this checks 2–77 nodes of that sub-lattice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from enclave.core.errors import ConfigurationError

#: default of the largest lattice the search explores (the release builder passes the setting
#: ``release.max_lattice_nodes``; see :class:`enclave.logic.deid.AnonymizationPolicy`)
MAX_NODES = 5_000_000
_TOL = 1e-12
#: nodes scanned at a time for the next candidates of the top-down search
_WINDOW = 256
#: candidates the top-down search checks together (when the check can take several)
_BATCH = 8


@dataclass(frozen=True, slots=True)
class Lattice:
    """All level combinations between ``lowest`` and ``highest`` (inclusive), per QI."""

    names: tuple[str, ...]
    lowest: tuple[int, ...]
    highest: tuple[int, ...]
    max_nodes: int = MAX_NODES

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.lowest) == len(self.highest):
            raise ConfigurationError("lattice: one level range per quasi-identifier")
        if any(lo < 0 or hi < lo for lo, hi in zip(self.lowest, self.highest, strict=True)):
            raise ConfigurationError("lattice: each QI needs 0 ≤ lowest level ≤ highest level")
        if self.size > self.max_nodes:
            raise ConfigurationError(
                f"the generalization lattice has {self.size} nodes, more than the setting "
                f"release.max_lattice_nodes allows ({self.max_nodes}); cap some "
                "quasi-identifiers' levels (lowest/highest) or raise the setting"
            )

    @property
    def size(self) -> int:
        return int(np.prod([hi - lo + 1 for lo, hi in zip(self.lowest, self.highest, strict=True)]))

    def nodes(self) -> np.ndarray:
        """Every node as a row of levels (``size × QIs``), in mixed-radix order."""
        ranges = [np.arange(lo, hi + 1, dtype=np.int16)
                  for lo, hi in zip(self.lowest, self.highest, strict=True)]
        if not ranges:
            return np.zeros((1, 0), dtype=np.int16)
        grids = np.meshgrid(*ranges, indexing="ij")
        return np.column_stack([g.reshape(-1) for g in grids])

    def index(self, levels: Sequence[int]) -> int:
        """Position of a node in :meth:`nodes`."""
        idx = 0
        for lv, lo, hi in zip(levels, self.lowest, self.highest, strict=True):
            idx = idx * (hi - lo + 1) + (lv - lo)
        return idx


@dataclass(frozen=True, slots=True)
class NodeCheck:
    """Outcome of evaluating one node."""

    anonymous: bool
    loss: float  # real loss (with suppression); meaningful when anonymous
    fails_below: bool  # every predecessor fails too (inheritable failure)


@dataclass(frozen=True, slots=True)
class SearchResult:
    best: int | None  # index of the optimal node, None when no node satisfies the policy
    loss: float
    checked: int


def search(lattice: Lattice, lower_bound: np.ndarray, check: Callable[[int], NodeCheck], *,
           monotone: bool, exact: bool,
           check_many: Callable[[list[int]], list[NodeCheck]] | None = None,
           nodes: np.ndarray | None = None) -> SearchResult:
    """Optimal node of ``lattice`` (see the module docstring). ``check_many`` (optional): the
    checks of several nodes at once, used by the top-down search to evaluate its next
    candidates together. ``nodes``: ``lattice.nodes()`` if already made. (Nodes no node can
    qualify below are left out by searching the sub-lattice above them.)"""
    nodes = lattice.nodes() if nodes is None else nodes
    n_nodes = nodes.shape[0]
    # row-wise work is done column by column: numpy reduces a short axis slowly
    columns = [np.ascontiguousarray(nodes[:, q]) for q in range(nodes.shape[1])]
    height = np.zeros(n_nodes, dtype=np.int64)
    for col in columns:
        height += col
    order = np.lexsort((height, lower_bound))
    # ge[q][v]: nodes whose level of QI q is ≥ v (le likewise); a node's successors are the AND
    ge = [[col >= v for v in range(hi + 1)] for col, hi in zip(columns, lattice.highest, strict=True)]
    le = [[col <= v for v in range(hi + 1)] for col, hi in zip(columns, lattice.highest, strict=True)]

    def cone(table: list[list[np.ndarray]], idx: int) -> np.ndarray:
        mask = np.ones(n_nodes, dtype=bool)
        for q, level in enumerate(nodes[idx].tolist()):
            mask &= table[q][level]
        return mask

    status = np.zeros(n_nodes, dtype=np.int8)  # 0 unknown, 1 anonymous, -1 not
    loss = np.full(n_nodes, np.nan)
    best, best_loss, checked = None, np.inf, 0
    radix = [hi - lo + 1 for lo, hi in zip(lattice.lowest, lattice.highest, strict=True)]
    strides = np.cumprod([1] + radix[::-1])[:-1][::-1]

    def above(idx: int) -> np.ndarray:  # the node and its successors
        return cone(ge, idx)

    def below(idx: int) -> np.ndarray:  # the node and its predecessors
        return cone(le, idx)

    def consider(idx: int, value: float) -> None:
        nonlocal best, best_loss
        if value < best_loss - _TOL:
            best, best_loss = idx, value

    if monotone and exact:
        return _search_exact(order, lower_bound, height, status,
                             check_many or (lambda idxs: [check(i) for i in idxs]),
                             above, below, 1 if check_many is None else _BATCH)

    def run(idx: int) -> None:
        nonlocal checked
        checked += 1
        out = check(idx)
        if out.fails_below:
            status[below(idx)] = -1
        if out.anonymous:
            loss[idx] = out.loss
            consider(idx, out.loss)
            if monotone:
                up = above(idx) & (status == 0)
                status[up] = 1
                if exact and up.any():
                    cand = np.flatnonzero(up)
                    j = cand[np.lexsort((height[cand], lower_bound[cand]))[0]]
                    loss[j] = lower_bound[j]
                    consider(int(j), float(lower_bound[j]))
            status[idx] = 1
        elif status[idx] == 0:
            status[idx] = -1

    def path_from(idx: int) -> list[int]:
        path = [idx]
        current = idx
        while True:
            succ = [current + int(strides[q]) for q in range(nodes.shape[1])
                    if nodes[current, q] < lattice.highest[q]]
            succ = [s for s in succ if status[s] == 0]
            if not succ:
                return path
            current = min(succ, key=lambda s: (lower_bound[s], s))
            path.append(current)

    pos = 0
    while pos < n_nodes:
        # next node in bound order that still needs work: unknown, or (with suppression) tagged
        # anonymous but not yet evaluated. Every other node is a no-op: a failing one cannot be a
        # solution, and without suppression a node tagged anonymous costs its bound, which is at
        # least the bound of the cheapest node of the same tagging (considered when tagged).
        rest = order[pos:]
        st = status[rest]
        todo = st == 0
        if not exact:
            todo |= (st == 1) & np.isnan(loss[rest])
        hits = np.flatnonzero(todo)
        if not hits.size:
            break
        pos += int(hits[0])
        idx = int(order[pos])
        pos += 1
        if lower_bound[idx] >= best_loss - _TOL:
            break  # no remaining node can be cheaper than the best one found
        if status[idx] == 0 and monotone:
            path = path_from(idx)
            lo, hi = 0, len(path) - 1
            while lo <= hi:
                mid = (lo + hi) // 2
                if status[path[mid]] == 0:
                    run(path[mid])
                if status[path[mid]] == 1:
                    hi = mid - 1
                else:
                    lo = mid + 1
        if status[idx] == 0:
            run(idx)
        if status[idx] == 1 and np.isnan(loss[idx]):
            if exact:
                loss[idx] = lower_bound[idx]
                consider(idx, float(lower_bound[idx]))
            else:
                checked += 1
                out = check(idx)
                loss[idx] = out.loss
                consider(idx, out.loss)
    return SearchResult(best, float(best_loss) if best is not None else float("nan"), checked)


def _search_exact(order: np.ndarray, lower_bound: np.ndarray, height: np.ndarray,
                  status: np.ndarray, check_many: Callable[[list[int]], list[NodeCheck]],
                  above: Callable[[int], np.ndarray], below: Callable[[int], np.ndarray],
                  batch: int) -> SearchResult:
    """The first anonymous node in the order (bound, height, position) of a monotone policy whose
    anonymous nodes cost their bound (see the module docstring); ``order`` lists the nodes in
    that order.

    The next ``batch`` candidates are checked together (one pass over the class table for all
    of them is cheaper than one each). A candidate that an earlier one of its batch would have
    tagged is checked for nothing, but its verdict is as true as any: tagging from it keeps the
    search exact, and the answer — the first anonymous node — is the same."""
    n_nodes = order.size
    rank = np.empty(n_nodes, dtype=np.int64)
    rank[order] = np.arange(n_nodes)
    # candidates in the order they are picked: the last one of this order first. A candidate
    # stays valid while it is untagged and ranks before the best node found; both only ever stop
    # holding, so the scan for the last valid ones moves one way, a window at a time
    pick = np.lexsort((lower_bound, height))
    pick_rank = rank[pick]
    best, checked, end = None, 0, n_nodes
    while True:
        limit = n_nodes if best is None else rank[best]
        todo: list[int] = []
        while end > 0 and len(todo) < batch:
            start = max(0, end - _WINDOW)
            hits = np.flatnonzero((status[pick[start:end]] == 0) & (pick_rank[start:end] < limit))
            taken = hits[::-1][:batch - len(todo)]
            todo.extend(int(i) for i in pick[start + taken])
            end = start + int(taken[-1]) if taken.size else start
        if not todo:
            break
        checked += len(todo)
        for idx, out in zip(todo, check_many(todo), strict=True):
            if out.anonymous:
                up = np.flatnonzero(above(idx) & (status == 0))
                if up.size:
                    status[up] = 1
                    first = int(up[rank[up].argmin()])
                    if best is None or rank[first] < rank[best]:
                        best = first
            else:
                status[below(idx)] = -1
    if best is None:
        return SearchResult(None, float("nan"), checked)
    return SearchResult(best, float(lower_bound[best]), checked)
