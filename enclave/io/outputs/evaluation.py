"""Evaluating an output from its record alone: the one code path the kernel and the recheck share.

An output is described by its SQL (what ibis compiled; every row the output reads) and a small
``spec`` (kind, patient column, grouping, statistic, parameters). :func:`evaluate` runs both on a
DuckDB connection to the release and returns the result, the per-cell outcomes and the
publishable values. The researcher's kernel calls it to make an output; the recheck calls it in a
separate process on the release the record names, so what is recorded is exactly what is checked.

The cells and the :class:`~enclave.io.outputs.cells.Evaluation` it returns are described in
:mod:`enclave.io.outputs.cells`.

Published non-integer numbers (cells' values and extras, the result's statistic columns) are
rounded to the policy's ``significant_digits`` here, after the rules ran on the exact evidence and
before anything is recorded: the kernel and the airlock's re-run round the same way, so the record,
the re-run and the released file agree (:func:`round_published`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import polars as pl

from enclave.core.errors import BadInputError
from enclave.io.outputs import models, tables
from enclave.io.outputs.cells import Evaluation
from enclave.io.outputs.codelists import CodeList
from enclave.io.outputs.layout import result_keys
from enclave.io.outputs.sql import check_members_exist, check_output_query
from enclave.logic.disclosure import DisclosurePolicy, round_significant

COUNT_STATISTICS = frozenset({"count", "patients"})


def _statistic_columns(result: pl.DataFrame, spec: dict) -> list[str]:
    """The result's columns of non-integer statistics: a crosstab's level columns (unless it
    counts), a pivot table's non-count statistics, a curve's survival, a model's numbers; never
    a key column, a count or a histogram's edges."""
    kind, keys = spec.get("kind"), set(result_keys(spec))
    floats = [c for c, t in result.schema.items() if t in (pl.Float32, pl.Float64)
              and c not in keys]
    if kind == "crosstab":
        return [] if set(spec.get("aggfuncs") or []) <= COUNT_STATISTICS else floats
    if kind == "pivot_table":
        return [c for c in floats if c in (spec.get("aggfuncs") or []) and
                c not in COUNT_STATISTICS]
    if kind == "survival":
        return [c for c in floats if c == "survival"]
    if kind in ("ols", "logit"):
        return floats
    return []


def round_published(ev: Evaluation, spec: dict, digits: int) -> Evaluation:
    """Round ``ev``'s published non-integer numbers to ``digits`` significant digits: every
    float value and extra of its cells, and the statistic columns of its result."""
    if digits <= 0:
        return ev

    def rnd(v: Any) -> Any:
        return round_significant(v, digits) if isinstance(v, float) else v

    for cell in ev.cells:
        cell["value"] = rnd(cell["value"])
        cell["extra"] = {k: rnd(v) for k, v in (cell.get("extra") or {}).items()}
    cols = _statistic_columns(ev.result, {**spec, **ev.spec})
    if cols:
        ev.result = ev.result.with_columns(
            pl.col(c).map_elements(lambda v: round_significant(v, digits),
                                   return_dtype=ev.result.schema[c], skip_nulls=True)
            for c in cols)
    return ev


def evaluate(con: duckdb.DuckDBPyConnection, sql: str, spec: dict,
             policy: DisclosurePolicy, codelists: Sequence[CodeList] = ()) -> Evaluation:
    """Result and per-cell outcomes of the output ``spec`` over the rows of ``sql``.

    The SQL is validated first (:func:`enclave.io.outputs.sql.check_output_query`: one SELECT over
    the release's tables and the output's ``codelists``, patients from a release ``person_id``
    that exist in ``person``), in the kernel as in the airlock's sandbox, so a researcher learns
    at once what the airlock refuses. The code lists must already be tables of ``con``
    (:func:`enclave.io.outputs.codelists.create`)."""
    kinds = {"crosstab": tables.evaluate_groups, "pivot_table": tables.evaluate_groups,
             "histogram": tables.evaluate_histogram, "ols": models.evaluate_model,
             "logit": models.evaluate_model, "survival": models.evaluate_survival}
    kind = spec.get("kind")
    if kind not in kinds:
        raise BadInputError(f"unknown output kind '{kind}' (known: {', '.join(kinds)})")
    # tables check their patients on the table of cell × patient rows they compute anyway
    is_table = kind in ("crosstab", "pivot_table", "histogram")
    check_output_query(con, sql, spec.get("patient"), patients=not is_table,
                       codelists={c.name: c.schema for c in codelists})
    ev = round_published(kinds[kind](con, sql, spec, policy), spec, policy.significant_digits)
    if is_table and ev.membership is not None:
        try:
            check_members_exist(con, ev.membership.relation)
        except BaseException:
            ev.close()
            raise
    return ev
