"""OMOP CDM 5.4 tables held by the enclave, read from the shipped specification subset.

``omop_cdm_54.csv`` is the field-level specification of OHDSI/CommonDataModel v5.4 (Apache-2.0),
cut to the tables the enclave stores. DDL is generated from it so names and types cannot drift.

The standardized vocabulary tables other than ``concept`` (:data:`VOCABULARY_TABLES`, filled by
``enclave vocab load``) are specified by :data:`_VOCABULARY_SPEC`, the same specification's rows for
them. They are kept apart from :data:`CDM_TABLES`, which releases, the catalog and projects iterate:
vocabularies are reference data, never released per project.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

CDM_TABLES: tuple[str, ...] = (
    "person",
    "observation_period",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "observation",
    "death",
    "note",
    "cost",
    "location",
    "care_site",
    "provider",
    "cdm_source",
    "concept",
    "source_to_concept_map",
)

#: The standardized vocabulary tables besides ``concept`` (created by ``enclave.io.store.create_schema``).
VOCABULARY_TABLES: tuple[str, ...] = (
    "vocabulary",
    "domain",
    "concept_class",
    "concept_relationship",
    "relationship",
    "concept_synonym",
    "concept_ancestor",
    "drug_strength",
)

#: The OHDSI/CommonDataModel v5.4 field-level rows of :data:`VOCABULARY_TABLES`, in the format of
#: ``omop_cdm_54.csv``. Primary keys as in the v5.4 DDL (the field-level file omits vocabulary's).
_VOCABULARY_SPEC = """\
table,column,required,datatype,primary_key,fk_table
vocabulary,vocabulary_id,Yes,varchar(20),Yes,
vocabulary,vocabulary_name,Yes,varchar(255),No,
vocabulary,vocabulary_reference,No,varchar(255),No,
vocabulary,vocabulary_version,No,varchar(255),No,
vocabulary,vocabulary_concept_id,Yes,integer,No,CONCEPT
domain,domain_id,Yes,varchar(20),Yes,
domain,domain_name,Yes,varchar(255),No,
domain,domain_concept_id,Yes,integer,No,CONCEPT
concept_class,concept_class_id,Yes,varchar(20),Yes,
concept_class,concept_class_name,Yes,varchar(255),No,
concept_class,concept_class_concept_id,Yes,integer,No,CONCEPT
concept_relationship,concept_id_1,Yes,integer,No,CONCEPT
concept_relationship,concept_id_2,Yes,integer,No,CONCEPT
concept_relationship,relationship_id,Yes,varchar(20),No,RELATIONSHIP
concept_relationship,valid_start_date,Yes,date,No,
concept_relationship,valid_end_date,Yes,date,No,
concept_relationship,invalid_reason,No,varchar(1),No,
relationship,relationship_id,Yes,varchar(20),Yes,
relationship,relationship_name,Yes,varchar(255),No,
relationship,is_hierarchical,Yes,varchar(1),No,
relationship,defines_ancestry,Yes,varchar(1),No,
relationship,reverse_relationship_id,Yes,varchar(20),No,
relationship,relationship_concept_id,Yes,integer,No,CONCEPT
concept_synonym,concept_id,Yes,integer,No,CONCEPT
concept_synonym,concept_synonym_name,Yes,varchar(1000),No,
concept_synonym,language_concept_id,Yes,integer,No,CONCEPT
concept_ancestor,ancestor_concept_id,Yes,integer,No,CONCEPT
concept_ancestor,descendant_concept_id,Yes,integer,No,CONCEPT
concept_ancestor,min_levels_of_separation,Yes,integer,No,
concept_ancestor,max_levels_of_separation,Yes,integer,No,
drug_strength,drug_concept_id,Yes,integer,No,CONCEPT
drug_strength,ingredient_concept_id,Yes,integer,No,CONCEPT
drug_strength,amount_value,No,float,No,
drug_strength,amount_unit_concept_id,No,integer,No,CONCEPT
drug_strength,numerator_value,No,float,No,
drug_strength,numerator_unit_concept_id,No,integer,No,CONCEPT
drug_strength,denominator_value,No,float,No,
drug_strength,denominator_unit_concept_id,No,integer,No,CONCEPT
drug_strength,box_size,No,integer,No,
drug_strength,valid_start_date,Yes,date,No,
drug_strength,valid_end_date,Yes,date,No,
drug_strength,invalid_reason,No,varchar(1),No,
"""

#: Tables whose primary key DuckDB enforces. Event tables get their ids from the loader (one writer,
#: ids from max+1 inside the load transaction), and an enforced key there costs ~4x on bulk inserts.
ENFORCED_PRIMARY_KEYS = frozenset({"person", "concept", "care_site", "provider", "location", "death",
                                   "vocabulary", "domain", "concept_class", "relationship"})

_VARCHAR = re.compile(r"varchar\((\d+|max)\)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Column:
    table: str
    name: str
    required: bool
    cdm_type: str  # as written in the specification: integer, float, date, datetime, varchar(n)
    primary_key: bool
    fk_table: str | None

    @property
    def sql_type(self) -> str:
        t = self.cdm_type.lower()
        if t == "integer":
            return "INTEGER"
        if t == "float":
            return "DOUBLE"
        if t == "date":
            return "DATE"
        if t == "datetime":
            return "TIMESTAMP"
        if _VARCHAR.fullmatch(t):
            return "VARCHAR"
        raise ValueError(f"unknown CDM type {self.cdm_type!r} for {self.table}.{self.name}")


def _parse_spec(text: str, tables: tuple[str, ...]) -> dict[str, tuple[Column, ...]]:
    out: dict[str, list[Column]] = {t: [] for t in tables}
    for row in csv.DictReader(text.splitlines()):
        out[row["table"]].append(
            Column(
                table=row["table"],
                name=row["column"],
                required=row["required"].lower() == "yes",
                cdm_type=row["datatype"].lower(),
                primary_key=row["primary_key"].lower() == "yes",
                fk_table=row["fk_table"].lower() or None,
            )
        )
    return {t: tuple(cols) for t, cols in out.items()}


@cache
def cdm_columns() -> dict[str, tuple[Column, ...]]:
    """Columns per CDM table, in specification order."""
    text = resources.files("enclave.core.model").joinpath("omop_cdm_54.csv").read_text(encoding="utf-8")
    return _parse_spec(text, CDM_TABLES)


@cache
def vocabulary_columns() -> dict[str, tuple[Column, ...]]:
    """Columns per vocabulary table of :data:`VOCABULARY_TABLES`, in specification order."""
    return _parse_spec(_VOCABULARY_SPEC, VOCABULARY_TABLES)


def table_columns(table: str) -> tuple[Column, ...]:
    """Columns of a CDM table or of a vocabulary table."""
    if table in VOCABULARY_TABLES:
        return vocabulary_columns()[table]
    return cdm_columns()[table]


def create_table_sql(table: str, schema: str = "main") -> str:
    cols = table_columns(table)
    body = ",\n  ".join(
        f"{c.name} {c.sql_type}{' NOT NULL' if c.required else ''}" for c in cols
    )
    pk = [c.name for c in cols if c.primary_key]
    if pk and table in ENFORCED_PRIMARY_KEYS:
        body += f",\n  PRIMARY KEY ({', '.join(pk)})"
    return f"CREATE TABLE IF NOT EXISTS {schema}.{table} (\n  {body}\n)"
