"""Anonymization of a release: optimal generalization + suppression at the patient level.

Pure logic (polars/numpy in, polars out; no store I/O). The input is **one row per patient**:
callers aggregate row-level tables with :func:`per_patient` first, so k-anonymity, ℓ-diversity and
t-closeness count patients, not rows.

>>> import polars as pl
>>> from enclave.logic.deid import AnonymizationPolicy, anonymize
>>> from enclave.logic.deid.hierarchy import age_bands
>>> patients = pl.DataFrame({"age": [31, 33, 34, 36, 38, 52, 57, 58]})
>>> result = anonymize(patients, AnonymizationPolicy({"age": age_bands(max_age=99)}, k=2))
>>> ages = result.frame["age"].unique(maintain_order=True).to_list()
>>> result.node, result.risk.smallest_class, ages
({'age': 2}, 3, ['30-39', '50-59'])

The search (:mod:`enclave.logic.deid.lattice`) returns the node with the least information loss
(:mod:`enclave.logic.deid.metrics`) among those that satisfy every criterion
(:mod:`enclave.logic.deid.privacy`) after suppressing at most ``max_suppression`` of the patients; the
records of violating classes are removed from the output. When no node qualifies,
:class:`~enclave.core.errors.DisclosureRiskError` names the quasi-identifier that drives the risk.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from enclave.core.errors import BadInputError, ConfigurationError, DisclosureRiskError
from enclave.logic.deid.classes import (
    ClassCache,
    ClassTable,
    sum_rows,
    suppressed_loss,
    suppression_penalties,
)
from enclave.logic.deid.hierarchy import Hierarchy
from enclave.logic.deid.lattice import MAX_NODES, Lattice, NodeCheck, search
from enclave.logic.deid.metrics import (
    MEASURES,
    CellCosts,
    LossMeasure,
    RiskReport,
    UtilityReport,
    cell_costs,
    discernibility,
    level_total,
    risk_report,
)
from enclave.logic.deid.privacy import (
    Criteria,
    LDiversity,
    Microdata,
    TCloseness,
    encode,
    judge,
    partition,
)
from enclave.logic.deid.privacy import verdict as judged

__all__ = [
    "AnonymizationPolicy",
    "AnonymizationResult",
    "LDiversity",
    "QuasiIdentifier",
    "TCloseness",
    "anonymize",
    "per_patient",
]


@dataclass(frozen=True, slots=True)
class QuasiIdentifier:
    """A QI's hierarchy and the levels the search may use (``highest=None``: up to ``*``)."""

    hierarchy: Hierarchy
    lowest: int = 0
    highest: int | None = None

    @property
    def top(self) -> int:
        return self.hierarchy.height if self.highest is None else self.highest


@dataclass(frozen=True, slots=True)
class AnonymizationPolicy:
    """What a release must satisfy: k, optional ℓ-diversity / t-closeness, suppression limit
    (share of patients, 0–1) and the loss measure the search minimizes; ``max_lattice_nodes``
    (the setting ``release.max_lattice_nodes``) caps the lattice the search may explore."""

    qis: Mapping[str, Hierarchy | QuasiIdentifier]
    k: int = 2
    l_diversity: LDiversity | None = None
    t_closeness: TCloseness | None = None
    max_suppression: float = 0.0
    measure: LossMeasure = "loss"
    max_lattice_nodes: int = MAX_NODES

    def __post_init__(self) -> None:
        if not self.qis:
            raise ConfigurationError("a policy needs at least one quasi-identifier")
        if self.k < 1:
            raise ConfigurationError("k must be at least 1")
        if not 0.0 <= self.max_suppression <= 1.0:
            raise ConfigurationError("max_suppression is a share between 0 and 1")
        if self.max_lattice_nodes < 1:
            raise ConfigurationError("release.max_lattice_nodes must be at least 1")
        if self.measure not in MEASURES:
            raise ConfigurationError(f"measure must be one of {', '.join(MEASURES)}")
        clash = set(self.criteria.sensitive) & set(self.qis)
        if clash:
            raise ConfigurationError(
                f"columns both quasi-identifier and sensitive: {sorted(clash)}"
            )
        for name, qi in self.quasi_identifiers.items():
            if not 0 <= qi.lowest <= qi.top <= qi.hierarchy.height:
                raise ConfigurationError(f"quasi-identifier {name!r}: levels out of range")

    @property
    def quasi_identifiers(self) -> dict[str, QuasiIdentifier]:
        return {n: q if isinstance(q, QuasiIdentifier) else QuasiIdentifier(q)
                for n, q in self.qis.items()}

    @property
    def criteria(self) -> Criteria:
        return Criteria(self.k, self.l_diversity, self.t_closeness)


@dataclass(frozen=True, slots=True)
class AnonymizationResult:
    """The chosen node (level per QI), the released frame and its measured risk and utility."""

    node: dict[str, int]
    frame: pl.DataFrame
    suppressed: int
    risk: RiskReport
    utility: UtilityReport
    nodes_checked: int
    lattice_size: int


def per_patient(frame: pl.DataFrame, patient_id: str, columns: Sequence[str],
                rule: Literal["constant", "first"] = "constant") -> pl.DataFrame:
    """One row per patient with ``columns`` (quasi-identifiers and sensitive attributes).

    ``rule="constant"`` (default) requires every column to be constant within a patient and raises
    :class:`BadInputError` naming the columns that vary (and how many patients) otherwise;
    ``rule="first"`` takes the patient's first row in frame order (sort the frame first, e.g. by
    visit date, to make that the earliest value).
    """
    missing = [c for c in (patient_id, *columns) if c not in frame.columns]
    if missing:
        raise BadInputError(f"columns not in the table: {', '.join(map(repr, missing))}")
    if rule not in ("constant", "first"):
        raise ConfigurationError("rule must be 'constant' or 'first'")
    if rule == "constant" and columns:
        varying = frame.group_by(patient_id).agg(
            (pl.col(c).n_unique() > 1).alias(c) for c in columns
        ).select(pl.col(c).sum() for c in columns).row(0, named=True)
        bad = {c: n for c, n in varying.items() if n}
        if bad:
            detail = ", ".join(f"{c!r} ({n} patients)" for c, n in bad.items())
            raise BadInputError(
                f"values vary within a patient in {detail}; aggregate them first or use "
                "rule='first'"
            )
    return frame.group_by(patient_id, maintain_order=True).agg(pl.col(c).first() for c in columns)


class _Engine:
    """Encoded data + costs for one anonymization run."""

    def __init__(self, frame: pl.DataFrame, policy: AnonymizationPolicy) -> None:
        self.policy = policy
        self.qis = policy.quasi_identifiers
        self.criteria = policy.criteria
        self.micro: Microdata = encode(
            frame, {n: q.hierarchy for n, q in self.qis.items()}, self.criteria
        )
        self.limit = math.floor(policy.max_suppression * self.micro.n + 1e-9)
        # leaf i of QI q is entry leaf_start[q] + i of the QIs' leaves laid end to end; per
        # sensitive attribute, the records of every (leaf, value) of every QI (for the floor),
        # whose row sums are the records of every leaf
        micro = self.micro
        self.leaf_start = np.cumsum([0, *(len(h.leaves) for h in micro.hierarchies)])
        n_leaves = int(self.leaf_start[-1])
        self.leaf_hists = []
        for a, card in enumerate(micro.sensitive_cards):
            keys = micro.leaf_codes.T + self.leaf_start[:-1, None]
            keys *= card  # in place: a broadcast add onto a temporary is ten times slower here
            keys += micro.sensitive_codes[:, a]
            self.leaf_hists.append(micro.counts(keys.ravel(), n_leaves * card,
                                                repeat=len(self.qis)).reshape(n_leaves, card))
        if self.leaf_hists and micro.unit_weights:
            all_counts = self.leaf_hists[0].sum(axis=1)  # integer counts: exact in any order
        else:
            keys = micro.leaf_codes.T + self.leaf_start[:-1, None]
            all_counts = micro.counts(keys.ravel(), n_leaves, repeat=len(self.qis))
        self.leaf_counts = np.split(all_counts, self.leaf_start[1:-1])
        self._costs: dict[str, list[CellCosts]] = {}
        self._totals: dict[str, list[np.ndarray]] = {}
        self._penalties: dict[str, list[list[np.ndarray]]] = {}
        self.lattice = Lattice(tuple(self.qis), tuple(q.lowest for q in self.qis.values()),
                               tuple(q.top for q in self.qis.values()),
                               policy.max_lattice_nodes)
        self.nodes = np.zeros((0, len(self.qis)), dtype=np.int16)  # the search's (restrict)
        self.monotone = self.limit == 0 or (self.criteria.l_diversity is None
                                            and self.criteria.t_closeness is None)

    def costs(self, measure: LossMeasure) -> list[CellCosts]:
        """Per QI, the cell costs of ``measure`` (made when first asked for)."""
        if measure not in self._costs:
            self._costs[measure] = [cell_costs(h, self.leaf_counts[q], len(self.qis), measure)
                                    for q, h in enumerate(self.micro.hierarchies)]
        return self._costs[measure]

    def totals(self, measure: LossMeasure) -> list[np.ndarray]:
        """Per QI, the weighted cost of each of its levels over all records."""
        if measure not in self._totals:
            self._totals[measure] = [c.totals(self.leaf_counts[q])
                                     for q, c in enumerate(self.costs(measure))]
        return self._totals[measure]

    def restrict(self, floor: Sequence[int]) -> Lattice:
        """The sub-lattice of the nodes at or above ``floor``, on which the search runs (no node
        below the floor can qualify: :meth:`floor`); ``nodes`` becomes its nodes. Its nodes keep
        their order by bound, height and position, so the search finds the same node as on the
        whole lattice with the nodes below the floor tagged as failing."""
        sub = Lattice(self.lattice.names, tuple(int(v) for v in floor), self.lattice.highest,
                      self.lattice.max_nodes)
        self.nodes = sub.nodes()
        return sub

    def lower_bound(self, measure: LossMeasure) -> np.ndarray:
        lb = np.zeros(self.nodes.shape[0])
        for q, totals in enumerate(self.totals(measure)):
            lb += totals[self.nodes[:, q]]
        return lb

    def penalties(self, measure: LossMeasure) -> list[list[np.ndarray]]:
        if measure not in self._penalties:
            self._penalties[measure] = suppression_penalties(self.costs(measure),
                                                             self.leaf_counts, self.micro)
        return self._penalties[measure]

    def class_loss(self, measure: LossMeasure, table: ClassTable,
                   suppressed: np.ndarray) -> float:
        """``measure`` of a node from its class table: the loss without suppression plus the
        suppression penalties of the classes marked in ``suppressed`` (equal, up to rounding, to
        :func:`~enclave.logic.deid.metrics.decomposed_loss` of their rows). Without suppression
        only the node's own level of each QI is costed (a measure the search did not use need
        not be costed at every level)."""
        if suppressed.any() or measure in self._totals:
            base = sum(self.totals(measure)[q][lv] for q, lv in enumerate(table.levels))
            return float(base) + (suppressed_loss(self.penalties(measure), table, suppressed)
                                  if suppressed.any() else 0.0)
        return float(sum(level_total(h, self.leaf_counts[q], len(self.qis), measure, lv)
                         for q, (h, lv) in enumerate(zip(self.micro.hierarchies, table.levels,
                                                         strict=True))))

    def floor(self) -> tuple[int, ...] | None:
        """Per quasi-identifier, the lowest level at which that QI *alone* passes the inheritable
        part of the policy (the whole policy when it is monotone, k-anonymity otherwise), or
        ``None`` when some QI fails even at its highest allowed level.

        A node's classes are subsets of the classes of the same QI alone at the same level, so a
        record suppressed by k-anonymity on the QI alone is suppressed at the node too; and a
        union of classes that each satisfy ℓ-diversity (every variant) or t-closeness (the EMD is
        convex) satisfies it. So no node with a level below the floor can qualify: the search
        starts at the floor (ARX prunes its lattice the same way, one attribute at a time)."""
        micro, qis = self.micro, list(self.qis.values())
        # every QI alone at every allowed level, stacked into one class table judged in one
        # pass: the classes of (q, level) are rows span[q, level] of the table; leaf i of QI q
        # (row start[q] + i of the leaf table) falls in row span start + its level code
        rows_of_leaves, spans, offset = [], [], 0
        for q, qi in enumerate(qis):
            h = micro.hierarchies[q]
            for level in range(qi.lowest, qi.top + 1):
                rows_of_leaves.append((q, h.codes[level] + offset))
                spans.append((q, level))
                offset += h.cardinality(level)
        start = self.leaf_start
        leaf = np.concatenate([start[q] + np.arange(len(micro.hierarchies[q].leaves))
                               for q, _ in rows_of_leaves])
        row = np.concatenate([codes for _, codes in rows_of_leaves])
        sizes = np.bincount(row, weights=np.concatenate(self.leaf_counts)[leaf], minlength=offset)
        hists = [sum_rows(row, offset, by_leaf[leaf]) for by_leaf in self.leaf_hists]
        verdict = judged(micro, sizes, hists.__getitem__, self.criteria)
        bad = verdict.violating if self.monotone else sizes < self.criteria.k
        span = np.repeat(np.arange(len(spans)), [micro.hierarchies[q].cardinality(level)
                                                 for q, level in spans])
        failed = np.rint(np.bincount(span[bad], weights=sizes[bad], minlength=len(spans)))
        out = []
        for q in range(len(qis)):
            passing = [level for (p, level), f in zip(spans, failed, strict=True)
                       if p == q and f <= self.limit]
            if not passing:
                return None
            out.append(passing[0])
        return tuple(out)

    def checker(self, lb: np.ndarray, floor: Sequence[int]) -> tuple[
            Callable[[int], NodeCheck], Callable[[list[int]], list[NodeCheck]] | None]:
        """The search's node check, and its check of several nodes at once where there is one:
        classes rolled up from the finest cached node (:mod:`enclave.logic.deid.classes`;
        grouped from the rows once, at ``floor``), criteria once per class, the loss with
        suppression per class (lower bound + suppression penalties).

        Without suppression the search runs top-down (:func:`enclave.logic.deid.lattice.search`):
        every node it checks is coarser than the floor but finer than or beside the nodes checked
        before, so no checked table can serve a later check; there the class sizes and
        histograms of a batch of nodes are rolled up from the floor's table in one pass
        (:meth:`ClassCache.counts_many`), all their classes judged at once, and nothing is
        cached."""
        measure = self.policy.measure
        cache = self.cache = ClassCache(self.micro, floor)
        penalties = self.penalties(measure) if self.limit else []  # no suppression: not needed
        if self.limit == 0 and self.monotone:
            def check_many(idxs: list[int]) -> list[NodeCheck]:
                sizes, hists, node = cache.counts_many(self.nodes[idxs])
                bad = judged(self.micro, sizes, hists.__getitem__, self.criteria).violating
                # a node passes when no violating class of it holds a record
                failed = np.rint(np.bincount(node[bad], weights=sizes[bad], minlength=len(idxs))) > 0
                return [NodeCheck(not f, float(lb[i]), bool(f))
                        for i, f in zip(idxs, failed.tolist(), strict=True)]

            return lambda idx: check_many([idx])[0], check_many

        def check(idx: int) -> NodeCheck:
            table = cache.table(self.nodes[idx])
            verdict = judged(self.micro, table.sizes, table.hists.__getitem__, self.criteria)
            ok = verdict.suppressed <= self.limit
            value = float(lb[idx])
            if ok and verdict.suppressed:
                value += suppressed_loss(penalties, table, verdict.violating)
            below = (not ok) if self.monotone else verdict.k_suppressed > self.limit
            return NodeCheck(ok, value, below)

        return check, None

    def suppressed_at(self, levels: Sequence[int]) -> int:
        return judge(self.micro, partition(self.micro, levels), self.criteria).suppressed

    def refuse(self) -> DisclosureRiskError:
        """Explain why no node qualifies, naming the quasi-identifier that drives the risk."""
        full = [q.hierarchy.height for q in self.qis.values()]
        policy_text = f"k={self.policy.k}" + (
            ", ℓ-diversity" if self.criteria.l_diversity else "") + (
            ", t-closeness" if self.criteria.t_closeness else "")
        if self.suppressed_at(full) > self.limit:
            return DisclosureRiskError(
                f"no generalization satisfies the policy ({policy_text}, at most {self.limit} of "
                f"{self.micro.n} patients suppressed): even with every quasi-identifier fully "
                "generalized the table fails it; add patients or relax the policy"
            )
        worst, worst_supp = None, -1
        for q, (name, qi) in enumerate(self.qis.items()):
            if qi.top == qi.hierarchy.height:
                continue
            levels = list(full)
            levels[q] = qi.top
            supp = self.suppressed_at(levels)
            if supp > worst_supp:
                worst, worst_supp = name, supp
        name = worst if worst is not None else next(iter(self.qis))
        return DisclosureRiskError(
            f"no generalization within the allowed levels satisfies the policy ({policy_text}); "
            f"quasi-identifier {name!r} drives the risk: at its highest allowed level "
            f"{self.qis[name].top}, with every other quasi-identifier fully generalized, "
            f"{max(worst_supp, 0)} patients fall in violating classes (limit {self.limit}); "
            "allow it to generalize further or relax the policy"
        )


def _generalized(micro: Microdata, levels: Sequence[int]) -> list[pl.Expr]:
    """The QI columns of every input row of the encoded frame, generalized to ``levels`` (as
    text labels: at level 0 the value's text, which is its leaf's label), as expressions on that
    frame: one query gathers every column's labels; a text column at level 0 is kept as it is."""
    out = []
    for q, (name, h) in enumerate(zip(micro.qis, micro.hierarchies, strict=True)):
        if levels[q] == 0 and micro.text_qis[q]:
            out.append(pl.col(name))
            continue
        # each leaf's label at the level, gathered by the rows' leaves (row i of the frame is
        # row i): faster than casting a dictionary-encoded column to text
        rows = pl.Series(micro.leaf_codes[:, q])
        out.append(pl.lit(_leaf_labels(h, levels[q])).gather(pl.lit(rows)).alias(name))
    return out


@functools.lru_cache(maxsize=256)
def _leaf_labels(hierarchy: Hierarchy, level: int) -> pl.Series:
    """The label at ``level`` of every leaf of ``hierarchy``, in leaf order (made once)."""
    labels = pl.Series(hierarchy.labels[level], dtype=pl.String)
    return labels.gather(hierarchy.codes[level]) if level else labels


def _population_sizes(engine: _Engine, released: pl.DataFrame, population: pl.DataFrame,
                      levels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Size of every released class and of the matching population class (same QIs and node)."""
    qis = list(engine.micro.qis)
    pop_micro = encode(population, {n: q.hierarchy for n, q in engine.qis.items()}, Criteria())
    pop_counts = population.select(_generalized(pop_micro, levels)).group_by(qis).len("F")
    both = released.group_by(qis).len("f").join(pop_counts, on=qis, how="left")
    return both["f"].to_numpy(), both["F"].fill_null(0).to_numpy()


def anonymize(frame: pl.DataFrame, policy: AnonymizationPolicy,
              population: pl.DataFrame | None = None, *,
              patient_id: str | None = None) -> AnonymizationResult:
    """Generalize and suppress ``frame`` (one row per patient) optimally under ``policy``.

    The QI columns come back as text labels of the chosen levels; other columns pass through
    unchanged (dropping direct identifiers is the release builder's job); suppressed patients'
    rows are removed. ``population`` (optional, same QI columns) is the population the patients
    were drawn from, for journalist and marketer risk. With ``patient_id`` the frame is checked to
    hold one row per patient. Raises :class:`DisclosureRiskError` when no node qualifies.
    """
    if patient_id is not None:
        if patient_id not in frame.columns:
            raise BadInputError(f"column {patient_id!r} not in the table")
        repeated = frame.height - frame.get_column(patient_id).n_unique()
        if repeated:
            raise BadInputError(
                f"column {patient_id!r}: {repeated} rows repeat a patient; the engine needs one row "
                "per patient (aggregate with per_patient first)"
            )
    engine = _Engine(frame, policy)
    floor = engine.floor()
    if floor is None:
        raise engine.refuse()
    lattice = engine.restrict(floor)
    lb = engine.lower_bound(policy.measure)
    check, check_many = engine.checker(lb, floor)
    found = search(lattice, lb, check, check_many=check_many, monotone=engine.monotone,
                   exact=engine.limit == 0, nodes=engine.nodes)
    if found.best is None:
        raise engine.refuse()
    levels = tuple(int(v) for v in engine.nodes[found.best])
    micro = engine.micro
    table = engine.cache.table(levels)
    verdict = judged(micro, table.sizes, table.hists.__getitem__, engine.criteria)
    released = frame.with_columns(_generalized(micro, levels))
    if verdict.suppressed:
        # the rows to remove: every row's class at this node (rolled up from the bottom classes),
        # judged again (same classes, same verdicts)
        by_row, row_cls = engine.cache.rows_at(levels)
        violating = judged(micro, by_row.sizes, by_row.hists.__getitem__, engine.criteria).violating
        released = released.filter(pl.Series(~violating[row_cls]))
    sizes = table.sizes[~verdict.violating]
    pop_sizes = None
    if population is not None:
        sizes, pop_sizes = _population_sizes(engine, released, population, levels)
    risk = risk_report(sizes, verdict.suppressed, pop_sizes)
    heights = tuple(
        (name, lv / h.height if h.height else 0.0)
        for name, lv, h in zip(micro.qis, levels, micro.hierarchies, strict=True)
    )
    utility = UtilityReport(
        height=engine.class_loss("height", table, verdict.violating),
        loss=engine.class_loss("loss", table, verdict.violating),
        entropy=engine.class_loss("entropy", table, verdict.violating),
        height_per_qi=heights,
        discernibility=discernibility(sizes, verdict.suppressed, micro.n),
        average_class_size=float(sizes.sum() / sizes.size) if sizes.size else 0.0,
    )
    return AnonymizationResult(
        node=dict(zip(micro.qis, levels, strict=True)),
        frame=released,
        suppressed=verdict.suppressed,
        risk=risk,
        utility=utility,
        nodes_checked=found.checked,
        lattice_size=engine.lattice.size,
    )
