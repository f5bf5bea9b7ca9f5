"""Which columns of an output's result place its rows (security-critical).

The result of every output kind (see :mod:`.tables` and :mod:`.models`) is a table with one row
per key: the key columns name the row, the other columns are its published values. The airlock
compares a submitted file with the re-run's result row by row on these keys
(:mod:`enclave.io.airlock.filecheck`), so they are derived here, by trusted code, from the spec the
re-run evaluated — never taken from the record.

=============  =========================================================
kind           key columns
=============  =========================================================
crosstab       the index column (the other columns are the column levels)
pivot_table    the grouping columns
histogram      ``bin`` (``lower`` and ``upper`` are values of its row)
ols, logit     ``term``
survival       the group column, if any, then ``time``
=============  =========================================================

A value the checks withheld (a cell whose outcome is ``fail``) is null in the result frame, like a
value that does not exist (the mean of an empty cell where empty cells may be shown). The files an
export carries and the re-run's own result table (:func:`publishable_csv`) write the word
``withheld`` there instead, and leave a null empty, so a reader of the CSV can tell them apart;
the airlock's file check compares both the same way (a file may also leave a withheld value
empty). :func:`withheld_positions` finds those values from the cells; :func:`display_frame` is
the text a notebook shows (withheld values as ``withheld``, null group labels as ``(missing)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from enclave.core.errors import BadInputError
from enclave.io.outputs.cells import jsonable

#: what a file and the notebook show for a value the checks withheld
WITHHELD = "withheld"
#: what the notebook shows for a null group label (missing data, not a withheld value)
MISSING = "(missing)"
#: what the notebook shows for a value that does not exist (e.g. the mean of an empty cell)
NO_VALUE = "–"


def result_keys(spec: Mapping) -> list[str]:
    """The key columns of the result of the output ``spec`` (see the table above)."""
    kind = spec.get("kind")
    if kind == "crosstab":
        return [str(spec["groups"][0])]
    if kind == "pivot_table":
        return [str(g) for g in spec["groups"]]
    if kind == "histogram":
        return ["bin"]
    if kind in ("ols", "logit"):
        return ["term"]
    if kind == "survival":
        return ([str(spec["group"])] if spec.get("group") else []) + ["time"]
    raise BadInputError(f"output kind '{kind}' has no result layout")


def checked_keys(spec: Mapping, columns: list[str]) -> list[str]:
    """:func:`result_keys`, once each is a column of the result (``columns``)."""
    keys = result_keys(spec)
    missing = [k for k in keys if k not in columns]
    if missing:
        raise BadInputError(f"the result lacks its key column(s) {', '.join(missing)}")
    return keys


def _level_name(value: object) -> str:
    """The name polars gives the pivot column of the level ``value`` (a cell's JSON value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _jsonable(value: object) -> object:
    return jsonable(value)


def withheld_positions(result: pl.DataFrame, cells: Sequence[Mapping],
                       spec: Mapping) -> dict[str, set[int]]:
    """Column → rows of ``result`` whose value a failed cell withheld. A crosstab's cell is the
    column of its column level; a table's and a histogram's cell the column of its statistic; a
    model's failed term every value column of its row (a survival curve leaves failed steps out
    of its result)."""
    try:
        keys = checked_keys(spec, result.columns)
    except BadInputError:
        return {}
    failed = [c for c in cells if c.get("outcome") == "fail"]
    if not failed or spec.get("kind") == "survival":
        return {}
    index = {tuple(_jsonable(v) for v in row): i
             for i, row in enumerate(result.select(keys).iter_rows())}
    values = [c for c in result.columns if c not in keys]
    out: dict[str, set[int]] = {}
    for cell in failed:
        where = cell.get("cell") or {}
        row = index.get(tuple(where.get(k) for k in keys))
        if row is None:
            continue
        if spec.get("kind") == "crosstab":
            cols = [_level_name(where.get(str(spec["groups"][1])))]
        elif cell.get("statistic") in values:
            cols = [str(cell["statistic"])]
        elif spec.get("kind") == "histogram":
            cols = ["count"]
        else:  # a model: the whole row of the term
            cols = values
        for col in cols:
            if col in values and result[col][row] is None:
                out.setdefault(col, set()).add(row)
    return out


def _with_words(result: pl.DataFrame, withheld: Mapping[str, set[int]]) -> pl.DataFrame:
    """``result`` with the word ``withheld`` at the withheld values (those columns as text)."""
    if not withheld:
        return result
    rows = pl.int_range(pl.len())
    return result.with_columns(
        pl.when(rows.is_in(sorted(idx))).then(pl.lit(WITHHELD))
        .otherwise(pl.col(col).cast(pl.String)).alias(col)
        for col, idx in withheld.items())


def publishable_csv(result: pl.DataFrame, cells: Sequence[Mapping], spec: Mapping) -> str:
    """The result as the CSV an export carries and the re-run reproduces: withheld values are
    the word ``withheld``, nulls are empty (the same function in the kernel and the sandbox)."""
    return _with_words(result, withheld_positions(result, cells, spec)).write_csv()


def display_frame(result: pl.DataFrame, cells: Sequence[Mapping], spec: Mapping) -> pl.DataFrame:
    """The result as text for a person: ``withheld`` where the checks withheld a value,
    ``(missing)`` for a null group label, ``–`` for a value that does not exist."""
    withheld = withheld_positions(result, cells, spec)
    try:
        keys = checked_keys(spec, result.columns)
    except BadInputError:
        keys = []
    framed = _with_words(result, withheld)
    framed = framed.with_columns(
        pl.col(c).cast(pl.String).fill_null(MISSING if c in keys else NO_VALUE)
        for c in framed.columns)
    if spec.get("kind") == "crosstab" and "null" in framed.columns and MISSING not in \
            framed.columns and any((c.get("cell") or {}).get(str(spec["groups"][1]), "") is None
                                   for c in cells):
        framed = framed.rename({"null": MISSING})  # the column of a null column level
    return framed
