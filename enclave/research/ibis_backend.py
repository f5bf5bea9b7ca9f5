"""The ibis DuckDB backend, adapted to DuckDB 2.0, that workspace tables are bound to.

ibis 12 still calls ``fetch_arrow_table`` / ``fetch_record_batch`` on the DuckDB connection that
``execute`` returns; DuckDB 2.0 moved those to relations (``to_arrow_table``, ``to_arrow_reader``).
This subclass hands ibis a small result object with the old names, so that listing tables, raw SQL
(``con.sql(...)``) and batch reading work on a release. Nothing else changes: queries still run in
DuckDB on the read-only release connection.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import sqlglot as sg
from ibis.backends.duckdb import Backend as DuckDBBackend


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
        with contextlib.suppress(AttributeError):
            query = query.sql(dialect=self.name)
        self.con.execute(query, **kwargs)
        return _Result(self.con)

    def list_tables(self, *, like: str | None = None, database=None) -> list[str]:
        rows = self.con.sql(
            "SELECT DISTINCT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_catalog IN "
            "(current_database(), 'temp')").fetchall()
        return self._filter_with_like([r[0] for r in rows], like)


def connect_release(path: str) -> ReleaseBackend:
    """A read-only ibis connection to the release database at ``path``."""
    return ReleaseBackend().connect(database=path, read_only=True)
