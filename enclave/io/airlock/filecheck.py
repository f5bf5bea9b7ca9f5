"""Does each submitted file publish only its output's published cells, each at its own key?
(security-critical)

The researcher's process renders the files (e.g. ``result.csv``); the airlock re-runs the query
in the sandbox and gets the publishable result table itself (``result_csv``, suppressed values
the word ``withheld``, with its key columns from :mod:`enclave.io.outputs.layout`). A file is
compared with that table **by position**:

* it is a UTF-8 CSV whose header names are columns of the result, each at most once;
* a file with any value (non-key) column has every key column, so each row names its result row;
* each data row is the result row with the same key values (a key the result lacks, or a result
  row used twice, is refused); row order and a subset of columns are free;
* each non-empty field equals the result's value at that row and column: integers exactly,
  other numbers within a relative ``1e-9`` (formatting may differ), text exactly; where the
  result is suppressed (``withheld``; empty in a re-run made before the word was written) the
  field must be empty or ``withheld`` too.

So a suppressed count filled back in, a value moved to another row, a number that only happens
to equal some other published number (a bin, a key) and free text are all refused. Messages name
files, rows, column numbers and the result's column names, never a field's content.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from enclave.io.outputs.layout import WITHHELD

#: a plain decimal number as a CSV field (no spaces, no ``nan``/``inf``, no ``_``)
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
#: an integer field of the result: the file must hold the same integer (``120`` or ``120.0``)
INTEGER = re.compile(r"-?\d+")
#: relative tolerance for non-integer numbers (the kernel's and the re-run's last bits may differ)
REL_TOL = 1e-9
#: positions listed per kind of problem and file
LISTED = 5

NO_RESULT = ("the airlock's re-run carries no result table to compare the files with (a check "
             "made before files were compared by position): submit the request again")


class Uncomparable(Exception):
    """The re-run's result table cannot be compared with (missing or malformed)."""


@dataclass(frozen=True, slots=True)
class Published:
    """The re-run's result table: its column names, its rows (CSV fields, empty where null) and
    its key columns."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    keys: tuple[str, ...]

    @classmethod
    def parse(cls, result_csv: object, keys: object) -> Published:
        """Raises :class:`Uncomparable` when the re-run's table is not a CSV with unique column
        names that holds every key column and one row per key."""
        if not isinstance(result_csv, str):
            raise Uncomparable("no result table")
        if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
            raise Uncomparable("no key columns")
        rows = list(csv.reader(io.StringIO(result_csv, newline="")))
        if not rows or len(set(rows[0])) != len(rows[0]) or not set(keys) <= set(rows[0]) or \
                len(set(keys)) != len(keys) or any(len(r) != len(rows[0]) for r in rows[1:]):
            raise Uncomparable("a malformed result table")
        out = cls(tuple(rows[0]), tuple(tuple(r) for r in rows[1:]), tuple(keys))
        if len(set(map(out.key_of, out.rows))) != len(out.rows):
            raise Uncomparable("result rows with the same key")
        return out

    def key_of(self, row: tuple[str, ...], keys: tuple[str, ...] | None = None) -> tuple:
        return tuple(key_value(row[self.columns.index(k)])
                     for k in (self.keys if keys is None else keys))


def _decimal(field: str) -> Decimal | None:
    """The exact value of a plain number (None: not one, or an exponent out of range)."""
    if not NUMBER.fullmatch(field):
        return None
    try:
        return Decimal(field)
    except ArithmeticError:  # decimal.InvalidOperation
        return None


def key_value(field: str) -> tuple:
    """What a key field stands for: a number by its value (``7``, ``7.0``, ``7e0`` alike), else
    the text itself (an empty field is a null key)."""
    d = _decimal(field)
    return ("text", field) if d is None else ("number", d)


def same_value(field: str, published: str) -> bool:
    """Does the non-empty file ``field`` hold the non-empty ``published`` value?"""
    if field == published:
        return True
    if not (NUMBER.fullmatch(field) and NUMBER.fullmatch(published)):
        return False
    if INTEGER.fullmatch(published):
        d = _decimal(field)
        return d is not None and d == _decimal(published)
    a, b = float(field), float(published)
    return math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=REL_TOL,
                                                                  abs_tol=0.0)


def _listed(positions: list[str]) -> str:
    more = f" and {len(positions) - LISTED} more" if len(positions) > LISTED else ""
    return ", ".join(positions[:LISTED]) + more


def _header_problems(name: str, header: list[str], result: Published) -> list[str]:
    problems, seen = [], set()
    for c, col in enumerate(header, 1):
        if col not in result.columns:
            problems.append(f"{name}: header column {c} is not a column of the re-run's result")
        elif col in seen:
            problems.append(f"{name}: header column {c} ({col}) appears more than once")
        seen.add(col)
    values = [h for h in header if h not in result.keys]
    missing = [k for k in result.keys if k not in header]
    if not problems and values and missing:
        problems.append(f"{name}: the file has value columns but lacks the key column(s) "
                        f"{', '.join(missing)} that place each row in the re-run's result")
    return problems


def compare_file(name: str, rows: list[list[str]], result: Published) -> list[str]:
    """Problems of one parsed CSV file against the re-run's result (empty: it holds only
    published cells at their own keys)."""
    if not rows or not rows[0]:
        return [f"{name}: no header row"]
    header, data = rows[0], rows[1:]
    problems = _header_problems(name, header, result)
    if problems:
        return problems
    present = tuple(k for k in result.keys if k in header)
    at = {col: result.columns.index(col) for col in header}
    if present == result.keys:
        index = {result.key_of(r): i for i, r in enumerate(result.rows)}
    else:  # key columns only, some of them: each file row uses up one result row with that key
        index = {}
    left = Counter(result.key_of(r, present) for r in result.rows)
    width, unknown, twice, suppressed, differs = [], [], [], [], []
    for r, row in enumerate(data, 2):
        if len(row) != len(header):
            width.append(f"row {r}")
            continue
        key = tuple(key_value(row[header.index(k)]) for k in present)
        if left[key] <= 0:
            (twice if key in left else unknown).append(f"row {r}")
            continue
        left[key] -= 1
        i = index.get(key)
        for c, col in enumerate(header, 1):
            field = row[c - 1]
            if col in result.keys or field == "" or i is None:
                continue
            published = result.rows[i][at[col]]
            if field == published:
                continue
            if published in ("", WITHHELD):
                suppressed.append(f"row {r} column {c} ({col})")
            elif not same_value(field, published):
                differs.append(f"row {r} column {c} ({col})")
    keys = ", ".join(present)
    refilled = f"a value where the re-run's result is suppressed (must be empty or {WITHHELD})"
    for found, what in (
            (width, "not as many fields as the header"),
            (unknown, f"a key ({keys}) that is not a row of the re-run's result"),
            (twice, f"a key ({keys}) that an earlier row of the file already used"),
            (suppressed, refilled),
            (differs, "a value other than the re-run's at that row's key and column")):
        if found:
            problems.append(f"{name}: {what}, at {_listed(found)}")
    return problems


def unproduced_fields(files: dict[str, bytes], result_csv: str | None,
                      keys: list[str] | None) -> list[str]:
    """Problems (empty: every file holds only published cells of the re-run's result
    ``result_csv``, each at its own key; ``keys`` are that result's key columns)."""
    try:
        result = Published.parse(result_csv, keys)
    except Uncomparable as exc:
        return [NO_RESULT] if result_csv is None else [
            f"the airlock's re-run gave a result table the files cannot be compared with ({exc})"]
    problems = []
    for name, data in sorted(files.items()):
        if not name.lower().endswith(".csv"):
            problems.append(f"{name}: only CSV files can be compared with the re-run")
            continue
        try:
            rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
        except (UnicodeDecodeError, csv.Error):
            problems.append(f"{name}: not a readable UTF-8 CSV file")
            continue
        problems += compare_file(name, rows, result)
    return problems
