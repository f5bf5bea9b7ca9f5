"""Secondary suppression: no suppressed value can be recovered from the published cells and margins.

Two independent attacks check every result: (1) repeated subtraction — any row or column, totals
included, with one unknown cell gives that cell away, which may reveal further cells; (2) linear
algebra — a cell is pinned down when its unit vector lies in the row space of the line equations
restricted to the unknown cells (matrix rank test).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from enclave.core.errors import BadInputError
from enclave.logic.disclosure import secondary_suppression, suppress_frame


def recovered_by_subtraction(suppressed: np.ndarray) -> set[tuple[int, int]]:
    """Cells an attacker recovers by subtracting margins, line by line, until nothing changes."""
    unknown = {tuple(c) for c in np.argwhere(suppressed)}
    m, n = suppressed.shape
    lines = [[(i, j) for j in range(n)] for i in range(m)] + \
            [[(i, j) for i in range(m)] for j in range(n)]
    recovered: set[tuple[int, int]] = set()
    changed = True
    while changed:
        changed = False
        for line in lines:
            left = [c for c in line if c in unknown]
            if len(left) == 1:
                unknown.discard(left[0])
                recovered.add(left[0])
                changed = True
    return recovered


def pinned_by_rank(suppressed: np.ndarray) -> set[tuple[int, int]]:
    m, n = suppressed.shape
    cells = [tuple(c) for c in np.argwhere(suppressed)]
    rows = []
    for i in range(m):  # inner cells of row i minus its total
        rows.append([(1 if (a == i and b < n - 1) else -1 if (a == i and b == n - 1) else 0)
                     for a, b in cells])
    for j in range(n):
        rows.append([(1 if (b == j and a < m - 1) else -1 if (b == j and a == m - 1) else 0)
                     for a, b in cells])
    a = np.array(rows, dtype=float)
    base = np.linalg.matrix_rank(a) if cells else 0
    pinned = set()
    for k, c in enumerate(cells):
        unit = np.zeros((1, len(cells)))
        unit[0, k] = 1
        if np.linalg.matrix_rank(np.vstack([a, unit])) == base:
            pinned.add(c)
    return pinned


def assert_safe(table) -> None:
    assert not recovered_by_subtraction(table.suppressed)
    assert not pinned_by_rank(table.suppressed)
    assert (table.suppressed | ~table.primary).all()  # primary cells stay suppressed


def test_one_suppressed_cell_in_a_two_by_two_table_takes_the_whole_inner_table():
    table = secondary_suppression(np.array([[3, 20], [15, 40]]), np.array([[1, 0], [0, 0]], bool))
    expected = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], bool)
    assert (table.suppressed == expected).all()
    assert table.values[2, 2] == 78
    assert_safe(table)


def test_greedy_picks_the_smallest_complement_of_each_line():
    inner = np.array([[20, 15, 30], [3, 12, 40], [25, 8, 50]])
    primary = np.zeros((3, 3), bool)
    primary[1, 0] = True
    table = secondary_suppression(inner, primary)
    # worked by hand: row 1 → 12; column 0 → 20; column 1 → 8; row 0 → 15; row 2 → 25
    expected = {(1, 0), (1, 1), (0, 0), (2, 1), (0, 1), (2, 0)}
    assert {tuple(c) for c in np.argwhere(table.suppressed)} == expected
    assert {tuple(c) for c in np.argwhere(table.secondary)} == expected - {(1, 0)}
    assert_safe(table)


def test_a_row_with_a_single_inner_cell_protects_with_its_total():
    # one column: a suppressed cell can hide only behind the other row and the totals
    table = secondary_suppression(np.array([[4], [30]]), np.array([[1], [0]], bool))
    assert_safe(table)
    assert table.suppressed[0, 1]  # the row total equals the cell; it must go too


def test_a_bridge_between_two_protected_blocks_is_caught():
    # every line holds 0 or ≥ 2 suppressed cells, yet cell (0, 2) is a bridge between two 2×2
    # blocks and the equations give it away; the rank check and a rectangle fix it
    inner = np.arange(1, 17).reshape(4, 4) * 10
    primary = np.zeros((4, 4), bool)
    for c in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3), (0, 2)]:
        primary[c] = True
    assert not recovered_by_subtraction(np.pad(primary, ((0, 1), (0, 1))))
    assert (0, 2) in pinned_by_rank(np.pad(primary, ((0, 1), (0, 1))))
    table = secondary_suppression(inner, primary)
    assert table.secondary.any()
    assert_safe(table)


@pytest.mark.parametrize("seed", range(40))
def test_random_tables_are_safe_after_suppression(seed):
    rng = np.random.default_rng(seed)
    m, n = rng.integers(1, 7), rng.integers(1, 7)
    inner = rng.integers(0, 60, (m, n))
    primary = (inner < 10) & (rng.random((m, n)) < 0.8)
    table = secondary_suppression(inner, primary)
    if primary.any():
        assert_safe(table)
    else:
        assert not table.suppressed.any()


def test_suppress_frame_marks_complements_with_a_reason():
    cells = pl.DataFrame({
        "dept": ["A", "A", "B", "B"], "sex": ["F", "M", "F", "M"],
        "outcome": ["suppress", "ok", "ok", "ok"],
        "reasons": [["cell has 3 patients; at least 10 are needed"], [], [], []],
        "value": [None, 20, 15, 40], "weight": [3, 20, 15, 40],
    })
    out, table = suppress_frame(cells, "dept", "sex")
    assert out["outcome"].to_list() == ["suppress"] * 4
    assert out["value"].to_list() == [None] * 4
    assert "secondary suppression" in out.row(1, named=True)["reasons"][0]
    assert table.row_labels == ("A", "B") and table.col_labels == ("F", "M")
    assert_safe(table)


def test_shape_mismatch_is_refused():
    with pytest.raises(BadInputError):
        secondary_suppression(np.zeros((2, 2)), np.zeros((3, 2), bool))
