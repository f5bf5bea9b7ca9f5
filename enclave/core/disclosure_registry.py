"""The disclosure rules as a registry: one module per rule in :mod:`enclave.core.disclosure_rules`.

A rule module declares one :class:`Rule` named ``RULE``; :func:`rules` finds every module of the
package (no list to edit) and orders them by ``Rule.order``. Everything that used to name the
rules reads this registry instead:

* the fields of :class:`enclave.logic.disclosure.DisclosurePolicy` (and so the policy hash) are the
  rules' :class:`Threshold` s, and each preset takes a threshold's ``presets`` value or its
  ``default``;
* the ``[disclosure]`` settings are ``preset`` and one override per threshold with a ``setting``
  help text (:class:`enclave.core.settings.DisclosureSettings` is generated from them);
* :func:`enclave.logic.disclosure.check_cells` runs every rule's ``check`` (vectorized polars over the
  evidence frame) in rule order, after checking the evidence has the columns the rules need;
* the rules table of ``docs/disclosure.md`` is :func:`rules_table` (a test keeps it in sync).

A rule's ``check`` returns, for a statistic under a policy, zero or more :class:`Check` s: a
polars expression that is true where a cell fails, the outcome (suppress or review) and the reason
in plain words for the researcher and the stewards (the dashboards publish one wording for every
withheld cell, :data:`enclave.io.indicators.cube.WITHHELD_REASON`, whichever rule withheld it). A rule
without ``check`` is implemented where its numbers are computed (models, survival, quantile
values: ``implemented_in``) and declares here its thresholds and documentation. Rule modules
import this module and nothing else of the package, so the registry has no cycle; they import
polars inside ``check``, because the settings read every rule's declarations: a process that
only loads the settings (the JupyterHub process) does not load polars.

Evidence: the columns a rule may read are those of :mod:`enclave.logic.disclosure.evidence`
(``EVIDENCE_COLUMNS``), plus any polars expression over them that ``check`` builds itself; a rule
that needs a new per-patient aggregate adds it to the evidence engine as well.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclave.core.errors import ConfigurationError

if TYPE_CHECKING:
    import polars as pl


class Outcome(str, Enum):
    OK = "ok"
    SUPPRESS = "suppress"
    REVIEW = "review"


class Statistic(str, Enum):
    """What a cell publishes; decides which rules apply and which evidence column is the value."""

    COUNT = "count"  # rows
    PATIENTS = "patients"  # distinct patients
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    QUANTILE = "quantile"  # the value itself is computed by the caller


class Rounding(str, Enum):
    """How published counts are rounded after suppression."""

    NONE = "none"
    NEAREST = "nearest"  # to the nearest multiple of round_base (halves up)
    MIDPOINT = "midpoint"  # OpenSAFELY midpoint-b: ceil(x / b) * b - floor(b / 2); 0 stays 0


COUNTS = (Statistic.COUNT, Statistic.PATIENTS)
MAGNITUDES = (Statistic.SUM, Statistic.MEAN, Statistic.MIN, Statistic.MAX, Statistic.QUANTILE)
# statistics whose value shows every patient's value when the cell's min equals its max
SAME_VALUE = (Statistic.SUM, Statistic.MEAN, Statistic.MIN, Statistic.MAX)

#: the presets, in the order of the docs table (their notes: :mod:`enclave.logic.disclosure.policy`)
PRESET_NAMES = ("acro", "opensafely", "opensafely-midpoint6", "abs", "strict")


@dataclass(frozen=True, slots=True)
class Threshold:
    """One field of the policy. ``presets`` maps a preset name to its value where it differs
    from ``default``; ``setting`` is the help text of the ``disclosure.<name>`` override (``None``:
    no override; an override is applied when ≥ 0, so only numeric thresholds have one).
    ``convert`` turns a value as written (TOML, a record's JSON) into the field's type;
    ``problem`` says what is wrong with a value, or ``None`` when it is valid."""

    name: str
    default: Any
    help: str
    presets: Mapping[str, Any] = field(default_factory=dict)
    setting: str | None = None
    convert: Callable[[Any], Any] | None = None
    problem: Callable[[Any], str | None] | None = None

    def value_for(self, preset: str) -> Any:
        return self.presets.get(preset, self.default)


@dataclass(frozen=True, slots=True)
class Check:
    """One test of a rule over the evidence frame: true where a cell fails."""

    fails: pl.Expr
    outcome: Outcome
    reason: pl.Expr


@dataclass(frozen=True, slots=True)
class Cell:
    """What a check knows of the output besides the policy and the statistic."""

    has_sensitive: bool  # the evidence carries a sensitive column's modal counts
    label: str  # the published statistic's name in reasons (``std`` is checked as a mean)


@dataclass(frozen=True, slots=True)
class Rule:
    """A disclosure rule: its thresholds, the evidence it reads, its check and its docs rows.

    ``order`` places it among the rules (a cell's reasons are listed in rule order);
    ``evidence(policy, stat)`` names the evidence columns the check reads for that statistic
    (none when it does not apply); ``docs`` holds rows (rule, applies to, fails when) of the
    rules table of ``docs/disclosure.md``."""

    name: str
    order: int
    thresholds: tuple[Threshold, ...] = ()
    check: Callable[[Any, Statistic, Cell], list[Check]] | None = None
    evidence: Callable[[Any, Statistic], tuple[str, ...]] = lambda policy, stat: ()
    docs: tuple[tuple[str, str, str], ...] = ()
    implemented_in: str = "enclave.core.disclosure_rules"


@cache
def rules() -> tuple[Rule, ...]:
    """Every rule of :mod:`enclave.core.disclosure_rules`, in rule order (found once per process)."""
    package = "enclave.core.disclosure_rules"
    found: list[Rule] = []
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent / "disclosure_rules")]),
                       key=lambda m: m.name):
        if info.name.startswith("_"):  # helpers shared by rule modules
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        rule = getattr(module, "RULE", None)
        if not isinstance(rule, Rule):
            raise ConfigurationError(f"{package}.{info.name} declares no RULE = Rule(...)")
        found.append(rule)
    return validated(found)


def validated(found: list[Rule]) -> tuple[Rule, ...]:
    """``found`` in rule order, refused when two rules share a name or an order, or two
    thresholds a name, or a preset value names an unknown preset."""
    seen: dict[str, str] = {}
    for kind, key in (("a name", lambda r: r.name), ("an order", lambda r: r.order)):
        dup = {key(r) for r in found if [key(x) for x in found].count(key(r)) > 1}
        if dup:
            raise ConfigurationError(f"disclosure rules share {kind}: {sorted(map(str, dup))}")
    for rule in found:
        for t in rule.thresholds:
            if t.name in seen or t.name in ("name", "notes", "preset"):
                raise ConfigurationError(f"disclosure rule {rule.name}: threshold '{t.name}' is "
                                         f"also declared by {seen.get(t.name, 'the policy')}")
            seen[t.name] = rule.name
            unknown = set(t.presets) - set(PRESET_NAMES)
            if unknown:
                raise ConfigurationError(f"disclosure rule {rule.name}: threshold '{t.name}' "
                                         f"names unknown preset(s) {sorted(unknown)}")
    return tuple(sorted(found, key=lambda r: r.order))


def thresholds() -> tuple[Threshold, ...]:
    """Every rule's thresholds, in rule order: the fields of the policy."""
    return tuple(t for r in rules() for t in r.thresholds)


def overrides() -> tuple[Threshold, ...]:
    """The thresholds that a setting ``disclosure.<name>`` overrides."""
    return tuple(t for t in thresholds() if t.setting is not None)


def rules_table() -> str:
    """Markdown table of every rule's docs rows (the source of docs/disclosure.md's rules)."""
    lines = ["| rule | applies to | fails when |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for r in rules() for a, b, c in r.docs]
    return "\n".join(lines) + "\n"
