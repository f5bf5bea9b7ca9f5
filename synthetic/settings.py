"""Settings of the synthetic twin build, with the privacy bar a twin must meet to be published.

Overridable from ``<home>/settings.toml``, table ``[synthetic]``::

    [synthetic]
    min_dcr_overfitting_protection = 0.9
    max_identical_share = 0.01

(To be moved into ``enclave/settings.py`` by the lead; until then ``enclave.settings.load_settings``
does not know the ``[synthetic]`` table, so ``synthetic.cli`` strips it before handing the rest on.)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from enclave.errors import ConfigurationError


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class SynthSettings:
    seed: int = _setting(20240601, "Seed of every random choice of the build (split, fit, sample).")
    holdout_share: float = _setting(
        0.2, "Share of the release's patients held out of fitting, to measure overfitting against.")
    fit_max_patients: int = _setting(
        20_000, "Largest number of training patients the synthesizers are fitted on (a sample above).")
    size_ratio: float = _setting(
        1.0, "Synthetic patients per patient of the release.")
    sample_chunk_patients: int = _setting(
        50_000, "Synthetic patients generated (with all their rows) per chunk.")
    max_categories: int = _setting(
        500, "A text/code column with more distinct values than this is not synthesized (left null).")
    categorical_max_distinct: int = _setting(
        30, "A numeric column with at most this many distinct values is modelled as a category.")
    merge_slack: float = _setting(
        1.5, "Categorical columns are modelled as one category of value tuples when their distinct "
             "tuples are at most this many times those of the larger column (near dependence).")
    min_group_rows: int = _setting(
        20, "Fewest rows of a code group that get their own value distribution (else pooled).")
    quantile_points: int = _setting(
        101, "Most quantiles kept per value distribution (between the 0.5 and 99.5 percentiles).")
    default_distribution: str = _setting(
        "beta", "SDV GaussianCopula marginal distribution (beta, truncnorm, norm, uniform ...).")
    eval_patients: int = _setting(
        3_000, "Patients (real and synthetic) the SDMetrics quality and diagnostic reports use.")
    privacy_rows: int = _setting(
        500, "Rows per table the DCR metrics subsample (they cost rows x rows in pandas).")
    new_row_sample: int = _setting(
        250, "Synthetic rows per table SDMetrics NewRowSynthesis checks (a pandas query per row; the "
             "identical-record share is counted on all rows in DuckDB).")
    # --- the privacy bar: the build refuses to publish a twin that misses any of these ------------
    min_dcr_baseline_protection: float = _setting(
        0.5, "Lowest SDMetrics DCRBaselineProtection (any table) a published twin may have.")
    min_dcr_overfitting_protection: float = _setting(
        0.8, "Lowest SDMetrics DCROverfittingProtection against the holdout (any table).")
    min_new_row_synthesis: float = _setting(
        0.9, "Lowest SDMetrics NewRowSynthesis of the records (QIs + sensitive attributes), any table.")
    max_identical_share: float = _setting(
        0.05, "Highest share of synthetic records (QIs + sensitive attributes) identical to a training "
              "record, any table.")
    max_unique_identical_share: float = _setting(
        0.01, "Highest share of synthetic records identical to a record only one training row has "
              "(a copied individual), any table.")
    holdout_tolerance: float = _setting(
        0.1, "Where real holdout patients themselves miss an absolute bar (small record domains), the "
             "bar becomes the holdout's own score, worse by at most this much (about two standard "
             "errors of the subsampled metrics).")


def load_synth_settings(home: Path) -> SynthSettings:
    """Defaults, overridden by ``[synthetic]`` of ``<home>/settings.toml`` when present."""
    settings = SynthSettings()
    file = Path(home) / "settings.toml"
    if not file.exists():
        return settings
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8")).get("synthetic", {})
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{file}: not valid TOML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{file}: [synthetic] must be a table")
    known = {f.name for f in fields(settings)}
    changes = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigurationError(f"{file}: unknown setting 'synthetic.{key}' (known: {', '.join(sorted(known))})")
        current = getattr(settings, key)
        if isinstance(current, bool) != isinstance(value, bool) or (
                isinstance(current, (int, float)) and not isinstance(value, (int, float))) or (
                isinstance(current, str) and not isinstance(value, str)):
            raise ConfigurationError(f"{file}: 'synthetic.{key}' has the wrong type")
        changes[key] = type(current)(value)
    return replace(settings, **changes)


def iter_synth_settings() -> list[tuple[str, Any, str]]:
    """(dotted name, default, help) for every setting: the source of the table in docs/synthetic.md."""
    s = SynthSettings()
    return [(f"synthetic.{f.name}", getattr(s, f.name), f.metadata["help"]) for f in fields(s)]
