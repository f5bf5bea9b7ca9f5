"""The set-based part of an indicator cube as ibis expressions (DuckDB or Spark).

A cube's cells are aggregates over every grouping set (each subset of the margin axes collapsed to
``All``): the disclosure evidence (:func:`enclave.logic.disclosure.evidence.evidence_expr`) and the cell
keys of the rounding (sum of the distinct contributors' record keys mod 2³²). Both come back as
small polars frames, and everything after them — rules, secondary suppression, rounding — is the
same in-memory code for every engine (:mod:`enclave.io.indicators.cube`).

Grouping sets are written as a union of one aggregation per set: ibis has no ``GROUPING SETS``,
and Spark and DuckDB both plan the union as one job over the (cached or scanned) input.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import ibis
import ibis.expr.types as ir
import polars as pl

from enclave.logic.disclosure.evidence import COUNT_COLUMNS, EVIDENCE_COLUMNS, evidence_expr

ALL = "All"
UNKNOWN_LEVEL = "unknown"
KEY_MODULUS = 1 << 32


def grouping_sets(axes: Sequence[str], margins: Sequence[str]) -> list[tuple[str, ...]]:
    """Every subset of the margin axes collapsed (the fixed axes always kept)."""
    out = []
    for r in range(len(margins) + 1):
        for collapsed in itertools.combinations(margins, r):
            out.append(tuple(a for a in axes if a not in collapsed))
    return out


def _label_axes(t: ir.Table, axes: Sequence[str], keep: Sequence[str]) -> dict[str, ir.Value]:
    return {a: (t[a].cast("string").fill_null(UNKNOWN_LEVEL) if a in keep
                else ibis.literal(ALL, "string")) for a in axes}


def cube_evidence_expr(t: ir.Table, axes: Sequence[str], margins: Sequence[str],
                       value: str | None, patient: str = "person_id",
                       top_two: str | None = None) -> ir.Table:
    """Evidence of every cell, totals included (axes as strings, ``All`` = total); ``top_two``
    as in :func:`enclave.logic.disclosure.evidence.evidence_expr`."""
    parts = []
    for keep in grouping_sets(axes, margins):
        ev = evidence_expr(t, patient, list(keep), value, extremes=False, top_two=top_two)
        labels = _label_axes(ev, axes, keep)
        parts.append(ev.select(**labels, **{c: ev[c] for c in ev.columns if c not in axes}))
    return parts[0] if len(parts) == 1 else ibis.union(*parts, distinct=False)


def cell_keys_expr(t: ir.Table, axes: Sequence[str], margins: Sequence[str],
                   record_keys: ir.Table, patient: str = "person_id") -> ir.Table:
    """Cell key of every cell mod 2³²: the sum of its finest cells' keys, a finest cell's key
    being the sum of its distinct patients' record keys (a patient in two regions counts in the
    region total once per region). One aggregation at the finest level, then every grouping set
    rolls up those few rows."""
    d = t.select(*axes, patient).distinct()
    rk = record_keys.select(_pk=record_keys[patient], _rkey=record_keys.rkey.cast("int64"))
    j = d.join(rk, d[patient] == rk._pk)
    fine = (j.group_by(list(axes)) if axes else j).aggregate(_fine=j._rkey.sum())
    parts = []
    for keep in grouping_sets(axes, margins):
        agg = (fine.group_by(list(keep)) if keep else fine).aggregate(_sum=fine._fine.sum())
        parts.append(agg.select(**_label_axes(agg, axes, keep),
                                cell_key=(agg._sum % KEY_MODULUS).cast("int64")))
    return parts[0] if len(parts) == 1 else ibis.union(*parts, distinct=False)


def cube_frames(engine, t: ir.Table, axes: Sequence[str], margins: Sequence[str],
                value: str | None, record_keys: ir.Table | None
                ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Run the cube's evidence (and cell keys, given ``record_keys``) on ``engine``."""
    ev = engine.to_polars(cube_evidence_expr(t, axes, margins, value))
    keys = None
    if record_keys is not None:
        keys = engine.to_polars(cell_keys_expr(t, axes, margins, record_keys))
    return typed_frames(ev, keys, axes)


def typed_frames(ev: pl.DataFrame, keys: pl.DataFrame | None, axes: Sequence[str]
                 ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The cube's evidence and cell keys as every engine hands them to the rules: axes as
    strings, counts as Int64, statistics as Float64, keys as UInt64."""
    ev = ev.with_columns(
        *[pl.col(a).cast(pl.String) for a in axes],
        *[pl.col(c).cast(pl.Int64) for c in COUNT_COLUMNS],
        *[pl.col(c).cast(pl.Float64) for c in EVIDENCE_COLUMNS if c not in COUNT_COLUMNS])
    if keys is not None:
        keys = keys.with_columns(*[pl.col(a).cast(pl.String) for a in axes],
                                 pl.col("cell_key").cast(pl.UInt64))
    return ev, keys
