"""Building a desensitized release for one project (security-critical).

``build_release`` reads the restricted store, and writes an immutable, versioned release under
``<home>/releases/desensitized/<project>/v<N>/`` (``release.duckdb`` + ``manifest.json``):

1. only the tables and columns the project may use, each classified in the catalog (an unclassified
   column stops the build);
2. patients: age / sex / region generalized by the optimal lattice search (``enclave.logic.deid``) until
   the policy's k (and optional ℓ-diversity, t-closeness) hold at the patient level, with at most
   ``max_suppression`` of patients suppressed (removed from every table);
3. direct identifiers dropped, except row keys, which become keyed pseudonyms per project;
4. every date of a patient shifted by the same per-patient offset (intervals preserved);
5. free text scrubbed of identifiers (patterns + the patients' own names, numbers, addresses);
6. refused when the measured prosecutor risk exceeds the threshold of the project's sharing form.

Publication is atomic (:mod:`enclave.core.publish`): everything is written into a hidden build folder and
renamed into place only when complete, so a refused or killed build leaves the previous releases
untouched and no new version (a killed build's folder is removed by the next build).
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from enclave.core import audit
from enclave.core.errors import BadInputError, DisclosureRiskError, PermissionDeniedError
from enclave.core.manifest import RELEASE_DB
from enclave.core.model.catalog import IdentifierRole, ValueKind, catalog, check_classified
from enclave.core.model.omop import cdm_columns
from enclave.core.model.project import Project, Tier
from enclave.core.publish import staged_version
from enclave.core.settings import Settings
from enclave.io import db
from enclave.io.engine import duckdb_engine
from enclave.io.projects import SqlProjectStore
from enclave.io.release.identity import write_identity_map
from enclave.io.release.keys import date_shifts, project_key, pseudonyms
from enclave.io.release.policy import (
    SENSITIVE_ATTRIBUTE,
    ReleasePolicy,
    default_policy,
    load_policy,
)
from enclave.io.release.scrub import KnownIdentifiers, scrub
from enclave.io.store import open_store
from enclave.logic.deid import AnonymizationPolicy, LDiversity, TCloseness, anonymize
from enclave.logic.deid.hierarchy import Hierarchy, age_bands, region_codes
from enclave.logic.deid.metrics import RiskReport
from enclave.logic.deid.sets import measure_risk, patient_expr

#: id columns that are rewritten to per-project pseudonyms, and the entity whose ids they hold
ID_NAMESPACES = {
    "person_id": "person",
    "visit_occurrence_id": "visit_occurrence",
    "preceding_visit_occurrence_id": "visit_occurrence",
    "visit_detail_id": "visit_detail",
    "observation_period_id": "observation_period",
    "condition_occurrence_id": "condition_occurrence",
    "drug_exposure_id": "drug_exposure",
    "procedure_occurrence_id": "procedure_occurrence",
    "measurement_id": "measurement",
    "observation_id": "observation",
    "note_id": "note",
    "cost_id": "cost",
    "provider_id": "provider",
}
COST_DOMAINS = {"Visit": "visit_occurrence", "Drug": "drug_exposure", "Measurement": "measurement",
                "Procedure": "procedure_occurrence", "Condition": "condition_occurrence",
                "Observation": "observation"}
#: reference tables released whole (no patient rows)
REFERENCE_TABLES = ("concept", "source_to_concept_map", "cdm_source", "care_site", "provider")
PERSON_QI_COLUMNS = ("year_of_birth", "month_of_birth", "day_of_birth", "birth_datetime",
                     "location_id", "gender_source_value", "gender_source_concept_id")
RELEASES = "desensitized"


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    column: str
    action: str  # keep | pseudonym | shift | scrub | drop


def plan_table(table: str, columns: tuple[str, ...]) -> list[ColumnPlan]:
    """What happens to each requested column, decided by its classification."""
    check_classified(table, columns)
    classes = {c.column: c for c in catalog().get(table, ())}
    plan = []
    for col in columns:
        c = classes[col]
        if col in ID_NAMESPACES or col == "cost_event_id":
            plan.append(ColumnPlan(col, "pseudonym"))
        elif c.role == IdentifierRole.DIRECT:
            plan.append(ColumnPlan(col, "drop"))
        elif table == "person" and col in PERSON_QI_COLUMNS:
            plan.append(ColumnPlan(col, "drop"))  # replaced by the generalized age/sex/region
        elif c.free_text:
            plan.append(ColumnPlan(col, "scrub"))
        elif c.kind == ValueKind.DATE and "person_id" in {x.name for x in cdm_columns()[table]}:
            plan.append(ColumnPlan(col, "shift"))
        else:
            plan.append(ColumnPlan(col, "keep"))
    return plan


def _allowed_columns(project: Project, table: str) -> tuple[str, ...]:
    all_cols = tuple(c.name for c in cdm_columns()[table])
    cols = project.allowed.get(table)
    if cols is None:
        return ()
    return all_cols if (not cols or "*" in cols) else tuple(c for c in all_cols if c in cols)


# --- patients ---------------------------------------------------------------------------------
def patient_frame(con: duckdb.DuckDBPyConnection, reference_year: int) -> pl.DataFrame:
    """One row per patient: age at the reference year, sex, county of residence, main condition
    (the ibis expression :func:`enclave.logic.deid.sets.patient_expr`, run on the store's connection;
    the same expression runs on Spark)."""
    engine = duckdb_engine(con)
    return engine.to_polars(patient_expr(engine.table("person"), engine.table("location"),
                                         engine.table("condition_occurrence"), reference_year))


def released_risk(kept: pl.DataFrame, searched: RiskReport) -> RiskReport:
    """The risk of the patients as released, measured again by the engine's set-based expression
    (:func:`enclave.logic.deid.sets.measure_risk`) on the generalized table itself, not on the search's
    encoded arrays; a disagreement stops the build (what the manifest reports is what was
    released)."""
    engine = duckdb_engine()
    try:
        table = engine.put("_released_patients", kept)
        measured = measure_risk(engine, table, ["age", "sex", "region"], "person_id",
                                suppressed=searched.suppressed)
    finally:
        engine.close()
    floats = ("prosecutor_max", "prosecutor_avg", "journalist_max", "marketer")
    same = (measured.class_size_counts == searched.class_size_counts
            and measured.records == searched.records
            and all(math.isclose(getattr(measured, f), getattr(searched, f), rel_tol=1e-9)
                    for f in floats))
    if not same:
        raise DisclosureRiskError(
            "the released patient table's equivalence classes differ from the anonymization's "
            f"({measured.classes} classes, smallest {measured.smallest_class}, against "
            f"{searched.classes}, smallest {searched.smallest_class}); the release is not built")
    return measured


def hierarchies(patients: pl.DataFrame, policy: ReleasePolicy) -> dict[str, Hierarchy]:
    out: dict[str, Hierarchy] = {}
    for qi in policy.quasi_identifiers:
        if qi == "age":
            out["age"] = age_bands("age", max_age=120)
        elif qi == "sex":
            out["sex"] = Hierarchy("sex", (("F", "M", "U"), ("*", "*", "*")))
        elif qi == "region":
            out["region"] = region_codes("region", patients["region"].unique().to_list())
    return out


def anonymization_policy(patients: pl.DataFrame, policy: ReleasePolicy,
                         max_lattice_nodes: int) -> AnonymizationPolicy:
    """The engine's policy for ``policy``; ``max_lattice_nodes`` is the setting
    ``release.max_lattice_nodes``."""
    ld = policy.l_diversity
    return AnonymizationPolicy(
        qis=hierarchies(patients, policy),
        k=policy.k,
        l_diversity=LDiversity(SENSITIVE_ATTRIBUTE, ld.l, ld.variant, ld.c) if ld else None,
        t_closeness=TCloseness(SENSITIVE_ATTRIBUTE, policy.t_closeness.t) if policy.t_closeness else None,
        max_suppression=policy.max_suppression,
        max_lattice_nodes=max_lattice_nodes,
    )


# --- build ------------------------------------------------------------------------------------
def store_version(con: duckdb.DuckDBPyConnection) -> str:
    """A hash of every ingested file: changes whenever the store's content can have changed."""
    rows = db.rows(con, "SELECT file_id, site_id, sha256, loaded FROM etl_file ORDER BY file_id")
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()


def _known_identifiers(con: duckdb.DuckDBPyConnection, persons: pl.Series) -> KnownIdentifiers:
    con.register("_kept", persons.to_frame("person_id").to_arrow())
    try:
        idx = db.frame(con, "SELECT name, phone, address, resident_id, insurance_no FROM identity.person_index "
                            "SEMI JOIN _kept USING (person_id)")
        mrns = db.frame(con, "SELECT site_patient_id FROM identity.site_patient SEMI JOIN _kept USING (person_id)")
    finally:
        con.unregister("_kept")
    return KnownIdentifiers(
        names=tuple(idx["name"].drop_nulls()), phones=tuple(idx["phone"].drop_nulls()),
        addresses=tuple(idx["address"].drop_nulls()), resident_ids=tuple(idx["resident_id"].drop_nulls()),
        record_numbers=tuple(mrns["site_patient_id"].drop_nulls()),
        insurance_numbers=tuple(idx["insurance_no"].drop_nulls()),
    )


class _Builder:
    def __init__(self, con, key: bytes, policy: ReleasePolicy, kept: pl.DataFrame, known: KnownIdentifiers):
        self.con = con
        self.key = key
        self.policy = policy
        self.kept = kept  # person_id + generalized age/sex/region
        self.known = known
        self.maps: dict[str, pl.DataFrame] = {}
        self.shifts = date_shifts(key, kept["person_id"], policy.date_shift_days).rename({"id": "person_id"})
        self.scrub_counts: dict[str, int] = {}

    def pseudo_map(self, namespace: str, ids: pl.Series) -> pl.DataFrame:
        have = self.maps.get(namespace)
        new_ids = ids.drop_nulls().unique()
        if have is not None:
            new_ids = new_ids.filter(~new_ids.is_in(have["id"].implode()))
        if new_ids.len():
            fresh = pseudonyms(self.key, namespace, new_ids)
            have = fresh if have is None else pl.concat([have, fresh])
            self.maps[namespace] = have
        return self.maps.get(namespace, pl.DataFrame(schema={"id": pl.Int64, "pseudo": pl.Int64}))

    def table(self, table: str, plan: list[ColumnPlan]) -> pl.DataFrame:
        cols = [p.column for p in plan]
        has_person = "person_id" in {c.name for c in cdm_columns()[table]}
        read = list(dict.fromkeys(cols + (["person_id"] if has_person else [])
                                  + (["cost_domain_id"] if table == "cost" else [])
                                  + (["location_id"] if table == "location" else [])))
        frame = db.frame(self.con, f"SELECT {', '.join(read)} FROM {table}")
        if has_person:
            frame = frame.with_columns(pl.col("person_id").cast(pl.Int64)).join(
                self.shifts, on="person_id", how="inner")  # suppressed patients drop out here
        elif table == "cost":
            frame = self._kept_costs(frame)
        for p in plan:
            if p.action == "shift":
                dtype = frame.schema[p.column]
                if dtype not in (pl.Date,) and not isinstance(dtype, pl.Datetime):
                    continue  # e.g. measurement_time ("HH:MM"): no calendar date to shift
                shifted = (pl.col(p.column) + pl.duration(days=pl.col("shift_days"))).cast(dtype)
                if self.policy.date_granularity != "day":
                    every = "1mo" if self.policy.date_granularity == "month" else "1y"
                    shifted = shifted.dt.truncate(every)
                frame = frame.with_columns(shifted.alias(p.column))
            elif p.action == "scrub":
                result = scrub(frame[p.column].cast(pl.String), self.known)
                frame = frame.with_columns(result.texts.alias(p.column))
                for k, v in result.counts.items():
                    self.scrub_counts[k] = self.scrub_counts.get(k, 0) + v
        if table == "person":  # generalized QIs join on the store's ids, before pseudonyms
            frame = frame.join(self.kept.with_columns(pl.col("person_id").cast(pl.Int64)), on="person_id")
        elif table == "location":  # only the hospitals' locations, never patients' residences
            sites = db.frame(self.con, "SELECT DISTINCT location_id FROM care_site WHERE location_id IS NOT NULL")
            frame = frame.filter(pl.col("location_id").is_in(sites["location_id"].implode()))
        for p in plan:
            if p.action == "pseudonym":
                frame = self._pseudonymize(frame, table, p.column)
        keep = [p.column for p in plan if p.action != "drop"]
        if table == "person":
            keep = keep + ["age_band", "sex", "region"]
            frame = frame.with_columns(
                pl.col("age").alias("age_band"),
                *([pl.when(pl.col("sex") == "*").then(0).otherwise(pl.col("gender_concept_id"))
                   .alias("gender_concept_id")] if "gender_concept_id" in keep else []),
            )
        return frame.select(keep)

    def _kept_costs(self, frame: pl.DataFrame) -> pl.DataFrame:
        parts = []
        for domain, table in COST_DOMAINS.items():
            part = frame.filter(pl.col("cost_domain_id") == domain)
            if part.height == 0:
                continue
            id_col = f"{table}_id"
            owners = db.frame(self.con, f"SELECT {id_col}::BIGINT AS cost_event_id, person_id::BIGINT AS person_id FROM {table}")
            parts.append(part.with_columns(pl.col("cost_event_id").cast(pl.Int64))
                         .join(owners, on="cost_event_id").join(self.shifts, on="person_id"))
        return pl.concat(parts, how="vertical_relaxed") if parts else frame.clear()

    def _pseudonymize(self, frame: pl.DataFrame, table: str, col: str) -> pl.DataFrame:
        if col == "cost_event_id":
            out = []
            for domain, ns in COST_DOMAINS.items():
                part = frame.filter(pl.col("cost_domain_id") == domain)
                if part.height:
                    out.append(self._apply_map(part, col, ns))
            return pl.concat(out, how="vertical_relaxed") if out else frame
        return self._apply_map(frame, col, ID_NAMESPACES[col])

    def _apply_map(self, frame: pl.DataFrame, col: str, ns: str) -> pl.DataFrame:
        frame = frame.with_columns(pl.col(col).cast(pl.Int64))
        m = self.pseudo_map(ns, frame[col]).rename({"id": col, "pseudo": "__pseudo"})
        return frame.join(m, on=col, how="left").with_columns(pl.col("__pseudo").alias(col)).drop("__pseudo")


def build_release(settings: Settings, project_id: str, *, policy_file: Path | None = None,
                  today: dt.date | None = None) -> dict:
    """Build and publish the next release of a desensitized-tier project; returns its manifest."""
    today = today or dt.date.today()
    project = SqlProjectStore(settings).get(project_id)
    if project.tier != Tier.DESENSITIZED:
        raise BadInputError(
            f"project {project_id} is in the {project.tier} tier: its members use the synthetic twin, "
            "not a desensitized release")
    if project.is_expired(today):
        raise PermissionDeniedError(f"project {project_id} expired on {project.expires}: no new releases")
    form = project.sharing_form
    policy = load_policy(policy_file, form, settings) if policy_file else default_policy(form, settings)
    tables = [t for t in cdm_columns() if _allowed_columns(project, t)]
    if not tables:
        raise BadInputError(f"project {project_id} may use no table")
    plans = {t: plan_table(t, _allowed_columns(project, t)) for t in tables}
    project_dir = settings.releases_dir / RELEASES / project_id
    with (staged_version(project_dir, "release build") as stage,
          open_store(settings, read_only=True) as con):
        reference_year = policy.reference_year or today.year
        patients = patient_frame(con, reference_year)
        if patients.height == 0:
            raise BadInputError("the store holds no patients: ingest first")
        result = anonymize(
            patients,
            anonymization_policy(patients, policy, settings.release.max_lattice_nodes),
            patient_id="person_id",
        )
        if result.risk.prosecutor_max > policy.risk_threshold + 1e-12:
            qi = max(result.utility.height_per_qi, key=lambda x: 1 - x[1])[0]
            raise DisclosureRiskError(
                f"release for {project_id} refused: prosecutor risk {result.risk.prosecutor_max:.3f} "
                f"is above the {form} threshold {policy.risk_threshold:.3f} (smallest class "
                f"{result.risk.smallest_class} patients); quasi-identifier {qi!r} is the least "
                f"generalized: raise k to at least {int(1 / policy.risk_threshold + 0.999)} or "
                f"generalize {qi!r} further")
        # a quasi-identifier left out of the policy is not released at all ("*"), never raw
        kept = result.frame.select(
            "person_id",
            *[pl.col(q) if q in policy.quasi_identifiers else pl.lit("*").alias(q)
              for q in ("age", "sex", "region")],
        ).with_columns(pl.col("age", "sex", "region").cast(pl.Utf8))
        risk = released_risk(kept, result.risk)
        key = project_key(settings.keys_dir, project_id)
        known = _known_identifiers(con, kept["person_id"])
        builder = _Builder(con, key, policy, kept, known)
        counts = {}
        with db.new_database(stage.dir / RELEASE_DB) as out:
            for table in tables:
                frame = builder.table(table, plans[table])
                db.create_table_as(out, table, frame)
                counts[table] = frame.height
        files = stage.seal(RELEASE_DB)
        version = stage.version
        manifest = {
            "release": f"{project_id}/v{version}",
            "project": project_id,
            "tier": str(project.tier),
            "sharing_form": str(form),
            "version": version,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source_store_version": store_version(con),
            "policy": policy.as_dict(),
            "policy_sha256": policy.sha256,
            "tables": counts,
            "columns": {t: [p.column for p in plans[t] if p.action != "drop"] + (
                ["age_band", "sex", "region"] if t == "person" else []) for t in tables},
            "dropped_columns": {t: [p.column for p in plans[t] if p.action == "drop"] for t in tables},
            "anonymization": {"node": result.node, "nodes_checked": result.nodes_checked,
                              "lattice_size": result.lattice_size, "patients": patients.height,
                              "suppressed": result.suppressed},
            "risk": {
                "k": risk.smallest_class,
                "prosecutor_max": risk.prosecutor_max,
                "prosecutor_avg": risk.prosecutor_avg,
                "journalist_max": risk.journalist_max,
                "marketer": risk.marketer,
                "classes": risk.classes,
                "suppressed": risk.suppressed,
                "threshold": policy.risk_threshold,
            },
            "utility": {"loss": result.utility.loss, "height": result.utility.height,
                        "entropy": result.utility.entropy,
                        "discernibility": result.utility.discernibility,
                        "average_class_size": result.utility.average_class_size},
            "scrubbed": builder.scrub_counts,
            "files": files,
        }
        # the airlock's ledger compares this release's outputs with every other project's
        write_identity_map(settings, manifest["release"],
                           builder.pseudo_map("person", kept["person_id"].cast(pl.Int64)))
        stage.publish(manifest)
    audit.record_event(settings, actor=getpass.getuser(), action="release.build",
                       subject=f"release:{manifest['release']}", detail={"files": manifest["files"]})
    return manifest
