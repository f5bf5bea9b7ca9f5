"""The differencing ledger: outputs that are safe alone but, subtracted, isolate a few patients.

Every checked output is recorded as its population and its published cells, each cell as the set
of patients in it (``(output_id, cell_key, person)``, ``person`` the 64-bit DuckDB hash of the
pseudonym; still patient-level, so the file stays with its owner, 0700; the population is the
cell ``"*"``). A new output is flagged when one of its cells and a cell of an earlier output of the same
scope (project and tier) are nested — one patient set contains the other — and differ by 1 to
``threshold - 1`` patients: subtracting the two published numbers describes those few patients.
That covers nested populations (A − B, B ⊂ A: two crosstabs whose cohorts differ by one patient)
and margins minus cells (a total published by one output minus a cell of another). The flag names
the earlier output.

Pure logic (:func:`find_hits`, :func:`pairs_from_sets`) is separate from storage
(:class:`LedgerStore`, a DuckDB file whose path is a parameter): the researcher's kernel keeps a
local ledger of the user's own outputs for immediate feedback, the airlock keeps the authoritative
one per project and calls :func:`ledger_check` / :func:`ledger_add`. Pseudonyms never leave the
ledger file: hits and records carry output ids, cell labels and counts only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import polars as pl

from enclave.db import frame, run, scalar
from enclave.outputs.evaluation import POPULATION, cell_label

SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (output_id VARCHAR PRIMARY KEY, scope VARCHAR, kind VARCHAR,
    created_at VARCHAR, release VARCHAR, groups VARCHAR);
CREATE TABLE IF NOT EXISTS cells (output_id VARCHAR, cell_key VARCHAR, patients BIGINT,
    sketch INTEGER[]);
CREATE TABLE IF NOT EXISTS members (output_id VARCHAR, cell_key VARCHAR, person UBIGINT);
"""


BUCKETS = 64


def sketch_sql(source: str) -> str:
    """Per cell of ``source`` (cell_key, person): its patients and how many of them fall in
    each of :data:`BUCKETS` hash buckets. If A ⊆ B, every bucket of A is ≤ that of B and the
    bucket differences add up to exactly |B| − |A|; unrelated cells of similar size miss that by
    far, so the sketches rule out almost every pair before any patient is joined."""
    return f"""
        WITH _k AS (SELECT DISTINCT cell_key FROM {source}),
        _c AS (SELECT cell_key, (person % {BUCKETS})::INTEGER AS b, count(*)::INTEGER AS n
               FROM {source} GROUP BY ALL),
        _g AS (SELECT _k.cell_key, r.range::INTEGER AS b FROM _k, range({BUCKETS}) AS r)
        SELECT _g.cell_key, sum(coalesce(_c.n, 0))::BIGINT AS patients,
               list(coalesce(_c.n, 0) ORDER BY _g.b) AS sketch
        FROM _g LEFT JOIN _c USING (cell_key, b) GROUP BY _g.cell_key"""


@dataclass(frozen=True, slots=True)
class Hit:
    """A new cell and an earlier output's cell that, subtracted, isolate ``difference`` patients."""

    kind: str  # "nested populations" or "cell difference"
    earlier_output: str
    new_cell: str
    earlier_cell: str
    difference: int

    @property
    def message(self) -> str:
        what = ("its population and that of" if self.kind == "nested populations" else
                f"cell {_label(self.new_cell)} and cell {_label(self.earlier_cell)} of")
        return (f"differencing: {what} earlier output {self.earlier_output} are nested and differ "
                f"by {self.difference} patient(s); subtracting them would describe those patients")

    def as_dict(self) -> dict:
        return asdict(self) | {"message": self.message}


def _label(key: str) -> str:
    return "(population)" if key == POPULATION else cell_label(json.loads(key))


# --- pure logic ---------------------------------------------------------------------------


def find_hits(pairs: pl.DataFrame, threshold: int) -> list[Hit]:
    """Hits among candidate pairs.

    ``pairs``: one row per (new cell, earlier output, earlier cell) to compare,
    with ``new_size``, ``old_size`` (patients in each) and ``overlap`` (patients in both). A pair is
    a hit when one set contains the other (overlap equals the smaller size) and the sizes differ by
    1 to ``threshold - 1``.
    """
    if pairs.height == 0:
        return []
    small = pl.min_horizontal("new_size", "old_size")
    diff = (pl.col("new_size") - pl.col("old_size")).abs()
    hits = pairs.filter((pl.col("overlap") == small) & (diff >= 1) & (diff < threshold)
                        ).with_columns(diff.alias("_d")).sort("old_output", "new_cell", "old_cell")
    out = []
    for r in hits.iter_rows(named=True):
        kind = ("nested populations" if r["new_cell"] == POPULATION and
                r["old_cell"] == POPULATION else "cell difference")
        out.append(Hit(kind, r["old_output"], r["new_cell"], r["old_cell"], int(r["_d"])))
    return out


def pairs_from_sets(new: Mapping[str, set], old: Mapping[tuple[str, str], set]) -> pl.DataFrame:
    """The ``pairs`` frame of :func:`find_hits` from Python sets (reference for the SQL join)."""
    rows = []
    for nk, ns in new.items():
        for (oid, ok), os_ in old.items():
            inter = len(ns & os_)
            if inter:
                rows.append({"new_cell": nk, "old_output": oid, "old_cell": ok,
                             "new_size": len(ns), "old_size": len(os_), "overlap": inter})
    return pl.DataFrame(rows, schema={"new_cell": pl.String, "old_output": pl.String,
                                      "old_cell": pl.String, "new_size": pl.Int64,
                                      "old_size": pl.Int64, "overlap": pl.Int64})


# --- storage ------------------------------------------------------------------------------


def _register(con: duckdb.DuckDBPyConnection, members: pl.DataFrame, name: str) -> None:
    """``members`` (cell_key, person_id) as the temporary table ``name`` (cell_key, person):
    ``person_id`` is either already the DuckDB hash of the pseudonym's text (UInt64, as the
    evaluation computes it next to the data) or the pseudonym, hashed here the same way."""
    m = members.select("cell_key", "person_id")
    expr = ("person_id" if m.schema["person_id"] == pl.UInt64
            else "hash(CAST(person_id AS VARCHAR))")
    con.register(f"{name}_raw", m.to_arrow())
    try:
        run(con, f"CREATE OR REPLACE TEMP TABLE {name} AS "
                 f"SELECT DISTINCT cell_key, {expr} AS person FROM {name}_raw")
    finally:
        con.unregister(f"{name}_raw")


class LedgerStore:
    """A ledger file (DuckDB). Opened per call, read-write, so that several processes of one user
    can take turns; each method is one short transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        con = duckdb.connect(str(self.path))
        for stmt in SCHEMA.strip().split(";"):
            if stmt.strip():
                run(con, stmt)
        return con

    def pairs(self, scope: str, output_id: str, members: pl.DataFrame,
              threshold: int) -> pl.DataFrame:
        """Candidate pairs of the new output's ``members`` (cell_key, person_id) against the
        earlier outputs of ``scope`` (see :meth:`_pairs`); nothing is written."""
        con = self._connect()
        try:
            _register(con, members, "_new")
            return self._pairs(con, scope, output_id, threshold)
        finally:
            con.close()

    def add(self, scope: str, output_id: str, kind: str, created_at: str, release: str,
            groups: list[str], members: pl.DataFrame) -> bool:
        """Record an output (idempotent: an output already recorded is left as it is)."""
        con = self._connect()
        try:
            _register(con, members, "_new")
            return self._add(con, scope, output_id, kind, created_at, release, groups)
        finally:
            con.close()

    def check_and_add(self, scope: str, output_id: str, kind: str, created_at: str,
                      release: str, groups: list[str], members: pl.DataFrame,
                      threshold: int) -> pl.DataFrame:
        """:meth:`pairs`, then :meth:`add`, on one connection with the members moved into the
        ledger once (the kernel's path: every output is compared, then recorded)."""
        con = self._connect()
        try:
            _register(con, members, "_new")
            found = self._pairs(con, scope, output_id, threshold)
            self._add(con, scope, output_id, kind, created_at, release, groups)
            return found
        finally:
            con.close()

    @staticmethod
    def _pairs(con: duckdb.DuckDBPyConnection, scope: str, output_id: str,
               threshold: int) -> pl.DataFrame:
        """Candidate pairs of the registered ``_new`` members: only cells whose sizes differ by 1
        to ``threshold - 1`` and whose sketches allow nesting can be a hit, so those pairs are
        found from the small ``cells`` table first and only their members are joined (one
        statement)."""
        run(con, "CREATE OR REPLACE TEMP TABLE _new_cells AS " + sketch_sql("_new"))
        return frame(con, """
            WITH ns AS (SELECT cell_key, patients AS new_size, sketch FROM _new_cells),
            cand AS (SELECT ns.cell_key AS new_cell, c.output_id AS old_output,
                            c.cell_key AS old_cell, ns.new_size, c.patients AS old_size
                     FROM ns JOIN cells AS c
                       ON abs(ns.new_size - c.patients) BETWEEN 1 AND ? - 1
                     JOIN outputs AS o ON o.output_id = c.output_id
                     WHERE o.scope = ? AND o.output_id <> ?
                       AND list_sum(list_transform(list_zip(ns.sketch, c.sketch),
                                                   lambda x: abs(x[1] - x[2])))
                           = abs(ns.new_size - c.patients)),
            inter AS (SELECT k.new_cell, k.old_output, k.old_cell, count(*) AS overlap
                      FROM cand AS k JOIN _new AS n ON n.cell_key = k.new_cell
                      JOIN members AS m ON m.output_id = k.old_output
                       AND m.cell_key = k.old_cell AND m.person = n.person
                      GROUP BY ALL)
            SELECT k.new_cell, k.old_output, k.old_cell, k.new_size, k.old_size,
                   coalesce(i.overlap, 0) AS overlap
            FROM cand AS k LEFT JOIN inter AS i USING (new_cell, old_output, old_cell)
        """, [threshold, scope, output_id])

    @staticmethod
    def _add(con: duckdb.DuckDBPyConnection, scope: str, output_id: str, kind: str,
             created_at: str, release: str, groups: list[str]) -> bool:
        run(con, "BEGIN")
        if scalar(con, "SELECT count(*) FROM outputs WHERE output_id = ?", [output_id]):
            run(con, "ROLLBACK")
            return False
        run(con, "INSERT INTO outputs VALUES (?, ?, ?, ?, ?, ?)",
            [output_id, scope, kind, created_at, release, json.dumps(groups)])
        run(con, "INSERT INTO members SELECT ?, cell_key, person FROM _new", [output_id])
        if scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = '_new_cells' "
                       "AND temporary"):
            run(con, "INSERT INTO cells SELECT ?, cell_key, patients, sketch FROM _new_cells",
                [output_id])
        else:
            run(con, "INSERT INTO cells SELECT ?, cell_key, patients, sketch FROM ("
                + sketch_sql("_new") + ")", [output_id])
        run(con, "COMMIT")
        return True

    def outputs(self, scope: str | None = None) -> pl.DataFrame:
        con = self._connect()
        try:
            where = "WHERE scope = ?" if scope else ""
            return frame(con, f"SELECT * FROM outputs {where} ORDER BY created_at",
                         [scope] if scope else None)
        finally:
            con.close()


def scope_of(record: Mapping) -> str:
    """Outputs are compared within one project and tier (pseudonyms differ across them)."""
    return f"{record.get('tier')}/{record.get('project')}"


def check_members(path: str | Path, record: Mapping, members: pl.DataFrame,
                  threshold: int) -> list[Hit]:
    return find_hits(LedgerStore(path).pairs(scope_of(record), record["output_id"], members,
                                             threshold), threshold)


def check_and_add_members(path: str | Path, record: Mapping, members: pl.DataFrame,
                          threshold: int) -> list[Hit]:
    """:func:`check_members` then :func:`add_members` in one visit to the ledger file."""
    pairs = LedgerStore(path).check_and_add(
        scope_of(record), record["output_id"], record["kind"], record["created_at"],
        record.get("release") or "", list(record.get("spec", {}).get("groups") or []), members,
        threshold)
    return find_hits(pairs, threshold)


def add_members(path: str | Path, record: Mapping, members: pl.DataFrame) -> bool:
    return LedgerStore(path).add(scope_of(record), record["output_id"], record["kind"],
                                 record["created_at"], record.get("release") or "",
                                 list(record.get("spec", {}).get("groups") or []), members)


def _members_from_release(record: Mapping, settings) -> tuple[pl.DataFrame, int]:
    """The record's member sets, recomputed in the sandbox (a record that does not reproduce
    is refused: its sets would be whatever the researcher's process claimed)."""
    from enclave.outputs.recheck import RecordRefused, policy_for, recheck

    result = recheck(record, settings, members=True)
    if not result["verified"]:
        raise RecordRefused("; ".join(result["problems"]) or "the record does not reproduce")
    return result["members"], policy_for(record, settings).min_patients


def ledger_check(path: str | Path, record: Mapping, *, settings=None) -> list[dict]:
    """Differencing hits of ``record`` against the ledger at ``path`` (nothing is written).

    The patient sets are recomputed from the record's SQL on its release (resolved under
    ``settings.home``, in the sandbox; the record itself holds no pseudonyms). Each hit is a dict with ``kind``,
    ``earlier_output``, ``new_cell``, ``earlier_cell``, ``difference`` and ``message``. A custom
    output (no SQL) has no hits.
    """
    if record.get("kind") == "custom":
        return []
    members, k = _members_from_release(record, settings)
    return [h.as_dict() for h in check_members(path, record, members, k)]


def ledger_add(path: str | Path, record: Mapping, *, settings=None) -> bool:
    """Record ``record``'s population and published cells in the ledger at ``path``.

    Call it once an output is accepted into the project's history (the airlock: on submission,
    so that later requests are compared with it). Idempotent per output id; returns whether it
    was added. Custom outputs are not recorded.
    """
    if record.get("kind") == "custom":
        return False
    members, _ = _members_from_release(record, settings)
    return add_members(path, record, members)
