"""Move the enclave's modules into the folders of its layers, and rewrite every reference to them.

    python tests/tools/relayer.py            # move and rewrite (git mv; re-runnable)
    python tests/tools/relayer.py --dry-run  # say what would move, change nothing

:data:`MOVES` maps old module names to new ones. A name covers everything below it, so a module
added later under a moved package (``enclave/disclosure/new_rule.py``) moves with its package, and
an entry whose module does not exist is skipped. The longest matching name wins
(``enclave.release.manifest`` goes to the core, the rest of ``enclave.release`` to ``io``).

After the moves, every tracked text file is rewritten: dotted names (imports, ``-m`` commands,
``"enclave.hub.auth.EnclaveAuthenticator"`` strings, logger names, entry points, docs) and paths
(``enclave/hub/config.py``); ``from enclave import db, audit`` is split where its names now live in
different packages. Running it again finds nothing to move and nothing to rewrite (idempotent).
Last it lists what it could not place: entries left at the top of ``enclave/`` and references to
old names it did not rewrite (e.g. a path built as ``Path("enclave") / "hub"``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: old module name -> new module name (bottom layer first; order does not matter otherwise)
MOVES: dict[str, str] = {
    # core: plain types and what every zone shares
    "enclave.errors": "enclave.core.errors",
    "enclave.settings": "enclave.core.settings",
    "enclave.model": "enclave.core.model",
    "enclave.crypto": "enclave.core.crypto",
    "enclave.audit": "enclave.core.audit",
    "enclave.release.manifest": "enclave.core.manifest",
    "enclave.publish": "enclave.core.publish",
    "enclave.canonical": "enclave.core.canonical",
    "enclave.keystore": "enclave.core.keystore",
    # the disclosure rules' declarations (thresholds, presets, wording, checks): the settings'
    # [disclosure] section is generated from them, so they sit below the settings
    "enclave.disclosure.registry": "enclave.core.disclosure_registry",
    "enclave.disclosure.rules": "enclave.core.disclosure_rules",
    # logic: pure computations of the field
    "enclave.codes": "enclave.logic.codes",
    "enclave.deid": "enclave.logic.deid",
    "enclave.disclosure": "enclave.logic.disclosure",
    # io: everything that reads or writes data
    "enclave.db": "enclave.io.db",
    "enclave.research.ibis_backend": "enclave.io.ibis_backend",
    "enclave.envlock": "enclave.io.envlock",
    "enclave.relock": "enclave.io.relock",
    "enclave.store": "enclave.io.store",
    "enclave.engine": "enclave.io.engine",
    "enclave.projects": "enclave.io.projects",
    "enclave.ingest": "enclave.io.ingest",
    "enclave.release": "enclave.io.release",
    "enclave.indicators": "enclave.io.indicators",
    "enclave.outputs": "enclave.io.outputs",
    "enclave.hub": "enclave.io.hub",
    "enclave.airlock": "enclave.io.airlock",
    "enclave.demo": "enclave.io.demo",
    # enclave.workflows, enclave.cli and enclave.research stay where they are
}

#: the packages of the layers, created when missing, with their docstrings
LAYER_PACKAGES: dict[str, str] = {
    "enclave.core": "The core layer: plain types (errors, settings, the data model) and what every "
                    "zone shares\n(hashing, the audit trail, the publication of versioned "
                    "folders). Imports no other layer.\n",
    "enclave.logic": "The pure-logic layer: code systems, de-identification and disclosure "
                     "control, computed on\nframes and expressions handed in. Imports only the "
                     "core.\n",
    "enclave.io": "The I/O layer: everything that reads or writes data (DuckDB, the store, the "
                  "engine, ingest,\nreleases, indicators, output checks, the airlock, the hub). "
                  "Imports the core and the logic;\nits packages' own order is the import-rule "
                  "test's (tests/unit/test_layers.py).\n",
}

#: what the folders of enclave/ should be once done
LAYER_FOLDERS = {"__init__.py", "__main__.py", "core", "logic", "io", "workflows", "cli",
                 "research"}
#: files whose old names are deliberate (the mapping itself, the import-rule test's examples)
SKIP = {"tests/tools/relayer.py", "tests/unit/test_layers.py", "tests/unit/test_relayer.py"}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".ipynb", ".txt", ".cfg", ".ini", ".yaml", ".yml",
                 ".json", ".sh", ".service", ".j2", ".html", ".rst", ".lock", ""}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def path_of(module: str) -> Path | None:
    """The file or folder of a module (None if it does not exist)."""
    base = ROOT.joinpath(*module.split("."))
    if base.is_dir():
        return base
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def new_name(name: str) -> str:
    """Where dotted name ``name`` (a module or anything below one) lives after the moves."""
    for old in sorted(MOVES, key=len, reverse=True):
        if name == old or name.startswith(old + "."):
            return MOVES[old] + name[len(old):]
    return name


# --- moving -----------------------------------------------------------------------------------
def ensure_layer_packages(dry: bool) -> None:
    for pkg, doc in LAYER_PACKAGES.items():
        init = ROOT.joinpath(*pkg.split("."), "__init__.py")
        if not init.exists():
            print(f"create {init.relative_to(ROOT)}")
            if not dry:
                init.parent.mkdir(parents=True, exist_ok=True)
                init.write_text(f'"""{doc}"""\n', encoding="utf-8")
                git("add", str(init.relative_to(ROOT)))


def tracked_under(folder: Path) -> list[Path]:
    out = git("ls-files", "-z", "--", str(folder.relative_to(ROOT)))
    return [ROOT / p for p in out.split("\0") if p]


FILE_PARENTS = re.compile(r"(Path\(__file__\)(?:\.resolve\(\))?\.parents\[)(\d+)(\])")


def fix_parents(old: Path, new: Path, unit: Path) -> None:
    """After ``old`` moved to ``new`` with its unit (the package folder or the module that moved
    as one): a ``Path(__file__).parents[k]`` that points above the unit (the repository, say)
    still points there."""
    old_parts, unit_parts = old.relative_to(ROOT).parts, unit.relative_to(ROOT).parts
    shift = len(new.relative_to(ROOT).parts) - len(old_parts)

    def moved(m: re.Match) -> str:
        k = int(m.group(2))
        inside = len(old_parts) - 1 - k >= len(unit_parts) and unit.suffix != ".py"
        return m.group(0) if inside or not shift else f"{m.group(1)}{k + shift}{m.group(3)}"

    text = new.read_text(encoding="utf-8")
    fixed = FILE_PARENTS.sub(moved, text)
    if fixed != text:
        print(f"fix Path(__file__).parents in {new.relative_to(ROOT)}")
        new.write_text(fixed, encoding="utf-8")


def git_mv(src: Path, dst: Path, dry: bool, unit: Path | None = None) -> None:
    print(f"git mv {src.relative_to(ROOT)} {dst.relative_to(ROOT)}")
    if dry:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    git("mv", str(src.relative_to(ROOT)), str(dst.relative_to(ROOT)))
    unit = unit or src
    for new in ([dst] if dst.is_file() else sorted(dst.rglob("*.py"))):
        if new.suffix == ".py":
            fix_parents(src / new.relative_to(dst) if dst.is_dir() else src, new, unit)


def prune(folder: Path, dry: bool) -> None:
    """Remove what git left of a moved folder: caches and empty folders."""
    if dry or not folder.is_dir():
        return
    for cache in sorted(folder.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache, ignore_errors=True)
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True) + [folder]:
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def move_all(dry: bool) -> int:
    ensure_layer_packages(dry)
    moved = 0
    for old in sorted(MOVES, key=len, reverse=True):  # modules leaving a package go first
        src, dst = path_of(old), path_of(MOVES[old])
        if src is None:
            continue
        target = ROOT.joinpath(*MOVES[old].split("."))
        if src.is_file():
            if dst is not None:
                sys.exit(f"both {src.relative_to(ROOT)} and {dst.relative_to(ROOT)} exist: "
                         f"merge them by hand")
            git_mv(src, target.with_suffix(".py"), dry)
            moved += 1
            continue
        files = tracked_under(src)
        if dst is None and files:
            git_mv(src, target, dry)
            moved += 1
        else:  # the package moved before; files added since then follow it one by one
            for f in files:
                to = target / f.relative_to(src)
                if to.exists():
                    sys.exit(f"both {f.relative_to(ROOT)} and {to.relative_to(ROOT)} exist: "
                             f"merge them by hand")
                git_mv(f, to, dry, unit=src)
                moved += 1
        prune(src, dry)
    return moved


# --- rewriting --------------------------------------------------------------------------------
_OLD = sorted(MOVES, key=len, reverse=True)
DOTTED = re.compile(r"(?<![\w.])(" + "|".join(re.escape(o) for o in _OLD) + r")(?![\w])")


def _path(module: str) -> str:
    return module.replace(".", "/")


def _path_pattern() -> re.Pattern:
    alts = []
    for old in _OLD:
        alts.append(re.escape(_path(old)) + r"\.py")
        alts.append(re.escape(_path(old)) + r"(?![\w.-])")
    return re.compile(r"(?<![\w/.-])(" + "|".join(alts) + ")")


PATHS = _path_pattern()
FROM_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*)from[ \t]+(?P<module>enclave(?:\.\w+)*)[ \t]+import[ \t]+"
    r"(?P<names>\([^)]*\)|[^\n#;]*[^\s#;])", re.MULTILINE)


def _rewrite_path(m: re.Match) -> str:
    text = m.group(0)
    if text.endswith(".py"):
        return _path(new_name(text[:-3].replace("/", "."))) + ".py"
    return _path(new_name(text.replace("/", ".")))


def _rewrite_from(m: re.Match) -> str:
    """``from P import a, b`` where ``P.a`` moved elsewhere than ``P``: one statement per new
    package. Other statements are left to the dotted-name rewrite."""
    module, raw = m.group("module"), m.group("names")
    names = [n.strip() for n in raw.strip("()").replace("\n", " ").split(",") if n.strip()]
    groups: dict[str, list[str]] = {}
    split = False
    for entry in names:
        name = entry.split()[0]
        moved = new_name(f"{module}.{name}")
        parent, _, leaf = moved.rpartition(".")
        if moved != f"{new_name(module)}.{name}":
            split = True
        groups.setdefault(parent if leaf == name else new_name(module), []).append(entry)
    if not split:
        return m.group(0)
    indent = m.group("indent")
    lines = []
    for parent, entries in groups.items():
        stmt = f"{indent}from {parent} import {', '.join(entries)}"
        if len(stmt) > 100:
            inner = "".join(f"{indent}    {e},\n" for e in entries)
            stmt = f"{indent}from {parent} import (\n{inner}{indent})"
        lines.append(stmt)
    return "\n".join(lines)


_TOP = sorted({o.split(".")[1] for o in MOVES}, key=len, reverse=True)
PARTS = re.compile(r"""(?P<q>["'])enclave(?P=q)(?P<sep>\s*[/,]\s*)(?P<q2>["'])(?P<name>"""
                   + "|".join(_TOP) + r""")(?P<py>\.py)?(?P=q2)""")


def _rewrite_parts(m: re.Match) -> str:
    """``"enclave" / "hub"`` (a path built from parts) -> ``"enclave" / "io" / "hub"``."""
    new = new_name(f"enclave.{m.group('name')}").split(".")
    if len(new) == 2:
        return m.group(0)
    q, sep = m.group("q"), m.group("sep")
    new[-1] += m.group("py") or ""
    return sep.join(f"{q}{part}{q}" for part in new)


def rewrite(text: str) -> str:
    text = FROM_IMPORT.sub(_rewrite_from, text)
    text = DOTTED.sub(lambda m: new_name(m.group(1)), text)
    text = PARTS.sub(_rewrite_parts, text)
    return PATHS.sub(_rewrite_path, text)


def text_files() -> list[Path]:
    out = []
    for rel in git("ls-files", "-z").split("\0"):
        if not rel or rel in SKIP:
            continue
        p = ROOT / rel
        if p.is_file() and p.suffix in TEXT_SUFFIXES and not p.is_symlink():
            out.append(p)
    return out


def sort_imports(files: list[Path]) -> None:
    """Re-sort the import blocks the rewrite changed (ruff's isort rule, the project's settings):
    ``enclave.core`` now sorts before ``enclave.io``."""
    ruff = Path(sys.executable).with_name("ruff")
    cmd = [str(ruff)] if ruff.exists() else ([shutil.which("ruff")] if shutil.which("ruff") else [])
    if not files:
        return
    if not cmd:
        print("ruff not found: import blocks left unsorted (run ruff check --select I --fix)")
        return
    subprocess.run([*cmd, "check", "--quiet", "--select", "I001", "--fix", "--exit-zero",
                    *map(str, files)], cwd=ROOT, check=True)


def rewrite_all(dry: bool) -> int:
    changed = 0
    python = []
    for p in text_files():
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        new = rewrite(text)
        if new != text:
            changed += 1
            print(f"rewrite {p.relative_to(ROOT)}")
            if not dry:
                p.write_text(new, encoding="utf-8")
                if p.suffix == ".py":
                    python.append(p)
    if not dry:
        sort_imports(python)
    return changed


def leftovers() -> list[str]:
    """What is not placed: entries at the top of enclave/ outside the layer folders, and old
    names that remain in tracked files (a path built from parts, a name in a comment split by a
    line break ...)."""
    out = [f"enclave/{p.name} is outside the layer folders: add it to MOVES"
           for p in sorted((ROOT / "enclave").iterdir())
           if p.name not in LAYER_FOLDERS and p.name != "__pycache__"]
    words = sorted({o.rpartition(".")[2] for o in MOVES} - {"model", "db", "store", "demo"})
    quoted = re.compile(r"""["']enclave["']\s*(?:/|,)\s*["'](""" + "|".join(words)
                        + r""")(?:\.py)?["']""")
    for p in text_files():
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if DOTTED.search(line) or PATHS.search(line) or quoted.search(line):
                out.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()[:120]}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    args = ap.parse_args(argv)
    moved = move_all(args.dry_run)
    changed = rewrite_all(args.dry_run)
    print(f"{moved} moves, {changed} files rewritten")
    rest = [] if args.dry_run else leftovers()
    for line in rest:
        print(f"not placed: {line}")
    return 1 if rest else 0


if __name__ == "__main__":
    sys.exit(main())
