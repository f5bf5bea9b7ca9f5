"""The cells of an evaluated output and the helpers every kind of output shares.

Cells are plain JSON-ready dicts: ``cell`` (the grouping values), ``statistic``, ``value`` (null
when suppressed), ``outcome`` (``pass`` / ``fail`` / ``review``), ``reasons`` and ``extra`` (other
published numbers of the cell, e.g. standard errors or patients at risk). :class:`Evaluation` is
what evaluating one output produced (:func:`enclave.io.outputs.evaluation.evaluate`, which the
tables and models below it fill in).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from enclave.core.canonical import canonical_json
from enclave.io.outputs.membership import POPULATION, Membership  # noqa: F401

OUTCOMES = {"ok": "pass", "suppress": "fail", "review": "review"}
STATUSES = ("pass", "review", "fail")


@dataclass
class Evaluation:
    """What one evaluation produced: the result frame, the cells, notes, and (lazily) who is in
    each published cell for the differencing ledger."""

    result: pl.DataFrame
    cells: list[dict]
    notes: list[str] = field(default_factory=list)
    members: Callable[[], pl.DataFrame] | None = None  # → (cell_key, person_id, rows)
    spec: dict = field(default_factory=dict)  # parameters chosen while evaluating (e.g. interval)
    membership: Membership | None = None  # members and profile where the data are (tables)

    def __post_init__(self) -> None:
        if self.membership is not None and self.members is None:
            self.members = self.membership.members

    def close(self) -> None:
        """Free what the evaluation keeps on its connection (the members table); call it once the
        ledger is done with the output."""
        if self.membership is not None:
            self.membership.close()

    @property
    def status(self) -> str:
        return status_of(self.cells)

    @property
    def reasons(self) -> list[str]:
        return self.notes + summarize(self.cells)


def status_of(cells: list[dict]) -> str:
    outcomes = {c["outcome"] for c in cells}
    return "fail" if "fail" in outcomes else "review" if "review" in outcomes else "pass"


def summarize(cells: list[dict]) -> list[str]:
    """Plain-language reasons: one line per distinct reason, with how many cells it hit."""
    seen: dict[str, int] = {}
    for c in cells:
        for r in c["reasons"]:
            seen[r] = seen.get(r, 0) + 1
    out = []
    for reason in seen:
        labels = list(dict.fromkeys(cell_label(c["cell"]) for c in cells if reason in c["reasons"]))
        label = "; ".join(labels[:3]) + (f" (+{len(labels) - 3} more)" if len(labels) > 3 else "")
        out.append(f"{label}: {reason}")
    return out


def jsonable(v: Any) -> Any:
    """A JSON value for a cell key or statistic (dates as ISO text, NaN as null)."""
    if isinstance(v, float):
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(v, (dt.date, dt.datetime, dt.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if hasattr(v, "item"):  # numpy scalar
        return jsonable(v.item())
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return str(v)


def cell_key(cell: dict) -> str:
    return canonical_json({k: jsonable(v) for k, v in cell.items()})


def cell_label(cell: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell.items()) or "(all)"


def make_cell(cell: dict, statistic: str, value: Any, outcome: str, reasons: list[str],
              extra: dict | None = None) -> dict:
    return {"cell": {k: jsonable(v) for k, v in cell.items()}, "statistic": statistic,
            "value": jsonable(value) if outcome != "fail" else None, "outcome": outcome,
            "reasons": list(reasons), "extra": {k: jsonable(v) for k, v in (extra or {}).items()}}


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def compare_cells(stored: list[dict], recomputed: list[dict]) -> list[str]:
    """Differences between a record's cells and a recomputation (cell labels only, no values)."""
    key = lambda c: (cell_key(c["cell"]), c["statistic"])
    old = {key(c): c for c in stored}
    new = {key(c): c for c in recomputed}
    problems = []
    for k in sorted(set(old) | set(new)):
        label = f"{cell_label(json.loads(k[0]))} [{k[1]}]"
        if k not in new:
            problems.append(f"cell {label} is in the record but not in the recomputed result")
        elif k not in old:
            problems.append(f"cell {label} is in the recomputed result but not in the record")
        else:
            a, b = old[k], new[k]
            if a["outcome"] != b["outcome"]:
                problems.append(f"cell {label}: recorded outcome {a['outcome']}, recomputed "
                                f"{b['outcome']}")
            if not _close(a["value"], b["value"]):
                problems.append(f"cell {label}: the recorded value differs from the recomputed one")
            for x in sorted(set(a.get("extra", {})) | set(b.get("extra", {}))):
                if not _close(a.get("extra", {}).get(x), b.get("extra", {}).get(x)):
                    problems.append(f"cell {label}: the recorded {x} differs from the recomputed one")
    return problems


#: statistics that are counts (published as integers, never rounded to significant digits)
def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sub(sql: str) -> str:
    return f"({sql.strip()})"


def group_membership(con: duckdb.DuckDBPyConnection, relation: str, groups: list[str],
                     published: set[str] | None, rows: bool) -> Membership:
    """Who is in each published cell of ``groups`` (and the whole population), from
    ``relation`` (a :func:`~enclave.io.outputs.membership.materialize` table or a
    :func:`~enclave.io.outputs.membership.member_sql` query), for the ledger only, never for a
    record (see :mod:`enclave.io.outputs.membership`)."""
    return Membership(con, relation, list(groups),
                      lambda values: cell_key(dict(zip(groups, values))), published, rows)
