"""The enclave's bookkeeping tables, kept beside the CDM (not in it) in the restricted store.

``etl_file``     one row per ingested source file (its hash makes re-ingest a no-op): physical
                 ``source_records`` (lines, messages, resources) and the staged records ``read``,
                 with ``read = loaded + rejected + merged_duplicates``
``etl_lineage``  source file and record number of every loaded CDM row
``etl_reject``   every quarantined source row: reason and column, never its contents
``etl_warning``  every loaded row counted under a warning (a visit not found, a code without a
                 standard concept, a value cut to its CDM column): warning and column
``site_registry`` each hospital's dialect
``identity.*``   the person index: link keys and raw identifiers. Restricted zone only: no release,
                 export or log ever reads this schema. Its keys (person_id, link_key,
                 (site, site_patient_id), (site, site_visit_id)) are unique by construction (the
                 loader is the only writer and checks them); ``enclave store check`` verifies
                 them — enforced indexes cost seconds per million rows on every load.
"""

from __future__ import annotations

BOOKKEEPING_DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS site_registry (
  site_id VARCHAR PRIMARY KEY,
  site_name VARCHAR,
  dialect VARCHAR NOT NULL,
  encoding VARCHAR NOT NULL,
  code_systems VARCHAR,
  mapping_file VARCHAR,
  mapping_sha256 VARCHAR,
  care_site_id INTEGER,
  registered_at TIMESTAMP NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS etl_file (
  file_id INTEGER PRIMARY KEY,
  site_id VARCHAR NOT NULL,
  path VARCHAR NOT NULL,
  sha256 VARCHAR NOT NULL,
  adapter VARCHAR NOT NULL,
  source_records BIGINT NOT NULL,
  read BIGINT NOT NULL,
  loaded BIGINT NOT NULL,
  rejected BIGINT NOT NULL,
  merged_duplicates BIGINT NOT NULL,
  ingested_at TIMESTAMP NOT NULL,
  UNIQUE (site_id, sha256)
)""",
    """CREATE TABLE IF NOT EXISTS etl_lineage (
  table_name VARCHAR NOT NULL,
  row_id BIGINT NOT NULL,
  file_id INTEGER NOT NULL,
  source_row BIGINT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS etl_reject (
  file_id INTEGER NOT NULL,
  source_row BIGINT NOT NULL,
  kind VARCHAR NOT NULL,
  reason VARCHAR NOT NULL,
  column_name VARCHAR,
  rejected_at TIMESTAMP NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS etl_warning (
  file_id INTEGER NOT NULL,
  source_row BIGINT NOT NULL,
  kind VARCHAR NOT NULL,
  warning VARCHAR NOT NULL,
  column_name VARCHAR
)""",
    "CREATE SCHEMA IF NOT EXISTS identity",
    """CREATE TABLE IF NOT EXISTS identity.person_index (
  person_id INTEGER NOT NULL,
  link_key VARCHAR NOT NULL,
  resident_id VARCHAR,
  name VARCHAR,
  birth_date DATE,
  sex VARCHAR,
  phone VARCHAR,
  address VARCHAR,
  insurance_no VARCHAR
)""",
    """CREATE TABLE IF NOT EXISTS identity.site_patient (
  site_id VARCHAR NOT NULL,
  site_patient_id VARCHAR NOT NULL,
  person_id INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS identity.site_visit (
  site_id VARCHAR NOT NULL,
  site_visit_id VARCHAR NOT NULL,
  visit_occurrence_id INTEGER NOT NULL
)""",
)
