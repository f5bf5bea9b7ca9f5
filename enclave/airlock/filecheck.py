"""Do the submitted files publish only what the airlock's re-run produced? (security-critical)

The researcher's process renders the files (e.g. ``result.csv``); the airlock re-runs the query and
gets the published cells itself. A file may hold only those: every data field must be empty, a
number equal to a value the re-run published (a cell's value, key or extra statistic), or a text
equal to one of its keys; header fields must be plain identifiers or such values. Anything else —
an altered count, a suppressed value filled back in, free text smuggled into a table — is a
problem, and the request is rejected. Messages name files, rows and columns, never contents.
"""

from __future__ import annotations

import csv
import io
import math
import re

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _atoms(cells: list[dict]) -> tuple[set[str], list[float]]:
    texts: set[str] = set()
    numbers: list[float] = []

    def add(v: object) -> None:
        if isinstance(v, bool) or v is None:
            if v is not None:
                texts.add(str(v))
            return
        if isinstance(v, (int, float)):
            numbers.append(float(v))
            texts.add(str(v))
        elif isinstance(v, str):
            texts.add(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                texts.add(str(k))
                add(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                add(x)

    for c in cells:
        add(c.get("cell") or {})
        if c.get("outcome") != "fail":  # a failed (suppressed) cell publishes nothing
            add(c.get("value"))
            add(c.get("extra") or {})
        texts.add(str(c.get("statistic", "")))
    return texts, sorted(numbers)


def _number(field: str) -> float | None:
    try:
        x = float(field)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _close(x: float, numbers: list[float]) -> bool:
    return any(math.isclose(x, n, rel_tol=1e-9, abs_tol=1e-12) for n in numbers)


def unproduced_fields(files: dict[str, bytes], cells: list[dict]) -> list[str]:
    """Problems (empty: every field of every file is backed by the re-run's cells)."""
    texts, numbers = _atoms(cells)
    problems = []
    for name, data in sorted(files.items()):
        if not name.lower().endswith(".csv"):
            problems.append(f"{name}: only CSV files can be compared with the re-run")
            continue
        try:
            rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        except (UnicodeDecodeError, csv.Error):
            problems.append(f"{name}: not a readable UTF-8 CSV file")
            continue
        bad = []
        for r, row in enumerate(rows):
            for c, field in enumerate(row):
                if field == "" or field in texts:
                    continue
                x = _number(field)
                if x is not None and _close(x, numbers):
                    continue
                if r == 0 and IDENTIFIER.fullmatch(field):
                    continue
                bad.append(f"row {r + 1} column {c + 1}")
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            problems.append(f"{name}: {', '.join(bad[:5])}{more} hold values the airlock's re-run "
                            "did not publish")
    return problems
