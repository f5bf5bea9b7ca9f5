"""Plain Python references of the set-based computations: the oracles of the generated engine tests.

Each function computes what the docstrings of the product code promise, row by row with dicts,
sets and sorted lists, written for obviousness, not speed (ehrQL tests its query engines the same
way). Rows are dicts; a null patient id is one patient (rows without a patient together), a null
grouping level is a cell of its own.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence

ALL, UNKNOWN, KEY_MODULUS = "All", "unknown", 1 << 32


def _cells(rows: list[dict], groups: Sequence[str]) -> dict[tuple, list[dict]]:
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        cells[tuple(r[g] for g in groups)].append(r)
    return cells


def _nulls_last(key: tuple) -> tuple:
    return tuple((v is None, v) for v in key)


def evidence(rows: list[dict], patient: str, groups: Sequence[str], value: str | None = None,
             sensitive: str | None = None, extremes: bool = True,
             bounds: bool = False) -> list[dict]:
    """One dict per cell (sorted by the groups, nulls last) with the evidence columns."""
    out = []
    counted = value is None and sensitive is None
    for key in sorted(_cells(rows, groups), key=_nulls_last):
        cell = _cells(rows, groups)[key]
        pids = {r[patient] for r in cell}

        def vals(rs):
            return [float(r[value]) for r in rs if value is not None and r[value] is not None]

        values = vals(cell)
        per_patient = {p: vals([r for r in cell if r[patient] == p]) for p in pids}
        contrib = sorted((sum(abs(v) for v in vs) for vs in per_patient.values() if vs),
                         reverse=True)
        lo, hi = (min(values), max(values)) if values else (None, None)
        row = dict(zip(groups, key, strict=True))
        row |= {
            "rows": len(cell), "patients": len(pids), "values": len(values),
            "value_patients": sum(1 for vs in per_patient.values() if vs),
            "sum": sum(values) if values else None,
            "mean": sum(values) / len(values) if values else None,
            "min": lo if extremes or bounds else None,
            "max": hi if extremes or bounds else None,
            "top1": sum(contrib[:1]) + 0.0, "top2": sum(contrib[:2]) + 0.0,
            "abs_total": sum(contrib) + 0.0,
            "negatives": (0 if counted else sum(v < 0 for v in values) if extremes else None),
            "patients_at_min": (sum(1 for vs in per_patient.values() if vs and min(vs) == lo)
                                if extremes and not counted else None),
            "patients_at_max": (sum(1 for vs in per_patient.values() if vs and max(vs) == hi)
                                if extremes and not counted else None),
            "modal_rows": None, "modal_patients": None,
        }
        if sensitive is not None:
            by_value = _cells([r for r in cell if r[sensitive] is not None], [sensitive])
            if by_value:
                row["modal_rows"] = max(len(rs) for rs in by_value.values())
                # distinct patient ids: rows without a patient are no one here
                row["modal_patients"] = max(len({r[patient] for r in rs} - {None})
                                            for rs in by_value.values())
        out.append(row)
    return out


def grouping_sets(axes: Sequence[str], margins: Sequence[str]) -> list[tuple[str, ...]]:
    return [tuple(a for a in axes if a not in collapsed)
            for r in range(len(margins) + 1) for collapsed in itertools.combinations(margins, r)]


def _label(key: tuple, axes: Sequence[str], keep: Sequence[str]) -> dict:
    got = dict(zip(keep, key, strict=True))
    return {a: (UNKNOWN if got[a] is None else str(got[a])) if a in keep else ALL for a in axes}


def cube_evidence(rows: list[dict], axes: Sequence[str], margins: Sequence[str],
                  value: str | None) -> list[dict]:
    """The evidence of every cell of a cube, totals (``All``) included, axes as strings."""
    out = []
    for keep in grouping_sets(axes, margins):
        for ev in evidence(rows, "person_id", keep, value, extremes=False):
            key = tuple(ev.pop(a) for a in keep)
            out.append(_label(key, axes, keep) | ev)
    return out


def cell_keys(rows: list[dict], axes: Sequence[str], margins: Sequence[str],
              rkeys: dict[int, int]) -> list[dict]:
    """Each cell's key: the sum over its finest cells of their distinct patients' record keys,
    mod 2³² (every patient has a record key)."""
    fine: dict[tuple, set] = defaultdict(set)
    for r in rows:
        fine[tuple(r[a] for a in axes)].add(r["person_id"])
    out = []
    for keep in grouping_sets(axes, margins):
        sums: dict[tuple, int] = defaultdict(int)
        for key, pids in fine.items():
            coarse = tuple(k for a, k in zip(axes, key, strict=True) if a in keep)
            sums[coarse] += sum(rkeys[p] for p in pids)
        out += [_label(k, axes, keep) | {"cell_key": s % KEY_MODULUS} for k, s in sums.items()]
    return out


def class_sizes(rows: list[dict], qis: Sequence[str], patient: str) -> list[int]:
    """Distinct patients per combination of quasi-identifier values."""
    return [len({r[patient] for r in rs}) for rs in _cells(rows, qis).values()]


def risk(released: list[dict], qis: Sequence[str], patient: str,
         population: list[dict] | None = None) -> dict:
    """Prosecutor, journalist and marketer risk of a release (the formulas of El Emam and of the
    ARX documentation): f = class size in the release, F = in the population (at least f)."""
    cells = _cells(released, qis)
    pop = _cells(population, qis) if population is not None else None
    pairs = []
    for key, rs in cells.items():
        f = len({r[patient] for r in rs})
        big_f = f if pop is None else max(f, len({r[patient] for r in pop.get(key, [])}))
        pairs.append((f, big_f))
    n = sum(f for f, _ in pairs)
    if not n:
        return {"records": 0, "classes": 0}
    sizes = sorted(f for f, _ in pairs)
    return {
        "records": n, "classes": len(pairs), "smallest_class": sizes[0],
        "prosecutor_max": 1 / sizes[0], "prosecutor_avg": len(pairs) / n,
        "journalist_max": 1 / min(big_f for _, big_f in pairs),
        "marketer": sum(f / big_f for f, big_f in pairs) / n,
        "class_size_counts": tuple((s, sizes.count(s)) for s in sorted(set(sizes))),
    }
