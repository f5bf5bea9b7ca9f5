"""The layers of the code, checked: no import goes up a layer or sideways between independent
packages, and no two modules import each other (directly or round a longer cycle).

The folders of ``enclave/`` are its layers, bottom to top (README, "Dependency direction"):

* ``enclave/core/`` — plain types and what every zone shares: errors, settings, the data model,
  hashing, the audit trail, the publication of versioned folders;
* ``enclave/logic/`` — pure logic: code systems, de-identification, disclosure control;
* ``enclave/io/`` — everything that reads or writes data: DuckDB, the store, the engine, ingest,
  releases, indicators, output checking, the airlock, the hub;
* ``enclave/workflows/`` — multi-step operations that drive several I/O packages;
* the edges: ``enclave/cli/`` (admins) and ``enclave/research/`` (the notebook API); then the two
  applications beside the enclave, ``synthetic/`` and ``dashboards/``.

Inside a layer, :data:`LAYERS` orders its packages in tiers: a package may import from lower tiers
and from itself, never from a higher tier or from another package of its own tier (siblings are
independent: what they share belongs lower down). Every import counts, module-level and inside
functions (an import hidden in a function is still a dependency). A module that no tier names
fails the test: placing it is a decision, made here.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("enclave", "synthetic", "dashboards")

#: bottom to top: (layer, tiers); each tier lists independent units: a package with everything
#: below it, or (``=name``) one module alone. A module belongs to the unit with the longest name.
LAYERS: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("core", (
        ("=enclave", "=enclave.core", "enclave.core.errors", "enclave.core.canonical",
         "enclave.core.keystore"),
        ("enclave.core.disclosure_registry",),
        ("enclave.core.settings", "enclave.core.disclosure_rules"),
        ("enclave.core.model", "enclave.core.crypto"),  # no database below this line
        ("enclave.core.audit", "enclave.core.publish"),
        ("enclave.core.manifest",),
    )),
    ("logic", (
        ("=enclave.logic", "enclave.logic.codes", "enclave.logic.deid"),
        ("enclave.logic.disclosure",),
    )),
    ("io", (
        ("=enclave.io", "enclave.io.db", "enclave.io.ibis_backend", "enclave.io.envlock"),
        ("enclave.io.store", "enclave.io.engine", "enclave.io.projects", "enclave.io.relock"),
        ("enclave.io.ingest", "enclave.io.release", "enclave.io.indicators", "enclave.io.outputs",
         "enclave.io.hub"),
        ("enclave.io.airlock", "enclave.io.demo"),
    )),
    ("workflows", (
        ("enclave.workflows",),
    )),
    ("edges", (
        ("enclave.cli", "enclave.research"),
        ("enclave.__main__",),
    )),
    ("applications", (
        ("synthetic", "dashboards"),
    )),
)

#: Known violations that another change removes, each with its reason. The test fails when one of
#: them no longer occurs, so this list can only shrink.
PENDING: Mapping[tuple[str, str], str] = {
}


@dataclass(frozen=True, slots=True)
class Import:
    source: str  # importing module
    target: str  # imported module (the longest known module name)
    path: str  # file of the importing module, relative to the repository
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = " (inside a function)" if self.in_function else ""
        return f"{self.path}:{self.line}: {self.source} imports {self.target}{where}"


# --- the import map ---------------------------------------------------------------------------
def module_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every module of the packages by dotted name (a package by its ``__init__``)."""
    out = {}
    for package in packages:
        for f in sorted((root / package).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _known(name: str, modules: Iterable[str]) -> str | None:
    mods = set(modules)
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, source: str, path: str, modules: Iterable[str],
               is_package: bool = False) -> list[Import]:
    """The imports of own modules in ``source`` (module ``module``), wherever they are written:
    at the top, inside functions or classes, under ``if TYPE_CHECKING``."""
    mods = set(modules)
    found: list[Import] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        return [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix
                for a in node.names]

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in dict.fromkeys(_known(n, mods) for n in targets(child)):
                    if target and target != module:
                        found.append(Import(module, target, path, child.lineno, in_function))
            walk(child, in_function or isinstance(child, (ast.FunctionDef,
                                                          ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(source), False)
    return found


def import_map(root: Path = ROOT) -> list[Import]:
    files = module_files(root)
    out = []
    for name, f in files.items():
        out += imports_of(name, f.read_text(encoding="utf-8"), str(f.relative_to(root)), files,
                          f.name == "__init__.py")
    return out


# --- the rules --------------------------------------------------------------------------------
def placement(module: str, layers=LAYERS) -> tuple[str, int, str] | None:
    """(layer, tier number counted over all layers, unit) of a module; None if no unit holds it."""
    best = None
    rank = 0
    for layer, tiers in layers:
        for tier in tiers:
            for unit in tier:
                exact = unit.startswith("=")
                unit = unit.lstrip("=")
                if (module == unit or not exact and module.startswith(unit + ".")) and (
                        best is None or len(unit) > len(best[2])):
                    best = (layer, rank, unit)
            rank += 1
    return best


def cycles(edges: Iterable[Import]) -> list[list[Import]]:
    """The imports inside each strongly connected group of modules (Tarjan), one list per group."""
    graph: dict[str, list[Import]] = {}
    for e in edges:
        graph.setdefault(e.source, []).append(e)
        graph.setdefault(e.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (~200)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for e in graph[v]:
            if e.target not in index:
                visit(e.target)
                low[v] = min(low[v], low[e.target])
            elif e.target in on_stack:
                low[v] = min(low[v], index[e.target])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [sorted((e for m in g for e in graph[m] if e.target in g), key=str) for g in groups]


def violations(edges: Iterable[Import], layers=LAYERS,
               pending: Mapping[tuple[str, str], str] | None = None) -> list[str]:
    """One line per broken rule, naming file, line, importer and imported module."""
    edges = list(edges)
    pending = {} if pending is None else pending
    problems = []
    seen_pending = set()
    for module in sorted({e.source for e in edges} | {e.target for e in edges}):
        if placement(module, layers) is None:
            problems.append(f"{module} is in no layer: place it in LAYERS")
    for e in edges:
        src, dst = placement(e.source, layers), placement(e.target, layers)
        if src is None or dst is None or src[2] == dst[2]:
            continue
        if dst[1] > src[1]:
            kind = (f"upward import from layer {src[0]} to layer {dst[0]}" if src[0] != dst[0]
                    else f"upward import inside layer {src[0]} ({src[2]} sits below {dst[2]})")
        elif dst[1] == src[1]:
            kind = f"sibling import: {src[2]} and {dst[2]} are independent packages of one tier"
        else:
            continue
        if (e.source, e.target) in pending:
            seen_pending.add((e.source, e.target))
            continue
        problems.append(f"{e}: {kind}")
    for group in cycles(edges):
        names = sorted({e.source for e in group})
        problems.append(f"import cycle between {', '.join(names)}:\n    "
                        + "\n    ".join(map(str, group)))
    for key in sorted(set(pending) - seen_pending):
        problems.append(f"PENDING lists {key[0]} -> {key[1]}, which no longer breaks a rule: "
                        f"delete the entry")
    return problems


# --- the tests --------------------------------------------------------------------------------
def test_the_code_keeps_its_layers():
    problems = violations(import_map(), pending=PENDING)
    assert not problems, "\n".join(problems)


def test_every_folder_of_enclave_is_a_layer():
    """The top of ``enclave/`` shows the layers and nothing else."""
    top = {p.name for p in (ROOT / "enclave").iterdir()
           if not p.name.startswith((".", "__pycache__")) and p.name != "py.typed"}
    assert top == {"__init__.py", "__main__.py", "core", "logic", "io", "workflows", "cli",
                   "research"}


def test_imports_inside_functions_are_collected():
    src = textwrap.dedent("""
        import enclave.core.errors
        from enclave.io import db
        from . import sibling

        def later():
            from enclave.io.store import open_store
            return open_store
    """)
    mods = {"enclave.core.errors", "enclave.io", "enclave.io.db", "enclave.io.store",
            "enclave.logic.disclosure", "enclave.logic.disclosure.sibling",
            "enclave.logic.disclosure.rules"}
    found = imports_of("enclave.logic.disclosure.rules", src, "rules.py", mods)
    assert [(i.target, i.line, i.in_function) for i in found] == [
        ("enclave.core.errors", 2, False), ("enclave.io.db", 3, False),
        ("enclave.logic.disclosure.sibling", 4, False), ("enclave.io.store", 7, True)]


def _edge(source: str, target: str, line: int = 1, in_function: bool = False) -> Import:
    return Import(source, target, source.replace(".", "/") + ".py", line, in_function)


# The six kinds of violation issue 22 found, as they would read in today's layout.
SIX = {
    "the engine imports the research API (I/O -> edge)":
        [_edge("enclave.io.engine", "enclave.research.ibis_backend", 179, True)],
    "the hub configuration imports the CLI (I/O -> edge)":
        [_edge("enclave.io.hub.config", "enclave.cli", 30)],
    "the release reads the ingest's key store (sibling packages)":
        [_edge("enclave.io.release.keys", "enclave.io.ingest.linkage", 18),
         _edge("enclave.io.indicators.build", "enclave.io.ingest.linkage", 54)],
    "hashing imports the database helpers (core -> I/O)":
        [_edge("enclave.core.crypto", "enclave.io.db", 19)],
    "the disclosure evidence imports the database helpers (logic -> I/O)":
        [_edge("enclave.logic.disclosure.evidence", "enclave.io.db", 37)],
    "evaluation, tables and models import each other (cycle)":
        [_edge("enclave.io.outputs.evaluation", "enclave.io.outputs.tables", 231, True),
         _edge("enclave.io.outputs.tables", "enclave.io.outputs.evaluation", 34),
         _edge("enclave.io.outputs.models", "enclave.io.outputs.evaluation", 32),
         _edge("enclave.io.outputs.evaluation", "enclave.io.outputs.models", 231, True)],
    "an upward import hidden inside a function": [
        _edge("enclave.core.settings", "enclave.io.hub.config", 300, True)],
    "a lower tier of the core imports a higher one": [
        _edge("enclave.core.errors", "enclave.core.audit", 5)],
    "the trusted output checks import the notebook API (I/O -> edge)": [
        _edge("enclave.io.outputs.recheck", "enclave.research.api", 12)],
}
FINE = [_edge("enclave.io.outputs.tables", "enclave.logic.disclosure", 31),
        _edge("enclave.cli.up", "enclave.workflows.enclave_up", 60, True),
        _edge("enclave.io.airlock.checks", "enclave.io.outputs.ledger", 23),
        _edge("dashboards.app", "enclave.io.indicators", 3),
        _edge("enclave.io.outputs.tables", "enclave.io.outputs.sql", 20)]


def test_a_clean_map_passes():
    assert violations(FINE) == []


@pytest.mark.parametrize("kind", sorted(SIX))
def test_each_kind_of_violation_fails(kind):
    problems = violations(FINE + SIX[kind])
    assert problems, kind
    text = "\n".join(problems)
    for e in SIX[kind]:  # every offending import is named with file, line and target
        assert f"{e.path}:{e.line}: {e.source} imports {e.target}" in text
    if "cycle" in kind:
        assert "import cycle between" in text


def test_a_module_in_no_layer_fails():
    assert violations([_edge("enclave.newthing", "enclave.core.errors")]) == [
        "enclave.newthing is in no layer: place it in LAYERS"]


def test_pending_entries_must_still_occur():
    edge = _edge("enclave.io.release.keys", "enclave.io.ingest.linkage", 18)
    pending = {("enclave.io.release.keys", "enclave.io.ingest.linkage"): "moves"}
    assert violations([edge], pending=pending) == []
    assert "no longer breaks a rule" in violations([], pending=pending)[0]
