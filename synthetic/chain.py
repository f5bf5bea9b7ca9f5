"""The chain of table synthesizers along the foreign keys: person → visit → condition / drug / measurement.

Fitting derives, from a desensitized release's rows, the columns that make the chain consistent:

- ``person._anchor``: the patient's first visit start (days since 1970);
- ``visit._offset``: days from the patient's anchor to the visit start;
- ``<event>._frac``: where in its visit an event lies (0 = visit start, 1 = visit end);
- ``_d_<col>``: any other date of a row, as days after the row's own main date (visit end, drug end);
- ``_m_<col>``: a timestamp as minutes after its date (``visit_start_datetime``);
- ``_n_<child>``: how many rows of a child table a parent row has (the cardinality, sampled jointly
  with the parent's attributes);
- ``_ctx``: the parent's context (the patient's sex and age band for visits; the visit type for
  events); a child is drawn for a parent from rows sampled with the parent's context;
- ``_cost_*`` / ``_has_cost``: the cost row of a visit, drug or measurement (``cost`` is 0..1 per
  event in OMOP), folded into the event's row.

Sampling draws parents first, their children's counts with them, then children with matching
context, and restores dates from the parent's dates: every synthetic row has a synthetic parent, and
visit end ≥ start, events inside their visit, drug end ≥ start hold by construction.
``observation_period`` is derived (first visit start to last visit end of each synthetic patient).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from enclave.core.settings import SynthSettings
from synthetic.copula import Copula
from synthetic.model import CTX, TableModel

EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Link:
    table: str
    key: str
    parent: str | None
    parent_key: str | None
    main_date: str | None
    code: str | None  # the column whose code group conditions the numeric distributions
    context: tuple[str, ...] = ()  # parent columns handed to the children as context
    cost_domain: str | None = None
    joint: tuple[str, ...] = ()  # columns drawn jointly with the code and context (TableModel.fit)


CHAIN = (
    Link("person", "person_id", None, None, None, None, ("sex", "age_band", "care_site_id")),
    Link("visit_occurrence", "visit_occurrence_id", "person", "person_id", "visit_start_date",
         "visit_concept_id", ("visit_concept_id", "care_site_id", "provider_id", "admitted_from_source_value"),
         "Visit", ("care_site_id", "provider_id", "admitted_from_source_value", "_n_condition_occurrence",
                   "_n_drug_exposure", "_n_measurement", "_ctx", "*")),
    Link("condition_occurrence", "condition_occurrence_id", "visit_occurrence", "visit_occurrence_id",
         "condition_start_date", "condition_concept_id", (), "Condition", ("*",)),
    Link("drug_exposure", "drug_exposure_id", "visit_occurrence", "visit_occurrence_id",
         "drug_exposure_start_date", "drug_concept_id", (), "Drug", ("*",)),
    Link("measurement", "measurement_id", "visit_occurrence", "visit_occurrence_id",
         "measurement_date", "measurement_concept_id", (), "Measurement", ("*",)),
)
LINKS = {link.table: link for link in CHAIN}
COST_FIXED = ("cost_id", "cost_event_id", "cost_domain_id")


def chain_tables(available: set[str]) -> list[Link]:
    """The chain links a release can feed: a child needs its parent."""
    out: list[Link] = []
    for link in CHAIN:
        if link.table in available and (link.parent is None or link.parent in {x.table for x in out}):
            out.append(link)
    return out


def children(links: list[Link], table: str) -> list[Link]:
    return [x for x in links if x.parent == table]


def _days(col: str) -> pl.Expr:
    return (pl.col(col).cast(pl.Date) - pl.lit(EPOCH)).dt.total_days()


def _ctx_expr(cols: tuple[str, ...], schema) -> pl.Expr:
    parts = [pl.col(c).cast(pl.String).fill_null("∅") for c in cols if c in schema]
    return pl.concat_str(parts, separator="|") if parts else pl.lit("")


@dataclass
class ChainModel:
    links: list[Link]
    models: dict[str, TableModel] = field(default_factory=dict)
    date_ranges: dict[tuple[str, str], tuple[dt.date, dt.date]] = field(default_factory=dict)
    cost_columns: list[str] = field(default_factory=list)
    dropped_rows: dict[str, int] = field(default_factory=dict)
    context_mismatch: int = 0  # sampled children whose parent context the model hardly produces
    out_of_range_dropped: dict[str, int] = field(default_factory=dict)
    contexts: dict[str, tuple[str, ...]] = field(default_factory=dict)  # child table → parent context columns
    min_context_rows: float = 60.0

    # --- fit ------------------------------------------------------------------------------
    @classmethod
    def fit(cls, frames: dict[str, pl.DataFrame], settings: SynthSettings) -> ChainModel:
        links = chain_tables(set(frames))
        chain = cls(links, min_context_rows=settings.min_rows_per_context)
        cost = frames.get("cost")
        if cost is not None:
            chain.cost_columns = [c for c in cost.columns if c not in COST_FIXED]
        derived = chain._derive(frames)
        for link in links:
            frame = derived[link.table]
            for col, dtype in frames[link.table].schema.items():
                if dtype == pl.Date or isinstance(dtype, pl.Datetime):
                    s = frames[link.table][col].drop_nulls()
                    if s.len():
                        chain.date_ranges[(link.table, col)] = (s.min(), s.max())
            chain.models[link.table] = TableModel.fit(link.table, frame, (), link.code, settings, link.joint)
        return chain

    def _derive(self, frames: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
        """Model frames: ids and dates replaced by the derived columns described above."""
        out: dict[str, pl.DataFrame] = {}
        cost = frames.get("cost")
        for link in self.links:
            f = frames[link.table]
            kids = children(self.links, link.table)
            if link.parent is not None:
                parent = frames[link.parent]
                n0 = f.height
                f = f.join(parent.select(link.parent_key), on=link.parent_key, how="semi",
                           maintain_order="left")
                self.dropped_rows[link.table] = n0 - f.height  # rows without a parent in the release
            if link.table == "person" and "visit_occurrence" in frames:
                first = frames["visit_occurrence"].group_by("person_id").agg(
                    pl.col("visit_start_date").min().alias("_first"))
                f = f.join(first, on="person_id", how="left", maintain_order="left").with_columns(_days("_first").alias("_anchor"))
            elif link.table == "visit_occurrence":
                first = out["person"].select("person_id", "_anchor")
                f = f.join(first, on="person_id", how="left", maintain_order="left").with_columns(
                    (_days("visit_start_date") - pl.col("_anchor")).alias("_offset")).drop("_anchor")
            elif link.parent == "visit_occurrence":
                v = frames["visit_occurrence"].select(
                    "visit_occurrence_id", pl.col("visit_start_date").alias("_vs"),
                    pl.col("visit_end_date").alias("_ve"))
                f = f.join(v, on="visit_occurrence_id", how="left", maintain_order="left").with_columns(
                    pl.when(pl.col("_ve") > pl.col("_vs"))
                    .then((_days(link.main_date) - _days("_vs")) / (_days("_ve") - _days("_vs")))
                    .otherwise(0.0).clip(0.0, 1.0).alias("_frac"))
            if link.parent is not None:
                plink = LINKS[link.parent]
                cols = self._context(link, f, frames[link.parent])
                pctx = frames[link.parent].select(plink.key, _ctx_expr(cols, frames[link.parent].schema).alias(CTX))
                f = f.join(pctx, on=link.parent_key, how="left", maintain_order="left")
            for kid in kids:
                counts = frames[kid.table].group_by(kid.parent_key).len(name=f"_n_{kid.table}")
                f = f.join(counts, left_on=link.key, right_on=kid.parent_key, how="left", maintain_order="left").with_columns(
                    pl.col(f"_n_{kid.table}").fill_null(0))
            if cost is not None and link.cost_domain:
                c = cost.filter(pl.col("cost_domain_id") == link.cost_domain).unique("cost_event_id")
                c = c.select(pl.col("cost_event_id").alias(link.key),
                             *[pl.col(x).alias(f"_cost_{x}") for x in self.cost_columns],
                             pl.lit(True).alias("_has_cost"))
                f = f.join(c, on=link.key, how="left", maintain_order="left").with_columns(pl.col("_has_cost").fill_null(False))
            # dates → offsets
            dates = [c for c, t in frames[link.table].schema.items() if t == pl.Date]
            stamps = [c for c, t in frames[link.table].schema.items() if isinstance(t, pl.Datetime)]
            derived = []
            for c in dates:
                if c != link.main_date:
                    derived.append((_days(c) - _days(link.main_date)).alias(f"_d_{c}") if link.main_date
                                   else pl.lit(None, pl.Int64).alias(f"_d_{c}"))
            for c in stamps:
                base = c.removesuffix("_datetime") + "_date"
                ref = base if base in dates else link.main_date
                derived.append(((pl.col(c) - pl.col(ref).cast(pl.Datetime("us"))).dt.total_minutes()
                                .alias(f"_m_{c}")) if ref else pl.lit(None, pl.Int64).alias(f"_m_{c}"))
            f = f.with_columns(derived) if derived else f
            ids = {link.key, "person_id", link.parent_key} | {x.parent_key for x in kids}
            drop = set(dates) | set(stamps) | ids | {"_first", "_vs", "_ve"}
            keep = [c for c in f.columns if c not in drop] + (["person_id"] if link.table == "person" else [])
            out[link.table] = f.select(keep)
        out["person"] = out["person"].drop("person_id")
        return out

    def _context(self, link: Link, child: pl.DataFrame, parent: pl.DataFrame) -> tuple[str, ...]:
        """The parent's context columns a child is drawn given: ``Link.context`` of the parent, less
        its last columns while the child's rows average fewer than ``min_rows_per_context`` per
        context value (a context that few rows share would hand them back: on a 600-patient
        release, diagnoses drawn given visit type, care site, provider and admission source sat at
        the DCR overfitting bar)."""
        plink = LINKS[link.parent]
        cols = tuple(c for c in plink.context if c in parent.columns)
        joined = child.select(link.parent_key).join(parent.select(plink.key, *cols), left_on=link.parent_key,
                                                    right_on=plink.key, how="left")
        while len(cols) > 1 and joined.select(cols).unique().height * self.min_context_rows > child.height:
            cols = cols[:-1]
        self.contexts[link.table] = cols
        return cols

    def save(self, path) -> None:
        """Pickle into the restricted zone (0600). A pickle is code: never load one from anywhere a
        researcher can write; the build itself never loads one."""
        import pickle

        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(path, "wb") as fh:
            pickle.dump(self, fh)
        path.chmod(0o600)

    # --- sample ---------------------------------------------------------------------------
    def sample(self, n_patients: int, first_ids: dict[str, int], rng: np.random.Generator) -> dict[str, pl.DataFrame]:
        """One chunk of synthetic patients with all their rows; ids start at ``first_ids``."""
        out: dict[str, pl.DataFrame] = {}
        for link in self.links:
            model = self.models[link.table]
            if link.parent is None:
                f = model.sample(n_patients)
            else:
                f = self._children(link, out[link.parent], rng)
            f = self._restore_dates(link, f, out, rng)
            start = first_ids.get(link.table, 1)
            f = f.with_columns(pl.int_range(start, start + f.height, dtype=pl.Int64).alias(link.key))
            out[link.table] = f
        if "visit_occurrence" in out:
            out["observation_period"] = self._observation_periods(out, first_ids.get("observation_period", 1))
        out["cost"] = self._costs(out, first_ids.get("cost", 1))
        return out

    def _children(self, link: Link, parents: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
        model = self.models[link.table]
        plink = LINKS[link.parent]
        count = f"_n_{link.table}"
        slots = parents.select(
            pl.col(plink.key).alias(link.parent_key),
            *([pl.col("person_id")] if link.parent != "person" else []),
            _ctx_expr(self.contexts.get(link.table, plink.context), parents.schema).alias(CTX),
            pl.int_ranges(0, pl.col(count).fill_null(0).clip(0, None).cast(pl.Int64)).alias("_k"),
        ).explode("_k").drop_nulls("_k").drop("_k")
        if slots.height == 0:
            return model.empty().with_columns(pl.lit(None, pl.Int64).alias(link.parent_key))
        if isinstance(model.synthesizer, Copula):  # each child drawn given its parent's context
            rows, unknown = model.sample_given(slots[CTX], rng)
            self.context_mismatch += unknown
            rows = pl.concat([slots.drop(CTX), rows.drop(CTX, strict=False)], how="horizontal")
            return rows[rng.permutation(rows.height)]
        slots = slots.with_columns(pl.int_range(pl.len()).over(CTX).alias("_slot"))
        need = slots.group_by(CTX).len(name="need")
        has_ctx = CTX in model.modelled_columns()
        pool = model.sample(int(slots.height * 1.1) + 10)
        for _ in range(4):
            if not has_ctx:
                break
            have = pool.group_by(CTX).len(name="have")
            gap = need.join(have, on=CTX, how="left", maintain_order="left").with_columns(
                (pl.col("need") - pl.col("have").fill_null(0)).clip(0, None).alias("gap"),
                (pl.col("have").fill_null(0) / pool.height).clip(0.01, 1.0).alias("share"))
            if gap["gap"].sum() == 0:
                break
            extra = int(min(5 * slots.height + 100, (gap["gap"] / gap["share"]).sum() * 1.2 + 10))
            pool = pl.concat([pool, model.sample(extra)], how="vertical_relaxed")
        if has_ctx:
            pool = pool.with_columns(pl.int_range(pl.len()).over(CTX).alias("_slot"))
            rows = slots.join(pool, on=[CTX, "_slot"], how="inner", maintain_order="left")
            missing = slots.join(pool, on=[CTX, "_slot"], how="anti", maintain_order="left")
        else:
            rows, missing = slots.head(0), slots
            pool = pool.drop(CTX, strict=False)
        if missing.height:  # contexts the model hardly ever produces: take any rows
            fill = model.sample(missing.height).drop(CTX, strict=False)
            rows = pl.concat([rows.drop(CTX, "_slot"), pl.concat([missing.drop(CTX, "_slot"), fill],
                                                                   how="horizontal")],
                             how="diagonal_relaxed")
        else:
            rows = rows.drop(CTX, "_slot")
        self.context_mismatch += missing.height
        perm = rng.permutation(rows.height)
        return rows[perm]

    def _restore_dates(self, link: Link, f: pl.DataFrame, out: dict[str, pl.DataFrame],
                       rng: np.random.Generator) -> pl.DataFrame:
        def rng_of(col):
            return self.date_ranges.get((link.table, col))

        if link.table == "person":
            return f
        if link.table == "visit_occurrence":
            p = out["person"].select("person_id", "_anchor")
            f = f.join(p, on="person_id", how="left", maintain_order="left")
            f = f.with_columns((pl.col("_offset") - pl.col("_offset").min().over("person_id")).alias("_offset"))
            lo, hi = rng_of("visit_start_date")
            lo_d, hi_d = (lo - EPOCH).days, (hi - EPOCH).days
            end_hi = (rng_of("visit_end_date") or (lo, hi))[1]
            end_hi_d = (end_hi - EPOCH).days
            start = pl.col("_anchor").fill_null(lo_d) + pl.col("_offset").fill_null(0)
            length = pl.col("_d_visit_end_date").fill_null(0).clip(0, None)
            f = f.with_columns(start.alias("_s"), length.alias("_len"))
            # a patient whose timeline would end after the release's last date gets a new first
            # visit, uniform over the dates where the whole timeline fits (no pile-up at the end)
            span = f.group_by("person_id", maintain_order=True).agg(pl.col("_s").min().alias("_a"),
                                               (pl.col("_s") + pl.col("_len")).max().alias("_z"))
            span = span.with_columns(pl.Series("_u", rng.random(span.height)))
            latest = (end_hi_d - (pl.col("_z") - pl.col("_a"))).clip(lo_d, None)
            span = span.with_columns(pl.when(pl.col("_z") > end_hi_d)
                                     .then((lo_d + pl.col("_u") * (latest - lo_d)).round(0) - pl.col("_a"))
                                     .otherwise(0).cast(pl.Int64).alias("_shift"))
            f = f.join(span.select("person_id", "_shift"), on="person_id", how="left",
                       maintain_order="left")
            f = f.with_columns((pl.col("_s") + pl.col("_shift")).clip(lo_d, hi_d).alias("_s")).drop("_shift")
            f = f.with_columns(pl.min_horizontal(pl.col("_len"), end_hi_d - pl.col("_s")).clip(0, None).alias("_len"))
            f = f.with_columns(
                (pl.lit(EPOCH) + pl.duration(days=pl.col("_s"))).cast(pl.Date).alias("visit_start_date"),
                (pl.lit(EPOCH) + pl.duration(days=pl.col("_s") + pl.col("_len"))).cast(pl.Date).alias("visit_end_date"),
            ).drop("_s", "_len", "_anchor")
        else:
            v = out["visit_occurrence"].select("visit_occurrence_id", pl.col("visit_start_date").alias("_vs"),
                                               pl.col("visit_end_date").alias("_ve"))
            f = f.join(v, on="visit_occurrence_id", how="left", maintain_order="left")
            span = (pl.col("_ve") - pl.col("_vs")).dt.total_days()
            r = rng_of(link.main_date)
            lo = pl.max_horizontal(pl.col("_vs"), pl.lit(r[0])) if r else pl.col("_vs")
            hi = pl.min_horizontal(pl.col("_ve"), pl.lit(r[1])) if r else pl.col("_ve")
            day = (pl.col("_vs") + pl.duration(days=(pl.col("_frac").fill_null(0).clip(0, 1) * span)
                                               .round(0).cast(pl.Int64))).cast(pl.Date)
            # inside the visit, and inside the column's own range: an event of a visit that lies
            # wholly outside the dates the source has for such events is dropped (counted)
            n = f.height
            f = f.filter(lo <= hi).with_columns(day.clip(lo, hi).alias(link.main_date)).drop("_vs", "_ve")
            self.out_of_range_dropped[link.table] = self.out_of_range_dropped.get(link.table, 0) + n - f.height
        for c in [c for c in f.columns if c.startswith("_d_")]:
            col = c.removeprefix("_d_")
            if col == "visit_end_date":
                continue
            r = rng_of(col)
            if r is None:
                f = f.with_columns(pl.lit(None, pl.Date).alias(col))
                continue
            main = pl.col(link.main_date)
            d = (main + pl.duration(days=pl.col(c).cast(pl.Int64))).cast(pl.Date)
            d = pl.max_horizontal(main, pl.lit(r[0]), pl.min_horizontal(d, pl.lit(r[1])))
            f = f.with_columns(pl.when(pl.col(c).is_null()).then(None).otherwise(d).alias(col))
        for c in [c for c in f.columns if c.startswith("_m_")]:
            col = c.removeprefix("_m_")
            base = col.removesuffix("_datetime") + "_date"
            ref = base if base in f.columns else link.main_date
            stamp = pl.col(ref).cast(pl.Datetime("us")) + pl.duration(minutes=pl.col(c).cast(pl.Int64))
            r = rng_of(col)
            f = f.with_columns((stamp.clip(pl.lit(r[0]), pl.lit(r[1])) if r else stamp).alias(col))
        return f

    def _observation_periods(self, out: dict[str, pl.DataFrame], start: int) -> pl.DataFrame:
        v = out["visit_occurrence"]
        op = v.group_by("person_id").agg(pl.col("visit_start_date").min().alias("observation_period_start_date"),
                                         pl.col("visit_end_date").max().alias("observation_period_end_date"))
        op = op.sort("person_id")
        return op.with_columns(pl.int_range(start, start + op.height, dtype=pl.Int64).alias("observation_period_id"))

    def _costs(self, out: dict[str, pl.DataFrame], start: int) -> pl.DataFrame:
        parts = []
        for link in self.links:
            f = out.get(link.table)
            if f is None or not link.cost_domain or "_has_cost" not in f.columns:
                continue
            c = f.filter(pl.col("_has_cost").cast(pl.Boolean)).select(
                pl.col(link.key).alias("cost_event_id"), pl.lit(link.cost_domain).alias("cost_domain_id"),
                *[pl.col(f"_cost_{x}").alias(x) for x in self.cost_columns if f"_cost_{x}" in f.columns])
            parts.append(c)
        if not parts:
            return pl.DataFrame()
        cost = pl.concat(parts, how="diagonal_relaxed")
        return cost.with_columns(pl.int_range(start, start + cost.height, dtype=pl.Int64).alias("cost_id"))
