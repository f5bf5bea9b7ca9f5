"""Which columns of an output's result place its rows (security-critical).

The result of every output kind (see :mod:`.tables` and :mod:`.models`) is a table with one row
per key: the key columns name the row, the other columns are its published values. The airlock
compares a submitted file with the re-run's result row by row on these keys
(:mod:`enclave.airlock.filecheck`), so they are derived here, by trusted code, from the spec the
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
"""

from __future__ import annotations

from collections.abc import Mapping

from enclave.errors import BadInputError


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
