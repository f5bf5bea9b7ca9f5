"""The engine that runs the set-based work: embedded DuckDB (default) or Spark, both through ibis.

The ingest's transforms after parsing (:mod:`enclave.io.ingest.transforms`,
:mod:`enclave.io.ingest.cdm_rows`, :mod:`enclave.io.ingest.derived`), the release risk
(:mod:`enclave.logic.deid.sets`), the disclosure evidence (:mod:`enclave.logic.disclosure.evidence`) and the
indicator cells (:mod:`enclave.io.indicators.cells`) are written as ibis expressions over an
:class:`Engine`'s tables; this module is the one place that knows which engine they run on. ``[engine] backend`` in ``settings.toml`` picks it:

* ``duckdb`` — in process, one machine: a DuckDB file opened read-only, or in-memory tables. What a
  single site uses, and the fastest choice until the data outgrow one machine.
* ``pyspark`` — a Spark session (``spark_master``: ``local[N]`` or a cluster). Tables come in as
  Parquet (:meth:`Engine.read_parquet`; :func:`open_release` exports a DuckDB release to Parquet
  in the restricted scratch folder first) or from Arrow/polars for small tables.

Results come back as polars frames (:meth:`Engine.to_polars`): the evidence and the cells are small
(one row per cell), whatever the size of the input.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import duckdb
import ibis
import polars as pl
import pyarrow as pa

from enclave.core.errors import ConfigurationError
from enclave.core.settings import EngineSettings, Settings
from enclave.io import db
from enclave.io.ibis_backend import ReleaseBackend

BACKENDS = ("duckdb", "pyspark")


@dataclass(slots=True)
class Engine:
    """An ibis backend plus the way tables get into it and results out of it."""

    name: str
    backend: Any  # ibis BaseBackend
    raw: Any = None  # duckdb.DuckDBPyConnection or pyspark SparkSession
    _views: dict[str, str] = field(default_factory=dict)  # name → "arrow", "view" or "table"
    _scratch: list[Path] = field(default_factory=list)
    _owns: bool = False

    # --- in ------------------------------------------------------------------------------------
    def table(self, name: str) -> ibis.Table:
        return self.backend.table(name)

    def put(self, name: str, data: pl.DataFrame | pa.Table) -> ibis.Table:
        """Make ``data`` (an in-memory frame) the table ``name`` of this engine."""
        if self.name == "duckdb":
            with contextlib.suppress(Exception):
                self.raw.unregister(name)
            self.raw.register(name, db.arrow(data) if isinstance(data, pl.DataFrame) else data)
        else:
            arrow = data.to_arrow() if isinstance(data, pl.DataFrame) else data
            self.raw.createDataFrame(_spark_safe(arrow)).createOrReplaceTempView(name)
        self._views[name] = "arrow"
        return self.table(name)

    def read_parquet(self, name: str, path: str | Path) -> ibis.Table:
        """Make the Parquet file or folder at ``path`` the table ``name`` (read lazily)."""
        if self.name == "duckdb":
            db.run(self.raw, f"CREATE OR REPLACE TEMP VIEW {_ident(name)} AS "
                             f"SELECT * FROM read_parquet({_lit(str(path))})")
        else:
            self.raw.read.parquet(str(path)).createOrReplaceTempView(name)
        self._views[name] = "view"
        return self.table(name)

    def materialize(self, name: str, expr: ibis.Table) -> ibis.Table:
        """Compute ``expr`` once into the table ``name`` (DuckDB: a temp table; Spark: a cached
        view), for relations that several aggregations read."""
        if self.name == "duckdb":
            sql = ibis.to_sql(expr, dialect="duckdb")
            db.run(self.raw, f"CREATE OR REPLACE TEMP TABLE {_ident(name)} AS {sql}")
        else:
            sql = ibis.to_sql(expr, dialect="pyspark")
            self.raw.sql(str(sql)).cache().createOrReplaceTempView(name)
        self._views[name] = "table"
        return self.table(name)

    def drop(self, name: str) -> None:
        """Forget the table ``name`` this engine made (and free its cache)."""
        kind = self._views.pop(name, None)
        if kind is not None:
            self._forget(name, kind)

    def _forget(self, name: str, kind: str) -> None:
        # DuckDB: only the statement that fits what ``name`` is, so that no failing statement
        # aborts a transaction the caller holds open (the ingest runs in one).
        with contextlib.suppress(Exception):
            if self.name == "duckdb":
                if kind == "arrow":
                    self.raw.unregister(name)
                else:
                    db.run(self.raw, f"DROP {'VIEW' if kind == 'view' else 'TABLE'} IF EXISTS "
                                     f"temp.{_ident(name)}")
            else:
                if kind == "table":
                    self.raw.table(name).unpersist()
                self.raw.catalog.dropTempView(name)

    # --- out -----------------------------------------------------------------------------------
    def to_polars(self, expr: ibis.Table) -> pl.DataFrame:
        """Run ``expr`` on this engine and hand back the (small) result as a polars frame.

        DuckDB runs the compiled statement itself and hands Arrow over without a copy (ibis's
        own ``to_pyarrow`` goes through an extra relation and cast: about twice the time for a
        narrow result of a million rows); the columns are cast to the expression's schema."""
        if self.name == "duckdb":
            got = pl.from_arrow(self.raw.sql(self.sql(expr)).to_arrow_table())
            want = expr.schema().to_polars()
            casts = [pl.col(c).cast(t) for c, t in want.items() if got.schema.get(c) != t]
            return got.with_columns(casts) if casts else got
        return pl.from_arrow(expr.to_pyarrow())

    def sql(self, expr: ibis.Table) -> str:
        """The SQL this engine runs for ``expr`` (recorded with outputs and indicators)."""
        return str(ibis.to_sql(expr, dialect="duckdb" if self.name == "duckdb" else "pyspark"))

    def close(self) -> None:
        """Drop the views this engine made; stop what it started (the DuckDB connection or the
        Spark session it created itself) and remove its scratch folders."""
        for name, kind in reversed(list(self._views.items())):
            self._forget(name, kind)
        self._views.clear()
        if self._owns:
            with contextlib.suppress(Exception):
                if self.name == "duckdb":
                    self.raw.close()
                else:
                    self.raw.stop()
        for d in self._scratch:
            shutil.rmtree(d, ignore_errors=True)
        self._scratch.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _spark_safe(arrow: pa.Table) -> pa.Table:
    """Spark has no unsigned integers, no large/view strings: cast them to what it reads."""
    out = []
    for f in arrow.schema:
        t = f.type
        if pa.types.is_unsigned_integer(t):
            t = pa.int64()
        elif pa.types.is_large_string(t) or pa.types.is_string_view(t):
            t = pa.string()
        out.append(pa.field(f.name, t))
    schema = pa.schema(out)
    return arrow if schema == arrow.schema else arrow.cast(schema)


# --- DuckDB ---------------------------------------------------------------------------------
def duckdb_engine(con: duckdb.DuckDBPyConnection | None = None, *,
                  database: str | Path | None = None, read_only: bool = True) -> Engine:
    """DuckDB: an existing connection (left open on close), a database file, or in memory."""
    owns = con is None
    if con is None:
        con = duckdb.connect(str(database), read_only=read_only) if database else duckdb.connect()
    return Engine("duckdb", ReleaseBackend.from_connection(con), con, _owns=owns)


# --- Spark ----------------------------------------------------------------------------------
def spark_conf(es: EngineSettings, scratch: Path | None = None) -> dict[str, str]:
    """The Spark properties the enclave sets (the UI stays off: no port opens on the driver)."""
    conf = {
        "spark.ui.enabled": "false",
        "spark.driver.bindAddress": es.spark_bind_address,
        "spark.driver.host": es.spark_bind_address,
        "spark.driver.memory": es.spark_driver_memory,
        "spark.sql.shuffle.partitions": str(es.spark_shuffle_partitions),
        "spark.default.parallelism": str(es.spark_shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.ansi.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.adaptive.enabled": "true",
        "spark.log.level": "ERROR",
        "spark.ui.showConsoleProgress": "false",
    }
    if scratch is not None:
        conf["spark.local.dir"] = str(scratch)
        conf["spark.sql.warehouse.dir"] = str(scratch / "warehouse")
    for item in es.spark_conf:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"engine.spark_conf: {item!r} is not 'key=value'")
        conf[key.strip()] = value.strip()
    return conf


def spark_session(es: EngineSettings, scratch: Path | None = None, app: str = "enclave"):
    """The Spark session of ``es`` (created, or the running one of this process)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ConfigurationError(
            "engine.backend = 'pyspark' needs PySpark: pip install 'emr-enclave[spark]'") from exc
    builder = SparkSession.builder.master(es.spark_master).appName(app)
    for key, value in spark_conf(es, scratch).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_engine(es: EngineSettings | None = None, session: Any = None, *,
                 scratch: Path | None = None) -> Engine:
    """Spark: the given session or this process's active one (left running on close), or a new
    one from ``es`` (stopped on close)."""
    if session is None:
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
    owns = session is None
    if session is None:
        session = spark_session(es or EngineSettings(), scratch)
    return Engine("pyspark", ibis.pyspark.connect(session), session, _owns=owns)


def scratch_dir(settings: Settings) -> Path:
    """Spark's scratch space: inside the restricted zone unless set (it holds patient rows)."""
    base = Path(settings.engine.spark_local_dir or settings.restricted_dir / "spark")
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base


def open_engine(settings: Settings) -> Engine:
    """An empty engine of the configured backend (tables come in with put / read_parquet)."""
    backend = settings.engine.backend
    if backend not in BACKENDS:
        raise ConfigurationError(
            f"engine.backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "duckdb":
        return duckdb_engine()
    return spark_engine(settings.engine, scratch=scratch_dir(settings))


@contextlib.contextmanager
def open_release(settings: Settings, database: str | Path,
                 tables: Sequence[str] | None = None) -> Iterator[Engine]:
    """The tables of a DuckDB database file (a release, the store) on the configured engine.

    DuckDB reads the file in place (read-only). Spark gets each table as Parquet, written to a
    private folder under the engine's scratch space and removed on exit.
    """
    if settings.engine.backend == "duckdb":
        engine = duckdb_engine(database=database, read_only=True)
        try:
            yield engine
        finally:
            engine.close()
        return
    engine = open_engine(settings)
    try:
        folder = Path(tempfile.mkdtemp(prefix="parquet-", dir=scratch_dir(settings)))
        os.chmod(folder, 0o700)
        engine._scratch.append(folder)
        export_parquet(database, folder, tables)
        for path in sorted(folder.glob("*.parquet")):
            engine.read_parquet(path.stem, path)
        yield engine
    finally:
        engine.close()


def export_parquet(database: str | Path, folder: Path,
                   tables: Sequence[str] | None = None) -> list[str]:
    """Every (or the named) table of a DuckDB file as ``<folder>/<table>.parquet``."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        have = [r[0] for r in db.rows(con, "SELECT table_name FROM information_schema.tables "
                                           "WHERE table_schema = 'main' ORDER BY 1")]
        names = [t for t in have if tables is None or t in tables]
        for t in names:
            db.run(con, f"COPY {_ident(t)} TO {_lit(str(folder / (t + '.parquet')))} "
                        "(FORMAT parquet)")
        return names
    finally:
        con.close()


