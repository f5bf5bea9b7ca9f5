"""Release policies: what a desensitized release must satisfy, per sharing form (GB/T 37964).

A policy is data (TOML), hashed into the release manifest. Defaults per sharing form:

| form        | risk threshold | default k | suppression |
|-------------|----------------|-----------|-------------|
| public      | 0.05           | 20        | settings.release.max_suppression |
| controlled  | 0.2            | 5         | 〃 |
| enclave     | 1/3            | 3         | 〃 |

Patient-level quasi-identifiers (the release's ``person`` table carries their generalized values
instead of birth date and residence):

``age``     age in whole years at the reference year, generalized 1 → 5 → 10 → 20 years → ``*``
``sex``     M / F / U → ``*``
``region``  GB/T 2260 county code of residence → city → province → ``*``

Optional ``l_diversity`` / ``t_closeness`` apply to the patient's ``main_condition`` (the standard
concept of the patient's most frequent diagnosis). Example policy file::

    k = 5
    max_suppression = 0.05
    quasi_identifiers = ["age", "sex", "region"]
    [l_diversity]
    l = 3
    variant = "distinct"      # distinct | entropy | recursive (with c = ...)
    [t_closeness]
    t = 0.2
    date_granularity = "day"  # or "month" / "year": truncate released dates after the shift
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from enclave.core.canonical import canonical_sha256
from enclave.core.errors import ConfigurationError
from enclave.core.model.project import SharingForm
from enclave.core.settings import Settings

QUASI_IDENTIFIERS = ("age", "sex", "region")
SENSITIVE_ATTRIBUTE = "main_condition"
L_VARIANTS = ("distinct", "entropy", "recursive")
DATE_GRANULARITIES = ("day", "month", "year")


@dataclass(frozen=True, slots=True)
class LDiversityRule:
    l: int
    variant: str = "distinct"
    c: float = 3.0


@dataclass(frozen=True, slots=True)
class TClosenessRule:
    t: float


@dataclass(frozen=True, slots=True)
class ReleasePolicy:
    sharing_form: str
    risk_threshold: float
    k: int
    max_suppression: float
    quasi_identifiers: tuple[str, ...] = QUASI_IDENTIFIERS
    l_diversity: LDiversityRule | None = None
    t_closeness: TClosenessRule | None = None
    date_shift_days: int = 180
    #: "day" keeps shifted dates exact (intervals preserved); "month" / "year" truncate every
    #: released date to the first day of its month / year after the shift (coarser, intervals lost)
    date_granularity: str = "day"
    reference_year: int | None = None  # age is computed at this year (default: the build's year)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def sha256(self) -> str:
        # spaced: the hashes stored in published manifests keep their values
        return canonical_sha256(self.as_dict(), spaced=True)


def default_policy(form: SharingForm, settings: Settings) -> ReleasePolicy:
    threshold = form.risk_threshold(settings)
    return ReleasePolicy(
        sharing_form=str(form),
        risk_threshold=threshold,
        k=max(2, math.ceil(1 / threshold - 1e-9)),
        max_suppression=settings.release.max_suppression,
        date_shift_days=settings.release.date_shift_days,
    )


def load_policy(path: Path, form: SharingForm, settings: Settings) -> ReleasePolicy:
    """A policy file over the defaults of ``form``. Unknown keys are refused by name."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read policy {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML ({exc})") from None
    return apply_overrides(default_policy(form, settings), data, str(path))


def apply_overrides(policy: ReleasePolicy, data: dict, source: str) -> ReleasePolicy:
    known = {"k", "max_suppression", "quasi_identifiers", "l_diversity", "t_closeness",
             "date_shift_days", "date_granularity", "reference_year"}
    unknown = set(data) - known
    if unknown:
        raise ConfigurationError(f"{source}: unknown policy key(s) {sorted(unknown)} (known: {sorted(known)})")
    changes: dict = {}
    if "k" in data:
        if not isinstance(data["k"], int) or data["k"] < 1:
            raise ConfigurationError(f"{source}: k must be a whole number >= 1")
        changes["k"] = data["k"]
    if "max_suppression" in data:
        v = data["max_suppression"]
        if not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ConfigurationError(f"{source}: max_suppression must be a share between 0 and 1")
        changes["max_suppression"] = float(v)
    if "quasi_identifiers" in data:
        qis = tuple(data["quasi_identifiers"])
        bad = [q for q in qis if q not in QUASI_IDENTIFIERS]
        if bad or not qis:
            raise ConfigurationError(
                f"{source}: quasi_identifiers must be a non-empty subset of {list(QUASI_IDENTIFIERS)}")
        changes["quasi_identifiers"] = qis
    if "l_diversity" in data:
        ld = dict(data["l_diversity"])
        variant = ld.get("variant", "distinct")
        if variant not in L_VARIANTS or int(ld.get("l", 0)) < 2:
            raise ConfigurationError(f"{source}: l_diversity needs l >= 2 and variant in {L_VARIANTS}")
        changes["l_diversity"] = LDiversityRule(int(ld["l"]), variant, float(ld.get("c", 3.0)))
    if "t_closeness" in data:
        t = float(dict(data["t_closeness"]).get("t", -1))
        if not 0 < t <= 1:
            raise ConfigurationError(f"{source}: t_closeness needs 0 < t <= 1")
        changes["t_closeness"] = TClosenessRule(t)
    if "date_shift_days" in data:
        if not isinstance(data["date_shift_days"], int) or data["date_shift_days"] < 1:
            raise ConfigurationError(f"{source}: date_shift_days must be a whole number >= 1")
        changes["date_shift_days"] = data["date_shift_days"]
    if "date_granularity" in data:
        if data["date_granularity"] not in DATE_GRANULARITIES:
            raise ConfigurationError(f"{source}: date_granularity must be one of {DATE_GRANULARITIES}")
        changes["date_granularity"] = data["date_granularity"]
    if "reference_year" in data:
        changes["reference_year"] = int(data["reference_year"])
    return replace(policy, **changes)
