"""Mapping source codes to OMOP concepts (vectorized; one vocabulary query per batch and kind).

A row's ``code_system`` is its declared vocabulary, spelled as OMOP's ``vocabulary_id``
(``SNOMED``, ``ICD10CM``, ``NDC`` ...), or ``ICD10CN`` / ``LOCAL``:

- LOCAL hospital codes are translated first by the site mapping's ``[codes.<kind>]`` table
  (``LOCALCODE = "LOINC:2345-7"``).
- Every code is then looked up by (vocabulary, code) in the store's ``concept`` table (the shipped
  subset, an OMOP export's CONCEPT.csv, or a whole Athena download loaded by ``enclave vocab
  load``): that concept is the row's *source* concept, and its standard concept is itself when
  standard, else the target of its ``Maps to`` relationship
  (:data:`enclave.io.ingest.vocabulary.MAPS_TO_SQL`).
- ICD-10 (clinical version 2.0, WHO, or CM) not found there is reduced to the WHO code and mapped
  to a standard SNOMED concept by the shipped ``icd10_to_standard.csv``.
- A code the vocabulary does not hold gets a *local* source concept (id above 2,000,000,000, in
  ``concept`` and ``source_to_concept_map``) recording its vocabulary and code, and standard
  concept 0 (counted under the warning ``unmapped_code``); ``enclave vocab remap`` gives such rows
  their concepts once the vocabulary is loaded. The verbatim code always stays in
  ``*_source_value``.

Only a code that is syntactically impossible in a vocabulary whose syntax is known
(:data:`CODE_PATTERNS`) is rejected (``invalid_code``); other vocabularies are not checked.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

from enclave.core.model.vocab import LOCAL_CONCEPT_BASE, icd10_standard
from enclave.io import db
from enclave.io.db import insert_frame
from enclave.io.ingest.staging import CodeSystem, RejectReason
from enclave.io.ingest.vocabulary import standard_targets
from enclave.logic.codes import icd10

#: a declared vocabulary the loader has no syntax for must still look like a vocabulary_id
VOCABULARY_ID_SHAPE = r"^[A-Za-z0-9][A-Za-z0-9 ._/-]{0,19}$"
#: ICD-10 flavours the shipped WHO → SNOMED table can map when the store's vocabulary cannot
ICD10_SYSTEMS = (CodeSystem.ICD10_CN, CodeSystem.ICD10, CodeSystem.ICD10_CM)

#: syntax of each code system (a code that fails it is ``invalid_code``)
CODE_PATTERNS: dict[str, str] = {
    CodeSystem.LOINC: r"^[0-9]{1,7}-[0-9]$",
    CodeSystem.SNOMED: r"^[0-9]{5,18}$",
    CodeSystem.RXNORM: r"^[0-9]{1,10}$",
    CodeSystem.CVX: r"^[0-9]{1,3}$",
    CodeSystem.ICD9_CM_PROC: r"^[0-9]{2}(\.[0-9x]{1,4})?$",
    CodeSystem.ICD10_CM: r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$",
    CodeSystem.ICD9_CM: r"^([0-9]{3}|V[0-9]{2}|E[0-9]{3})(\.?[0-9]{1,2})?$",
    CodeSystem.NDC: r"^([0-9]{10,11}|[0-9]{4,5}-[0-9]{3,4}-[0-9]{1,2})$",
    CodeSystem.LOCAL: r"^\S.{0,49}$",
}
DOMAIN_OF_KIND = {
    "condition": "Condition",
    "drug": "Drug",
    "measurement": "Measurement",
    "procedure": "Procedure",
    "observation": "Observation",
}


def local_code_table(options: dict, kind: str) -> pl.DataFrame:
    """The site's ``[codes.<kind>]`` translations as (code, std_system, std_code)."""
    table = (options.get("codes") or {}).get(kind) or {}
    rows = []
    for local, target in table.items():
        system, _, code = str(target).partition(":")
        rows.append((str(local), system, code))
    return pl.DataFrame(
        rows, schema={"code": pl.Utf8, "std_system": pl.Utf8, "std_code": pl.Utf8}, orient="row"
    )


class ConceptMapper:
    """Maps the codes of one batch; collects new local concepts to write at the end."""

    def __init__(self, con: duckdb.DuckDBPyConnection, site: str, options: dict):
        self.con = con
        self.site = site
        self.options = options
        self.local = db.frame(con, 
            "SELECT vocabulary_id, concept_code, concept_id FROM concept WHERE concept_id > ?",
            [LOCAL_CONCEPT_BASE],
        ).with_columns(pl.col("concept_id").cast(pl.Int64))
        self.next_local = int(
            db.scalar(con, 
                "SELECT coalesce(max(concept_id), ?) + 1 FROM concept WHERE concept_id > ?",
                [LOCAL_CONCEPT_BASE, LOCAL_CONCEPT_BASE],
            )
        )
        self.new_local: list[pl.DataFrame] = []

    def ucum_units(self) -> pl.DataFrame:
        """``concept_code``, ``concept_id`` of the UCUM units in the store's vocabulary."""
        return db.frame(self.con, 
            "SELECT concept_code, concept_id FROM concept WHERE vocabulary_id = 'UCUM' "
            "AND concept_id > 0 AND concept_id < ?", [LOCAL_CONCEPT_BASE],
        ).with_columns(pl.col("concept_id").cast(pl.Int64))

    def vocabulary_lookup(self, pairs: pl.DataFrame, kind: str) -> pl.DataFrame:
        """``std_system``, ``std_code``, ``_src_id`` (the vocabulary's concept of the code) and
        ``_std_id`` (its standard concept, by ``MAPS_TO_SQL``) of the distinct ``pairs`` the
        store's vocabulary holds (a valid concept first, then the smallest id)."""
        con = self.con
        con.register("_map_pairs", db.arrow(pairs.select("std_system", "std_code").unique()))
        try:
            found = db.frame(con, """
                SELECT p.std_system, p.std_code, c.concept_id AS _src_id
                FROM _map_pairs p JOIN concept c
                  ON c.vocabulary_id = p.std_system AND c.concept_code = p.std_code
                WHERE c.concept_id > 0 AND c.concept_id < ?
                QUALIFY row_number() OVER (PARTITION BY p.std_system, p.std_code
                                           ORDER BY c.invalid_reason IS NOT NULL, c.concept_id) = 1
            """, [LOCAL_CONCEPT_BASE])
        finally:
            con.unregister("_map_pairs")
        found = found.with_columns(pl.col("_src_id").cast(pl.Int64))
        targets = standard_targets(con, found["_src_id"], DOMAIN_OF_KIND.get(kind, "Observation"))
        return found.join(
            targets.select(pl.col("source_concept_id").cast(pl.Int64).alias("_src_id"),
                           pl.col("target_concept_id").cast(pl.Int64).alias("_std_id")),
            on="_src_id", how="left")

    # -- validation ------------------------------------------------------------------------
    def code_checks(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The distinct (code_system, code) pairs of ``frame`` that fail: a code system that is no vocabulary id,
        a code longer than the CDM allows, or a code that fails its system's syntax, with the
        reason (``_why``) and the column to name (``_why_column``).

        Judged once per distinct pair (a few hundred regex evaluations instead of one per row);
        :func:`enclave.io.ingest.transforms.check_events` joins the result back to the rows."""
        pairs = frame.select("code_system", "code").unique()
        system = pl.col("code_system")
        code = pl.col("code").str.strip_chars()
        valid = pl.lit(True)  # a vocabulary without a known syntax is not checked
        for s in CodeSystem:
            if s in (CodeSystem.ICD10_CN,):
                ok = icd10.is_valid_clinical(code)
            elif s == CodeSystem.ICD10:
                ok = icd10.is_valid_who(code) | icd10.is_valid_clinical(code)
            else:
                ok = code.str.contains(CODE_PATTERNS[s])
            valid = pl.when(system == str(s)).then(ok).otherwise(valid)
        bad_system = ~system.str.contains(VOCABULARY_ID_SHAPE)
        too_long = pl.col("code").str.len_chars() > 50
        return pairs.with_columns(
            pl.when(bad_system).then(pl.lit(str(RejectReason.INVALID_CODE)))
            .when(too_long).then(pl.lit(str(RejectReason.VALUE_TOO_LONG)))
            .when(~valid.fill_null(False)).then(pl.lit(str(RejectReason.INVALID_CODE)))
            .otherwise(None).alias("_why"),
            pl.when(bad_system).then(pl.lit("code_system")).otherwise(pl.lit("code"))
            .alias("_why_column"),
        ).filter(pl.col("_why").is_not_null() & pl.col("code").is_not_null()
                 & pl.col("code_system").is_not_null())

    # -- mapping ---------------------------------------------------------------------------
    def code_map(self, pairs: pl.DataFrame, kind: str) -> pl.DataFrame:
        """``std_system``, ``std_code``, ``_target`` and ``source_concept_id`` of each distinct
        (code_system, code) pair of the rows still pending, in the order the batch first uses
        them (rows already rejected or merged are never written, so their codes make no new
        local concept). New local concepts are numbered in that order;
        :func:`enclave.io.ingest.transforms.map_concepts` joins the result back to the rows."""
        return self._map_pairs(pairs.select("code_system", "code"), kind)

    def _map_pairs(self, pairs: pl.DataFrame, kind: str) -> pl.DataFrame:
        local = local_code_table(self.options, kind)
        f = pairs.with_columns(pl.col("code").str.strip_chars().alias("_code"))
        if local.height:
            f = f.join(local.rename({"code": "_code"}), on="_code", how="left")
            translate = (pl.col("code_system") == str(CodeSystem.LOCAL)) & pl.col("std_system").is_not_null()
            f = f.with_columns(
                pl.when(translate).then(pl.col("std_system")).otherwise(pl.col("code_system")).alias("std_system"),
                pl.when(translate).then(pl.col("std_code")).otherwise(pl.col("_code")).alias("std_code"),
            )
        else:
            f = f.with_columns(pl.col("code_system").alias("std_system"), pl.col("_code").alias("std_code"))

        # the store's vocabulary: source concept, and its standard concept
        f = f.join(self.vocabulary_lookup(f, kind), on=["std_system", "std_code"], how="left")
        # ICD-10 the vocabulary does not hold: WHO code → standard concept (shipped table)
        unfound = pl.col("_src_id").is_null()
        is_icd = pl.col("std_system").is_in([str(s) for s in ICD10_SYSTEMS])
        f = f.with_columns(
            pl.when(is_icd & unfound).then(icd10.to_who(pl.col("std_code"))).otherwise(None).alias("who")
        )
        icd = icd10_standard()
        f = f.join(icd, on="who", how="left").join(
            icd.rename({"who": "_cat", "icd_target": "_cat_target"}),
            left_on=pl.col("who").str.slice(0, 3),
            right_on="_cat",
            how="left",
        )
        # a local source concept records the vocabulary and code of every code it does not hold
        is_local = pl.col("std_system") == str(CodeSystem.LOCAL)
        f = f.with_columns(
            pl.when(~unfound).then(None).when(is_local).then(pl.lit("LOCAL"))
            .otherwise(pl.col("std_system")).alias("_lvocab"),
            pl.when(~unfound).then(None)
            # the Chinese clinical version writes its extension marker as a lower-case x
            .when(pl.col("std_system") == str(CodeSystem.ICD10_CN))
            .then(pl.col("std_code").str.to_uppercase().str.replace_all("X", "x"))
            .when(is_icd).then(pl.col("std_code").str.to_uppercase())
            .when(is_local).then(pl.lit(self.site + ":") + pl.col("std_code"))
            .otherwise(pl.col("std_code")).alias("_lcode"),
        )
        f = self._assign_local(f, kind)
        target = pl.coalesce(pl.col("_std_id"), pl.col("icd_target"), pl.col("_cat_target"), pl.lit(0))
        source = pl.coalesce(pl.col("_src_id"), pl.col("_local_id"), pl.lit(0))
        return f.select(
            "code_system", "code", "std_system", "std_code",
            target.cast(pl.Int64).alias("_target"),
            source.cast(pl.Int64).alias("source_concept_id"),
        )

    def _assign_local(self, f: pl.DataFrame, kind: str) -> pl.DataFrame:
        known = self.local.rename(
            {"vocabulary_id": "_lvocab", "concept_code": "_lcode", "concept_id": "_local_id"}
        )
        f = f.join(known, on=["_lvocab", "_lcode"], how="left")
        new = (
            f.filter(pl.col("_lvocab").is_not_null() & pl.col("_local_id").is_null())
            .select("_lvocab", "_lcode", "icd_target", "_cat_target")
            .unique(["_lvocab", "_lcode"], keep="first", maintain_order=True)
        )
        if new.height:
            new = new.with_columns(
                pl.int_range(self.next_local, self.next_local + new.height, dtype=pl.Int64).alias("_new_id"),
                pl.lit(DOMAIN_OF_KIND.get(kind, "Observation")).alias("_domain"),
                pl.coalesce(pl.col("icd_target"), pl.col("_cat_target"), pl.lit(0)).alias("_target"),
            )
            self.next_local += new.height
            self.new_local.append(new.select("_lvocab", "_lcode", "_new_id", "_domain", "_target"))
            self.local = pl.concat(
                [self.local, new.select(
                    pl.col("_lvocab").alias("vocabulary_id"), pl.col("_lcode").alias("concept_code"),
                    pl.col("_new_id").alias("concept_id"))]
            )
            f = f.join(new.select("_lvocab", "_lcode", "_new_id"), on=["_lvocab", "_lcode"], how="left")
            f = f.with_columns(pl.coalesce("_local_id", "_new_id").alias("_local_id")).drop("_new_id")
        return f

    def write_new_concepts(self) -> int:
        """Insert the batch's new local concepts and their source_to_concept_map rows."""
        if not self.new_local:
            return 0
        new = pl.concat(self.new_local).unique(["_lvocab", "_lcode"], keep="first")
        today = dt.date.today()
        concepts = new.select(
            pl.col("_new_id").cast(pl.Int32).alias("concept_id"),
            pl.col("_lcode").alias("concept_name"),
            pl.col("_domain").alias("domain_id"),
            pl.col("_lvocab").alias("vocabulary_id"),
            pl.lit("Local code").alias("concept_class_id"),
            pl.lit(None, pl.Utf8).alias("standard_concept"),
            pl.col("_lcode").alias("concept_code"),
            pl.lit(dt.date(1970, 1, 1)).alias("valid_start_date"),
            pl.lit(dt.date(2099, 12, 31)).alias("valid_end_date"),
            pl.lit(None, pl.Utf8).alias("invalid_reason"),
        )
        stcm = new.select(
            pl.col("_lcode").alias("source_code"),
            pl.col("_new_id").cast(pl.Int32).alias("source_concept_id"),
            pl.col("_lvocab").alias("source_vocabulary_id"),
            pl.lit(None, pl.Utf8).alias("source_code_description"),
            pl.col("_target").cast(pl.Int32).alias("target_concept_id"),
            pl.when(pl.col("_target") > 0).then(pl.lit("SNOMED")).otherwise(pl.lit("None")).alias("target_vocabulary_id"),
            pl.lit(today).alias("valid_start_date"),
            pl.lit(dt.date(2099, 12, 31)).alias("valid_end_date"),
            pl.lit(None, pl.Utf8).alias("invalid_reason"),
        )
        insert_frame(self.con, "concept", concepts)
        insert_frame(self.con, "source_to_concept_map", stcm)
        return new.height
