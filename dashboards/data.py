"""The dashboards' only data access: the published indicator table, read-only, by parameters.

Nothing here reads a release. Filter values come from users (widgets, URL query parameters), so
each one is checked against the values the table actually holds before it reaches a query. The
table's cells are read once into memory (an indicator table holds aggregates only) and filtered
there with polars expressions that compare values; the few SQL queries bind values as
parameters; no query text is built from user input. This module does not import streamlit, so
the benchmark can time it directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from dashboards.i18n import sort_key
from enclave.core.errors import BadInputError
from enclave.io.db import frame

ALL = "All"
INDICATORS_DB = "indicators.duckdb"
DIMENSIONS = ("year", "region", "level", "hospital", "age_band", "sex", "visit_type", "condition",
              "test", "medicine", "pair")
#: dimensions whose text order is not their order (一级 < 二级 < 三级; 5-9 < 10-14)
ORDERED = ("level", "age_band")
FILTERS = ("year", "region", "level")
#: answers of ``IndicatorTable.cells`` kept per open table (the table is immutable once published)
CELLS_CACHE_SIZE = 4096
ENV_DIR = "ENCLAVE_INDICATORS"  # a published indicators/vN folder (or its indicators.duckdb)


class FilterError(BadInputError):
    """A filter names an unknown dimension or a value the indicator table does not hold."""


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """Where the figures come from; shown on every page."""

    version: str
    source_release: str
    source_sha256: str
    source_created_at: str
    built_at: str
    policy: str
    policy_sha256: str
    min_patients: int
    rounding: dict

    def line(self) -> str:
        return (f"Data: {self.version}, computed from release {self.source_release} "
                f"(sha256 {self.source_sha256[:12]}, released {self.source_created_at[:10]}) "
                f"on {self.built_at[:10]}; disclosure policy {self.policy} "
                f"({self.policy_sha256[:12]}).")


def resolve_path(explicit: str | os.PathLike | None = None) -> Path:
    """The indicator table: ``explicit``, else ``$ENCLAVE_INDICATORS``, else the newest version
    under ``$ENCLAVE_HOME/releases/indicators``."""
    raw = explicit or os.environ.get(ENV_DIR)
    if raw:
        p = Path(raw)
        p = p / INDICATORS_DB if p.is_dir() else p
        if not p.exists():
            raise BadInputError(f"no indicator table at {p}")
        return p
    home = os.environ.get("ENCLAVE_HOME")
    if home:
        root = Path(home) / "releases" / "indicators"
        vs = sorted((int(d.name[1:]), d) for d in root.glob("v*") if d.name[1:].isdigit()) \
            if root.exists() else []
        if vs:
            return vs[-1][1] / INDICATORS_DB
    raise BadInputError(f"no indicator table: set {ENV_DIR} to a published indicators/vN "
                        "folder (or ENCLAVE_HOME to an enclave with one)")


#: tables opened before the server listened (:func:`preopen`), by path, until a page takes them
_PREOPENED: dict[str, IndicatorTable] = {}


def preopen(path: str | os.PathLike) -> None:
    """Open the table at ``path`` now, for the first page that asks for it
    (:func:`take_preopened`): ``dashboards.serve`` does this before the server listens, so the
    first visitor after a (re)start does not wait for the table to load."""
    _PREOPENED[str(path)] = IndicatorTable(path)


def take_preopened(path: str | os.PathLike) -> IndicatorTable | None:
    """The table :func:`preopen` opened at ``path``, once (``None`` if none)."""
    return _PREOPENED.pop(str(path), None)


def _check_manifest(path: Path) -> None:
    """Refuse a table that differs from its published manifest (when it sits beside one)."""
    manifest = path.parent / "manifest.json"
    if not manifest.exists():
        return
    listed = json.loads(manifest.read_text(encoding="utf-8")).get("files", {}).get(path.name)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    if listed is None or listed.get("sha256") != h.hexdigest():
        raise BadInputError(f"{path} does not match its manifest: refusing to show it")


class IndicatorTable:
    """Read-only access to one published indicator table."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        _check_manifest(self.path)
        self._con = duckdb.connect(str(self.path), read_only=True)
        self._lock = threading.Lock()
        b = self._frame("SELECT * FROM build").row(0, named=True)
        self.info = BuildInfo(
            version=f"indicators/{self.path.parent.name}", source_release=b["source_release"],
            source_sha256=b["source_sha256"], source_created_at=str(b["source_created_at"] or ""),
            built_at=str(b["built_at"]), policy=b["policy"], policy_sha256=b["policy_sha256"],
            min_patients=int(b["min_patients"]), rounding=json.loads(b["rounding"]))
        self.tiles = self._frame("SELECT * FROM tiles ORDER BY indicator")
        labels = self._frame("SELECT dimension, code, label, level FROM labels")
        self.labels: dict[str, dict[str, str]] = {}
        for dim, code, label, _ in labels.rows():
            self.labels.setdefault(dim, {})[code] = label
        self.hospital_level = {c: lv for d, c, _, lv in labels.rows() if d == "hospital"}
        #: every indicator's cells, held in memory (an indicator table is aggregates: about
        #: 220,000 cells at 10M visits); a filter on them takes a fraction of a DuckDB query
        cells = self._frame("SELECT * FROM indicators")
        self._rows: dict[str, pl.DataFrame] = {
            key[0]: part for key, part in cells.partition_by("indicator", as_dict=True).items()}
        self._no_cells = cells.clear()  # what an indicator published without cells answers
        self._known: dict[str, list[str]] = {}
        for dim in DIMENSIONS:
            vals = cells.get_column(dim).drop_nulls().unique()
            self._known[dim] = sorted((v for v in vals.to_list() if v != ALL),
                                      key=lambda v, d=dim: sort_key(d, v))
        #: years the records cover only in part (the build's ``periods`` table; older tables
        #: have none)
        has_periods = self._frame("SELECT count(*) AS n FROM information_schema.tables "
                                  "WHERE table_name = 'periods'")["n"][0]
        self.partial_years: set[str] = set(
            self._frame("SELECT year FROM periods WHERE partial")["year"].to_list()
        ) if has_periods else set()
        self.indicators = set(self.tiles["indicator"].to_list())
        self._axes = {i: set(json.loads(a)) for i, a in self.tiles.select("indicator", "axes").rows()}
        self._cells: OrderedDict[tuple, pl.DataFrame] = OrderedDict()

    def _frame(self, sql: str, params: Sequence | None = None) -> pl.DataFrame:
        with self._lock:
            return frame(self._con, sql, params)

    def close(self) -> None:
        self._con.close()

    def forget(self) -> None:
        """Drop the remembered answers of ``cells`` (the benchmark times the queries too)."""
        with self._lock:
            self._cells.clear()

    def known(self, dimension: str) -> list[str]:
        if dimension not in self._known:
            raise FilterError(f"unknown filter '{dimension}' (known: {', '.join(DIMENSIONS)})")
        return self._known[dimension]

    def label(self, dimension: str, code: str) -> str:
        if code == ALL:
            return ALL
        return self.labels.get(dimension, {}).get(code, code)

    def tile(self, indicator: str) -> dict:
        rows = self.tiles.filter(pl.col("indicator") == indicator)
        if rows.height == 0:
            raise FilterError(f"unknown indicator (known: {', '.join(sorted(self.indicators))})")
        return rows.row(0, named=True)

    def validate(self, filters: Mapping[str, str]) -> dict[str, str]:
        """The filters, each checked against the dimension's known values (``All`` allowed)."""
        out = {}
        for dim, value in filters.items():
            if dim not in DIMENSIONS:
                raise FilterError(f"unknown filter '{dim}' (known: {', '.join(DIMENSIONS)})")
            if not isinstance(value, str) or (value != ALL and value not in self._known[dim]):
                raise FilterError(f"filter '{dim}' has a value this indicator table does not "
                                  f"hold ({len(self._known[dim])} values are known)")
            out[dim] = value
        return out

    def cells(self, indicator: str, filters: Mapping[str, str] | None = None,
              by: Sequence[str] = ()) -> pl.DataFrame:
        """Cells of ``indicator`` with ``filters`` fixed, one row per level of the ``by`` axes,
        every other axis at its total. Axes the indicator lacks are ignored (not an error).

        Answers are remembered (least recently used first out, keyed by the validated request):
        the published table never changes, and the server shares one ``IndicatorTable`` between
        sessions, so a new session's first page and a repeated filter do no query at all — the
        queries would otherwise delay the page's last elements behind the browser's script
        downloads. Each caller gets its own clone (cheap: polars shares the column buffers)."""
        if indicator not in self.indicators:
            raise FilterError(f"unknown indicator (known: {', '.join(sorted(self.indicators))})")
        flt = self.validate(filters or {})
        by = list(by)
        for dim in by:
            if dim not in DIMENSIONS:
                raise FilterError(f"unknown axis '{dim}'")
        key = (indicator, tuple(sorted(flt.items())), tuple(by))
        with self._lock:
            hit = self._cells.get(key)
            if hit is not None:
                self._cells.move_to_end(key)
                return hit.clone()
        out = self._query_cells(indicator, flt, by)
        with self._lock:
            self._cells[key] = out
            while len(self._cells) > CELLS_CACHE_SIZE:
                self._cells.popitem(last=False)
        return out.clone()

    def _query_cells(self, indicator: str, flt: Mapping[str, str], by: list[str]
                     ) -> pl.DataFrame:
        axes = self._axes[indicator]
        where = []
        for dim in DIMENSIONS:  # values compared as values: no query text is built from them
            if dim not in axes:
                continue  # the indicator has no such axis: its column is null
            where.append(pl.col(dim) != ALL if dim in by else pl.col(dim) == flt.get(dim, ALL))
        requested, by = by, [d for d in by if d in axes]
        rows = self._rows.get(indicator, self._no_cells)
        out = (rows.filter(where) if where else rows).select(
            *by, "value", "suppressed", "reason").sort(by or "value", nulls_last=True)
        if any(d in ORDERED for d in by) and out.height > 1:
            cols = [(d, out[d].to_list()) for d in by]
            order = sorted(range(out.height), key=lambda i: tuple(
                sort_key(d, c[i]) for d, c in cols))
            out = out[order]
        missing = [d for d in requested if d not in out.columns]
        return out.with_columns(pl.lit(None, pl.String).alias(d) for d in missing).select(
            *requested, "value", "suppressed", "reason") if missing else out

    def applies(self, indicator: str, dimension: str) -> bool:
        """Whether ``indicator`` is broken down by ``dimension`` (else that filter is ignored)."""
        return dimension in json.loads(self.tile(indicator)["axes"])
