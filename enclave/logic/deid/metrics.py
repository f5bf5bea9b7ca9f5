"""Re-identification risk and utility of an anonymized release (pure numpy, no I/O).

Risk (prosecutor / journalist / marketer attacker models, El Emam):

* prosecutor: the attacker knows the patient is in the release. Highest risk ``1 / smallest class``,
  average risk ``#classes / #released records``.
* journalist: the attacker only knows the patient is in a larger population. With the population's
  class sizes ``F`` (same quasi-identifiers, same generalization) the risk is ``max 1 / F``; without
  a population the release is its own population and journalist risk equals prosecutor risk (an
  upper bound).
* marketer: expected share of records re-identified when matching everyone,
  ``(1/n) Σ f/F`` — ``#classes / n`` without a population.

Utility. Three *decomposable* information-loss measures, each in [0, 1] and averaged over the
quasi-identifiers; a suppressed record costs as much as a fully generalized one:

* ``height``: level / hierarchy height (ARX "Height", Sweeney's precision complement).
* ``loss``: Iyengar's loss, per cell ``(leaves under the generalized value − 1) / (leaves − 1)``
  (ARX "Loss", precision-based). This is the default objective of the search.
* ``entropy``: non-uniform entropy, per cell ``−log2 P(value | generalized value)`` with
  probabilities from the data, divided by the same sum with every cell fully generalized.

Because they decompose per QI, the loss of a lattice node *ignoring suppression* is a sum of
precomputed per-(QI, level) totals, and it is a lower bound of the node's loss with suppression —
the search uses it for ordering and pruning. Also: discernibility (``Σ size² + suppressed · n``) and
average class size.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from enclave.logic.deid.hierarchy import Hierarchy


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product without BLAS (threaded BLAS spins badly on a busy 2-core machine)."""
    return float(np.multiply(a, b, dtype=np.float64).sum())


LossMeasure = Literal["loss", "height", "entropy"]
MEASURES: tuple[LossMeasure, ...] = ("loss", "height", "entropy")


@dataclass(frozen=True, slots=True)
class CellCosts:
    """One QI's cell costs of a measure: ``levels[j][leaf]``, ``suppressed[leaf]``, ``weight``."""

    levels: tuple[np.ndarray, ...]
    suppressed: np.ndarray
    weight: float

    def totals(self, leaf_counts: np.ndarray) -> np.ndarray:
        """Weighted cost of each level over all records (``leaf_counts`` = records per leaf)."""
        return np.array([_dot(leaf_counts, c) for c in self.levels]) * self.weight


@functools.lru_cache(maxsize=64)
def _data_free_costs(hierarchy: Hierarchy,
                     measure: LossMeasure) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The cell costs of ``height`` and ``loss``, which depend on the hierarchy alone (made once
    per hierarchy; read-only arrays)."""
    h = hierarchy.height
    n_leaves = len(hierarchy.leaves)
    if measure == "height":
        levels = tuple(np.full(n_leaves, j / h if h else 0.0) for j in range(h + 1))
    else:
        denom = max(n_leaves - 1, 1)
        levels = tuple((hierarchy.group_sizes(j) - 1) / denom for j in range(h + 1))
    ones = np.ones(n_leaves)
    for array in (*levels, ones):
        array.flags.writeable = False
    return levels, ones


def cell_costs(hierarchy: Hierarchy, leaf_counts: np.ndarray, n_qis: int,
               measure: LossMeasure) -> CellCosts:
    """Cell costs of ``measure`` for one QI, normalized so the whole-table value is in [0, 1]."""
    if measure in ("height", "loss"):
        levels, ones = _data_free_costs(hierarchy, measure)
        return CellCosts(levels, ones, 1.0 / ((float(leaf_counts.sum()) or 1.0) * n_qis))
    cost, supp, weight = _entropy_costs(hierarchy, leaf_counts, n_qis,
                                        range(hierarchy.height + 1))
    return CellCosts(tuple(cost), supp, weight)


def level_total(hierarchy: Hierarchy, leaf_counts: np.ndarray, n_qis: int,
                measure: LossMeasure, level: int) -> np.float64:
    """``cell_costs(...).totals(leaf_counts)[level]``, bit for bit, costing that level only."""
    if measure != "entropy":  # height and loss: the cell costs are made once per hierarchy
        costs = cell_costs(hierarchy, leaf_counts, n_qis, measure)
        return np.float64(_dot(leaf_counts, costs.levels[level])) * costs.weight
    cost, _, weight = _entropy_costs(hierarchy, leaf_counts, n_qis, [level])
    return np.float64(_dot(leaf_counts, cost[0])) * weight


def _entropy_costs(hierarchy: Hierarchy, leaf_counts: np.ndarray, n_qis: int,
                   levels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, float]:
    """Non-uniform entropy, ``-log2(count(leaf) / count(generalized value))``: the cell costs at
    ``levels`` (rows, one per level; all in one pass, the groups of each level numbered after
    those of the levels before it), the cost of a suppressed cell, and the weight."""
    n = float(leaf_counts.sum()) or 1.0
    counts = leaf_counts.astype(np.float64)
    cards = [hierarchy.cardinality(j) for j in levels]
    keys = hierarchy.codes[list(levels)] + np.cumsum([0, *cards[:-1]])[:, None]
    group = np.bincount(keys.ravel(), weights=np.tile(counts, len(cards)),
                        minlength=sum(cards))[keys]
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = np.where(counts > 0, -np.log2(counts / np.where(group > 0, group, 1)), 0.0)
    with np.errstate(divide="ignore"):
        supp = np.where(counts > 0, -np.log2(np.where(counts > 0, counts, 1) / n), 0.0)
    total = _dot(counts, supp)
    return cost, supp, 1.0 / (total * n_qis) if total > 0 else 0.0


@dataclass(frozen=True, slots=True)
class RiskReport:
    """Measured re-identification risk of a release (no patient values, only counts)."""

    records: int
    classes: int
    smallest_class: int
    suppressed: int
    prosecutor_max: float
    prosecutor_avg: float
    journalist_max: float
    marketer: float
    #: ``(class size, number of classes of that size)``, ascending.
    class_size_counts: tuple[tuple[int, int], ...]

    def records_above(self, threshold: float) -> float:
        """Share of released records whose prosecutor risk ``1/size`` exceeds ``threshold``."""
        if not self.records:
            return 0.0
        at_risk = sum(s * c for s, c in self.class_size_counts if 1.0 / s > threshold)
        return at_risk / self.records


def risk_report(sizes: np.ndarray, suppressed: int,
                population_sizes: np.ndarray | None = None) -> RiskReport:
    """Risk of a release whose equivalence classes have ``sizes`` (suppressed records removed).

    ``population_sizes[i]`` is the size of the population class matching release class ``i``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    c = int(sizes.size)
    if n == 0:
        return RiskReport(0, 0, 0, suppressed, 0.0, 0.0, 0.0, 0.0, ())
    smallest = int(sizes.min())
    if population_sizes is None:
        journalist, marketer = 1.0 / smallest, c / n
    else:
        pop = np.maximum(np.asarray(population_sizes, dtype=np.int64), sizes)
        journalist = float(1.0 / pop.min())
        marketer = float((sizes / pop).sum() / n)
    values, counts = np.unique(sizes, return_counts=True)
    return RiskReport(
        records=n,
        classes=c,
        smallest_class=smallest,
        suppressed=suppressed,
        prosecutor_max=1.0 / smallest,
        prosecutor_avg=c / n,
        journalist_max=journalist,
        marketer=marketer,
        class_size_counts=tuple((int(v), int(k)) for v, k in zip(values, counts, strict=True)),
    )


@dataclass(frozen=True, slots=True)
class UtilityReport:
    """Information loss of a release (each loss in [0, 1]; 0 = original data)."""

    height: float
    loss: float
    entropy: float
    #: ``level / height`` of each quasi-identifier.
    height_per_qi: tuple[tuple[str, float], ...]
    discernibility: float
    average_class_size: float


def decomposed_loss(costs: Sequence[CellCosts], levels: Sequence[int], leaf_codes: np.ndarray,
                    weights: np.ndarray, suppressed: np.ndarray) -> float:
    """Value of one measure for a node: ``leaf_codes`` (rows × QIs) of distinct rows with
    ``weights``; ``suppressed`` marks the rows that are suppressed."""
    total = 0.0
    for q, (cost, level) in enumerate(zip(costs, levels, strict=True)):
        codes = leaf_codes[:, q]
        per_row = np.where(suppressed, cost.suppressed[codes], cost.levels[level][codes])
        total += _dot(weights, per_row) * cost.weight
    return total


def discernibility(sizes: np.ndarray, suppressed: int, n: int) -> float:
    """ARX discernibility: each record costs its class size, a suppressed record costs ``n``."""
    sizes = np.asarray(sizes, dtype=np.float64)
    return _dot(sizes, sizes) + suppressed * float(n)
