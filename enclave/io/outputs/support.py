"""Support and class disclosure of a fitted regression (security-critical).

A coefficient is a contrast between groups of rows: in ``value ~ victim`` with ``victim`` 1 for
one patient, ``Intercept + victim`` is that patient's mean. After the fit, :func:`check_model`
counts distinct patients of the estimation sample over the design matrix (after formula
expansion: dummies, interactions, ``I(...)`` terms, transforms), leaving out constant columns:

* a *discrete* column has at most ``max(2, number of parameters)`` distinct values, few enough for
  the model to fit one mean per value (binary columns, dummies, interactions of dummies, powers of
  a variable with few values); each of its values needs ``min_patients`` patients;
* a term together with the terms its factors contain (``C(r)``'s dummies; ``a:b`` with ``a`` and
  ``b``), when all their columns are discrete, fits one mean per *cell* (joint value of those
  columns: a factor's levels including its reference level, where every dummy is 0; the four
  cells of ``a * b``); each cell needs ``min_patients`` patients. Terms and factors come from the
  fit's formula metadata (patsy's ``DesignInfo`` or formulaic's ``ModelSpec``);
* any other column needs ``min_patients`` patients off its most common value (a column that is 0
  except for a few patients lets the fit isolate them).

A miss is a *support* reason: the model fails. Class disclosure (``policy.class_disclosure``): a
value or cell above with enough patients whose rows all have one dependent value, a column on
which a threshold splits a logit's outcome, or a logit that predicts some rows with certainty, is
a *class* reason: :func:`class_outcome` says what it costs (``review``, or ``fail`` where the
policy's ``class_disclosure_fails`` is set).

Reasons name design columns and terms and count patients; a value is printed only when it is the
design code 0 or 1, never a patient's value. The checks are exact arithmetic on the design matrix
(the certainty threshold of a logit aside), so the kernel and the airlock's re-run agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from enclave.logic.disclosure import DisclosurePolicy

#: a logit probability this close to 0 or 1 is a certain prediction (separation)
CERTAIN = 1e-8
#: largest values × patients bitmap used to count patients per value (else a sort)
BITMAP_CELLS = 20_000_000


def class_outcome(policy: DisclosurePolicy) -> str:
    """The outcome of a class-disclosure hit under ``policy``: ``review``, or ``fail`` where the
    policy says class disclosure fails."""
    return "fail" if getattr(policy, "class_disclosure_fails", False) else "review"


def formula_terms(res) -> list[tuple[str, frozenset[str], list[int]]] | None:
    """``(name, factors, design column indices)`` of every formula term of the fit ``res``, from
    its formula metadata (patsy's ``DesignInfo`` or formulaic's ``ModelSpec``); None without."""
    spec = getattr(res.model.data, "model_spec", None)
    slices = getattr(spec, "term_slices", None)
    if slices is None:
        return None

    def name(obj) -> str:  # patsy: .name(); formulaic: str()
        return obj.name() if callable(getattr(obj, "name", None)) else str(obj)

    idx = list(range(res.model.exog.shape[1]))
    return [(name(t), frozenset(name(f) for f in t.factors), idx[sl]) for t, sl in slices.items()]


def _at(name: str, value: float) -> str:
    return f"{name}={int(value)}" if value in (0.0, 1.0) else f"one value of {name}"


def _where(names: list[str], values: list[float]) -> str:
    """A cell of a term by its design codes (only 0/1 codes are printed)."""
    shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
    if all(v == 0 for v in values):
        return f"at its reference level (rows where {shown} are all 0)"
    if not all(v in (0.0, 1.0) for v in values):
        return f"at one combination of the values of {shown}"
    ones = [n for n, v in zip(names, values) if v == 1]
    rest = " and its other columns 0" if len(ones) < len(names) else ""
    return "where " + ", ".join(f"{n}=1" for n in ones[:4]) + (", …" if len(ones) > 4 else "") \
        + rest


def _patients(mask: np.ndarray, pcodes: np.ndarray) -> int:
    return int(np.unique(pcodes[mask]).size)


def _separates(col: np.ndarray, y: np.ndarray) -> bool:
    """Whether a threshold on ``col`` splits a 0/1 outcome (completely or quasi-completely)."""
    a, b = col[y == 0], col[y == 1]
    return bool(a.size and b.size and (a.max() <= b.min() or b.max() <= a.min()))


def _per_level(inv: np.ndarray, n: int, pcodes: np.ndarray, npat: int) -> np.ndarray:
    """Distinct patients at each of ``n`` levels (``inv``: each row's level)."""
    if n * npat <= BITMAP_CELLS:  # one pass: a levels × patients bitmap
        seen = np.zeros((n, npat), dtype=bool)
        seen[inv, pcodes] = True
        return seen.sum(axis=1)
    pairs = np.unique(inv.astype(np.int64) * npat + pcodes)
    return np.bincount(pairs // npat, minlength=n)


def _joint(codes: list[np.ndarray], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's cell of several coded columns, and one row of each cell (mixed-radix keys,
    compacted before they could overflow)."""
    key = np.zeros(len(codes[0]), dtype=np.int64)
    for code, size in zip(codes, sizes):
        if int(key.max()) >= 2 ** 62 // size:
            key = np.unique(key, return_inverse=True)[1].ravel().astype(np.int64)
        key = key * size + code
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    return inv.ravel(), first


def _constant_within(inv: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(lo, inv, y)
    np.maximum.at(hi, inv, y)
    return lo == hi


def _saturated(terms, discrete: set[int], constant: set[int]) -> list[tuple[str, list[int]]]:
    """Groups of design columns whose joint values are cells the model fits one mean each: for
    each term, its columns and those of every term whose factors it contains (``a:b`` with ``a``
    and ``b``, ``C(r)`` alone), when there are several and all are discrete; only the largest
    groups (a smaller group's cells are unions of a larger one's)."""
    found: dict[frozenset[int], str] = {}
    for name, factors, _ in terms:
        cols = frozenset(c for _, f, cs in terms if f and f <= factors for c in cs) - constant
        if len(cols) > 1 and cols <= discrete and cols not in found:
            found[cols] = name
    return [(name, sorted(cols)) for cols, name in found.items()
            if not any(cols < other for other in found)]


def check_model(res, patients, kind: str,
                policy: DisclosurePolicy) -> tuple[list[str], list[str]]:
    """``(support reasons, class reasons)`` of the fit ``res``; ``patients`` gives the patient of
    each row of the estimation sample (in the design matrix's order), ``kind`` is ``ols`` or
    ``logit``. Class reasons are empty when the policy switches class disclosure off."""
    k = policy.min_patients
    x = np.asarray(res.model.exog, dtype=float)
    y = np.asarray(res.model.endog, dtype=float).ravel()
    names, dep = list(res.model.exog_names), str(res.model.endog_names)
    pcodes, uniq = pd.factorize(np.asarray(patients), use_na_sentinel=False)
    npat, cap = max(len(uniq), 1), max(2, x.shape[1])
    support: list[str] = []
    classes: list[str] = []
    levels: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # discrete column → (values, inverse)
    constant: set[int] = set()
    for j, name in enumerate(names):
        vals, inv = np.unique(x[:, j], return_inverse=True)
        if len(vals) < 2:  # the intercept, or a constant column
            constant.add(j)
        elif len(vals) <= cap:
            levels[j] = (vals, inv)
        else:
            per = _per_level(inv, len(vals), pcodes, npat)
            off = _patients(inv != int(np.argmax(per)), pcodes)
            if off < k:
                support.append(f"term {name}: {off} patient(s) have a value other than its most "
                               f"common one; at least {k} are needed (the fit could isolate them)")
            elif kind == "logit" and _separates(x[:, j], y):
                classes.append(f"a threshold on {name} splits the {dep} values (every patient on "
                               "one side has the same value): class disclosure")
    terms = formula_terms(res)
    if terms is None:
        support.append("the model's terms could not be read from its formula, so its factors' "
                       "levels could not be checked")
        terms = []
    groups = _saturated(terms, set(levels), constant)
    covered = {c for _, cols in groups for c in cols}
    groups += [(names[j], [j]) for j in sorted(levels) if j not in covered]
    for term, cols in groups:
        inv, first = _joint([levels[c][1] for c in cols], [len(levels[c][0]) for c in cols])
        per = _per_level(inv, len(first), pcodes, npat)
        same = _constant_within(inv, y, len(first)) & (per >= k)
        for i, row in enumerate(first):
            vals = [float(x[row, c]) for c in cols]
            if len(cols) == 1:
                where, who, each = f"at {_at(term, vals[0])}", "", "at each of its values"
            else:
                where, who, each = (_where([names[c] for c in cols], vals), f"of {term} ",
                                    "in each of its cells")
            if per[i] < k:
                support.append(f"term {term}: {per[i]} patient(s) {where}; at least {k} are "
                               f"needed {each}")
            elif same[i]:
                classes.append(f"every patient {who}{where} has the same {dep} value: class "
                               "disclosure")
    if kind == "logit" and not classes:
        p = np.asarray(res.predict(), dtype=float)
        certain = (p < CERTAIN) | (p > 1 - CERTAIN)
        if certain.any():
            classes.append(f"the model predicts the {dep} value of "
                           f"{_patients(certain, pcodes)} patient(s) with certainty (separation): "
                           "class disclosure")
    return support, classes if policy.class_disclosure else []
