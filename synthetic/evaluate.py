"""Fidelity and privacy of a twin: SDMetrics quality and diagnostic reports, DCR, new rows, copies.

- **quality** — SDMetrics multi-table ``QualityReport`` (column shapes, column pair trends,
  cardinality, intertable trends) of the synthetic tables against the training rows;
- **diagnostic** — SDMetrics ``DiagnosticReport`` (data validity, structure, relationship validity);
- **privacy**, per table, on each row's *record*: the row's quasi-identifiers and sensitive
  attributes (as the catalog classifies them) plus its patient's generalized age band, sex and region:

  - ``dcr_baseline_protection`` (SDMetrics' ``DCRBaselineProtection``): synthetic records are as far
    from the real ones as random records are (1 = as far);
  - ``dcr_overfitting_protection`` (SDMetrics' ``DCROverfittingProtection``): synthetic records are
    not closer to the training records than to the holdout's (1 = not closer);
  - ``new_row_synthesis`` (SDMetrics' ``NewRowSynthesis``): share of synthetic records that match no
    training record (checked against every training record);
  - ``identical_share``: share of *all* synthetic records identical to a training record, counted in
    DuckDB (a hash join, no subsample), next to ``holdout_identical_share``: the same share for real
    holdout patients, i.e. what chance alone gives;
  - ``unique_identical_share``: share of synthetic records identical to a record that only one
    training row has (a copied individual record), with its holdout counterpart.

The DCR and new-row metrics are SDMetrics' definitions computed in DuckDB (``synthetic.privacy``, a
test compares them with SDMetrics): DCR on ``privacy_rows`` samples (rows × rows pair distances),
new-row synthesis for ``new_row_sample`` rows against all training records.
"""

from __future__ import annotations

import warnings

import duckdb
import numpy as np
import pandas as pd
import polars as pl

from enclave.core.model.catalog import IdentifierRole, catalog
from enclave.core.settings import SynthSettings
from enclave.io import db
from synthetic import privacy as privacy_sql
from synthetic.chain import LINKS, Link

PATIENT_QIS = ("age_band", "sex", "region")


def _sdtype(name: str, dtype: pl.DataType, s: pl.Series, max_distinct: int) -> str:
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype == pl.String or dtype == pl.Boolean or name.endswith(("_id", "_source_value")):
        return "categorical"
    if s.n_unique() <= max_distinct:
        return "categorical"
    return "numerical"


def _to_pandas(frame: pl.DataFrame) -> pd.DataFrame:
    """pandas with datetime64[ns] (SDV/SDMetrics mishandle DuckDB's datetime64[us])."""
    casts = [pl.col(c).cast(pl.Datetime("ns")) for c, t in frame.schema.items()
             if t == pl.Date or isinstance(t, pl.Datetime)]
    return (frame.with_columns(casts) if casts else frame).to_pandas()


def report_metadata(real: dict[str, pl.DataFrame], links: list[Link], settings: SynthSettings) -> dict:
    """SDMetrics metadata of the evaluated tables: keys, chain relationships, informative columns."""
    tables, relationships = {}, []
    for link in links:
        f = real[link.table]
        cols = {link.key: {"sdtype": "id"}}
        if link.parent_key:
            cols[link.parent_key] = {"sdtype": "id"}
            relationships.append({"parent_table_name": link.parent, "parent_primary_key": LINKS[link.parent].key,
                                  "child_table_name": link.table, "child_foreign_key": link.parent_key})
        for c, t in f.schema.items():
            if c in cols or c.endswith("_occurrence_id") or c in ("person_id", "measurement_id", "drug_exposure_id"):
                continue
            s = f[c]
            if s.null_count() == s.len() or s.drop_nulls().n_unique() <= 1:
                continue
            if t == pl.String and s.n_unique() > settings.max_categories:
                continue
            cols[c] = {"sdtype": _sdtype(c, t, s, settings.categorical_max_distinct)}
            if cols[c]["sdtype"] == "datetime":
                cols[c]["datetime_format"] = "%Y-%m-%d %H:%M:%S"
        tables[link.table] = {"primary_key": link.key, "columns": cols}
    return {"METADATA_SPEC_VERSION": "V1", "tables": tables, "relationships": relationships}


def fidelity(real: dict[str, pl.DataFrame], synthetic: dict[str, pl.DataFrame], fitted: dict[str, pl.DataFrame],
             links: list[Link], settings: SynthSettings) -> tuple[dict, dict]:
    """(quality, diagnostic) SDMetrics reports: overall score and score per property.

    Quality compares a sample of synthetic patients with an equal sample of training patients; the
    diagnostic (boundaries, categories, keys: linear cost) compares them with every patient the
    synthesizers were fitted on, whose ranges the twin keeps to.
    """
    from sdmetrics.reports.multi_table import DiagnosticReport, QualityReport

    meta = report_metadata(real, links, settings)

    def pandas(frames):
        return {t: _to_pandas(frames[t].select(list(meta["tables"][t]["columns"]))) for t in meta["tables"]}

    s = pandas(synthetic)
    out = []
    for report, r in ((QualityReport(), pandas(real)), (DiagnosticReport(), pandas(fitted))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report.generate(r, s, meta, verbose=False)
        props = report.get_properties()
        out.append({"score": round(float(report.get_score()), 4),
                    "properties": {row["Property"]: round(float(row["Score"]), 4) for _, row in props.iterrows()}})
    return out[0], out[1]


def record_columns(table: str, frame_columns: list[str], modelled: set[str]) -> list[str]:
    """The row's quasi-identifiers and sensitive attributes that the twin carries."""
    roles = {IdentifierRole.QUASI, IdentifierRole.SENSITIVE}
    cols = [c.column for c in catalog().get(table, ()) if c.role in roles and c.column in frame_columns
            and c.column in modelled]
    if table == "person":
        cols = [c for c in cols if c not in PATIENT_QIS]
    return cols


def privacy(con: duckdb.DuckDBPyConnection, links: list[Link], modelled: dict[str, set[str]],
            settings: SynthSettings) -> dict[str, dict]:
    """Privacy metrics per table. ``con`` holds schemas ``train``, ``holdout`` and ``syn`` (same tables)."""
    out: dict[str, dict] = {}
    for link in links:
        cols_all = [r[0] for r in db.rows(con, "SELECT column_name FROM information_schema.columns "
                                               "WHERE table_schema = 'syn' AND table_name = ?", [link.table])]
        cols = record_columns(link.table, cols_all, modelled[link.table])
        alias = "p" if link.table == "person" else "t"
        sel = ", ".join([f"p.{q}" for q in PATIENT_QIS] + [f"{alias}.{c}" for c in cols])

        def view(schema: str, link: Link = link, sel: str = sel) -> str:
            if link.table == "person":
                return f"SELECT {sel} FROM {schema}.person p"
            return f"SELECT {sel} FROM {schema}.{link.table} t JOIN {schema}.person p USING (person_id)"

        def identical(a: str, b: str, unique: bool = False) -> float:
            n = db.scalar(con, f"SELECT count(*) FROM ({view(a)})")
            if not n:
                return 0.0
            pool = (f"SELECT hash(y) h FROM ({view(b)}) y GROUP BY h HAVING count(*) = 1" if unique
                    else f"SELECT DISTINCT hash(y) h FROM ({view(b)}) y")
            hit = db.scalar(con, f"SELECT count(*) FROM (SELECT hash(x) h FROM ({view(a)}) x) SEMI JOIN ({pool}) USING (h)")
            return hit / n

        record = {"record_columns": list(PATIENT_QIS) + cols,
                  "identical_share": round(identical("syn", "train"), 4),
                  "holdout_identical_share": round(identical("holdout", "train"), 4),
                  "unique_identical_share": round(identical("syn", "train", unique=True), 4),
                  "holdout_unique_identical_share": round(identical("holdout", "train", unique=True), 4)}
        # one sample size for all: the nearest of more reference rows is nearer by chance alone, so
        # training and holdout references must be the same size (as in SDMetrics' subsampling)
        n = min([settings.privacy_rows] + [db.scalar(con, f"SELECT count(*) FROM ({view(k)})")
                                           for k in ("train", "holdout")])
        frames = {k: db.frame(con, f"SELECT * FROM ({view(k)}) USING SAMPLE {n} ROWS (reservoir, 7)")
                  for k in ("train", "holdout", "syn")}
        usable = [c for c in frames["train"].columns if frames["train"][c].null_count() < frames["train"].height]
        schema = frames["train"].select(usable).schema
        frames = {k: _numeric_dates(f.select(usable)) for k, f in frames.items()}
        kinds = {c: ("numerical" if _sdtype(c, t, frames["train"][c], settings.categorical_max_distinct)
                     in ("numerical", "datetime") else "categorical") for c, t in schema.items()}
        # the real side of new-row synthesis is every training record (dates as in _numeric_dates)
        numeric_train = "(SELECT " + ", ".join(_numeric_date_sql(c, t) for c, t in schema.items()) + \
                        f" FROM ({view('train')}))"
        rng = np.random.default_rng(settings.seed)
        for who, key in (("", "syn"), ("holdout_", "holdout")):
            data = frames[key]
            record[f"{who}dcr_baseline_protection"] = round(privacy_sql.dcr_baseline_protection(
                frames["train"], data, kinds, rng), 4)
            con.register("_nr_sample", data.head(settings.new_row_sample).to_arrow())
            record[f"{who}new_row_synthesis"] = round(privacy_sql.new_row_synthesis_in(
                con, "_nr_sample", numeric_train, kinds), 4)
            con.unregister("_nr_sample")
        record["dcr_overfitting_protection"] = round(privacy_sql.dcr_overfitting_protection(
            frames["train"], frames["syn"], frames["holdout"], kinds), 4)
        out[link.table] = record
    return out


def _numeric_date_sql(col: str, dtype: pl.DataType) -> str:
    """SQL of :func:`_numeric_dates` for one column."""
    q = '"' + col.replace('"', '""') + '"'
    if dtype == pl.Date:
        return f"CAST({q} - DATE '1970-01-01' AS DOUBLE) AS {q}"
    if isinstance(dtype, pl.Datetime):
        return f"CAST(epoch({q}) / 60 AS DOUBLE) AS {q}"
    return q


def _numeric_dates(frame: pl.DataFrame) -> pl.DataFrame:
    """Dates as days and timestamps as minutes since 1970 (distances in SDMetrics' DCR stay finite)."""
    casts = []
    for c, t in frame.schema.items():
        if t == pl.Date:
            casts.append(pl.col(c).cast(pl.Int32).cast(pl.Float64))
        elif isinstance(t, pl.Datetime):
            casts.append((pl.col(c).dt.epoch("s") / 60).cast(pl.Float64))
    return frame.with_columns(casts) if casts else frame


def small_domain(r: dict, settings: SynthSettings) -> bool:
    """Most real records the model never saw repeat a training record exactly (counted on all rows):
    a small record domain, e.g. a k-anonymous person table of age band × sex × region."""
    return r["holdout_identical_share"] >= settings.small_domain_identical_share


def privacy_failures(report: dict[str, dict], settings: SynthSettings) -> list[str]:
    """What misses the privacy bar (empty: the twin may be published). Names metrics, never row values.

    DCR overfitting protection has an absolute bar. Every other metric's bar is its absolute setting,
    or, where real patients the model never saw (the holdout) cannot reach it themselves, the
    holdout's own score less ``holdout_tolerance``. In a small record domain (:func:`small_domain`)
    the DCR baseline and new-row bars do not apply: a record that thousands of real patients share
    is no one's, both metrics then sit on a knife edge (a median of distances that are 0 or 1/3), and
    what still tells a copy from chance are the identical-record shares against the holdout's.
    """
    tol = settings.holdout_tolerance
    fails = []
    for table, r in report.items():
        if not small_domain(r, settings):
            bar = min(settings.min_dcr_baseline_protection, r["holdout_dcr_baseline_protection"] - tol)
            if r["dcr_baseline_protection"] < bar:
                fails.append(f"{table}: DCR baseline protection {r['dcr_baseline_protection']:.3f} < {bar:.3f}")
            bar = min(settings.min_new_row_synthesis, r["holdout_new_row_synthesis"] - tol)
            if r["new_row_synthesis"] < bar:
                fails.append(f"{table}: new-row synthesis {r['new_row_synthesis']:.3f} < {bar:.3f}")
        if r["dcr_overfitting_protection"] < settings.min_dcr_overfitting_protection:
            fails.append(f"{table}: DCR overfitting protection {r['dcr_overfitting_protection']:.3f} < "
                         f"{settings.min_dcr_overfitting_protection:.3f}")
        bar = max(settings.max_identical_share, r["holdout_identical_share"] + tol)
        if r["identical_share"] > bar:
            fails.append(f"{table}: {r['identical_share']:.2%} of synthetic records identical to a "
                         f"training record (bar {bar:.2%})")
        bar = max(settings.max_unique_identical_share, r["holdout_unique_identical_share"] + tol)
        if r["unique_identical_share"] > bar:
            fails.append(f"{table}: {r['unique_identical_share']:.2%} of synthetic records copy a record "
                         f"only one training row has (bar {bar:.2%})")
    return fails
