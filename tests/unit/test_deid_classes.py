"""Roll-up of equivalence classes (enclave.logic.deid.classes) and the search built on it: the class
tables, the loss with suppression and the optimum equal their row-level definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.core.errors import BadInputError, DisclosureRiskError
from enclave.logic.deid import (
    AnonymizationPolicy,
    LDiversity,
    QuasiIdentifier,
    TCloseness,
    anonymize,
)
from enclave.logic.deid.classes import (
    ClassCache,
    suppressed_loss,
    suppression_penalties,
)
from enclave.logic.deid.hierarchy import Hierarchy, interval_bands
from enclave.logic.deid.metrics import MEASURES, cell_costs, decomposed_loss
from enclave.logic.deid.privacy import Criteria, classes_of, encode, judge, partition

H_A = interval_bands("a", 0, 11, (2, 4))  # 4 levels
H_B = Hierarchy("b", (("p", "q", "r", "s"), ("pq", "pq", "rs", "rs"), ("*",) * 4))
H_C = Hierarchy("c", (("u", "v", "w"), ("*",) * 3))
H_DX = Hierarchy("dx", (("x", "y", "z", "w"), ("xy", "xy", "zw", "zw"), ("*",) * 4))
HIERARCHIES = {"a": H_A, "b": H_B, "c": H_C}
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

tables = st.lists(
    st.fixed_dictionaries({
        "a": st.integers(0, 11), "b": st.sampled_from("pqrs"), "c": st.sampled_from("uvw"),
        "dx": st.sampled_from("xyzw"),
    }),
    min_size=1, max_size=60,
)
nodes = st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 1))


def _classes(micro, table) -> list[tuple]:
    """A class table as a sorted list of (codes, size, histogram) — order-free."""
    return sorted(
        (tuple(int(v) for v in table.codes[:, c]), float(table.sizes[c]),
         tuple(float(v) for v in table.hists[0][c]) if table.hists else ())
        for c in range(table.sizes.size)
    )


def _direct(micro, levels) -> list[tuple]:
    part = partition(micro, levels)
    out = []
    for c in range(part.sizes.size):
        rows = np.flatnonzero(part.cls == c)
        codes = tuple(int(micro.level_codes(q, lv)[rows[0]]) for q, lv in enumerate(levels))
        hist = np.bincount(micro.sensitive_codes[rows, 0], weights=micro.weights[rows],
                           minlength=micro.sensitive_cards[0]) if micro.sensitive else None
        out.append((codes, float(part.sizes[c]),
                    tuple(float(v) for v in hist) if hist is not None else ()))
    return sorted(out)


@SETTINGS
@given(rows=tables, visits=st.lists(nodes, min_size=1, max_size=12))
def test_rolled_up_classes_equal_direct_grouping(rows, visits) -> None:
    micro = encode(pl.DataFrame(rows), HIERARCHIES, Criteria(1, LDiversity("dx", 2)))
    cache = ClassCache(micro, (0, 0, 0), slots=4)
    for levels in visits:  # any visiting order, through a small cache
        assert _classes(micro, cache.table(levels)) == _direct(micro, levels)
        # every row's class, rolled up from the bottom: the partition of the rows, relabelled
        table, row_cls = cache.rows_at(levels)
        part = partition(micro, levels)
        pairs = set(zip(part.cls.tolist(), row_cls.tolist()))
        assert len(pairs) == part.sizes.size == table.sizes.size
        assert np.array_equal(table.sizes[row_cls], part.sizes[part.cls])


@SETTINGS
@given(rows=tables, batches=st.lists(st.lists(nodes, min_size=1, max_size=8), min_size=1,
                                     max_size=6))
def test_counts_for_judging_equal_direct_grouping_but_for_empty_classes(rows, batches) -> None:
    """What the top-down search judges for a batch of nodes (sizes and histograms laid end to
    end, empty classes allowed) holds, for each node, every class of it with its size and
    histogram, and nothing else but empty classes — through a cache of the batches' meets."""
    micro = encode(pl.DataFrame(rows), HIERARCHIES, Criteria(1, LDiversity("dx", 2)))
    cache = ClassCache(micro, (0, 0, 0), slots=4)
    for batch in batches:
        sizes, hists, node = cache.counts_many(np.array(batch))
        assert len(hists) == 1 and hists[0].shape == (sizes.size, micro.sensitive_cards[0])
        assert node.shape == sizes.shape and set(node.tolist()) <= set(range(len(batch)))
        present = sizes > 0
        assert not hists[0][~present].any()
        for i, levels in enumerate(batch):
            mine = present & (node == i)
            got = sorted((float(s), tuple(float(v) for v in h))
                         for s, h in zip(sizes[mine], hists[0][mine], strict=True))
            assert got == sorted((size, hist) for _, size, hist in _direct(micro, levels))


@SETTINGS
@given(rows=tables, levels=nodes, data=st.data())
def test_loss_with_suppression_per_class_equals_per_row(rows, levels, data) -> None:
    micro = encode(pl.DataFrame(rows), HIERARCHIES, Criteria())
    table = ClassCache(micro, (0, 0, 0)).table(levels)
    suppressed = np.array(data.draw(st.lists(st.booleans(), min_size=table.sizes.size,
                                             max_size=table.sizes.size)), dtype=bool)
    part = partition(micro, levels)
    # the same classes by their codes: suppress the rows of the drawn classes
    chosen = {tuple(int(v) for v in table.codes[:, c]) for c in np.flatnonzero(suppressed)}
    row_codes = np.column_stack([micro.level_codes(q, lv) for q, lv in enumerate(levels)])
    rows_suppressed = np.array([tuple(int(v) for v in r) in chosen for r in row_codes])
    assert part.sizes.size == table.sizes.size
    counts = [np.bincount(micro.leaf_codes[:, q], minlength=len(h.leaves))
              for q, h in enumerate(micro.hierarchies)]
    for measure in MEASURES:
        costs = [cell_costs(h, counts[q], 3, measure) for q, h in enumerate(micro.hierarchies)]
        bound = sum(c.totals(counts[q])[lv] for q, (c, lv) in enumerate(zip(costs, levels)))
        per_class = bound + suppressed_loss(suppression_penalties(costs, counts, micro), table,
                                            suppressed)
        per_row = decomposed_loss(costs, levels, micro.leaf_codes, micro.weights,
                                  rows_suppressed)
        assert per_class == pytest.approx(per_row, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(columns=st.lists(st.tuples(st.integers(1, 300), st.integers(0, 2**31)), min_size=1,
                        max_size=6), m=st.integers(0, 200), seed=st.integers(0, 2**31))
def test_linear_grouping_equals_sorting(columns, m, seed) -> None:
    rng = np.random.default_rng(seed)
    cards = [card for card, _ in columns]
    cols = [rng.integers(0, card, m) for card in cards]
    cls, c = classes_of(cols, cards, m)
    rows = list(zip(*(col.tolist() for col in cols))) if m else []
    assert c == len(set(rows))
    # the same rows share a class, different rows do not
    first: dict = {}
    for row, k in zip(rows, cls.tolist()):
        assert first.setdefault(row, k) == k
    assert len(set(first.values())) == c


def _exhaustive(frame, hierarchies, criteria, limit):
    """Least Iyengar loss over every node, each judged on its rows (no cache, no pruning)."""
    micro = encode(frame, hierarchies, criteria)
    counts = [np.bincount(micro.leaf_codes[:, q], minlength=len(h.leaves))
              for q, h in enumerate(micro.hierarchies)]
    costs = [cell_costs(h, counts[q], len(hierarchies), "loss")
             for q, h in enumerate(micro.hierarchies)]
    best = None
    for levels in itertools.product(*(range(h.height + 1) for h in hierarchies.values())):
        part = partition(micro, levels)
        verdict = judge(micro, part, criteria)
        if verdict.suppressed > limit:
            continue
        loss = decomposed_loss(costs, levels, micro.leaf_codes, micro.weights,
                               verdict.violating[part.cls])
        if best is None or loss < best - 1e-12:
            best = loss
    return best


@SETTINGS
@given(rows=tables, k=st.integers(1, 4), supp=st.sampled_from([0.0, 0.1, 0.3]),
       extra=st.sampled_from(["none", "distinct", "entropy", "recursive", "equal",
                              "hierarchical"]))
def test_search_with_tagging_and_roll_up_matches_exhaustive(rows, k, supp, extra) -> None:
    frame = pl.DataFrame(rows)
    ldiv = {"distinct": LDiversity("dx", 2), "entropy": LDiversity("dx", 2, "entropy"),
            "recursive": LDiversity("dx", 2, "recursive", c=2)}.get(extra)
    tclose = {"equal": TCloseness("dx", 0.3),
              "hierarchical": TCloseness("dx", 0.3, "hierarchical", hierarchy=H_DX)}.get(extra)
    policy = AnonymizationPolicy(HIERARCHIES, k=k, l_diversity=ldiv, t_closeness=tclose,
                                 max_suppression=supp)
    limit = math.floor(supp * len(rows) + 1e-9)
    expected = _exhaustive(frame, HIERARCHIES, policy.criteria, limit)
    if expected is None:
        with pytest.raises(DisclosureRiskError):
            anonymize(frame, policy)
        return
    res = anonymize(frame, policy)
    assert res.utility.loss == pytest.approx(expected, abs=1e-9)
    # the released node, judged again on its rows, satisfies the policy
    fixed = AnonymizationPolicy({q: QuasiIdentifier(h, res.node[q], res.node[q])
                                 for q, h in HIERARCHIES.items()}, k=k, l_diversity=ldiv,
                                t_closeness=tclose, max_suppression=supp)
    again = anonymize(frame, fixed)
    assert again.suppressed == res.suppressed <= limit
    assert again.frame.equals(res.frame)


@SETTINGS
@given(rows=tables, k=st.integers(1, 3), supp=st.sampled_from([0.0, 0.2]))
def test_dictionary_encoded_input_gives_the_same_release(rows, k, supp) -> None:
    frame = pl.DataFrame(rows).with_columns(pl.col("a").cast(pl.String))
    encoded = frame.with_columns(
        pl.col(c).cast(pl.Enum(sorted(set(frame[c].to_list()) | {"unused"})))
        for c in frame.columns)
    policy = AnonymizationPolicy(HIERARCHIES, k=k, max_suppression=supp,
                                 l_diversity=LDiversity("dx", 1))
    try:
        text = anonymize(frame, policy)
    except DisclosureRiskError:
        with pytest.raises(DisclosureRiskError):
            anonymize(encoded, policy)
        return
    enum = anonymize(encoded, policy)
    assert enum.node == text.node and enum.suppressed == text.suppressed
    assert enum.frame.select(list(HIERARCHIES)).equals(text.frame.select(list(HIERARCHIES)))
    assert enum.utility == text.utility


def test_dictionary_encoded_unknown_value_names_the_column() -> None:
    frame = pl.DataFrame({"b": ["p", "t"], "c": ["u", "v"]})
    encoded = frame.with_columns(pl.col(c).cast(pl.Enum(["p", "t", "u", "v"]))
                                 for c in frame.columns)
    with pytest.raises(BadInputError, match="'b'"):
        anonymize(encoded, AnonymizationPolicy({"b": H_B, "c": H_C}, k=1))
    with_null = pl.DataFrame({"b": ["p", None]}).with_columns(pl.col("b").cast(pl.Enum(["p"])))
    with pytest.raises(BadInputError, match="'b'"):
        anonymize(with_null, AnonymizationPolicy({"b": H_B}, k=1))
