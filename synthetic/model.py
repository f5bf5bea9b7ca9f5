"""One table's synthesizer: how its columns are modelled, fitted (a Gaussian copula) and sampled.

A ``TableModel`` is fitted on a frame that already carries the table's *derived* columns (dates as
offsets from the parent's date, child counts, parent context; see ``synthetic.chain``). Columns are
profiled from the data:

- empty columns stay null, constant columns keep their one value (neither is modelled);
- text and code columns (and numbers with few distinct values) are categories; columns where one
  determines the other (concept id ↔ source value, provider → care site, analyte → reference
  range ...) are merged into one category of value tuples, so synthetic rows never pair a code with
  a source value or unit it never had; a text column with more distinct values than
  ``max_categories`` (free text) is not synthesized (null);
- numbers are replaced by their rank within the row's code group (the group holding the table's
  ``<domain>_concept_id``), so each analyte keeps its own value distribution; sampled ranks are
  mapped back through that group's quantiles (kept between the 0.5 and 99.5 percentiles, never the
  extremes of single patients).

The Gaussian copula (``synthetic.copula``, or SDV's GaussianCopulaSynthesizer with
``copula_engine = "sdv"``) is fitted on the categories and ranks; no date ever reaches it (so the
pandas datetime64[us] pitfall does not arise).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import polars as pl

from enclave.core.errors import ConfigurationError
from enclave.core.settings import SynthSettings
from synthetic.copula import Copula

#: derived columns (prefix) that are always numeric
NUMERIC_PREFIXES = ("_offset", "_frac", "_m_", "_d_", "_n_", "_anchor")
INTEGER_PREFIXES = ("_offset", "_d_", "_n_", "_anchor")
CTX = "_ctx"


@dataclass
class Group:
    """Categorical columns modelled together as one category of value tuples."""
    name: str
    columns: list[str]
    values: pl.DataFrame  # one row per tuple, with an index column ``name``


@dataclass
class Quantiles:
    """Per code group (or pooled) quantiles of one numeric column."""
    column: str
    integer: bool
    probs: np.ndarray
    by_group: dict[str, np.ndarray]
    pooled: np.ndarray | None


@dataclass
class TableModel:
    table: str
    constants: dict[str, object] = field(default_factory=dict)
    nulls: list[str] = field(default_factory=list)
    dropped_text: list[str] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    numeric: list[Quantiles] = field(default_factory=list)
    key_group: str | None = None
    dtypes: dict[str, pl.DataType] = field(default_factory=dict)
    synthesizer: object = None  # a synthetic.copula.Copula (or SDV's GaussianCopulaSynthesizer)
    fitted_rows: int = 0
    rng: np.random.Generator | None = None

    # --- fit ------------------------------------------------------------------------------
    @classmethod
    def fit(cls, table: str, frame: pl.DataFrame, skip: tuple[str, ...], key_column: str | None,
            settings: SynthSettings, joint: tuple[str, ...] = ()) -> TableModel:
        """Fit on ``frame`` (ids listed in ``skip`` are not modelled). Categorical columns named in
        ``joint`` (``"*"``: all) join the group of the code and parent context while its distinct
        tuples stay within ``max_group_categories``: drawn from their exact joint distribution."""
        if settings.copula_engine not in ("numpy", "sdv"):
            raise ConfigurationError(f"synthetic.copula_engine is {settings.copula_engine!r}: use 'numpy' or 'sdv'")
        model = cls(table, dtypes=dict(frame.schema), fitted_rows=frame.height)
        categorical, numeric = [], []
        for col in frame.columns:
            if col in skip:
                continue
            s = frame[col]
            distinct = s.n_unique() - (1 if s.null_count() else 0)
            if s.null_count() == s.len() or distinct == 0:
                model.nulls.append(col)
            elif distinct == 1 and s.null_count() == 0:
                model.constants[col] = s.drop_nulls()[0]
            elif col.startswith("_n_") and distinct <= settings.categorical_max_distinct:
                categorical.append(col)  # small counts: their exact distribution
            elif col.startswith(NUMERIC_PREFIXES):
                numeric.append(col)
            elif col == CTX or s.dtype in (pl.String, pl.Boolean, pl.Categorical) or col.endswith(("_id", "_source_value")) \
                    or distinct <= settings.categorical_max_distinct:
                if s.dtype == pl.String and distinct > settings.max_categories and col != CTX:
                    model.dropped_text.append(col)
                else:
                    categorical.append(col)
            elif s.dtype.is_numeric():
                numeric.append(col)
            else:
                model.nulls.append(col)
        model.groups = _dependency_groups(frame, categorical, key_column, settings, joint)
        coded = frame.select([c for c in frame.columns if c not in skip])
        for g in model.groups:
            coded = coded.join(g.values, on=g.columns, how="left", nulls_equal=True,
                                   maintain_order="left")
        key = key_column if key_column in categorical else None
        model.key_group = key
        ranks = {}
        for col in numeric:
            q, r = _fit_quantiles(coded, col, key, settings)
            model.numeric.append(q)
            ranks[col] = r
        model.rng = np.random.default_rng([settings.seed, zlib.crc32(table.encode())])
        if settings.copula_engine == "sdv":
            train = {g.name: coded[g.name].cast(pl.String) for g in model.groups} | ranks
            model.synthesizer = _fit_sdv(pl.DataFrame(train).to_pandas(), [g.name for g in model.groups],
                                         [q.column for q in model.numeric], settings)
        elif frame.height:
            model.synthesizer = Copula.fit({g.name: coded[g.name].to_numpy() for g in model.groups},
                                           {c: r.cast(pl.Float64).to_numpy() for c, r in ranks.items()}, model.rng)
        return model

    # --- sample ---------------------------------------------------------------------------
    def sample(self, n: int) -> pl.DataFrame:
        """``n`` synthetic rows with the table's (derived) columns restored."""
        if n <= 0:
            return self.empty()
        if isinstance(self.synthesizer, Copula):
            raw = self.synthesizer.sample(n, self.rng)
        elif self.synthesizer is not None:
            res = self.synthesizer.sample(num_rows=n)
            res = pl.from_pandas(res["t"] if isinstance(res, dict) else res)
            raw = {c: res[c].cast(pl.Float64 if c in {q.column for q in self.numeric} else pl.Int64, strict=False)
                   .to_numpy() for c in res.columns}
        else:
            raw = {}
        return self._restore(raw, n)

    def sample_given(self, context: pl.Series, rng: np.random.Generator) -> tuple[pl.DataFrame, int]:
        """One row per parent context value (the children's ``_ctx``), each drawn given its parent:
        the group holding ``_ctx`` takes a value tuple with that context (by its frequency), the
        other columns follow from the copula's conditional distribution. Contexts the fitted rows
        never had (and every row, without the numpy copula) are drawn unconditionally; returns the
        rows and how many were."""
        n = context.len()
        group = next((g for g in self.groups if CTX in g.columns), None)
        if n == 0 or group is None or not isinstance(self.synthesizer, Copula):
            return self.sample(n), (n if group is not None else 0)
        freq = self.synthesizer.categorical[group.name]
        tuples = group.values.select(pl.col(group.name), pl.col(CTX)).with_columns(
            pl.Series("_f", np.pad(freq, (0, max(0, group.values.height - freq.size)))[:group.values.height]))
        tuples = tuples.filter(pl.col("_f") > 0).sort(CTX, group.name)
        cum = np.cumsum(tuples["_f"].to_numpy())
        seg = tuples.with_row_index("_i").group_by(CTX).agg(pl.col("_i").min().alias("_a"),
                                                            pl.col("_i").max().alias("_b"))
        slots = pl.DataFrame({CTX: context.cast(pl.String)}).join(seg, on=CTX, how="left", maintain_order="left")
        known = slots["_a"].is_not_null().to_numpy()
        a = slots["_a"].fill_null(0).cast(pl.Int64).to_numpy()
        b = slots["_b"].fill_null(0).cast(pl.Int64).to_numpy()
        base = np.where(a > 0, cum[np.maximum(a - 1, 0)], 0.0)
        target = base + rng.random(n) * (cum[b] - base)
        pick = np.clip(np.searchsorted(cum, target, side="right"), a, b)
        codes = tuples[group.name].to_numpy()[pick]
        unknown = int((~known).sum())
        if unknown:  # a context never seen: any tuple, by its frequency
            codes[~known] = self.synthesizer.sample(unknown, rng)[group.name]
        raw = self.synthesizer.sample_given(group.name, codes, rng)
        return self._restore(raw, n), unknown

    def _restore(self, raw: dict[str, np.ndarray], n: int) -> pl.DataFrame:
        out = []
        for g in self.groups:  # group index → its value tuple (row index of ``values``)
            out.append(g.values.select(g.columns)[raw[g.name]])
        frame = pl.concat(out, how="horizontal") if out else pl.DataFrame({"_row": np.arange(n)})
        codes = frame[self.key_group].cast(pl.String).fill_null("").to_numpy() if self.key_group else None
        for q in self.numeric:
            u = raw[q.column].astype(np.float64)
            frame = frame.with_columns(_inverse(q, u, codes if q.by_group else None))
        frame = frame.with_columns(
            *[pl.lit(v).alias(c) for c, v in self.constants.items()],
            *[pl.lit(None).alias(c) for c in self.nulls + self.dropped_text],
        )
        return frame.select([pl.col(c).cast(self.dtypes[c], strict=False) for c in self.modelled_columns()])

    def modelled_columns(self) -> list[str]:
        return ([c for g in self.groups for c in g.columns] + [q.column for q in self.numeric]
                + list(self.constants) + self.nulls + self.dropped_text)

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema={c: self.dtypes[c] for c in self.modelled_columns()})


# --- helpers ------------------------------------------------------------------------------------
def _dependency_groups(frame: pl.DataFrame, columns: list[str], key_column: str | None,
                       settings: SynthSettings, joint: tuple[str, ...] = ()) -> list[Group]:
    """Merge categorical columns while one group's values (nearly) determine the other's.

    Two groups merge when the distinct value tuples of both together are at most ``merge_slack``
    times those of the larger one (and at most ``max_categories``). The parent context merges with
    the table's code group, so codes are drawn from their distribution given the parent; then the
    groups holding a ``joint`` column (in that order; ``"*"``: every group) join it while the
    tuples stay within ``max_group_categories`` and rows average ``min_rows_per_tuple`` per tuple
    (fewer rows: the tuples would be the rows themselves, and the twin would copy them).
    """
    groups: list[list[str]] = [[c] for c in columns]

    def distinct(cols: list[str]) -> int:
        return frame.select(cols).unique().height

    counts = [distinct(g) for g in groups]

    def fits(tuples: int) -> bool:  # few enough tuples, each (on average) shared by enough rows
        return tuples <= settings.max_group_categories and tuples * settings.min_rows_per_tuple <= frame.height

    def merge(i: int, j: int, both: int) -> None:
        groups[i] = groups[i] + groups[j]
        counts[i] = both
        del groups[j], counts[j]

    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                both = distinct(groups[i] + groups[j])
                if both <= max(counts[i], counts[j]) * settings.merge_slack and both <= settings.max_categories:
                    merge(i, j, both)
                    merged = True
                    break
            if merged:
                break
    ctx = next((i for i, g in enumerate(groups) if CTX in g), None)
    key = next((i for i, g in enumerate(groups) if key_column in g), None)
    if ctx is not None and key is not None and ctx != key and CTX not in joint:
        both = distinct(groups[ctx] + groups[key])
        if fits(both):
            merge(min(ctx, key), max(ctx, key), both)
    core = next((i for i, g in enumerate(groups) if CTX in g or key_column in g), None)
    if core is None and joint:
        core = next((i for i, g in enumerate(groups) if any(c in g for c in joint)), None)
    if core is not None:
        anchor = groups[core][0]
        order = ([c for c in joint if c != "*"] + [c for g in groups for c in g]) if "*" in joint else list(joint)
        for col in order:
            j = next((i for i, g in enumerate(groups) if col in g), None)
            core = next(i for i, g in enumerate(groups) if anchor in g)
            if j is None or j == core:
                continue
            both = distinct(groups[core] + groups[j])
            if fits(both):
                merge(min(core, j), max(core, j), both)
    out = []
    for k, cols in enumerate(groups):
        name = f"_g{k}"
        values = frame.select(cols).unique(maintain_order=True).with_row_index(name).with_columns(
            pl.col(name).cast(pl.Int64))
        out.append(Group(name, cols, values))
    return out


def _fit_quantiles(coded: pl.DataFrame, col: str, key: str | None,
                   settings: SynthSettings) -> tuple[Quantiles, pl.Series]:
    values = coded[col].cast(pl.Float64)
    integer = col.startswith(INTEGER_PREFIXES) or coded.schema[col].is_integer()
    k = max(5, settings.quantile_points)
    probs = np.linspace(0.005, 0.995, k)

    def quantiles(v: np.ndarray) -> np.ndarray:
        if not v.size:
            return np.zeros(k)
        return np.quantile(v, probs, method="inverted_cdf" if integer else "linear")

    frame = pl.DataFrame({"v": values}).with_columns(
        coded[key].cast(pl.String).fill_null("").alias("k") if key else pl.lit("").alias("k"))
    frame = frame.with_columns(
        ((pl.col("v").rank("average").over("k")) / (pl.col("v").count().over("k") + 1)).alias("u"),
        pl.col("v").count().over("k").alias("n"))
    by_group: dict[str, np.ndarray] = {}
    if key:
        big = frame.filter(pl.col("n") >= settings.min_group_rows, pl.col("v").is_not_null())
        for (name,), part in big.group_by("k"):
            by_group[str(name)] = quantiles(part["v"].to_numpy())
    pooled_v = values.drop_nulls().to_numpy()
    pooled = quantiles(pooled_v)
    # rows of small groups are ranked within the pooled distribution
    pooled_u = (values.rank("average") / (values.count() + 1))
    u = frame.with_columns(pl.when(pl.col("n") >= settings.min_group_rows).then(pl.col("u"))
                           .otherwise(pooled_u).alias("u"))["u"]
    return Quantiles(col, integer, probs, by_group, pooled), u.alias(col)


def _inverse(q: Quantiles, u: np.ndarray, keys: np.ndarray | None) -> pl.Series:
    """Sampled ranks ``u`` back to values through each row's code-group quantiles (pooled for rows
    of other groups). One vectorized lookup in a (groups × quantiles) table, however many groups."""
    names = list(q.by_group) if keys is not None else []
    table = np.vstack([q.by_group[n] for n in names]
                      + [q.pooled if q.pooled is not None else np.full(q.probs.size, np.nan)])
    row = np.full(u.shape, len(names), dtype=np.int64)  # the pooled row
    if names:
        row = pl.Series(keys, dtype=pl.String).replace_strict(
            names, list(range(len(names))), default=len(names), return_dtype=pl.Int64).to_numpy()
    missing = np.isnan(u)
    v = np.clip(np.where(missing, q.probs[0], u), q.probs[0], q.probs[-1])
    last = q.probs.size - 1
    if q.integer:  # step function: unbiased for discrete values
        out = table[row, np.clip(np.searchsorted(q.probs, v), 0, last)]
    else:  # linear interpolation between neighbouring quantiles
        i = np.clip(np.searchsorted(q.probs, v, side="right") - 1, 0, last - 1)
        lo, hi = q.probs[i], q.probs[i + 1]
        w = np.where(hi > lo, (v - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
        out = table[row, i] * (1 - w) + table[row, i + 1] * w
    out = np.where(missing, np.nan, out)
    s = pl.Series(q.column, out, dtype=pl.Float64, nan_to_null=True)
    return s.round(0) if q.integer else s


def _fit_sdv(data: pd.DataFrame, categorical: list[str], numeric: list[str], settings: SynthSettings):
    from sdv.metadata import Metadata
    from sdv.single_table import GaussianCopulaSynthesizer

    if data.shape[1] == 0 or len(data) == 0:
        return None
    meta = Metadata.load_from_dict({"tables": {"t": {"columns": {
        **{c: {"sdtype": "categorical"} for c in categorical},
        **{c: {"sdtype": "numerical"} for c in numeric},
    }}}})
    synth = GaussianCopulaSynthesizer(meta, enforce_min_max_values=True, enforce_rounding=False,
                                      default_distribution=settings.default_distribution)
    synth.fit({"t": data})
    return synth
