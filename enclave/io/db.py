"""Tiny DuckDB helpers that always consume their result.

DuckDB 2.0 keeps a statement's result open on the connection until it is fully fetched, and refuses
other work meanwhile; ``relation.fetchone()`` is gone. Every query in the enclave goes through these.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl


def arrow(data: pl.DataFrame):
    """The frame as Arrow for DuckDB, without a copy: polars' newest Arrow types (string views),
    which DuckDB reads as they are. The default, oldest level copies every string column into
    large strings, which cost ~0.1 s per million rows of a wide staged batch."""
    return data.to_arrow(compat_level=pl.CompatLevel.newest())


def run(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> None:
    con.execute(sql, params).fetchall()


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
    return con.execute(sql, params).fetchall()


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> Any:
    result = con.execute(sql, params).fetchall()
    return result[0][0] if result else None


def frame(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
    return pl.from_arrow(con.sql(sql, params=params).to_arrow_table())


def insert_frame(con: duckdb.DuckDBPyConnection, table: str, data: pl.DataFrame) -> None:
    """INSERT the frame's columns (named as the table's) into ``table``."""
    if data.height == 0:
        return
    name = f"_ins_{table.replace('.', '_')}"
    con.register(name, arrow(data))
    try:
        cols = ", ".join(data.columns)
        run(con, f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {name}")
    finally:
        con.unregister(name)


@contextmanager
def new_database(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the DuckDB file ``path`` for the block, which writes its tables; then
    checkpointed (when the block succeeds) and closed."""
    out = duckdb.connect(str(path))
    try:
        yield out
        run(out, "CHECKPOINT")
    finally:
        out.close()


def create_table_as(con: duckdb.DuckDBPyConnection, table: str, data: pl.DataFrame) -> None:
    """CREATE TABLE ``table`` with the frame's columns and rows (types from the frame)."""
    name = f"_new_{table.replace('.', '_')}"
    con.register(name, arrow(data))
    try:
        run(con, f"CREATE TABLE {table} AS SELECT * FROM {name}")
    finally:
        con.unregister(name)
