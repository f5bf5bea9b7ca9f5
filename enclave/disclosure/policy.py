"""Disclosure-control policies: every threshold of the output-checking rules in one frozen value.

A :class:`DisclosurePolicy` is data, not code: the rules in :mod:`enclave.disclosure.rules` read
their thresholds from it, and every checked output records the policy by :func:`policy_hash`.
Three published rule sets and a strict variant ship as presets (see ``docs/disclosure.md``,
generated from :func:`presets_table`):

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

from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from typing import Any

from enclave.canonical import canonical_sha256
from enclave.errors import ConfigurationError


class Rounding(str, Enum):
    """How published counts are rounded after suppression."""

    NONE = "none"
    NEAREST = "nearest"  # to the nearest multiple of round_base (halves up)
    MIDPOINT = "midpoint"  # OpenSAFELY midpoint-b: ceil(x / b) * b - floor(b / 2); 0 stays 0


@dataclass(frozen=True, slots=True)
class DisclosurePolicy:
    """Thresholds of every disclosure rule. Counts of contributors are counts of distinct patients."""

    name: str
    min_patients: int = 10  # a cell needs at least this many distinct patients
    min_values: int = 10  # a magnitude statistic needs this many patients with a non-missing value
    nk_rules: tuple[tuple[int, float], ...] = ((2, 0.9),)  # (n, k): top n patients ≤ k of total
    p_ratio: float = 0.1  # p % rule; 0 switches it off
    min_dof: int = 10  # residual degrees of freedom of a model
    zeros_disclosive: bool = True  # an empty cell is suppressed
    class_disclosure: bool = True  # flag cells whose statistic shows every patient shares a value
    class_disclosure_fails: bool = False  # class disclosure is suppressed (fail), not review
    extremes_min_patients: int = 10  # a min/max must be shared by this many patients
    quantile_min_values: int = 10  # a quantile needs this many patients with a value
    rounding: Rounding = Rounding.NONE
    round_base: int = 5
    # published non-integer statistics (means, quantiles, coefficients, survival …) are rounded to
    # this many significant digits before they are recorded, checked by the airlock and released;
    # 0 publishes them as computed
    significant_digits: int = 6
    notes: str = ""

    def __post_init__(self) -> None:
        for name in ("min_patients", "min_values", "min_dof", "extremes_min_patients",
                     "quantile_min_values"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"disclosure policy {self.name}: {name} must be ≥ 0")
        for n, k in self.nk_rules:
            if n not in (1, 2) or not 0 < k <= 1:
                raise ConfigurationError(
                    f"disclosure policy {self.name}: N-K rule ({n}, {k}) needs n in (1, 2) and "
                    "0 < k ≤ 1"
                )
        if not 0 <= self.p_ratio < 1:
            raise ConfigurationError(f"disclosure policy {self.name}: p_ratio must be in [0, 1)")
        if self.round_base < 1:
            raise ConfigurationError(f"disclosure policy {self.name}: round_base must be ≥ 1")
        if not 0 <= self.significant_digits <= 17:
            raise ConfigurationError(f"disclosure policy {self.name}: significant_digits must be "
                                     "in 0 … 17 (0: unrounded)")
        object.__setattr__(self, "rounding", Rounding(self.rounding))


ACRO = DisclosurePolicy(
    name="acro",
    notes="ACRO 1.0 default.yaml. ACRO counts rows; here contributors are distinct patients. "
    "Extremes and quantiles (not checked by ACRO) use the same threshold of 10.",
)
OPENSAFELY = DisclosurePolicy(
    name="opensafely",
    min_patients=8, min_values=8, nk_rules=(), p_ratio=0.0, extremes_min_patients=8,
    quantile_min_values=8, rounding=Rounding.NEAREST, round_base=5,
    notes="Redact any statistic describing ≤ 7 patients (zeros included), round counts to 5. "
    "No published dominance rule; degrees of freedom as ACRO.",
)
OPENSAFELY_MIDPOINT6 = replace(
    OPENSAFELY, name="opensafely-midpoint6", rounding=Rounding.MIDPOINT, round_base=6,
    notes="OpenSAFELY with midpoint-6 rounding (1–6 → 3, 7–12 → 9, …; 0 stays 0).",
)
ABS = DisclosurePolicy(
    name="abs",
    nk_rules=((1, 0.5), (2, 0.67)), p_ratio=0.0,
    notes="ABS DataLab output rules: rule of 10 unweighted contributors; dominance (1,50) and "
    "(2,67) on absolute values. Zeros, extremes, quantiles and degrees of freedom: our cautious "
    "choice (ABS publishes no number), the same 10.",
)

STRICT = replace(
    ACRO, name="strict", class_disclosure_fails=True,
    notes="ACRO's thresholds; class disclosure (a statistic showing that every patient of a cell "
    "shares one value: a 0 % / 100 % proportion, min = max, a std of 0, a quantile at the cell's "
    "min or max, a crosstab row or histogram with one non-empty cell) is suppressed, not reviewed.",
)

PRESETS: dict[str, DisclosurePolicy] = {
    p.name: p for p in (ACRO, OPENSAFELY, OPENSAFELY_MIDPOINT6, ABS, STRICT)
}

# Settings fields that override a preset's threshold when ≥ 0 (negative = keep the preset's).
OVERRIDABLE = ("min_patients", "min_values", "p_ratio", "min_dof", "extremes_min_patients",
               "quantile_min_values", "round_base", "significant_digits")


def policy_dict(policy: DisclosurePolicy) -> dict:
    """The policy as JSON data (what output records hold and :func:`policy_hash` hashes)."""
    data = asdict(policy)
    data["rounding"] = policy.rounding.value
    data["nk_rules"] = [list(r) for r in policy.nk_rules]
    return data


def policy_hash(policy: DisclosurePolicy) -> str:
    """SHA-256 of the policy's canonical JSON: outputs record which thresholds they passed."""
    return canonical_sha256(policy_dict(policy))


def get_preset(name: str) -> DisclosurePolicy:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown disclosure preset '{name}' (known: {', '.join(PRESETS)})"
        ) from None


def policy_from_settings(disclosure: Any) -> DisclosurePolicy:
    """The active policy: the preset named in ``settings.disclosure`` with its overrides applied."""
    policy = get_preset(disclosure.preset)
    changes = {n: getattr(disclosure, n) for n in OVERRIDABLE if getattr(disclosure, n) >= 0}
    if changes:
        changes = {n: type(getattr(policy, n))(v) for n, v in changes.items()}
        policy = replace(policy, name=f"{policy.name}+overrides", **changes)
    return policy


def presets_table() -> str:
    """Markdown table of every preset's thresholds (the source of docs/disclosure.md's table)."""
    names = [f.name for f in fields(DisclosurePolicy) if f.name not in ("name", "notes")]
    head = "| threshold | " + " | ".join(f"`{p}`" for p in PRESETS) + " |"
    lines = [head, "|---|" + "---|" * len(PRESETS)]

    def show(v: Any) -> str:
        if isinstance(v, Rounding):
            return v.value
        if isinstance(v, tuple):
            return ", ".join(f"({n}, {k:g})" for n, k in v) or "—"
        return f"{v:g}" if isinstance(v, float) else str(v)

    for name in names:
        lines.append(f"| `{name}` | " + " | ".join(show(getattr(p, name)) for p in PRESETS.values())
                     + " |")
    lines.append("| hash (first 12) | " + " | ".join(policy_hash(p)[:12] for p in PRESETS.values())
                 + " |")
    notes = [f"- `{p.name}`: {p.notes}" for p in PRESETS.values()]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
