"""The enclave's one typed settings object.

Paths, limits and thresholds live here, never as literals elsewhere. Every setting carries a help
text (``docs/settings.md`` is generated from these, and a test fails when one is undocumented).

Resolution order: defaults < ``<home>/settings.toml`` < environment (``ENCLAVE_HOME`` only) <
explicit ``--home`` on the command line.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from enclave.errors import ConfigurationError

#: settings.toml tables owned by plug-in packages (``synthetic``: see docs/synthetic.md)
PLUGIN_TABLES = ("synthetic",)

DEFAULT_HOME = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "enclave"


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class IngestSettings:
    chunk_rows: int = _setting(
        2_000_000, "Rows parsed per chunk when ingesting large delimited files."
    )
    max_reject_share: float = _setting(
        1.0,
        "Largest share of a file's rows that may be rejected before the whole ingest is refused "
        "(1.0 = never refuse; rejected rows are always quarantined either way).",
    )
    progress: bool = _setting(True, "Show progress bars on long runs (off when not on a terminal).")


@dataclass(frozen=True, slots=True)
class ReleaseSettings:
    risk_threshold_public: float = _setting(
        0.05, "Highest re-identification risk a release for public sharing may have (GB/T 37964)."
    )
    risk_threshold_controlled: float = _setting(
        0.2, "Highest re-identification risk for controlled sharing (GB/T 37964)."
    )
    risk_threshold_enclave: float = _setting(
        1 / 3, "Highest re-identification risk for use inside the enclave (GB/T 37964)."
    )
    max_suppression: float = _setting(
        0.05, "Default largest share of patients the anonymization may suppress."
    )
    date_shift_days: int = _setting(
        180, "Per-patient date shift is drawn from [-N, N] days (never 0), one offset per patient."
    )
    max_lattice_nodes: int = _setting(
        5_000_000, "Largest generalization lattice the optimal search will explore."
    )


@dataclass(frozen=True, slots=True)
class DisclosureSettings:
    preset: str = _setting(
        "acro",
        "Disclosure-control preset for checked outputs: acro, opensafely, opensafely-midpoint6 or "
        "abs (thresholds in docs/disclosure.md).",
    )
    min_patients: int = _setting(-1, "Override: fewest distinct patients per cell (-1 = preset's).")
    min_values: int = _setting(
        -1, "Override: fewest patients with a non-missing value behind a statistic (-1 = preset's)."
    )
    p_ratio: float = _setting(-1.0, "Override: p of the p % dominance rule, 0 = off (-1 = preset's).")
    min_dof: int = _setting(-1, "Override: fewest residual degrees of freedom (-1 = preset's).")
    extremes_min_patients: int = _setting(
        -1, "Override: fewest patients sharing a published min/max (-1 = preset's)."
    )
    quantile_min_values: int = _setting(
        -1, "Override: fewest patients with a value behind a quantile (-1 = preset's)."
    )
    round_base: int = _setting(-1, "Override: base of count rounding (-1 = preset's).")


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path = _setting(DEFAULT_HOME, "The enclave's data root; every zone lives under it.")
    ingest: IngestSettings = _setting(IngestSettings(), "Ingest limits.")
    release: ReleaseSettings = _setting(ReleaseSettings(), "Release thresholds and defaults.")
    disclosure: DisclosureSettings = _setting(
        DisclosureSettings(), "Output-checking (statistical disclosure control) policy."
    )

    # --- zones, derived from home -------------------------------------------------------
    @property
    def restricted_dir(self) -> Path:
        """Restricted zone (0700): raw extracts, identified store, keys, person index."""
        return self.home / "restricted"

    @property
    def store_path(self) -> Path:
        return self.restricted_dir / "cdm.duckdb"

    @property
    def keys_dir(self) -> Path:
        return self.restricted_dir / "keys"

    @property
    def identity_path(self) -> Path:
        """Person index: link keys ↔ raw identifiers. Never leaves the restricted zone."""
        return self.restricted_dir / "identity.duckdb"

    @property
    def control_path(self) -> Path:
        """The control database: projects, release registry (no patient data)."""
        return self.home / "control" / "enclave.duckdb"

    @property
    def releases_dir(self) -> Path:
        """Release zone: desensitized/<project>/<version>/, synthetic/<version>/, indicators/."""
        return self.home / "releases"

    @property
    def audit_dir(self) -> Path:
        return self.home / "audit"


def _merge(obj: Any, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigurationError(f"{where}: unknown setting '{key}' (known: {', '.join(known)})")
        current = getattr(obj, key)
        if hasattr(current, "__dataclass_fields__"):
            if not isinstance(value, dict):
                raise ConfigurationError(f"{where}: '{key}' must be a table")
            changes[key] = _merge(current, value, f"{where}.{key}")
        elif isinstance(current, Path):
            changes[key] = Path(value)
        else:
            if isinstance(current, bool) != isinstance(value, bool) or (
                isinstance(current, (int, float)) and not isinstance(value, (int, float))
            ):
                raise ConfigurationError(f"{where}: '{key}' has the wrong type")
            changes[key] = type(current)(value)
    return replace(obj, **changes)


def load_settings(home: str | Path | None = None) -> Settings:
    """Settings for the enclave rooted at ``home`` (or ``$ENCLAVE_HOME``, or the default)."""
    root = Path(home or os.environ.get("ENCLAVE_HOME") or DEFAULT_HOME).expanduser().resolve()
    settings = Settings(home=root)
    file = root / "settings.toml"
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{file}: not valid TOML ({exc})") from None
        data.pop("home", None)
        for table in PLUGIN_TABLES:  # read by their plug-in package, not here
            data.pop(table, None)
        settings = _merge(settings, data, str(file))
    return settings


def iter_settings(obj: Any = None, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted name, default, help) for every setting: the source of docs/settings.md."""
    obj = obj if obj is not None else Settings()
    rows = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if hasattr(value, "__dataclass_fields__"):
            rows.extend(iter_settings(value, name + "."))
        else:
            rows.append((name, value, f.metadata.get("help", "")))
    return rows
