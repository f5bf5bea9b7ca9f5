"""A Gaussian copula over columns that are already uniform: SDV's GaussianCopula with uniform
marginals, in numpy (no pandas, no per-call overhead).

Every column a :class:`~synthetic.model.TableModel` hands in is either a category index (a group of
value tuples) or a rank in (0, 1) (numbers, through their quantiles). The copula then is:

- a category becomes a uniform value inside its frequency interval (categories ordered by
  descending frequency, as SDV's ``UniformEncoder``), so each category keeps its exact share;
- a rank with nulls gets a second, binary column (null or not, encoded the same way) and its nulls a
  random rank, so missingness keeps its share and its correlation with the other columns (SDV's
  ``missing_value_generation='from_column'``);
- the uniform values are mapped to normal scores (``Φ⁻¹``), their correlation matrix is fitted, and
  sampling draws correlated normal scores and maps them back (``Φ``), ranks clipped to the fitted
  range (SDV's ``enforce_min_max_values``).

Fitting is one correlation matrix (rows × columns); sampling is one matrix product. A fitted copula
keeps only frequencies, ranges and the correlation matrix, no row. ``synthetic.model`` can still use
SDV's GaussianCopulaSynthesizer instead (setting ``copula_engine = "sdv"``) to compare the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr, ndtri

EPS = 1e-6


@dataclass
class Copula:
    """Fitted Gaussian copula. ``categorical``: column → category frequencies (index order);
    ``numeric``: column → (lowest, highest) fitted rank and share of nulls."""

    columns: list[str] = field(default_factory=list)  # the copula's own columns (incl. null flags)
    categorical: dict[str, np.ndarray] = field(default_factory=dict)
    orders: dict[str, np.ndarray] = field(default_factory=dict)  # categories by descending frequency
    numeric: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    chol: np.ndarray | None = None

    @classmethod
    def fit(cls, categorical: dict[str, np.ndarray], numeric: dict[str, np.ndarray],
            rng: np.random.Generator) -> Copula:
        """``categorical``: column → category index per row (0 .. k-1, no nulls); ``numeric``:
        column → rank in (0, 1) per row (NaN = null). All arrays have the same length."""
        cop = cls()
        cols: list[np.ndarray] = []
        for name, codes in categorical.items():
            counts = np.bincount(codes.astype(np.int64))
            cop.categorical[name] = counts / max(codes.size, 1)
            cop.orders[name] = np.argsort(-counts, kind="stable")
            cop.columns.append(name)
            cols.append(cop._encode(name, codes, rng))
        for name, u in numeric.items():
            u = u.astype(np.float64)
            null = np.isnan(u)
            share = float(null.mean()) if u.size else 0.0
            ok = u[~null]
            lo, hi = (float(ok.min()), float(ok.max())) if ok.size else (0.5, 0.5)
            cop.numeric[name] = (lo, hi, share)
            cop.columns.append(name)
            cols.append(np.where(null, rng.random(u.size), u))
            if 0.0 < share < 1.0:  # missingness as a binary column
                cop.columns.append(f"{name}\0null")
                cols.append(np.where(null, rng.random(u.size) * share, share + rng.random(u.size) * (1 - share)))
        if cols:
            z = ndtri(np.clip(np.column_stack(cols), EPS, 1 - EPS))
            cop.chol = _cholesky(_correlation(z))
        return cop

    def _encode(self, name: str, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        freq, order = self.categorical[name], self.orders[name]
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(order.size)
        cum = np.concatenate([[0.0], np.cumsum(freq[order])])
        r = rank[codes.astype(np.int64)]
        return cum[r] + rng.random(codes.size) * (cum[r + 1] - cum[r])

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` rows: category indexes (int64) and ranks (float64, NaN = null) per column."""
        if self.chol is None:
            return {}
        return self._decode(ndtr(rng.standard_normal((n, self.chol.shape[0])) @ self.chol.T))

    def sample_given(self, name: str, codes: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One row per entry of ``codes``, with categorical column ``name`` fixed to that category and
        every other column drawn from its conditional distribution given it (exact in the copula:
        the fixed column's normal score is drawn within the category's interval, the others from
        the conditional normal)."""
        k = self.chol.shape[0]
        j = self.columns.index(name)
        zj = ndtri(np.clip(self._encode(name, codes, rng), EPS, 1 - EPS))
        sigma = self.chol @ self.chol.T
        rest = [i for i in range(k) if i != j]
        z = np.empty((codes.size, k))
        z[:, j] = zj
        if rest:
            s_rj = sigma[rest, j]
            cov = sigma[np.ix_(rest, rest)] - np.outer(s_rj, s_rj)
            z[:, rest] = zj[:, None] * s_rj[None, :] + rng.standard_normal((codes.size, len(rest))) @ _cholesky(
                cov, correlation=False).T
        out = self._decode(ndtr(z))
        out[name] = codes.astype(np.int64)
        return out

    def _decode(self, u: np.ndarray) -> dict[str, np.ndarray]:
        n = u.shape[0]
        at = {c: i for i, c in enumerate(self.columns)}
        out: dict[str, np.ndarray] = {}
        for name, freq in self.categorical.items():
            order = self.orders[name]
            cum = np.cumsum(freq[order])
            pos = np.clip(np.searchsorted(cum, u[:, at[name]], side="right"), 0, order.size - 1)
            out[name] = order[pos]
        for name, (lo, hi, share) in self.numeric.items():
            v = np.clip(u[:, at[name]], lo, hi)
            flag = at.get(f"{name}\0null")
            if flag is not None:
                v = np.where(u[:, flag] < share, np.nan, v)
            elif share >= 1.0:
                v = np.full(n, np.nan)
            out[name] = v
        return out


def _correlation(z: np.ndarray) -> np.ndarray:
    k = z.shape[1]
    if z.shape[0] < 2:
        return np.eye(k)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(z, rowvar=False).reshape(k, k)
    c = np.nan_to_num(c, nan=0.0)
    np.fill_diagonal(c, 1.0)
    return c


def _cholesky(c: np.ndarray, correlation: bool = True) -> np.ndarray:
    """Cholesky factor of ``c``, or of the nearest positive definite matrix (a correlation matrix
    stays one)."""
    try:
        return np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(c)
        c = (v * np.clip(w, 1e-6, None)) @ v.T
        if correlation:
            d = np.sqrt(np.diag(c))
            c = c / np.outer(d, d)
        return np.linalg.cholesky(c + 1e-9 * np.eye(c.shape[0]))
