"""The disclosure rules as a registry: one module per rule, and everything else reads it.

The walkthrough test adds a rule the way a developer does, as one new file in
``enclave/core/disclosure_rules/`` (``tests/unit/disclosure_rule_example.py``, copied into a copy of the
package), and shows the checker applying it, the presets, the policy hash, the settings and the
generated docs listing it, with no other file changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import fields

import pytest

from enclave.core.disclosure_registry import overrides, rules, thresholds, validated
from enclave.core.errors import ConfigurationError
from enclave.core.settings import DisclosureSettings, iter_settings
from enclave.logic.disclosure import (
    PRESETS,
    DisclosurePolicy,
    Rule,
    Threshold,
    policy_hash,
    rules_table,
)
from tests.conftest import REPO

RULES_DIR = REPO / "enclave" / "core" / "disclosure_rules"


def test_every_rule_module_declares_a_rule_and_the_registry_finds_it():
    modules = sorted(p.stem for p in RULES_DIR.glob("*.py") if not p.stem.startswith("_"))
    found = rules()
    assert len(found) == len(modules) and all(isinstance(r, Rule) for r in found)
    assert [r.order for r in found] == sorted(r.order for r in found)
    assert {"zeros", "minimum patients", "N-K dominance", "class disclosure"} <= {
        r.name for r in found}


def test_the_policy_fields_and_the_settings_are_the_rules_thresholds():
    names = [t.name for t in thresholds()]
    assert [f.name for f in fields(DisclosurePolicy)] == ["name", *names, "notes"]
    settable = [f.name for f in fields(DisclosureSettings)]
    assert settable == ["preset", *(t.name for t in overrides())]
    documented = {n for n, _, _ in iter_settings()}
    assert {f"disclosure.{t.name}" for t in overrides()} <= documented
    for t in thresholds():
        assert {p: getattr(PRESETS[p], t.name) for p in PRESETS} == {
            p: t.value_for(p) for p in PRESETS}


def test_the_registry_refuses_clashing_rules():
    a = Rule("a", 1, thresholds=(Threshold("x", 1, "x"),))
    with pytest.raises(ConfigurationError, match="share a name"):
        validated([a, Rule("a", 2)])
    with pytest.raises(ConfigurationError, match="share an order"):
        validated([a, Rule("b", 1)])
    with pytest.raises(ConfigurationError, match="threshold 'x'"):
        validated([a, Rule("b", 2, thresholds=(Threshold("x", 2, "x"),))])
    with pytest.raises(ConfigurationError, match="unknown preset"):
        validated([Rule("c", 3, thresholds=(Threshold("y", 1, "y", presets={"nope": 2}),))])


def test_the_rules_table_of_the_docs_is_generated_from_the_registry():
    doc = (REPO / "docs" / "disclosure.md").read_text(encoding="utf-8")
    assert "<!-- rules:start -->\n" + rules_table() + "<!-- rules:end -->" in doc, (
        "docs/disclosure.md is stale: paste the output of "
        "python -c 'from enclave.logic.disclosure import rules_table; print(rules_table(), end=\"\")' "
        "between the rules markers")


WALKTHROUGH = textwrap.dedent("""
    import json, sys
    import duckdb
    import polars as pl
    import enclave
    from enclave.logic.disclosure import (ACRO, PRESETS, STRICT, check_cells, check_table,
                                    policy_from_settings, policy_hash, presets_table, rules_table)
    from enclave.core.disclosure_registry import rules
    from enclave.core.settings import iter_settings, load_settings

    home = sys.argv[1]
    with open(home + "/settings.toml", "w") as f:
        f.write("[disclosure]\\nmin_rows = 5\\n")
    overridden = policy_from_settings(load_settings(home).disclosure)
    ev = pl.DataFrame({"dept": ["A", "B"], "rows": [3, 12], "patients": [3, 12],
                       "value_patients": [0, 0], "abs_total": [0.0, 0.0], "top1": [0.0, 0.0],
                       "top2": [0.0, 0.0]})
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT i AS patient, 'A' AS dept FROM range(12) r(i)"
                " UNION ALL SELECT 100 + i % 10, 'B' FROM range(25) r(i)")
    strict = check_table(con, "t", "patient", ["dept"], "count", STRICT).cells
    print(json.dumps({
        "package": enclave.__file__,
        "rules": [r.name for r in rules()],
        "acro": ACRO.min_rows, "strict": STRICT.min_rows, "overridden": overridden.min_rows,
        "hashes": {p.name: policy_hash(p) for p in PRESETS.values()},
        "presets_table": "| `min_rows` | 0 | 0 | 0 | 0 | 20 |" in presets_table(),
        "rules_table": "| minimum rows | count | 0 < rows < `min_rows` |" in rules_table(),
        "setting": [h for n, _, h in iter_settings() if n == "disclosure.min_rows"],
        "acro_cells": check_cells(ev, "count", ACRO, ["dept"])["outcome"].to_list(),
        "overridden_cells": check_cells(ev, "count", overridden, ["dept"]).rows(),
        "patients_cells": check_cells(ev.with_columns(pl.col("rows").alias("value_patients")),
                                  "patients", overridden, ["dept"])["outcome"].to_list(),
        "strict_table": strict.select("dept", "outcome", "reasons").rows(),
    }))
""")


def test_walkthrough_a_new_rule_is_one_file(tmp_path):
    """A developer adds ``enclave/core/disclosure_rules/min_rows.py`` and nothing else."""
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "enclave", tree / "enclave",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "tests" / "unit" / "disclosure_rule_example.py",
                tree / "enclave" / "core" / "disclosure_rules" / "min_rows.py")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", WALKTHROUGH, str(home)], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    assert got["package"].startswith(str(tree))  # the copy, not the repository's package
    # the registry finds it, in its order (after the minimum patients)
    assert got["rules"][:3] == ["zeros", "minimum patients", "minimum rows"]
    # its presets, its setting and the docs tables
    assert (got["acro"], got["strict"], got["overridden"]) == (0, 20, 5)
    assert got["presets_table"] and got["rules_table"]
    assert got["setting"] == [("Override: fewest rows behind a published row count, 0 = off "
                               "(-1 = preset's).")]
    # the checker applies it: off under acro; 3 rows < 5 under the override (JSON: lists)
    assert got["acro_cells"] == ["suppress", "ok"]  # A fails the minimum patients anyway
    assert got["overridden_cells"] == [
        ["A", "suppress", ["cell has 3 patients; at least 10 are needed",
                           "cell has 3 rows; at least 5 are needed (minimum rows)"], None, 3],
        ["B", "ok", [], 12, 12]]
    assert got["patients_cells"] == ["suppress", "ok"]  # a patients count: the rule does not apply
    # through the whole chain: 12 patients pass the minimum patients, 12 rows < 20 fail strict
    assert got["strict_table"] == [
        ["A", "suppress", ["cell has 12 rows; at least 20 are needed (minimum rows)"]],
        ["B", "ok", []]]
    # a new threshold enters every preset's hash: records made before it are refused as made
    # under another policy
    assert not set(got["hashes"].items()) & {(p.name, policy_hash(p)) for p in PRESETS.values()}


def test_the_settings_load_the_rules_declarations_without_polars():
    """The JupyterHub process loads the settings (and so every rule's declarations) but never
    evaluates a rule: it must not load polars (or DuckDB) for that."""
    probe = ("import sys, enclave.core.settings, enclave.io.hub.config; "
             "print(sorted(m for m in ('polars', 'duckdb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout
