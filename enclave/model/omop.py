"""OMOP CDM 5.4 tables held by the enclave, read from the shipped specification subset.

``omop_cdm_54.csv`` is the field-level specification of OHDSI/CommonDataModel v5.4 (Apache-2.0),
cut to the tables the enclave stores. DDL is generated from it so names and types cannot drift.
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

#: Tables whose primary key DuckDB enforces. Event tables get their ids from the loader (one writer,
#: ids from max+1 inside the load transaction), and an enforced key there costs ~4x on bulk inserts.
ENFORCED_PRIMARY_KEYS = frozenset({"person", "concept", "care_site", "provider", "location", "death"})

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

    @property
    def max_length(self) -> int | None:
        """Declared varchar length (DuckDB does not enforce it; the loader does)."""
        m = _VARCHAR.fullmatch(self.cdm_type.lower())
        if not m or m.group(1) == "max":
            return None
        return int(m.group(1))


@cache
def cdm_columns() -> dict[str, tuple[Column, ...]]:
    """Columns per CDM table, in specification order."""
    text = resources.files("enclave.model").joinpath("omop_cdm_54.csv").read_text(encoding="utf-8")
    tables: dict[str, list[Column]] = {t: [] for t in CDM_TABLES}
    for row in csv.DictReader(text.splitlines()):
        tables[row["table"]].append(
            Column(
                table=row["table"],
                name=row["column"],
                required=row["required"].lower() == "yes",
                cdm_type=row["datatype"].lower(),
                primary_key=row["primary_key"].lower() == "yes",
                fk_table=row["fk_table"].lower() or None,
            )
        )
    return {t: tuple(cols) for t, cols in tables.items()}


def create_table_sql(table: str, schema: str = "main") -> str:
    cols = cdm_columns()[table]
    body = ",\n  ".join(
        f"{c.name} {c.sql_type}{' NOT NULL' if c.required else ''}" for c in cols
    )
    pk = [c.name for c in cols if c.primary_key]
    if pk and table in ENFORCED_PRIMARY_KEYS:
        body += f",\n  PRIMARY KEY ({', '.join(pk)})"
    return f"CREATE TABLE IF NOT EXISTS {schema}.{table} (\n  {body}\n)"
