"""What SQL an output may carry (security-critical): one SELECT over its own release's tables.

A record's SQL comes from the researcher's process, so nothing in it is trusted. Before it runs
anywhere trusted, :func:`validate_query` parses it with sqlglot (DuckDB dialect) and accepts only

* exactly one statement, and that a query (``SELECT`` with CTEs, joins, set operations, window
  functions, subqueries);
* table references that are tables of the record's own release, the record's own code lists
  (:mod:`enclave.io.outputs.codelists`) or CTEs of the query itself — no catalog or schema
  qualifier, no table function, no file path;
* no function that reads files or other databases, reveals the catalog or the settings, or runs
  SQL text (:data:`FORBIDDEN_FUNCTIONS`, :data:`FORBIDDEN_PREFIXES`), and no statement node
  (``ATTACH``, ``COPY``, ``PRAGMA``, ``SET``, ``INSTALL``, ``LOAD``, ``CALL``, ``EXPORT`` …)
  anywhere in the tree.

DuckDB's own parser then confirms one ``SELECT`` statement (:func:`check_statement_kind`), so a
difference between the two parsers cannot smuggle a second statement; the connection that runs
it has external access and extension loading disabled and its configuration locked
(:func:`locked_config`).

:func:`check_patient_column` enforces that patient identity comes from the release: the output's
patient column must be a ``person_id`` column of a release table carried through unchanged (renamed
at most) along every path of the query — no function, arithmetic, concatenation, CASE, cast or
literal. Every refusal is an :class:`UnsafeQueryError` whose message names the construct, never a
value of the data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from enclave.core.errors import BadInputError

PATIENT_SOURCE = "person_id"
PERSON_TABLE = "person"
# sqlglot logs the text of statements it cannot parse; a record's SQL is not for the logs
logging.getLogger("sqlglot").setLevel(logging.CRITICAL)

#: functions that read files, other databases or the catalog, reveal settings, or run SQL text
FORBIDDEN_FUNCTIONS = frozenset({
    "glob", "query", "query_table", "sniff_csv", "parquet_scan", "parquet_metadata",
    "parquet_schema", "parquet_file_metadata", "parquet_kv_metadata", "parquet_bloom_probe",
    "current_setting", "getenv", "getvariable", "current_database", "current_catalog",
    "current_schema", "current_schemas", "current_query", "current_user", "session_user",
    "user", "version", "which_secret", "sql_auto_complete", "json_serialize_sql",
    "json_deserialize_sql", "json_execute_serialized_sql", "seq_scan", "test_all_types",
    "test_vector_types", "checkpoint", "force_checkpoint", "import_database", "export_database",
    "summary", "iceberg_scan", "iceberg_metadata", "iceberg_snapshots", "delta_scan",
    "sqlite_scan", "sqlite_attach", "postgres_scan", "postgres_attach", "postgres_query",
    "mysql_scan", "mysql_query", "arrow_scan", "pandas_scan", "python_map_function",
    "enable_profiling", "disable_profiling", "has_table_privilege", "has_schema_privilege",
    "has_database_privilege", "pg_has_role", "txid_current", "read_blob", "read_text",
    "file_exists", "list_files", "st_read", "st_read_meta", "load_aws_credentials",
    "stats", "typeof_storage",
})
#: name prefixes of the same families (``read_csv_auto``, ``duckdb_settings``, ``pragma_*`` …)
FORBIDDEN_PREFIXES = ("read_", "duckdb_", "pragma_", "parquet_", "csv_", "json_execute",
                      "iceberg_", "delta_", "sqlite_", "postgres_", "mysql_", "pg_", "icu_",
                      "current_", "st_read", "load_", "install_", "glob", "ducklake_")
#: schema names that reveal the catalog
FORBIDDEN_SCHEMAS = frozenset({"information_schema", "pg_catalog", "system", "temp"})
#: statement node types refused anywhere in the tree
STATEMENTS = tuple(t for t in (
    getattr(exp, name, None) for name in (
        "Command", "Pragma", "Set", "Copy", "Attach", "Detach", "Install", "Use", "Create",
        "Drop", "Insert", "Update", "Delete", "Merge", "Describe", "Transaction", "Commit",
        "Rollback", "Export", "Alter", "Grant", "Revoke", "Analyze", "Load", "Summarize",
        "Kill", "Refresh", "Cache", "Uncache", "LoadData", "TruncateTable", "Show"))
    if t is not None)


class UnsafeQueryError(BadInputError):
    """The record's SQL is not a single SELECT over its own release (the message names why)."""


def locked_config(memory_limit: str | None = None, threads: int | None = None) -> dict:
    """DuckDB configuration of every connection that runs a record's SQL: no file system beyond
    the database itself, no extensions, and no way to change that from SQL."""
    config: dict = {"enable_external_access": False, "autoload_known_extensions": False,
                    "autoinstall_known_extensions": False, "allow_community_extensions": False,
                    "allow_unsigned_extensions": False}
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads:
        config["threads"] = threads
    config["lock_configuration"] = True
    return config


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return (node.sql_name() if isinstance(node, exp.Func) else node.key).lower()


#: harmless names that a forbidden prefix would catch (the clock, not the catalog)
ALLOWED_NAMES = frozenset({"current_date", "current_time", "current_timestamp",
                           "current_localtime", "current_localtimestamp"})


def _forbidden(name: str) -> bool:
    if name in ALLOWED_NAMES:
        return False
    return name in FORBIDDEN_FUNCTIONS or name.startswith(FORBIDDEN_PREFIXES)


def _statement_kind(node: exp.Expression) -> str:
    """COPY, ATTACH …; for statements sqlglot keeps as text (LOAD, CALL …) their keyword."""
    if isinstance(node, exp.Command):
        return str(node.this).upper()[:20]
    return node.key.upper()


def parse_query(sql: object) -> exp.Query:
    """The one query statement of ``sql``, or :class:`UnsafeQueryError`."""
    if not isinstance(sql, str) or not sql.strip():
        raise UnsafeQueryError("the record carries no SQL text")
    try:
        statements = [s for s in sqlglot.parse(sql, dialect="duckdb") if s is not None]
    except SqlglotError as exc:
        first = sql.strip().split(None, 1)[0].upper()[:20] if sql.strip() else ""
        raise UnsafeQueryError(f"the SQL does not parse as one DuckDB SELECT "
                               f"({type(exc).__name__}; it begins with {first})") from None
    if len(statements) != 1:
        raise UnsafeQueryError(f"the SQL holds {len(statements)} statements; exactly one SELECT "
                               "is allowed")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise UnsafeQueryError(f"the SQL is a statement of kind {_statement_kind(tree)}; only a "
                               "SELECT is allowed")
    return tree


def _cte_names(tree: exp.Expression) -> set[str]:
    return {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}


def validate_query(sql: object, tables: Iterable[str] | None = None) -> exp.Query:
    """Refuse ``sql`` unless it is one SELECT reading only ``tables`` (the release's tables;
    ``None``: names are checked later against the release). Returns the parsed query."""
    tree = parse_query(sql)
    allowed = None if tables is None else {t.lower() for t in tables}
    ctes = _cte_names(tree)
    for node in tree.walk():
        if isinstance(node, STATEMENTS):
            raise UnsafeQueryError(f"the SQL contains a statement of kind "
                                   f"{_statement_kind(node)}; only a SELECT is allowed")
        if isinstance(node, exp.Table):
            _check_table(node, allowed, ctes)
        elif isinstance(node, (exp.Func, exp.Anonymous)):
            name = _function_name(node)
            if _forbidden(name):
                raise UnsafeQueryError(f"the SQL calls {name}(), which reads files, other "
                                       "databases, settings or the catalog; it is not allowed")
        elif isinstance(node, exp.Column) and node.table and node.args.get("db"):
            schema = str(node.args["db"].name).lower()
            if schema in FORBIDDEN_SCHEMAS:
                raise UnsafeQueryError(f"the SQL refers to the {schema} schema; only the "
                                       "release's own tables are allowed")
    return tree


def _check_table(node: exp.Table, allowed: set[str] | None, ctes: set[str]) -> None:
    inner = node.this
    if isinstance(inner, (exp.Func, exp.Anonymous)) or not isinstance(inner, exp.Identifier):
        if isinstance(inner, (exp.Func, exp.Anonymous)):
            what = f"the table function {_function_name(inner)}()"
        else:
            what = f"a {type(inner).__name__.lower()} in FROM"
        raise UnsafeQueryError(f"the SQL reads from {what}; only the release's own tables are "
                               "allowed (no table functions, files or other databases)")
    if node.args.get("catalog") is not None or node.args.get("db") is not None:
        raise UnsafeQueryError(f"the SQL names table {node.sql(dialect='duckdb')!s} with a "
                               "catalog or schema; only the release's own tables are allowed")
    name = inner.name.lower()
    if name in ctes:
        return
    if any(ch in name for ch in "/\\.:") or name.endswith((".csv", ".parquet", ".json")):
        raise UnsafeQueryError("the SQL reads a file path as a table; only the release's own "
                               "tables are allowed")
    if allowed is not None and name not in allowed:
        raise UnsafeQueryError(f"the SQL reads table '{inner.name}', which is not a table of "
                               "the record's release (nor one of the record's code lists)")


def check_statement_kind(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """DuckDB's own parser must also see exactly one SELECT (no parser differential)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise UnsafeQueryError(f"DuckDB does not parse the SQL ({type(exc).__name__})") from None
    kinds = [s.type for s in statements]
    if len(kinds) != 1 or kinds[0] != duckdb.StatementType.SELECT:
        raise UnsafeQueryError(f"DuckDB parses the SQL as {len(kinds)} statement(s) "
                               f"({', '.join(k.name for k in kinds)}); exactly one SELECT is "
                               "allowed")


def release_schema(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """{table: {column: type}} of the release's own tables (the main schema of its database)."""
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal "
        "ORDER BY table_name, column_index").fetchall()
    out: dict[str, dict[str, str]] = {}
    for table, column, dtype in rows:
        out.setdefault(table, {})[column] = dtype
    return out


def _unaliased(node: exp.Expression) -> exp.Expression:
    while isinstance(node, (exp.Alias, exp.Paren)):
        node = node.this
    return node


def check_patient_column(sql: str, patient: object,
                         schema: Mapping[str, Mapping[str, str]],
                         codelists: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Refuse unless output column ``patient`` of ``sql`` is a release table's ``person_id``,
    carried through unchanged (renames allowed) along every path of the query. ``codelists``:
    the record's code lists (``{name: {column: type}}``), which the SQL may read but which are
    never a source of patients."""
    from sqlglot.lineage import lineage

    if not isinstance(patient, str) or not patient:
        raise UnsafeQueryError("the output names no patient column")
    tracing = {t: dict(c) for t, c in (codelists or {}).items()}
    tracing |= {t: dict(c) for t, c in schema.items()}
    try:
        root = lineage(patient, sql, schema=tracing, dialect="duckdb")
    except (SqlglotError, KeyError, ValueError, AttributeError, TypeError, RecursionError):
        raise UnsafeQueryError(f"the origin of the patient column '{patient}' cannot be traced "
                               "through the SQL; it must be a release table's person_id column "
                               "carried through unchanged") from None
    tables = {t.lower() for t in schema}
    stack = [root]
    while stack:
        node = stack.pop()
        expr = node.expression
        if isinstance(expr, exp.Table):  # a leaf: the base table the column comes from
            inner = expr.this
            if not isinstance(inner, exp.Identifier) or inner.name.lower() not in tables:
                raise UnsafeQueryError(
                    f"the patient column '{patient}' comes from {expr.sql(dialect='duckdb')}, "
                    "not from a release table")
            column = node.name.rsplit(".", 1)[-1].strip('"').lower()
            if column != PATIENT_SOURCE:
                raise UnsafeQueryError(
                    f"the patient column '{patient}' is the column '{column}' of table "
                    f"'{inner.name}', not a person_id column")
            continue
        value = _unaliased(expr)
        if not isinstance(value, exp.Column):
            raise UnsafeQueryError(
                f"the patient column '{patient}' is computed ({type(value).__name__}) on its way "
                "through the SQL; it must be a release table's person_id carried through "
                "unchanged (no function, arithmetic, concatenation, CASE, cast or constant)")
        if not node.downstream:
            raise UnsafeQueryError(f"the patient column '{patient}' does not come from a "
                                   "release table")
        stack.extend(node.downstream)


def check_patients_exist(con: duckdb.DuckDBPyConnection, sql: str, patient: str) -> None:
    """Every patient the output counts must be a person of the release's ``person`` table."""
    quoted = '"' + patient.replace('"', '""') + '"'
    try:
        [(missing,)] = con.execute(
            f"SELECT count(*) FROM (SELECT DISTINCT {quoted} AS _p FROM ({sql.strip()}) AS _r "
            f"WHERE {quoted} IS NOT NULL) AS _a ANTI JOIN {PERSON_TABLE} AS _person "
            f"ON _person.{PATIENT_SOURCE} = _a._p").fetchall()
    except duckdb.CatalogException:
        raise UnsafeQueryError("the release has no person table to check the output's "
                               "patients against") from None
    if missing:
        raise UnsafeQueryError(f"{missing} patient(s) of the patient column '{patient}' are not "
                               "persons of the release's person table")


def check_members_exist(con: duckdb.DuckDBPyConnection, members: str) -> None:
    """:func:`check_patients_exist` on an output's per-patient table (see
    :func:`enclave.io.outputs.membership.materialize`: ``_person`` is the patient column as it is),
    which is already one row per cell × patient: no second run of the SQL."""
    try:
        [(missing,)] = con.execute(
            f"SELECT count(*) FROM (SELECT DISTINCT _person FROM {members} WHERE _person IS NOT "
            f"NULL) AS _a ANTI JOIN {PERSON_TABLE} AS _p ON _p.{PATIENT_SOURCE} = _a._person"
            ).fetchall()
    except duckdb.CatalogException:
        raise UnsafeQueryError("the release has no person table to check the output's "
                               "patients against") from None
    if missing:
        raise UnsafeQueryError(f"{missing} patient(s) of the patient column are not persons of "
                               "the release's person table")


def check_output_query(con: duckdb.DuckDBPyConnection, sql: object, patient: object, *,
                       patients: bool = True,
                       codelists: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Every check of this module, on the connection to the release the SQL will run on
    (``patients=False``: the caller checks the patients on its per-patient table instead, with
    :func:`check_members_exist`). ``codelists``: the record's code lists (``{name: {column:
    type}}``, created on ``con`` by :func:`enclave.io.outputs.codelists.create`), the only tables
    besides the release's that the SQL may read; none may have a release table's name."""
    schema = release_schema(con)
    extra = {str(k).lower(): dict(v) for k, v in (codelists or {}).items()}
    shadowed = sorted(set(extra) & {t.lower() for t in schema})
    if shadowed:
        raise UnsafeQueryError(f"the code list '{shadowed[0]}' has the name of a table of the "
                               "release; a code list may not stand in for a release table")
    validate_query(sql, [*schema, *extra])
    check_statement_kind(con, sql)
    check_patient_column(sql, patient, schema, extra)
    if patients:
        check_patients_exist(con, sql, patient)
