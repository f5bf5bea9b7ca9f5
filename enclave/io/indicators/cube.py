"""Disclosure control of one indicator cube (security-critical).

An indicator is a small cube: a few categorical axes (year, region, hospital level, age band ...)
and one statistic per cell. Axes marked *margin* get an ``All`` level (the total over that axis),
which is what the dashboard shows when a filter is left open. Every cell, totals included, goes
through the researcher-output rules of :mod:`enclave.logic.disclosure`:

1. **Evidence** — :func:`enclave.logic.disclosure.evidence_expr` once per grouping set (every subset
   of margin axes collapsed to ``All``), so totals are exact distinct-patient counts, not sums
   (:mod:`enclave.io.indicators.cells`; one statement on DuckDB, one plan on Spark).
2. **Primary suppression** — :func:`enclave.logic.disclosure.check_cells` (minimum distinct patients,
   zeros, minimum values, N-K and p % dominance for sums and means) under the active policy.
   Empty cells of the full cross product are checked too (zeros rule).
3. **Secondary suppression** — every two-dimensional face of the cube (two margin axes, the others
   fixed, totals included) goes through :func:`enclave.logic.disclosure.secondary_suppression` (greedy by
   lines + the exactness check), repeated until no face changes: a suppressed cell cannot be
   recovered from any row, column or total the dashboard publishes, whichever filters are set.
   With one margin axis the line rule alone applies (one suppressed cell in a line with its total
   → suppress the smallest other cell).
4. **Consistent rounding** of counts — :func:`cell_key_round`, the ABS cell-key method with random
   rounding to ``round_base`` as the perturbation: every patient has a secret record key, a cell's
   key is the sum of its distinct patients' record keys mod 2³², and that key alone decides whether
   the count rounds up or down. The same contributors give the same published number in every
   table and every refresh (no averaging attack), while a cell whose contributors changed by one
   patient gets an independent draw, so subtracting two refreshes gives noise of ± ``round_base``
   instead of the patient.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import ibis
import numpy as np
import polars as pl

from enclave.io import db
from enclave.io.indicators.cells import (
    ALL,
    KEY_MODULUS,
    cell_keys_expr,
    cube_evidence_expr,
    cube_frames,
    typed_frames,
)
from enclave.logic.disclosure import (
    DisclosurePolicy,
    Rounding,
    Statistic,
    check_cells,
    secondary_suppression,
)
from enclave.logic.disclosure.evidence import bind, input_schema, input_table

#: the one public wording of every withheld cell, whatever rule withheld it: a wording per rule
#: would tell a reader which withheld cells are small counts, zeros (an empty cell is withheld by
#: the zeros rule) or complements that passed on their own (secondary suppression)
WITHHELD_REASON = "withheld by the disclosure rules"
SECONDARY_REASON = WITHHELD_REASON  # kept for callers of the earlier name


@dataclass(frozen=True, slots=True)
class CheckedCube:
    """One row per cell: the axes, ``value`` (published, null when suppressed), ``suppressed``,
    ``reason`` (why, in plain language) and ``patients_ok`` (cell passed the rules on its own)."""

    cells: pl.DataFrame
    primary: int
    secondary: int


#: the placeholder names of the compiled cube statements (see :func:`cube_statements`)
RELATION, RECORD_KEYS = "_enclave_cube_relation", "_enclave_cube_record_keys"


@functools.lru_cache(maxsize=64)
def cube_statements(schema: tuple[tuple[str, str], ...], axes: tuple[str, ...],
                    margins: tuple[str, ...], value: str | None,
                    keys_schema: tuple[tuple[str, str], ...] | None) -> tuple[str, str | None]:
    """The DuckDB statements of the cube's evidence and cell keys (the expressions of
    :mod:`enclave.io.indicators.cells`) over placeholder tables of the given schemas, compiled once
    per schema and cube."""
    t = input_table(schema, RELATION)
    ev = ibis.to_sql(cube_evidence_expr(t, axes, margins, value, top_two="list"),
                     dialect="duckdb")
    if keys_schema is None:
        return ev, None
    keys = cell_keys_expr(t, axes, margins, input_table(keys_schema, RECORD_KEYS))
    return ev, ibis.to_sql(keys, dialect="duckdb")


def cube_frames_on(con: duckdb.DuckDBPyConnection, relation: str, axes: Sequence[str],
                   margins: Sequence[str], value: str | None, record_keys: str | None
                   ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The cube's evidence and cell keys over ``relation`` (a table name or a query) and the
    table ``record_keys`` (``person_id``, ``rkey``) on a DuckDB connection: the statements of
    :func:`cube_statements`."""
    schema = input_schema(con, relation, ["person_id", *axes, value])
    keys_schema = None if record_keys is None else input_schema(con, record_keys,
                                                                ["person_id", "rkey"])
    ev_sql, keys_sql = cube_statements(schema, tuple(axes), tuple(margins), value, keys_schema)
    sources = {RELATION: relation, RECORD_KEYS: record_keys or ""}
    ev = db.frame(con, bind(ev_sql, sources))
    keys = None if keys_sql is None else db.frame(con, bind(keys_sql, sources))
    return typed_frames(ev, keys, axes)


def complete_grid(ev: pl.DataFrame, axes: Sequence[str], margins: Sequence[str],
                  levels: dict[str, Sequence[str]] | None = None) -> pl.DataFrame:
    """The full cross product of the levels seen on each axis (``All`` included on margin axes),
    with empty cells as zero evidence: an empty cell is checked like any other (zeros rule)."""
    if not axes:
        return ev
    grid = None
    for a in axes:
        seen = set(ev[a].to_list()) | set((levels or {}).get(a, ()))
        if a in margins:
            seen.add(ALL)
        col = pl.DataFrame({a: sorted(seen)}, schema={a: pl.String})
        grid = col if grid is None else grid.join(col, how="cross")
    out = grid.join(ev, on=list(axes), how="left", nulls_equal=True)
    counts = ("rows", "patients", "values", "value_patients", "negatives")
    return out.with_columns([pl.col(c).fill_null(0) for c in counts]
                            + [pl.col(c).fill_null(0.0) for c in ("top1", "top2", "abs_total")])


def _line_rule(values: np.ndarray, sup: np.ndarray) -> bool:
    """1-D cube (totals last): one suppressed cell in the line → suppress the smallest other."""
    if sup.sum() != 1:
        return False
    free = [i for i in range(len(values)) if not sup[i]]
    if not free:
        return False
    inner = [i for i in free if i != len(values) - 1] or free
    sup[min(inner, key=lambda i: (values[i] == 0, values[i], i))] = True
    return True


def pinned_cells(face: np.ndarray) -> np.ndarray:
    """Suppressed cells of a 2-D table with margins (totals last) that the published cells pin
    down exactly: the same answer as :func:`enclave.logic.disclosure.recoverable`, found as the bridges
    of the bipartite graph of lines (nodes) and suppressed cells (edges).

    With the signs of the margins flipped, every row and column of the table sums to zero, so an
    unknown cell can be moved by ±ε around any cycle of unknown cells and is fixed exactly when no
    cycle passes through it (a bridge). This is a linear-time check, used to skip the faces that
    are already safe before :func:`enclave.logic.disclosure.secondary_suppression` (which decides with
    its exact SVD test) is called on the rest.
    """
    m, n = face.shape
    cells = np.argwhere(face)
    out = np.zeros(face.shape, dtype=bool)
    if len(cells) == 0:
        return out
    adj: list[list[tuple[int, int]]] = [[] for _ in range(m + n)]
    for e, (i, j) in enumerate(cells):
        adj[i].append((m + j, e))
        adj[m + j].append((i, e))
    disc = [-1] * (m + n)
    low = [0] * (m + n)
    t = 0
    for root in range(m + n):
        if disc[root] != -1 or not adj[root]:
            continue
        disc[root] = low[root] = t
        t += 1
        stack = [(root, -1, iter(adj[root]))]
        while stack:
            v, pe, it = stack[-1]
            advanced = False
            for w, e in it:
                if e == pe:
                    continue
                if disc[w] == -1:
                    disc[w] = low[w] = t
                    t += 1
                    stack.append((w, e, iter(adj[w])))
                    advanced = True
                    break
                low[v] = min(low[v], disc[w])
            if advanced:
                continue
            stack.pop()
            if stack:
                u = stack[-1][0]
                low[u] = min(low[u], low[v])
                if low[v] > disc[u]:
                    i, j = cells[pe]
                    out[i, j] = True
    return out


def face_safe(face: np.ndarray) -> bool:
    """No line holds exactly one suppressed cell and no suppressed cell is pinned."""
    if (face.sum(axis=0) == 1).any() or (face.sum(axis=1) == 1).any():
        return False
    return not pinned_cells(face).any()


def _quick_safe(faces: np.ndarray) -> np.ndarray:
    """Per face (last axis): safe for sure — no suppressed cell, or no line with exactly one and
    every suppressed cell on a 4-cycle of suppressed cells (a rectangle). Vectorized over all
    faces; the faces it cannot clear go to the exact check."""
    s = faces.astype(np.int32)
    deg_r, deg_c = s.sum(axis=1), s.sum(axis=0)
    single = (deg_r == 1).any(axis=0) | (deg_c == 1).any(axis=0)
    paths3 = np.einsum("ilk,lck->ick", np.einsum("ijk,ljk->ilk", s, s), s)
    on_rect = paths3 > deg_r[:, None, :] + deg_c[None, :, :] - 1
    return ~single & (~faces | on_rect).all(axis=(0, 1))


def suppress_cube(weights: np.ndarray, primary: np.ndarray, margin_axes: Sequence[int]
                  ) -> np.ndarray:
    """Secondary suppression over every 2-D face of margin axes (totals last on those axes)."""
    sup = primary.copy()
    margin_axes = list(margin_axes)
    if not sup.any() or not margin_axes:
        return sup
    for _ in range(sup.size):
        changed = False
        if len(margin_axes) == 1:
            a = margin_axes[0]
            w = np.moveaxis(weights, a, 0).reshape(weights.shape[a], -1)
            s = np.moveaxis(sup, a, 0).reshape(sup.shape[a], -1).copy()
            for k in range(s.shape[1]):
                changed |= _line_rule(w[:, k], s[:, k])
            sup = np.moveaxis(s.reshape(np.moveaxis(sup, a, 0).shape), 0, a)
        for a, b in itertools.combinations(margin_axes, 2):
            w = np.moveaxis(weights, (a, b), (0, 1))
            s = np.moveaxis(sup, (a, b), (0, 1))
            shape = s.shape
            w2 = w.reshape(shape[0], shape[1], -1)
            s2 = s.reshape(shape[0], shape[1], -1).copy()
            quick = _quick_safe(s2)
            for k in np.flatnonzero(~quick):
                face = s2[:, :, k]
                if face.all() or face_safe(face):
                    continue
                t = secondary_suppression(w2[:-1, :-1, k], face[:-1, :-1], margin_primary=face)
                if (t.suppressed != face).any():
                    s2[:, :, k] = t.suppressed | face
                    changed = True
            sup = np.moveaxis(s2.reshape(shape), (0, 1), (a, b))
        if not changed:
            break
    return np.ascontiguousarray(sup)


def cell_key_round(counts: pl.Expr, keys: pl.Expr, policy: DisclosurePolicy) -> pl.Expr:
    """Random rounding to ``round_base`` decided by the cell key (see the module docstring).

    A count ``x = q·b + r`` rounds up with probability ``r / b`` (unbiased); the uniform draw is
    ``cell_key / 2³²``. A count that would round below the policy's threshold is shown as the
    smallest multiple of ``b`` at or above it, so no displayed count is below the threshold.
    """
    b = policy.round_base
    if policy.rounding is Rounding.NONE and b <= 1:
        return counts
    floor_ = (counts // b) * b
    rem = counts - floor_
    u = keys.cast(pl.Float64) / KEY_MODULUS
    rounded = pl.when(u < rem / b).then(floor_ + b).otherwise(floor_)
    least = -(-policy.min_patients // b) * b
    return pl.when(counts == 0).then(0).otherwise(pl.max_horizontal(rounded, pl.lit(least)))


def public_reason(ev: pl.DataFrame, stat: Statistic, policy: DisclosurePolicy) -> pl.Series:
    """Why a cell would be withheld, in public words: one wording for every rule (see
    :data:`WITHHELD_REASON`). The rules' own reasons quote the cell's count ("cell has 9
    patients") and name the rule, which would separate zeros, small counts and complements."""
    del stat, policy  # every rule reads the same in public
    return pl.Series("reason", [WITHHELD_REASON] * ev.height, dtype=pl.String)


#: every reason a published cell can carry (a test checks the table holds no other text)
def public_reasons(policy: DisclosurePolicy) -> set[str]:
    del policy
    return {WITHHELD_REASON}


def check_cube(con: duckdb.DuckDBPyConnection, relation: str, axes: Sequence[str],
               margins: Sequence[str], statistic: Statistic | str, policy: DisclosurePolicy,
               value: str | None = None, record_keys: str | None = None,
               decimals: int = 0, levels: dict[str, Sequence[str]] | None = None) -> CheckedCube:
    """Evidence, rules, secondary suppression and rounding of one indicator cube. ``levels`` adds
    axis levels no row reaches (e.g. hospitals without a readmission), checked as empty cells.

    On a DuckDB connection (``relation`` a table name or a query, ``record_keys`` a table name):
    the same expressions as :func:`check_cube_on`, compiled once (:func:`cube_statements`)."""
    return _check(functools.partial(cube_frames_on, con, relation), axes, margins, statistic,
                  policy, value, record_keys, decimals, levels)


def check_cube_on(engine, table, axes: Sequence[str], margins: Sequence[str],
                  statistic: Statistic | str, policy: DisclosurePolicy, value: str | None = None,
                  record_keys=None, decimals: int = 0,
                  levels: dict[str, Sequence[str]] | None = None) -> CheckedCube:
    """:func:`check_cube` of an ibis ``table`` on an :class:`enclave.io.engine.Engine` (DuckDB or
    Spark); ``record_keys`` is an ibis table (``person_id``, ``rkey``) on the same engine."""
    return _check(functools.partial(cube_frames, engine, table), axes, margins, statistic, policy,
                  value, record_keys, decimals, levels)


def _check(frames, axes: Sequence[str], margins: Sequence[str], statistic: Statistic | str,
           policy: DisclosurePolicy, value: str | None, record_keys, decimals: int,
           levels: dict[str, Sequence[str]] | None) -> CheckedCube:
    """:func:`check_cube` and :func:`check_cube_on` on their engine's ``frames(axes, margins,
    value, record_keys)``, the cube's evidence and cell keys (record keys for counts only)."""
    stat = Statistic(statistic)
    axes, margins = list(axes), [a for a in axes if a in margins]
    counted = stat in (Statistic.COUNT, Statistic.PATIENTS)
    ev, keys = frames(axes, margins, value, record_keys if counted else None)
    return checked_cube(ev, keys, axes, margins, stat, policy, decimals, levels)


def checked_cube(evidence: pl.DataFrame, keys: pl.DataFrame | None, axes: list[str],
                 margins: list[str], stat: Statistic, policy: DisclosurePolicy, decimals: int = 0,
                 levels: dict[str, Sequence[str]] | None = None) -> CheckedCube:
    """Rules, secondary suppression and rounding of a cube's evidence (in memory, any engine):
    ``keys`` holds the cell keys (``None``: every key 0, for counts without record keys)."""
    ev = complete_grid(evidence, axes, margins, levels)
    plain = policy if policy.rounding is Rounding.NONE else _unrounded(policy)
    checked = check_cells(ev, stat, plain, axes)
    raw_col = "rows" if stat is Statistic.COUNT else "patients"
    cells = checked.with_columns(
        ev[raw_col].alias("_raw"),
        public_reason(ev, stat, policy).alias("reason"),
        (pl.col("outcome") != "ok").alias("_primary"),
    )
    # dense cube, totals last on margin axes
    levels = {a: sorted(x for x in cells[a].unique().to_list() if x != ALL) + (
        [ALL] if a in margins else []) for a in axes}
    if axes:
        idx = [cells[a].replace_strict({v: i for i, v in enumerate(levels[a])},
                                       return_dtype=pl.Int64).to_numpy() for a in axes]
        shape = tuple(len(levels[a]) for a in axes)
        weights, primary = np.zeros(shape), np.zeros(shape, dtype=bool)
        weights[tuple(idx)] = cells["weight"].to_numpy()
        primary[tuple(idx)] = cells["_primary"].to_numpy()
        sup = suppress_cube(weights, primary, [axes.index(m) for m in margins])
        final = pl.Series(sup[tuple(idx)])
    else:
        final = cells["_primary"]
    cells = cells.with_columns(final.alias("suppressed"))
    secondary = cells.filter(pl.col("suppressed") & ~pl.col("_primary")).height
    cells = cells.with_columns(
        pl.when(pl.col("suppressed")).then(pl.lit(WITHHELD_REASON)).otherwise(None)
        .alias("reason"))
    if stat in (Statistic.COUNT, Statistic.PATIENTS):
        if keys is not None:
            cells = cells.join(keys, on=axes, how="left", nulls_equal=True) if axes else \
                cells.with_columns(keys["cell_key"])
        else:
            cells = cells.with_columns(pl.lit(0, pl.UInt64).alias("cell_key"))
        cells = cells.with_columns(
            cell_key_round(pl.col("_raw"), pl.col("cell_key").fill_null(0), policy)
            .cast(pl.Float64).alias("_pub")).drop("cell_key")
    else:
        cells = cells.with_columns(pl.col("value").cast(pl.Float64).round(decimals).alias("_pub"))
    cells = cells.with_columns(
        pl.when(pl.col("suppressed")).then(None).otherwise(pl.col("_pub")).alias("value"),
        pl.when(pl.col("suppressed")).then(pl.col("reason")).otherwise(None).alias("reason"),
    ).select(*axes, "value", "suppressed", "reason")
    return CheckedCube(cells, int(primary.sum()) if axes else int(cells["suppressed"].sum()),
                       secondary)


def _unrounded(policy: DisclosurePolicy) -> DisclosurePolicy:
    """The policy's rules without its deterministic rounding (the cube rounds by cell key)."""
    from dataclasses import replace

    return replace(policy, rounding=Rounding.NONE)
