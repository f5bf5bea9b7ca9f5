"""Building and publishing the indicator table from one release.

``build_indicators`` reads a (verified) release read-only, computes every indicator whose tables
the release holds (:mod:`.definitions`), checks each one as a cube (:mod:`.cube`), derives the
rates from the already-checked numbers only, and publishes
``<home>/releases/indicators/v<N>/{indicators.duckdb, manifest.json}`` atomically (hidden build
folder, fsync, rename), like releases. The dashboards read nothing else.

The cells are computed on the configured engine (``[engine] backend``): DuckDB reads the release in
place through the hand-written fast path of :mod:`.cube`; Spark reads a Parquet copy and computes
the same cells through the ibis expressions of :mod:`.cells` (the published table is the same).

Published tables:

``indicators``  one row per cell: ``indicator``, the dimension columns (:data:`DIMENSIONS`, ``All``
                for a total, null where the indicator has no such axis), ``value`` (null when
                suppressed), ``suppressed``, ``reason``
``tiles``       one row per indicator: title, page, unit, statistic, axes, the SQL compiled by ibis
                for its relation, the policy name and hash, the source release and its hash, the
                build date
``labels``      dimension code → label (provinces, hospitals, hospital pairs) and hospital → level
``periods``     per year of visit: months covered and whether the year is partial
``build``       one row: the source release, hashes, policy, rounding, date
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from pathlib import Path

import duckdb
import ibis
import polars as pl

from enclave.core.crypto import file_sha256
from enclave.core.errors import BadInputError
from enclave.core.keystore import load_or_create_key
from enclave.core.manifest import RELEASE_DB, load_manifest, resolve_release, verify_release
from enclave.core.publish import MANIFEST, staged_version, versions
from enclave.core.settings import Settings
from enclave.io import db
from enclave.io.engine import Engine, open_release
from enclave.io.indicators.cube import ALL, WITHHELD_REASON, check_cube, check_cube_on
from enclave.io.indicators.definitions import (
    INDICATOR_TABLES,
    INDICATORS,
    PAIR_SEPARATOR,
    Indicator,
    Sources,
)
from enclave.io.indicators.regions import province_label
from enclave.logic.disclosure import DisclosurePolicy, policy_from_settings, policy_hash

INDICATORS_DB = "indicators.duckdb"
KIND = "indicators"
DIMENSIONS = ("year", "region", "level", "hospital", "age_band", "sex", "visit_type", "condition",
              "test", "medicine", "pair")
#: rates derived from published cells: id → (title, page, unit, numerator, denominator, scale, join)
DERIVED = {
    "prevalence_per_1000": ("Prevalence per 1,000 people", "prevalence", "per 1,000",
                            "condition_patients", "people_seen|people", 1000.0),
    "visits_per_1000": ("Visits per 1,000 people", "visits", "per 1,000", "visits", "people",
                        1000.0),
    "readmission_rate": ("30-day readmission rate", "readmission", "%", "readmissions_30d",
                         "inpatient_stays", 100.0),
    "repeat_test_share": ("Share of lab results that repeat one at another hospital",
                          "repeat_tests", "%", "repeat_tests", "lab_tests", 100.0),
}
#: a rate whose numerator or denominator is withheld reads like every other withheld cell
DERIVED_REASON = WITHHELD_REASON
#: a month counts as covered when it holds at least this share of the median month's visits
COVERED_MONTH_SHARE = 0.5  # a property of the published flag, not a tunable limit


def indicators_root(settings: Settings) -> Path:
    return settings.releases_dir / KIND


def latest_indicators(settings: Settings) -> Path:
    root = indicators_root(settings)
    vs = versions(root) if root.exists() else []
    if not vs:
        raise BadInputError("no indicator table has been published yet: run "
                            "'enclave indicators build --release P/vN'")
    return root / f"v{vs[-1]}"


def _long(ind_id: str, cells: pl.DataFrame) -> pl.DataFrame:
    return cells.select(
        pl.lit(ind_id).alias("indicator"),
        *[(pl.col(d) if d in cells.columns else pl.lit(None, pl.String)).cast(pl.String).alias(d)
          for d in DIMENSIONS],
        pl.col("value").cast(pl.Float64), pl.col("suppressed"), pl.col("reason").cast(pl.String),
    )


def _rate(cells: pl.DataFrame, rid: str, num: str, den: str, scale: float) -> pl.DataFrame:
    """A rate from two published indicators, never from unpublished numbers.

    ``den`` is one indicator, or ``by_year|all_years``: the first for single years, the second for
    the ``All`` year. Denominator axes the numerator lacks are taken at their ``All`` total.
    """
    n = cells.filter(pl.col("indicator") == num)
    dens = den.split("|")
    out = []
    for i, d in enumerate(dens):
        dcells = cells.filter(pl.col("indicator") == d)
        if n.height == 0 or dcells.height == 0:
            continue
        daxes = [c for c in DIMENSIONS if dcells[c].null_count() < dcells.height]
        naxes = [c for c in DIMENSIONS if n[c].null_count() < n.height]
        part = n
        if len(dens) == 2:
            part = n.filter((pl.col("year") != ALL) if i == 0 else (pl.col("year") == ALL))
        for extra in [a for a in daxes if a not in naxes]:
            dcells = dcells.filter(pl.col(extra) == ALL)
        on = [a for a in daxes if a in naxes]
        dsel = dcells.select(*on, pl.col("value").alias("_den"),
                             pl.col("suppressed").alias("_dsup"))
        j = part.join(dsel, on=on, how="left", nulls_equal=True) if on else \
            part.join(dsel, how="cross")
        out.append(j.with_columns(
            pl.lit(rid).alias("indicator"),
            (pl.col("suppressed") | pl.col("_dsup").fill_null(True)
             | (pl.col("_den").fill_null(0) == 0)).alias("_sup"),
        ).with_columns(
            pl.when(pl.col("_sup")).then(None)
            .otherwise((pl.col("value") / pl.col("_den") * scale).round(1)).alias("value"),
            pl.when(pl.col("_sup")).then(pl.lit(DERIVED_REASON)).otherwise(None).alias("reason"),
            pl.col("_sup").alias("suppressed"),
        ).select(cells.columns))
    return pl.concat(out) if out else cells.clear()


def _compute(con: duckdb.DuckDBPyConnection, src: Sources, ind: Indicator,
             policy: DisclosurePolicy, levels: dict[str, list[str]] | None = None,
             engine: Engine | None = None) -> tuple[pl.DataFrame, str, dict]:
    """One indicator's checked cells: on DuckDB through the fast path on ``con``; with a Spark
    ``engine`` (``[engine] backend = "pyspark"``), through ibis on the release's Parquet copy."""
    started = time.perf_counter()
    expr = ind.relation(src)
    sql = ibis.to_sql(expr, dialect="duckdb")
    name = f"_rel_{ind.id}"
    if engine is not None:
        try:
            table = engine.materialize(name, expr)
            cube = check_cube_on(engine, table, ind.axes, ind.margins, ind.statistic, policy,
                                 value=ind.value, record_keys=engine.table("_record_keys"),
                                 decimals=ind.decimals, levels=levels)
        finally:
            engine.drop(name)
    else:
        db.run(con, f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
        try:
            cube = check_cube(con, name, ind.axes, ind.margins, ind.statistic, policy,
                              value=ind.value, record_keys="_record_keys",
                              decimals=ind.decimals, levels=levels)
        finally:
            db.run(con, f"DROP TABLE IF EXISTS {name}")
    stats = {"cells": cube.cells.height, "suppressed": int(cube.cells["suppressed"].sum()),
             "primary": cube.primary, "secondary": cube.secondary,
             "seconds": round(time.perf_counter() - started, 2)}
    return _long(ind.id, cube.cells), str(sql), stats


def missing_tables(names: set[str]) -> dict[str, list[str]]:
    """Indicator → the tables it needs that ``names`` lacks (only indicators that lack some)."""
    out = {ind.id: [t for t in ind.needs if t not in names] for ind in INDICATORS}
    return {k: v for k, v in out.items() if v}


def year_coverage(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per year of visit: the months the records cover (a month is covered when it holds at
    least :data:`COVERED_MONTH_SHARE` of the median month's visits) and whether the year is
    partial (fewer than 12 covered months). Date shifting and the extract's start and end make
    the first and last years partial; the dashboards mark them so a dip is not read as a trend.
    Only this flag and the month count are published, never a month's count."""
    return db.frame(con, f"""
        WITH m AS (SELECT year(visit_start_date) AS y, month(visit_start_date) AS mo,
                          count(*) AS n
                   FROM visit_occurrence WHERE visit_start_date IS NOT NULL GROUP BY ALL),
             med AS (SELECT median(n) AS md FROM m)
        SELECT y::VARCHAR AS year,
               count(*) FILTER (WHERE n >= md * {COVERED_MONTH_SHARE})::INTEGER AS months,
               count(*) FILTER (WHERE n >= md * {COVERED_MONTH_SHARE}) < 12 AS partial
        FROM m, med GROUP BY y ORDER BY y""")


def build_indicators(settings: Settings, release: str, *, today: dt.date | None = None,
                     skip_missing: bool = False) -> dict:
    """Compute, check and publish the next indicator table from ``release``; returns its manifest.

    Every indicator of :data:`.definitions.INDICATORS` is built: a release that lacks a table
    one of them reads (:data:`.definitions.INDICATOR_TABLES`) is refused with a
    :class:`BadInputError` naming the tables, so no page is published half empty.
    ``skip_missing`` publishes the others instead and lists the skipped ones in the manifest."""
    src_path = resolve_release(settings, release)
    problems = verify_release(src_path)
    if problems:
        raise BadInputError(f"release {release} failed verification: {'; '.join(problems)}")
    src_manifest = load_manifest(src_path)
    policy = policy_from_settings(settings.disclosure)
    phash = policy_hash(policy)
    key = load_or_create_key(settings.keys_dir, "indicators.key")
    built_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if today is not None:
        built_at = dt.datetime.combine(today, dt.time(), dt.UTC).isoformat(timespec="seconds")
    root = indicators_root(settings)
    src_sha = src_manifest["files"][RELEASE_DB]["sha256"]
    src_name = src_manifest.get("release", release)
    with staged_version(root, "indicator build") as stage, contextlib.ExitStack() as stack:
        con = duckdb.connect(str(src_path / RELEASE_DB), read_only=True)
        engine = None
        if settings.engine.backend != "duckdb":
            engine = stack.enter_context(open_release(settings, src_path / RELEASE_DB))
        try:
            src = Sources.from_duckdb(con)
            if "person" not in src.names:
                raise BadInputError(f"release {release} has no person table: no indicator")
            lacking = missing_tables(src.names)
            if lacking and not skip_missing:
                tables = sorted({t for ts in lacking.values() for t in ts})
                raise BadInputError(
                    f"release {release} lacks table(s) {', '.join(tables)}, which indicator(s) "
                    f"{', '.join(lacking)} need: build the indicators from a release holding "
                    f"every table they read ({', '.join(INDICATOR_TABLES)}), or pass "
                    "--skip-missing to publish the others without them")
            # secret record keys of the cell-key method (never published)
            db.run(con, "CREATE TEMP TABLE _record_keys AS SELECT DISTINCT person_id, "
                        "(md5_number_lower(? || person_id::VARCHAR) % 4294967296)::UBIGINT AS rkey "
                        "FROM person", [key.hex()])
            if engine is not None:
                engine.put("_record_keys", db.frame(con, "SELECT * FROM _record_keys"))
            parts, tiles, skipped, stats = [], [], {}, {}
            done: dict[str, pl.DataFrame] = {}
            for ind in INDICATORS:
                if ind.id in lacking:
                    skipped[ind.id] = f"the release lacks table(s) {', '.join(lacking[ind.id])}"
                    continue
                levels = None
                if ind.levels_from and ind.levels_from in done:
                    ref = done[ind.levels_from]
                    levels = {a: ref[a].drop_nulls().unique().to_list() for a in ind.axes}
                cells, sql, st = _compute(con, src, ind, policy, levels, engine)
                done[ind.id] = cells
                parts.append(cells)
                stats[ind.id] = st
                tiles.append({"indicator": ind.id, "title": ind.title, "page": ind.page,
                              "unit": ind.unit, "statistic": ind.statistic.value,
                              "axes": json.dumps(list(ind.axes)), "description": ind.description,
                              "query_sql": sql})
            hospitals = (db.frame(con, str(ibis.to_sql(src.hospitals(), dialect="duckdb")))
                         if "care_site" in src.names
                         else pl.DataFrame(schema={"hospital": pl.String, "name": pl.String,
                                                   "level": pl.String}))
            periods = (year_coverage(con) if "visit_occurrence" in src.names else
                       pl.DataFrame(schema={"year": pl.String, "months": pl.Int32,
                                            "partial": pl.Boolean}))
        finally:
            con.close()
        cells = pl.concat(parts)
        for rid, (title, page, unit, num, den, scale) in DERIVED.items():
            rate = _rate(cells, rid, num, den, scale)
            if rate.height:
                cells = pl.concat([cells, rate])
                stats[rid] = {"cells": rate.height, "suppressed": int(rate["suppressed"].sum()),
                              "derived_from": [num, *den.split("|")]}
                tiles.append({"indicator": rid, "title": title, "page": page, "unit": unit,
                              "statistic": "rate", "axes": json.dumps(
                                  [d for d in DIMENSIONS if rate[d].null_count() < rate.height]),
                              "description": f"{num} / {den.replace('|', ' (a year) or ')} × "
                              f"{scale:g}, from the published (checked, rounded) values",
                              "query_sql": ""})
        tiles_df = pl.DataFrame(tiles).with_columns(
            pl.lit(policy.name).alias("policy"), pl.lit(phash).alias("policy_sha256"),
            pl.lit(src_name).alias("source_release"), pl.lit(src_sha).alias("source_sha256"),
            pl.lit(built_at).alias("built_at"))
        regions = cells.select(pl.col("region").drop_nulls().unique()).filter(
            pl.col("region") != ALL)["region"].to_list()
        names = {h: n or h for h, n in hospitals.select("hospital", "name").rows()}
        pairs = cells.select(pl.col("pair").drop_nulls().unique()).filter(
            pl.col("pair") != ALL)["pair"].to_list()
        labels = pl.DataFrame(
            [{"dimension": "region", "code": r, "label": province_label(r), "level": None}
             for r in sorted(regions)]
            + [{"dimension": "hospital", "code": h, "label": n or h, "level": lv}
               for h, n, lv in hospitals.select("hospital", "name", "level").rows()]
            + [{"dimension": "pair", "code": p, "level": None, "label": " → ".join(
                names.get(h, h) for h in p.split(PAIR_SEPARATOR, 1))} for p in sorted(pairs)],
            schema={"dimension": pl.String, "code": pl.String, "label": pl.String,
                    "level": pl.String})
        rounding = {"method": "cell-key random rounding (ABS cell-key method)",
                    "base": policy.round_base, "floor": -(-policy.min_patients // policy.round_base)
                    * policy.round_base}
        build_row = pl.DataFrame([{
            "source_release": src_name, "source_sha256": src_sha,
            "source_manifest_sha256": file_sha256(src_path / MANIFEST),
            "source_created_at": src_manifest.get("created_at"), "policy": policy.name,
            "policy_sha256": phash, "min_patients": policy.min_patients,
            "rounding": json.dumps(rounding), "built_at": built_at}])
        with db.new_database(stage.dir / INDICATORS_DB) as out:
            db.create_table_as(out, "indicators", cells)
            db.create_table_as(out, "tiles", tiles_df)
            db.create_table_as(out, "labels", labels)
            db.create_table_as(out, "build", build_row)
            db.create_table_as(out, "periods", periods)
        files = stage.seal(INDICATORS_DB)
        version = stage.version
        manifest = {
            "kind": KIND, "release": f"{KIND}/v{version}", "version": version,
            "created_at": built_at, "source_release": src_name,
            "source_release_sha256": src_sha, "source_tier": src_manifest.get("tier"),
            "policy": policy.name, "policy_sha256": phash, "rounding": rounding,
            "indicators": stats, "skipped": skipped,
            "files": files,
        }
        stage.publish(manifest)
    return manifest
