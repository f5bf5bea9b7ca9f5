"""Build and publish a synthetic twin of a desensitized release (security-relevant: the privacy bar).

``build_twin`` reads a published desensitized release (never the restricted store), verifies its
hashes, splits its patients into training and holdout (``holdout_share``), fits the chain of table
synthesizers (``synthetic.chain``) on the training patients (a sample of ``fit_max_patients`` when
there are more), samples ``size_ratio`` × the release's patients in chunks of
``sample_chunk_patients``, measures fidelity and privacy (``synthetic.evaluate``), and refuses to
publish when the privacy bar of ``SynthSettings`` is missed.

Published like a release: ``<home>/releases/synthetic/<project>/v<N>/`` (``release.duckdb`` +
``manifest.json``, tier ``synthetic``, same table schemas as the source release), written into a
hidden build folder and renamed into place when complete (:mod:`enclave.core.publish`). Reference
tables (``concept``, ``care_site`` ...) are copied whole; patient tables outside the chain (notes, observations ...) are
not synthesized and are listed in the manifest. The fitted synthesizers (pickles) are kept only in
the restricted zone, ``<home>/restricted/synth-models/<project>/v<N>.pkl``, and never loaded back.
"""

from __future__ import annotations

import datetime as dt
import getpass
import resource
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from enclave.core import audit
from enclave.core.errors import BadInputError, DisclosureRiskError
from enclave.core.manifest import RELEASE_DB, load_manifest, resolve_release, verify_release
from enclave.core.model.catalog import IdentifierRole, catalog
from enclave.core.publish import Staging, staged_version
from enclave.core.settings import Settings, SynthSettings
from enclave.io import db
from enclave.io.release.build import REFERENCE_TABLES
from synthetic.chain import CHAIN, ChainModel, chain_tables
from synthetic.evaluate import fidelity, privacy, privacy_failures, small_domain

TIER = "synthetic"
MODELS_DIR = "synth-models"


def _read_split(con: duckdb.DuckDBPyConnection, links, tables: list[str], settings: SynthSettings) -> None:
    """Schemas ``train`` and ``holdout`` of views over the release, split by patient (keyed hash)."""
    cut = int(settings.holdout_share * 10_000)
    db.run(con, f"""CREATE TEMP TABLE _split AS SELECT person_id,
                    hash(person_id, {settings.seed}) % 10000 < {cut} AS holdout FROM rel.person""")
    keys = {link.table: link for link in links}
    for schema, flag in (("train", "false"), ("holdout", "true")):
        db.run(con, f"CREATE SCHEMA {schema}")
        for t in sorted(tables, key=lambda x: x == "cost"):  # cost views read the event views
            if t == "cost":
                parts = " UNION ALL ".join(
                    f"SELECT c.* FROM rel.cost c SEMI JOIN {schema}.{link.table} e "
                    f"ON c.cost_event_id = e.{link.key} WHERE c.cost_domain_id = '{link.cost_domain}'"
                    for link in links if link.cost_domain)
                db.run(con, f"CREATE VIEW {schema}.cost AS {parts}")
            elif t in keys or t == "observation_period":
                db.run(con, f"CREATE VIEW {schema}.{t} AS SELECT * FROM rel.{t} SEMI JOIN "
                            f"(SELECT person_id FROM _split WHERE holdout = {flag}) USING (person_id)")


def _never_modelled(table: str) -> set[str]:
    """Direct identifiers other than the chain's keys (their values are pseudonyms) and free text
    (scrubbed, but still a person's words): never modelled, null in the twin."""
    keys = {x.key for x in CHAIN} | {x.parent_key for x in CHAIN if x.parent_key} | {"cost_event_id"}
    return {c.column for c in catalog().get(table, ())
            if c.role == IdentifierRole.DIRECT or c.free_text} - keys


def _fit_frames(con, links, tables: list[str], settings: SynthSettings) -> dict[str, pl.DataFrame]:
    n = settings.fit_max_patients
    db.run(con, f"""CREATE TEMP TABLE _fit AS SELECT person_id FROM train.person
                    ORDER BY hash(person_id, {settings.seed} + 1) LIMIT {n}""")
    frames = {}
    for link in links:
        cols = [c for c in _columns(con, "rel", link.table) if c not in _never_modelled(link.table)]
        # in key order: the twin depends on the release's content, not on its rows' storage order
        frames[link.table] = db.frame(con, f"SELECT {', '.join(cols)} FROM train.{link.table} "
                                           f"SEMI JOIN _fit USING (person_id) ORDER BY {link.key}")
    if "cost" in tables:
        frames["cost"] = db.frame(con, "SELECT * FROM train.cost ORDER BY cost_id")
    return frames


def _columns(con, schema: str, table: str) -> list[str]:
    return [r[0] for r in db.rows(con, "SELECT column_name FROM information_schema.columns WHERE "
                                       "table_catalog = ? AND table_name = ? ORDER BY ordinal_position",
                                  [schema, table])] or [
        r[0] for r in db.rows(con, "SELECT column_name FROM information_schema.columns WHERE "
                                   "table_schema = ? AND table_name = ? ORDER BY ordinal_position", [schema, table])]


def _write_chunk(out: duckdb.DuckDBPyConnection, frames: dict[str, pl.DataFrame], schemas: dict[str, list[str]],
                 constants: dict[str, dict]) -> dict[str, int]:
    written = {}
    for table, cols in schemas.items():
        f = frames.get(table)
        if f is None or f.height == 0:
            continue
        f = f.with_columns([pl.lit(v).alias(c) for c, v in constants.get(table, {}).items() if c not in f.columns])
        keep = [c for c in cols if c in f.columns]
        db.insert_frame(out, table, f.select(keep))
        written[table] = f.height
    return written


def build_twin(settings: Settings, release: str, synth: SynthSettings | None = None) -> dict:
    """Fit, sample, evaluate and (when the privacy bar is met) publish the next twin of ``release``."""
    synth = synth or settings.synthetic
    started = time.perf_counter()
    src = resolve_release(settings, release)
    source = load_manifest(src)
    if source.get("tier") != "desensitized":
        raise BadInputError(f"release {release} is in the {source.get('tier')} tier: twins are fitted on "
                            "desensitized releases only")
    problems = verify_release(src)
    if problems:
        raise BadInputError(f"release {release} fails verification ({'; '.join(problems)}): rebuild it first")
    project = source["project"]
    con = duckdb.connect(":memory:")
    db.run(con, f"ATTACH '{src / RELEASE_DB}' AS rel (READ_ONLY)")
    tables = [r[0] for r in db.rows(con, "SELECT table_name FROM information_schema.tables "
                                         "WHERE table_catalog = 'rel' ORDER BY table_name")]
    links = chain_tables(set(tables))
    if not links:
        raise BadInputError(f"release {release} has no person table: nothing to synthesize")
    _read_split(con, links, tables, synth)
    frames = _fit_frames(con, links, tables, synth)
    np.random.seed(synth.seed)
    t0 = time.perf_counter()
    chain = ChainModel.fit(frames, synth)
    fit_s = time.perf_counter() - t0
    del frames

    project_dir = settings.releases_dir / TIER / project
    with staged_version(project_dir, "twin build") as stage:
        try:
            manifest = _sample(con, chain, links, tables, synth, source, src, stage, project, fit_s, started)
        finally:
            con.close()
        chain.save(settings.restricted_dir / MODELS_DIR / project / f"v{stage.version}.pkl")
        stage.publish(manifest)
    audit.record_event(settings, actor=getpass.getuser(), action="twin.build",
                       subject=f"release:{manifest['release']}",
                       detail={"source_release": manifest["source_release"], "files": manifest["files"]})
    return manifest


def _sample(con, chain: ChainModel, links, tables, synth: SynthSettings, source: dict, src: Path,
            stage: Staging, project: str, fit_s: float, started: float) -> dict:
    """Sample the twin into the build folder, evaluate it, and return its manifest (refused with a
    :class:`DisclosureRiskError` when it misses the privacy bar)."""
    version = stage.version
    chain_names = {x.table for x in links}
    patient_tables = chain_names | ({"observation_period"} & set(tables)) | ({"cost"} & set(tables))
    reference = [t for t in tables if t in REFERENCE_TABLES]
    skipped = sorted(set(tables) - patient_tables - set(reference))
    schemas = {t: _columns(con, "rel", t) for t in sorted(patient_tables)}
    constants = {}
    if "observation_period" in tables:
        constants["observation_period"] = {"period_type_concept_id": db.scalar(
            con, "SELECT mode(period_type_concept_id) FROM rel.observation_period")}
    out_path = stage.dir / RELEASE_DB
    out = duckdb.connect(str(out_path))
    t0 = time.perf_counter()
    try:
        db.run(out, f"ATTACH '{src / RELEASE_DB}' AS rel (READ_ONLY)")
        for t in sorted(patient_tables) + reference:
            db.run(out, f"CREATE TABLE {t} AS SELECT * FROM rel.{t} LIMIT 0")
        for t in reference:
            db.run(out, f"INSERT INTO {t} SELECT * FROM rel.{t}")
        total = round(db.scalar(con, "SELECT count(*) FROM rel.person") * synth.size_ratio)
        rng = np.random.default_rng(synth.seed)
        counts: dict[str, int] = {}
        done = 0
        bars = _progress_bars(con, schemas, synth.size_ratio)
        try:
            while done < total:
                n = min(synth.sample_chunk_patients, total - done)
                first = {t: counts.get(t, 0) + 1 for t in schemas}
                part = chain.sample(n, first, rng)
                for t, k in _write_chunk(out, part, schemas, constants).items():
                    counts[t] = counts.get(t, 0) + k
                    if t in bars:
                        bars[t].update(k)
                done += n
        finally:
            for bar in bars.values():
                bar.close()
        db.run(out, "DETACH rel")
        db.run(out, "CHECKPOINT")
    finally:
        out.close()
    sample_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    quality, diagnostic, privacy_report, integrity, eval_t = _evaluate(con, out_path, chain, links, synth)
    eval_s = time.perf_counter() - t1
    for r in privacy_report.values():
        r["small_record_domain"] = small_domain(r, synth)
    failures = privacy_failures(privacy_report, synth)
    if failures:
        raise DisclosureRiskError(
            f"synthetic twin of {source['release']} refused: it misses the privacy bar ({'; '.join(failures)}); "
            "fit on more patients, or raise the [synthetic] bar in settings.toml only with the steward's approval")
    files = stage.seal(RELEASE_DB)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    manifest = {
        "release": f"synthetic/{project}/v{version}",
        "project": project,
        "tier": TIER,
        "sharing_form": source.get("sharing_form"),
        "version": version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source_release": source["release"],
        "source_release_sha256": source["files"][RELEASE_DB]["sha256"],
        "tables": {t: counts.get(t, 0) for t in schemas} | {
            t: db.scalar(con, f"SELECT count(*) FROM rel.{t}") for t in reference},
        "columns": {t: _columns(con, "rel", t) for t in sorted(schemas) + reference},
        "not_synthesized": skipped,
        "derived_tables": [t for t in ("observation_period", "cost") if t in schemas],
        "synthesizer": {
            "kind": ("Gaussian copula chain along foreign keys (synthetic.copula)" if synth.copula_engine == "numpy"
                     else "sdv.GaussianCopulaSynthesizer chain along foreign keys"),
            "settings": {k: getattr(synth, k) for k in synth.__dataclass_fields__},
            "fitted_rows": {t: m.fitted_rows for t, m in chain.models.items()},
            "rows_without_parent_ignored": chain.dropped_rows,
            "context_mismatch": chain.context_mismatch,
            "events_outside_source_date_range_dropped": chain.out_of_range_dropped,
            "not_synthesized_columns": {t: sorted(set(m.dropped_text) | (_never_modelled(t) & set(schemas.get(t, ()))))
                                        for t, m in chain.models.items()},
            "empty_in_source_columns": {t: m.nulls for t, m in chain.models.items()},
        },
        "quality": quality,
        "diagnostic": diagnostic,
        "privacy": privacy_report,
        "integrity": integrity,
        "timing_s": {"fit": round(fit_s, 2), "sample": round(sample_s, 2), "evaluate": round(eval_s, 2), **eval_t,
                     "total": round(time.perf_counter() - started, 2)},
        "peak_rss_mb": round(peak_mb, 1),
        "files": files,
    }
    return manifest


def _progress_bars(con, schemas: dict[str, list[str]], ratio: float) -> dict:
    """One progress bar per synthesized table (rows written of about as many as the release has
    × ``size_ratio``), on standard error when it is a terminal; counts only, never a value."""
    import sys

    from tqdm.auto import tqdm

    quiet = not sys.stderr.isatty()
    return {t: tqdm(total=round(db.scalar(con, f"SELECT count(*) FROM rel.{t}") * ratio), desc=f"twin {t}",
                    unit=" rows", unit_scale=True, position=i, leave=True, disable=quiet, file=sys.stderr)
            for i, t in enumerate(sorted(schemas))}


def integrity_checks(con: duckdb.DuckDBPyConnection, schema: str, links) -> dict[str, int]:
    """Orphan rows (a key with no parent) and date-order violations, counted in SQL."""
    tables = {x.table for x in links}
    checks = {}
    for link in links:
        if link.parent:
            checks[f"orphans.{link.table}"] = db.scalar(
                con, f"SELECT count(*) FROM {schema}.{link.table} c ANTI JOIN {schema}.{link.parent} p "
                     f"ON c.{link.parent_key} = p.{link.parent_key}")
        if link.parent == "visit_occurrence":
            checks[f"orphans.{link.table}.person"] = db.scalar(
                con, f"SELECT count(*) FROM {schema}.{link.table} c JOIN {schema}.visit_occurrence v "
                     "USING (visit_occurrence_id) WHERE c.person_id IS DISTINCT FROM v.person_id")
            checks[f"date_order.{link.table}.outside_visit"] = db.scalar(
                con, f"SELECT count(*) FROM {schema}.{link.table} c JOIN {schema}.visit_occurrence v "
                     f"USING (visit_occurrence_id) WHERE c.{link.main_date} < v.visit_start_date "
                     f"OR c.{link.main_date} > v.visit_end_date")
    if "visit_occurrence" in tables:
        checks["date_order.visit_occurrence"] = db.scalar(
            con, f"SELECT count(*) FROM {schema}.visit_occurrence WHERE visit_end_date < visit_start_date")
    if "drug_exposure" in tables:
        checks["date_order.drug_exposure"] = db.scalar(
            con, f"SELECT count(*) FROM {schema}.drug_exposure WHERE drug_exposure_end_date < drug_exposure_start_date")
    return checks


def _evaluate(con, out_path: Path, chain: ChainModel, links, synth: SynthSettings):
    db.run(con, f"ATTACH '{out_path}' AS syn_db (READ_ONLY)")
    db.run(con, "CREATE SCHEMA syn")
    for link in links:
        db.run(con, f"CREATE VIEW syn.{link.table} AS SELECT * FROM syn_db.{link.table}")
    integrity = integrity_checks(con, "syn", links)
    n = synth.eval_patients
    real, fake, fitted = {}, {}, {}
    db.run(con, f"CREATE TEMP TABLE _eval_r AS SELECT person_id FROM train.person "
                f"ORDER BY hash(person_id, {synth.seed} + 2) LIMIT {n}")
    db.run(con, f"CREATE TEMP TABLE _eval_s AS SELECT person_id FROM syn.person "
                f"ORDER BY hash(person_id, {synth.seed} + 3) LIMIT {n}")
    for link in links:
        order = f"ORDER BY {link.key}"
        real[link.table] = db.frame(con, f"SELECT * FROM train.{link.table} SEMI JOIN _eval_r USING (person_id) {order}")
        fake[link.table] = db.frame(con, f"SELECT * FROM syn.{link.table} SEMI JOIN _eval_s USING (person_id) {order}")
        fitted[link.table] = db.frame(con, f"SELECT * FROM train.{link.table} SEMI JOIN _fit USING (person_id) {order}")
    t0 = time.perf_counter()
    quality, diagnostic = fidelity(real, fake, fitted, links, synth)
    t1 = time.perf_counter()
    modelled = {t: set(m.modelled_columns()) - set(m.nulls) - set(m.dropped_text) | _date_columns(con, t)
                for t, m in chain.models.items()}
    report = privacy(con, links, modelled, synth)
    db.run(con, "DETACH syn_db")
    timings = {"fidelity": round(t1 - t0, 2), "privacy": round(time.perf_counter() - t1, 2)}
    return quality, diagnostic, report, integrity, timings


def _date_columns(con, table: str) -> set[str]:
    return {r[0] for r in db.rows(con, "SELECT column_name FROM information_schema.columns WHERE table_catalog = 'rel' "
                                       "AND table_name = ? AND data_type IN ('DATE', 'TIMESTAMP')", [table])}
