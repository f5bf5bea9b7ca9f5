"""The differencing ledger: outputs that are safe alone but, subtracted, isolate a few patients.

Every checked output is recorded with its population and its published cells (the population is
the cell ``"*"``), each cell as a *profile*: its patients, its rows (for outputs that publish row
counts: counts, histograms) and hash-bucket sketches of both (:mod:`enclave.io.outputs.membership`).
A new output is flagged when one of its cells and a cell of an earlier output in the same scope
are nested and differ by 1 to ``threshold - 1``:

* **patients** — one cell's patient set contains the other's (A − B, B ⊂ A: two crosstabs whose
  cohorts differ by one patient; a margin published by one output minus a cell of another);
* **rows** — one cell's rows, as a multiset of (patient, rows), contain the other's: two
  histograms whose edges differ by a hair count 1742 and 1741 rows of the same patients, and the
  difference is one patient's extreme value.

Profiles rule out almost every pair (sizes must differ by 1 to ``threshold - 1`` and the
sketches must allow nesting); the few pairs left are decided exactly on the patient sets:

* the **airlock** keeps every output's members (keyed by store identity, see
  :func:`enclave.io.airlock.checks.run_checks`: one ledger for every project of the store) and
  joins them (:meth:`LedgerStore.check_and_add` with ``members``);
* the **researcher's kernel** keeps profiles and each output's recipe (release, SQL, code lists,
  spec) only, and recomputes an earlier output's members when a pair survives
  (:func:`check_and_add_output`), so a new output costs one aggregation where the data are, not a
  copy of its patient sets.

Pure logic (:func:`find_hits`, :func:`pairs_from_sets`) is separate from storage
(:class:`LedgerStore`, a DuckDB file whose path is a parameter). Hits carry output ids, projects,
cell labels and counts only; a pseudonym or store identity never leaves the ledger file.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import polars as pl

from enclave.io.db import frame, run, scalar
from enclave.io.outputs.cells import cell_label
from enclave.io.outputs.membership import (
    PARTS,
    POPULATION,
    PROFILE_SCHEMA,
    members_profile,
    normalize_members,
)
from enclave.io.outputs.recheck import RecordRefused, policy_for, recheck

SCHEMA = (
    ("CREATE TABLE IF NOT EXISTS outputs (output_id VARCHAR PRIMARY KEY, scope VARCHAR, "
    "kind VARCHAR, created_at VARCHAR, release VARCHAR, groups VARCHAR)"),
    ("CREATE TABLE IF NOT EXISTS cells (output_id VARCHAR, cell_key VARCHAR, patients BIGINT, "
    "sketch INTEGER[])"),
    "CREATE TABLE IF NOT EXISTS members (output_id VARCHAR, cell_key VARCHAR, person UBIGINT)",
    # added with row differencing and one ledger per store (older files are upgraded in place)
    "ALTER TABLE outputs ADD COLUMN IF NOT EXISTS project VARCHAR",
    "ALTER TABLE outputs ADD COLUMN IF NOT EXISTS recipe VARCHAR",
    "ALTER TABLE cells ADD COLUMN IF NOT EXISTS rows BIGINT",
    "ALTER TABLE cells ADD COLUMN IF NOT EXISTS row_sketch BIGINT[]",
    "ALTER TABLE members ADD COLUMN IF NOT EXISTS rows BIGINT",
    # partial sums of each sketch: scalar filters the join applies before any list is compared
    *(f"ALTER TABLE cells ADD COLUMN IF NOT EXISTS {u}{i} BIGINT" for u in "pr"
      for i in range(len(PARTS))),
    # cells recorded before the partial sums existed get them from their sketches
    "UPDATE cells SET " + ", ".join(
        f"{u}{i} = list_sum(list_filter({col}, lambda x, i: {cond.replace('_g._b', '(i - 1)')}))"
        for u, col in (("p", "sketch"), ("r", "row_sketch")) for i, cond in enumerate(PARTS))
    + " WHERE p0 IS NULL",
)
FEATURE_COLUMNS = ", ".join(f"{u}{n}" for u in "pr" for n in range(len(PARTS)))
PAIR_SCHEMA = {"new_cell": pl.String, "old_output": pl.String, "old_project": pl.String,
               "old_cell": pl.String, "unit": pl.String, "new_size": pl.Int64,
               "old_size": pl.Int64, "overlap": pl.Int64}


@dataclass(frozen=True, slots=True)
class Hit:
    """A new cell and an earlier output's cell that, subtracted, isolate ``difference`` patients
    (``unit`` patients) or rows (``unit`` rows)."""

    kind: str  # "nested populations", "cell difference" or "row difference"
    earlier_output: str
    new_cell: str
    earlier_cell: str
    difference: int
    unit: str = "patients"
    earlier_project: str | None = None

    @property
    def message(self) -> str:
        """For the stewards (and the researcher's own ledger): names the earlier output."""
        where = f" (project {self.earlier_project})" if self.earlier_project else ""
        what = ("its population and that of" if self.kind == "nested populations" else
                f"cell {_label(self.new_cell)} and cell {_label(self.earlier_cell)} of")
        return (f"differencing: {what} earlier output {self.earlier_output}{where} are nested and "
                f"differ by {self.difference} {self._unit}; subtracting them would describe "
                f"those {self.unit}")

    @property
    def researcher_message(self) -> str:
        """For a researcher of another project: that a risk exists, not which output is behind it."""
        return (f"differencing: cell {_label(self.new_cell)} and an earlier output drawn from the "
                f"same patients are nested and differ by fewer than the threshold in "
                f"{self.unit}; the stewards review it")

    @property
    def _unit(self) -> str:
        return f"{'patient' if self.unit == 'patients' else 'row'}(s)"

    def as_dict(self) -> dict:
        return asdict(self) | {"message": self.message,
                               "researcher_message": self.researcher_message}


def _label(key: str) -> str:
    return "(population)" if key == POPULATION else cell_label(json.loads(key))


# --- pure logic ---------------------------------------------------------------------------


def find_hits(pairs: pl.DataFrame, threshold: int) -> list[Hit]:
    """Hits among candidate pairs.

    ``pairs``: one row per (new cell, earlier output, earlier cell, unit) to compare, with
    ``new_size``, ``old_size`` (patients, or rows, in each) and ``overlap`` (patients in both, or
    Σ over patients of the smaller of their two row counts). A pair is a hit when one contains the
    other (overlap equals the smaller size) and the sizes differ by 1 to ``threshold - 1``.
    """
    if pairs.height == 0:
        return []
    for col, dtype in PAIR_SCHEMA.items():
        if col not in pairs.columns:
            pairs = pairs.with_columns(pl.lit("patients" if col == "unit" else None, dtype)
                                       .alias(col))
    small = pl.min_horizontal("new_size", "old_size")
    diff = (pl.col("new_size") - pl.col("old_size")).abs()
    hits = pairs.filter((pl.col("overlap") == small) & (diff >= 1) & (diff < threshold)
                        ).with_columns(diff.alias("_d")).sort("old_output", "new_cell",
                                                              "old_cell", "unit")
    out = []
    for r in hits.iter_rows(named=True):
        kind = ("row difference" if r["unit"] == "rows" else
                "nested populations" if r["new_cell"] == POPULATION == r["old_cell"] else
                "cell difference")
        out.append(Hit(kind, r["old_output"], r["new_cell"], r["old_cell"], int(r["_d"]),
                       r["unit"], r["old_project"]))
    return out


def pairs_from_sets(new: Mapping[str, set], old: Mapping[tuple[str, str], set]) -> pl.DataFrame:
    """The ``pairs`` frame of :func:`find_hits` from Python sets of patients (reference for the
    SQL join)."""
    rows = []
    for nk, ns in new.items():
        for (oid, ok), os_ in old.items():
            inter = len(ns & os_)
            if inter:
                rows.append({"new_cell": nk, "old_output": oid, "old_project": None,
                             "old_cell": ok, "unit": "patients", "new_size": len(ns),
                             "old_size": len(os_), "overlap": inter})
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


# Nested sets differ in every bucket by the same sign, so the bucket differences add up (L1) to
# exactly the difference of the sizes, and so do those of any part of the buckets. The join
# compares two partial sums first (scalars: unrelated cells of similar size almost never pass),
# then the whole sketches.
_NEAR = " AND ".join(f"abs(n.{{u}}{i} - c.{{u}}{i}) <= abs(n.{{v}} - c.{{v}})"
                     for i in range(len(PARTS)))
CANDIDATES = f"""
    WITH o AS (SELECT output_id, project FROM outputs WHERE scope = $scope
               AND output_id <> $output_id),
    -- the sizes a nested cell could have, as join keys (a hash join; a range join is slower)
    want AS (SELECT *, unnest(range(patients - {{k}}, patients + {{k}} + 1)) AS _p,
                    unnest(range(rows - {{k}}, rows + {{k}} + 1)) AS _r FROM _np),
    near AS MATERIALIZED (
      SELECT n.cell_key AS new_cell, c.output_id AS old_output, c.cell_key AS old_cell,
             'patients' AS unit, n.patients AS new_size, c.patients AS old_size
      FROM want AS n JOIN cells AS c ON c.patients = n._p
      WHERE c.patients <> n.patients AND {_NEAR.format(u='p', v='patients')}
      UNION ALL
      SELECT n.cell_key, c.output_id, c.cell_key, 'rows', n.rows, c.rows
      FROM want AS n JOIN cells AS c ON c.rows = n._r
      WHERE c.rows <> n.rows AND {_NEAR.format(u='r', v='rows')}),
    -- the sketches of the few pairs left (kept out of the range join: it would copy them for
    -- every pair it looks at)
    pair AS (
      SELECT near.*, CASE near.unit WHEN 'rows' THEN n.row_sketch ELSE n.sketch END AS a,
             CASE near.unit WHEN 'rows' THEN c.row_sketch ELSE c.sketch::BIGINT[] END AS b
      FROM near JOIN _np AS n ON n.cell_key = near.new_cell
      JOIN cells AS c ON c.output_id = near.old_output AND c.cell_key = near.old_cell)
    SELECT new_cell, old_output, o.project AS old_project, old_cell, unit, new_size, old_size
    FROM pair JOIN o ON o.output_id = pair.old_output
    WHERE list_sum(list_transform(list_zip(a, b), lambda x: abs(x[1] - x[2])))
          = abs(new_size - old_size)
"""


def _overlap_sql(old: str) -> str:
    """Candidate pairs (``_cand``) with their exact overlap, the new members in ``_new`` and the
    earlier outputs' members in ``old`` (output_id, cell_key, person, rows)."""
    return f"""
        SELECT k.*, coalesce(i.overlap, 0)::BIGINT AS overlap FROM _cand AS k LEFT JOIN (
          SELECT k.new_cell, k.old_output, k.old_cell, k.unit,
                 CASE WHEN k.unit = 'rows' THEN sum(least(n.rows, m.rows))
                      ELSE count(*) END AS overlap
          FROM _cand AS k JOIN _new AS n ON n.cell_key = k.new_cell
          JOIN {old} AS m ON m.output_id = k.old_output AND m.cell_key = k.old_cell
                         AND m.person = n.person
          GROUP BY k.new_cell, k.old_output, k.old_cell, k.unit) AS i USING (new_cell, old_output, old_cell, unit)"""


# --- storage ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """What the ledger records of an output besides its cells."""

    output_id: str
    scope: str
    kind: str
    created_at: str
    release: str
    project: str | None
    groups: list[str]
    recipe: dict | None = None  # release, project, tier, sql, codelists, spec: to recompute

    @classmethod
    def of(cls, record: Mapping, scope: str, *, recipe: bool = False) -> Entry:
        spec = record.get("spec") or {}
        return cls(str(record["output_id"]), scope, str(record.get("kind")),
                   str(record.get("created_at")), str(record.get("release") or ""),
                   record.get("project"), list(spec.get("groups") or []),
                   {k: record.get(k) for k in ("release", "project", "tier", "sql",
                                               "codelists", "spec")}
                   if recipe else None)


_LOCK = threading.RLock()
#: seconds the researcher's own ledger stays attached after a visit: a burst of outputs attaches
#: it once; then it is detached so that the user's other processes (another kernel) can take
#: their turn (the airlock's ledgers are detached at once: others read them)
IDLE_S = 5.0
#: how long a visit waits for another process of the user to let go of the file
WAIT_S = 30.0


class _Attached:
    """This process's in-memory connection and the ledger file attached to it, if any."""

    con: duckdb.DuckDBPyConnection | None = None
    path: Path | None = None
    alias: str | None = None
    timer: threading.Timer | None = None

    @classmethod
    def attach(cls, path: Path) -> duckdb.DuckDBPyConnection:
        if cls.con is None:
            cls.con = duckdb.connect()
        if cls.timer is not None:
            cls.timer.cancel()
            cls.timer = None
        if cls.path == path:
            return cls.con
        cls.detach()
        alias = f"ledger_{uuid.uuid4().hex[:12]}"
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                run(cls.con, f"ATTACH '{_sql_text(path)}' AS {alias}")
                break
            except duckdb.IOException:  # another process of the user holds it
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        cls.path, cls.alias = path, alias
        run(cls.con, f"USE {alias}")
        # every DDL statement is a commit: only a new or older file gets them
        if not scalar(cls.con, "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'cells' "
                               "AND column_name = 'r3' AND database_name = ?", [alias]):
            for stmt in SCHEMA:
                run(cls.con, stmt)
        return cls.con

    @classmethod
    def release_later(cls, idle_s: float) -> None:
        if idle_s <= 0:
            cls.detach()
            return
        cls.timer = threading.Timer(idle_s, cls._idle)
        cls.timer.daemon = True
        cls.timer.start()

    @classmethod
    def _idle(cls) -> None:
        with _LOCK:
            cls.detach()

    @classmethod
    def detach(cls) -> None:
        if cls.con is not None and cls.alias is not None:
            run(cls.con, "USE memory")
            run(cls.con, f"DETACH {cls.alias}")
        cls.path = cls.alias = None


def _load_profile(con: duckdb.DuckDBPyConnection, profile: pl.DataFrame) -> None:
    """The new output's profile (with its partial sums) as the temporary table ``_np``."""
    con.register("_np_raw", profile.select(*PROFILE_SCHEMA).to_arrow())
    try:
        run(con, "CREATE OR REPLACE TEMP TABLE _np AS SELECT * FROM _np_raw")
    finally:
        con.unregister("_np_raw")


def _sql_text(path: Path) -> str:
    return str(path).replace("'", "''")


class LedgerStore:
    """A ledger file (DuckDB), attached to this process's ledger connection for a visit and
    detached after it (or after ``idle_s`` seconds without another visit), so that several
    processes can take turns (a visit waits up to :data:`WAIT_S` for the file)."""

    def __init__(self, path: str | Path, idle_s: float = 0.0):
        self.path = Path(path).expanduser().resolve()
        self.idle_s = idle_s

    @contextlib.contextmanager
    def _session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The file attached for one visit (attaching costs a few ms, a new DuckDB connection
        about 30); its temporary tables are dropped after it."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _LOCK:
            con = _Attached.attach(self.path)
            try:
                yield con
            finally:
                if scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE temporary "
                               "AND table_name IN ('_new', '_np', '_cand', '_old')"):
                    for t in ("_new", "_np", "_cand", "_old"):
                        run(con, f"DROP TABLE IF EXISTS temp.main.{t}")
                _Attached.release_later(self.idle_s)

    def check_and_add(self, entry: Entry, threshold: int, *, members: pl.DataFrame | None = None,
                      profile: pl.DataFrame | None = None,
                      new_members: Callable[[], pl.DataFrame] | None = None,
                      old_members: Callable[[list[dict]], pl.DataFrame] | None = None,
                      add: bool = True) -> pl.DataFrame:
        """Candidate pairs of a new output against the earlier outputs of its scope, with their
        exact overlap, then (``add``) the output recorded — on one connection.

        Either ``members`` (exact: stored with the output, the earlier ones joined from the
        file) or ``profile`` with ``new_members`` / ``old_members`` callables that fetch the exact
        sets only for surviving pairs (``old_members`` gets the earlier outputs' ``recipe``
        entries and returns their members with an ``output_id`` column).
        """
        with self._session() as con:
            if members is not None:
                normalize_members(con, members, "_new")
                profile = members_profile(con, "_new")
            _load_profile(con, profile)
            # the threshold is written into the statement (an int): with a parameter there the
            # range join cannot be planned as one and compares every pair
            run(con, "CREATE OR REPLACE TEMP TABLE _cand AS "
                + CANDIDATES.format(k=int(threshold) - 1),
                {"scope": entry.scope, "output_id": entry.output_id})
            pairs = self._pairs(con, members is not None, new_members, old_members)
            if add:
                self._add(con, entry, members is not None)
            return pairs

    @staticmethod
    def _pairs(con, stored: bool, new_members, old_members) -> pl.DataFrame:
        if not scalar(con, "SELECT count(*) FROM _cand"):
            return pl.DataFrame(schema=PAIR_SCHEMA)
        if stored:
            return frame(con, _overlap_sql("members")).select(*PAIR_SCHEMA)
        normalize_members(con, new_members(), "_new")
        recipes = frame(con, "SELECT o.output_id, o.recipe FROM outputs AS o WHERE output_id IN "
                             "(SELECT DISTINCT old_output FROM _cand)")
        old = old_members([{"output_id": r[0], **json.loads(r[1] or "{}")}
                           for r in recipes.rows()])
        con.register("_old_raw", old.select("output_id", "cell_key", "person_id", "rows")
                     .cast({"rows": pl.Int64}).to_arrow())
        try:
            run(con, "CREATE OR REPLACE TEMP TABLE _old AS SELECT output_id, cell_key, person_id "
                     "AS person, rows FROM _old_raw")
        finally:
            con.unregister("_old_raw")
        return frame(con, _overlap_sql("_old")).select(*PAIR_SCHEMA)

    @staticmethod
    def _add(con: duckdb.DuckDBPyConnection, e: Entry, stored: bool) -> bool:
        run(con, "BEGIN")
        if scalar(con, "SELECT count(*) FROM outputs WHERE output_id = ?", [e.output_id]):
            run(con, "ROLLBACK")
            return False
        run(con, "INSERT INTO outputs (output_id, scope, kind, created_at, release, groups, "
                 "project, recipe) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [e.output_id, e.scope, e.kind, e.created_at, e.release, json.dumps(e.groups),
             e.project, json.dumps(e.recipe) if e.recipe is not None else None])
        run(con, f"INSERT INTO cells (output_id, cell_key, patients, sketch, rows, row_sketch, "
                 f"{FEATURE_COLUMNS}) SELECT ?, cell_key, patients, sketch, rows, row_sketch, "
                 f"{FEATURE_COLUMNS} FROM _np", [e.output_id])
        if stored:
            run(con, "INSERT INTO members (output_id, cell_key, person, rows) "
                     "SELECT ?, cell_key, person, rows FROM _new", [e.output_id])
        run(con, "COMMIT")
        return True

    def outputs(self, scope: str | None = None) -> pl.DataFrame:
        with self._session() as con:
            where = "WHERE scope = ?" if scope else ""
            return frame(con, f"SELECT output_id, scope, project, kind, created_at, release, "
                              f"groups FROM outputs {where} ORDER BY created_at",
                         [scope] if scope else None)

    # the members-only calls (the airlock and ledger_check/ledger_add)
    def pairs(self, scope: str, output_id: str, members: pl.DataFrame,
              threshold: int) -> pl.DataFrame:
        """Candidate pairs with their exact overlap; nothing is written."""
        return self.check_and_add(Entry(output_id, scope, "", "", "", None, []), threshold,
                                  members=members, add=False)

    def add(self, scope: str, output_id: str, kind: str, created_at: str, release: str,
            groups: list[str], members: pl.DataFrame, project: str | None = None) -> bool:
        """Record an output with its members (idempotent: an output already recorded is left
        as it is)."""
        with self._session() as con:
            normalize_members(con, members, "_new")
            _load_profile(con, members_profile(con, "_new"))
            return self._add(con, Entry(output_id, scope, kind, created_at, release, project,
                                        groups), True)


def scope_of(record: Mapping) -> str:
    """Outputs compared by their pseudonyms: within one project and tier (pseudonyms differ
    across them). The airlock compares desensitized outputs across projects by store identity
    (scope :data:`STORE_SCOPE`)."""
    return f"{record.get('tier')}/{record.get('project')}"


STORE_SCOPE = "store"


def check_members(path: str | Path, record: Mapping, members: pl.DataFrame, threshold: int,
                  scope: str | None = None) -> list[Hit]:
    return find_hits(LedgerStore(path).pairs(scope or scope_of(record), record["output_id"],
                                             members, threshold), threshold)


def add_members(path: str | Path, record: Mapping, members: pl.DataFrame,
                scope: str | None = None) -> bool:
    e = Entry.of(record, scope or scope_of(record))
    return LedgerStore(path).add(e.scope, e.output_id, e.kind, e.created_at, e.release,
                                 e.groups, members, project=e.project)


def check_and_add_output(path: str | Path, record: Mapping, ev, threshold: int,
                         old_members: Callable[[list[dict]], pl.DataFrame]) -> list[Hit]:
    """The kernel's path: the new output's profile (computed where the data are) against the
    user's earlier outputs, exact sets fetched only for pairs that survive, then the output
    recorded with its recipe. ``ev`` is the :class:`~enclave.io.outputs.evaluation.Evaluation`."""
    entry = Entry.of(record, scope_of(record), recipe=True)
    store = LedgerStore(path, idle_s=IDLE_S)
    if ev.membership is not None:
        pairs = store.check_and_add(entry, threshold, profile=ev.membership.profile(),
                                    new_members=ev.members, old_members=old_members)
    else:
        pairs = store.check_and_add(entry, threshold, members=ev.members())
    return find_hits(pairs, threshold)


def release() -> None:
    """Detach the ledger file this process keeps attached (e.g. before another connection of the
    same process opens it)."""
    with _LOCK:
        if _Attached.timer is not None:
            _Attached.timer.cancel()
            _Attached.timer = None
        _Attached.detach()


def _members_from_release(record: Mapping, settings) -> tuple[pl.DataFrame, int]:
    """The record's member sets, recomputed in the sandbox (a record that does not reproduce
    is refused: its sets would be whatever the researcher's process claimed)."""
    result = recheck(record, settings, members=True)
    if not result["verified"]:
        raise RecordRefused("; ".join(result["problems"]) or "the record does not reproduce")
    return result["members"], policy_for(record, settings).min_patients


def ledger_check(path: str | Path, record: Mapping, *, settings=None) -> list[dict]:
    """Differencing hits of ``record`` against the ledger at ``path`` (nothing is written).

    The patient sets are recomputed from the record's SQL on its release (resolved under
    ``settings.home``, in the sandbox; the record itself holds no pseudonyms). Each hit is a
    dict with ``kind``, ``unit``, ``earlier_output``, ``new_cell``, ``earlier_cell``,
    ``difference`` and ``message``. A custom output (no SQL) has no hits.
    """
    if record.get("kind") == "custom":
        return []
    members, k = _members_from_release(record, settings)
    return [h.as_dict() for h in check_members(path, record, members, k)]


def ledger_add(path: str | Path, record: Mapping, *, settings=None) -> bool:
    """Record ``record``'s population and published cells in the ledger at ``path``.

    Idempotent per output id; returns whether it was added. Custom outputs are not recorded.
    """
    if record.get("kind") == "custom":
        return False
    members, _ = _members_from_release(record, settings)
    return add_members(path, record, members)
