"""Issue 15: the trusted output checking (``enclave.io.outputs``) sits below the notebook API and the
airlock. No module of it imports ``enclave.research`` or ``enclave.io.airlock`` — at the top of a
file or inside a function — and the rule itself is tested on a violating import map."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from enclave.io.outputs.formula import UnsafeFormulaError, check_formula
from enclave.io.outputs.sql import UnsafeQueryError, check_patient_column, validate_query

ROOT = Path(__file__).resolve().parents[2] / "enclave"
TRUSTED = "enclave.io.outputs"
FORBIDDEN = ("enclave.research", "enclave.io.airlock")


def imports_of(source: str, module: str) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, relative imports resolved."""
    out = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                node.func, "id", "")) in ("import_module", "__import__"):
            out |= {a.value for a in node.args if isinstance(a, ast.Constant)
                    and isinstance(a.value, str)}
    return out


def violations(import_map: dict[str, set[str]]) -> list[str]:
    """(module → imports) pairs where a trusted module reaches above itself."""
    return sorted(f"{m} imports {i}" for m, imports in import_map.items()
                  if m == TRUSTED or m.startswith(TRUSTED + ".")
                  for i in imports if i.startswith(FORBIDDEN))


def project_import_map() -> dict[str, set[str]]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[module] = imports_of(path.read_text(encoding="utf-8"), module)
    return out


def test_the_trusted_package_imports_neither_research_nor_airlock():
    found = project_import_map()
    assert any(m.startswith(TRUSTED + ".") for m in found), "enclave.io.outputs was not scanned"
    assert violations(found) == []


def test_the_rule_catches_every_way_of_importing_upwards():
    sources = {
        "enclave.io.outputs.a": "from enclave.research import workspace",
        "enclave.io.outputs.b": "import enclave.io.airlock.exports",
        "enclave.io.outputs.c": "def f():\n    from enclave.io.airlock.checks import run_checks\n",
        "enclave.io.outputs.d": "from ...research import api",
        "enclave.io.outputs.e": "import importlib\nimportlib.import_module('enclave.research.api')",
        "enclave.io.outputs.f": "from enclave.logic.disclosure import rules",          # allowed: below
        "enclave.research.g": "from enclave.io.outputs import recheck",           # allowed: above
    }
    found = violations({m: imports_of(src, m) for m, src in sources.items()})
    assert sorted({v.split(" imports ")[0] for v in found}) == [
        "enclave.io.outputs.a", "enclave.io.outputs.b", "enclave.io.outputs.c", "enclave.io.outputs.d",
        "enclave.io.outputs.e"], found


TABLES = {"person": {"person_id": "VARCHAR", "sex": "VARCHAR"},
          "measurement": {"person_id": "VARCHAR", "value": "DOUBLE", "visit_id": "VARCHAR"}}


@pytest.mark.parametrize("sql", [
    'SELECT "t0"."person_id", "t0"."sex" FROM "person" AS "t0"',
    "WITH c AS (SELECT person_id FROM person) SELECT c.person_id, m.value FROM c "
    "JOIN measurement AS m ON m.person_id = c.person_id",
    "SELECT person_id, value FROM measurement UNION ALL SELECT person_id, value FROM measurement",
    "SELECT person_id, avg(value) OVER (PARTITION BY person_id) AS v FROM measurement",
    "SELECT p AS person_id FROM (SELECT person_id AS p FROM person) AS t",
])
def test_honest_queries_pass(sql):
    validate_query(sql, TABLES)
    check_patient_column(sql, "person_id", TABLES)


@pytest.mark.parametrize("sql,named", [
    ("SELECT person_id FROM person; SELECT 1", "2 statements"),
    ("COPY person TO 'x.csv'", "COPY"),
    ("ATTACH 'x.duckdb' AS y", "ATTACH"),
    ("PRAGMA database_list", "PRAGMA"),
    ("SET threads = 1", "SET"),
    ("INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "LOAD"),
    ("CALL pragma_version()", "CALL"),
    ("EXPORT DATABASE 'x'", "EXPORT"),
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("SELECT * FROM read_text('/proc/self/environ')", "read_text"),
    ("SELECT * FROM glob('/tmp/*')", "glob"),
    ("SELECT * FROM parquet_scan('x.parquet')", "parquet"),
    ("SELECT * FROM 'x.csv'", "file path"),
    ("SELECT * FROM duckdb_databases()", "duckdb_databases"),
    ("SELECT current_setting('threads') AS person_id FROM person", "current_setting"),
    ("SELECT * FROM information_schema.tables", "information_schema"),
    ("SELECT person_id FROM other.main.person", "catalog or schema"),
    ("SELECT person_id FROM secret_table", "not a table of the record's release"),
    ("SELECT * FROM query('SELECT 1')", "query"),
])
def test_unsafe_queries_are_refused_naming_the_construct(sql, named):
    with pytest.raises(UnsafeQueryError, match=None) as info:
        validate_query(sql, TABLES)
    assert named.lower() in str(info.value).lower(), str(info.value)


@pytest.mark.parametrize("sql,named", [
    ("SELECT person_id || '#1' AS person_id FROM person", "computed"),
    ("SELECT person_id + 1 AS person_id FROM person", "computed"),
    ("SELECT 'x' AS person_id FROM person", "computed"),
    ("SELECT CAST(person_id AS VARCHAR) AS person_id FROM person", "computed"),
    ("SELECT CASE WHEN true THEN person_id END AS person_id FROM person", "computed"),
    ("SELECT visit_id AS person_id FROM measurement", "not a person_id column"),
    ("SELECT person_id FROM person UNION ALL SELECT person_id || '#' FROM person", "computed"),
    ("SELECT r.range AS person_id FROM range(3) AS r", "not from a release table"),
])
def test_forged_patient_columns_are_refused(sql, named):
    with pytest.raises(UnsafeQueryError) as info:
        check_patient_column(sql, "person_id", TABLES)
    assert named in str(info.value), str(info.value)


@pytest.mark.parametrize("formula", [
    "y ~ x + I(__import__('os').system('id'))", "y ~ x.__class__", "y ~ eval('1')",
    "y ~ x[0]", "y ~ undefined_name", "y ~ x ~ z", "y ~ np.sys"])
def test_model_formulas_run_no_code(formula):
    with pytest.raises(UnsafeFormulaError):
        check_formula(formula, ["y", "x", "z"])
    check_formula("y ~ x + C(z) + x:z + I(x ** 2) + np.log(x) - 1", ["y", "x", "z"])
