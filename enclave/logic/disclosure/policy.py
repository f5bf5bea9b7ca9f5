"""Disclosure-control policies: every threshold of the output-checking rules in one frozen value.

A :class:`DisclosurePolicy` is data, not code: its fields are the thresholds the rules of
:mod:`enclave.core.disclosure_rules` declare (:mod:`enclave.core.disclosure_registry`), with ``name`` and
``notes``; the rules read their thresholds from it, and every checked output records the policy by
:func:`policy_hash` (the hash of :func:`policy_dict`, so a new rule's threshold enters every
preset's hash, and records made before it are refused as made under another policy).
Three published rule sets and a strict variant ship as presets (see ``docs/disclosure.md``,
generated from :func:`presets_table`; each threshold's value per preset is declared by its rule):

* ``acro`` — the defaults of ACRO 1.0 (``default.yaml``): threshold 10, N-K (2, 0.9), p % 0.1,
  residual degrees of freedom 10, zeros disclosive.
* ``opensafely`` — OpenSAFELY: redact counts ≤ 7, round counts to the nearest 5;
  ``opensafely-midpoint6`` uses midpoint-6 rounding instead.
* ``abs`` — ABS DataLab output rules: rule of 10 (unweighted contributors), dominance (1, 50) and
  (2, 67) on absolute values.
* ``strict`` — ``acro``'s thresholds, but class disclosure (a published statistic showing that
  every contributor of a cell shares one value) is suppressed instead of sent to review.

Every preset publishes non-integer statistics to ``significant_digits`` (6) significant digits:
a mean is not released with the 16 digits a float carries.

Where a published rule set says nothing (extremes, quantiles, class disclosure, zeros for ABS), the
presets choose the cautious reading and say so in ``notes``.
"""

from __future__ import annotations

from dataclasses import field, fields, make_dataclass, replace
from typing import Any

from enclave.core.canonical import canonical_sha256
from enclave.core.disclosure_registry import PRESET_NAMES, Rounding, Threshold, thresholds
from enclave.core.errors import ConfigurationError

__all__ = ["ABS", "ACRO", "OPENSAFELY", "OPENSAFELY_MIDPOINT6", "PRESETS", "STRICT",
           "DisclosurePolicy", "Rounding", "get_preset", "policy_dict", "policy_from_dict",
           "policy_from_settings", "policy_hash", "presets_table"]

NOTES = {
    "acro": "ACRO 1.0 default.yaml. ACRO counts rows; here contributors are distinct patients. "
    "Extremes and quantiles (not checked by ACRO) use the same threshold of 10.",
    "opensafely": "Redact any statistic describing ≤ 7 patients (zeros included), round counts "
    "to 5. No published dominance rule; degrees of freedom as ACRO.",
    "opensafely-midpoint6": "OpenSAFELY with midpoint-6 rounding (1–6 → 3, 7–12 → 9, …; 0 stays "
    "0).",
    "abs": "ABS DataLab output rules: rule of 10 unweighted contributors; dominance (1,50) and "
    "(2,67) on absolute values. Zeros, extremes, quantiles and degrees of freedom: our cautious "
    "choice (ABS publishes no number), the same 10.",
    "strict": "ACRO's thresholds; class disclosure (a statistic showing that every patient of a "
    "cell shares one value: a 0 % / 100 % proportion, min = max, a std of 0, a quantile at the "
    "cell's min or max, a crosstab row or histogram with one non-empty cell) is suppressed, not "
    "reviewed.",
}


def _check_thresholds(self: Any) -> None:
    for t in thresholds():
        value = getattr(self, t.name)
        if t.convert is not None:
            value = t.convert(value)
            object.__setattr__(self, t.name, value)
        problem = t.problem(value) if t.problem is not None else None
        if problem:
            raise ConfigurationError(f"disclosure policy {self.name}: {t.name} {problem}")


def _field(t: Threshold) -> tuple[str, type, Any]:
    return (t.name, type(t.default), field(default=t.default, metadata={"help": t.help}))


DisclosurePolicy = make_dataclass(
    "DisclosurePolicy",
    [("name", str), *map(_field, thresholds()), ("notes", str, field(default=""))],
    namespace={"__post_init__": _check_thresholds,
               "__doc__": "Thresholds of every disclosure rule (fields: the rules' thresholds, "
               "see enclave.core.disclosure_registry). Counts of contributors are counts of distinct "
               "patients."},
    frozen=True, slots=True,
)
DisclosurePolicy.__module__ = __name__

PRESETS: dict[str, Any] = {
    name: DisclosurePolicy(name=name, notes=NOTES[name],
                           **{t.name: t.value_for(name) for t in thresholds()})
    for name in PRESET_NAMES
}
ACRO, OPENSAFELY, OPENSAFELY_MIDPOINT6, ABS, STRICT = (PRESETS[n] for n in PRESET_NAMES)


def policy_dict(policy: Any) -> dict[str, Any]:
    """The policy as JSON-ready data (what a record holds and what :func:`policy_hash` hashes)."""
    data = {f.name: getattr(policy, f.name) for f in fields(policy)}
    for name, value in data.items():
        if isinstance(value, Rounding):
            data[name] = value.value
        elif isinstance(value, tuple):
            data[name] = [list(v) if isinstance(v, tuple) else v for v in value]
    return data


def policy_from_dict(data: dict[str, Any]) -> Any:
    """The policy of :func:`policy_dict`'s data (each threshold converted back to its type)."""
    return DisclosurePolicy(**data)


def policy_hash(policy: Any) -> str:
    """SHA-256 of the policy's canonical JSON: outputs record which thresholds they passed."""
    return canonical_sha256(policy_dict(policy))


def get_preset(name: str) -> Any:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown disclosure preset '{name}' (known: {', '.join(PRESETS)})"
        ) from None


def policy_from_settings(disclosure: Any) -> Any:
    """The active policy: the preset named in ``settings.disclosure`` with its overrides applied
    (every threshold with a setting overrides the preset's when the setting is ≥ 0)."""
    policy = get_preset(disclosure.preset)
    overridable = [t.name for t in thresholds() if t.setting is not None]
    changes = {n: getattr(disclosure, n) for n in overridable if getattr(disclosure, n) >= 0}
    if changes:
        changes = {n: type(getattr(policy, n))(v) for n, v in changes.items()}
        policy = replace(policy, name=f"{policy.name}+overrides", **changes)
    return policy


def presets_table() -> str:
    """Markdown table of every preset's thresholds (the source of docs/disclosure.md's table)."""
    head = "| threshold | " + " | ".join(f"`{p}`" for p in PRESETS) + " |"
    lines = [head, "|---|" + "---|" * len(PRESETS)]

    def show(v: Any) -> str:
        if isinstance(v, Rounding):
            return v.value
        if isinstance(v, tuple):
            return ", ".join(f"({n}, {k:g})" for n, k in v) or "—"
        return f"{v:g}" if isinstance(v, float) else str(v)

    for t in thresholds():
        lines.append(f"| `{t.name}` | "
                     + " | ".join(show(getattr(p, t.name)) for p in PRESETS.values()) + " |")
    lines.append("| hash (first 12) | " + " | ".join(policy_hash(p)[:12] for p in PRESETS.values())
                 + " |")
    notes = [f"- `{p.name}`: {p.notes}" for p in PRESETS.values()]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
