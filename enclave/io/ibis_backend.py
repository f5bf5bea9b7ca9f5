"""The ibis DuckDB backend, adapted to DuckDB 2.0 and sqlglot 30, that workspace tables are bound to.

ibis 12 still calls ``fetch_arrow_table`` / ``fetch_record_batch`` on the DuckDB connection that
``execute`` returns; DuckDB 2.0 moved those to relations (``to_arrow_table``, ``to_arrow_reader``).
This subclass hands ibis a small result object with the old names, so that listing tables, raw SQL
(``con.sql(...)``) and batch reading work on a release.

sqlglot 30 names the objects of a ``DROP`` in ``tables``; ibis 12.0 still builds ``sge.Drop(this=
...)``, which renders as ``DROP TABLE`` / ``DROP VIEW IF EXISTS`` without a name, and DuckDB
refuses it. So ``create_table(name, frame)`` with an in-memory frame (pandas, polars, Arrow) failed
after filling the table (ibis drops the frame's temporary view), as did ``overwrite=True``,
``drop_table`` and ``drop_view``. Here, a DROP that goes through :meth:`ReleaseBackend.raw_sql` is
given its name back (:func:`named_drop`), and :meth:`ReleaseBackend.create_table` hands ibis an
in-memory frame as an ``ibis.memtable`` (the branch that drops nothing; the view is unregistered
here) and replaces a table by dropping it first. On a release (read-only) only ``temp=True``
tables can be created, and an output's SQL may read none of them: a researcher's own codes go
through ``ws.codelist``, whose codes the output's record carries.

Nothing else changes: queries still run in DuckDB on the read-only release connection.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import ibis
import ibis.expr.types as ir
import sqlglot as sg
import sqlglot.expressions as sge
from ibis.backends.duckdb import Backend as DuckDBBackend


def named_drop(query: sge.Drop) -> sge.Drop:
    """``query`` with its object in ``tables``, where sqlglot 30 renders it (ibis 12.0 sets
    ``this``); unchanged under a sqlglot that still reads ``this``."""
    this = query.args.get("this")
    if this is None or query.args.get("tables") or "tables" not in sge.Drop.arg_types:
        return query
    fixed = query.copy()
    fixed.set("this", None)
    fixed.set("tables", [sg.table(this) if isinstance(this, str) else this])
    return fixed


class _Result:
    """What ``raw_sql`` returns: the connection's pending result, with the pre-2.0 fetch names."""

    def __init__(self, con):
        self._con = con

    def fetch_arrow_table(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self._con.to_arrow_table()

    def fetch_record_batch(self, rows_per_batch: int = 1_000_000):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self._con.to_arrow_reader(rows_per_batch)

    def close(self) -> None:  # the connection is shared: closing a result must not close it
        with contextlib.suppress(Exception):
            self._con.fetchall()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


class ReleaseBackend(DuckDBBackend):
    def get_schema(self, *args: Any, **kwargs: Any):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().get_schema(*args, **kwargs)

    def raw_sql(self, query: str | sg.Expression, **kwargs: Any) -> Any:
        if isinstance(query, sge.Drop):
            query = named_drop(query)
        with contextlib.suppress(AttributeError):
            query = query.sql(dialect=self.name)
        self.con.execute(query, **kwargs)
        return _Result(self.con)

    def create_table(self, name: str, /, obj: Any = None, *, overwrite: bool = False,
                     **kwargs: Any):
        """ibis's ``create_table``, without its nameless DROPs (see the module's docstring): an
        in-memory ``obj`` goes in as an ``ibis.memtable``, and ``overwrite=True`` drops the
        table first."""
        frame = None
        if obj is not None and not isinstance(obj, ir.Expr):
            obj = frame = ibis.memtable(obj)
        try:
            if overwrite:
                where = ("temp", "main") if kwargs.get("temp") else kwargs.get("database")
                self.drop_table(name, database=where, force=True)
            return super().create_table(name, obj, overwrite=False, **kwargs)
        finally:
            if frame is not None:
                with contextlib.suppress(Exception):
                    self.con.unregister(frame.op().name)

    def list_tables(self, *, like: str | None = None, database=None) -> list[str]:
        rows = self.con.sql(
            "SELECT DISTINCT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_catalog IN "
            "(current_database(), 'temp')").fetchall()
        return self._filter_with_like([r[0] for r in rows], like)


def connect_release(path: str) -> ReleaseBackend:
    """A read-only ibis connection to the release database at ``path``."""
    return ReleaseBackend().connect(database=path, read_only=True)
