"""The DuckDB privacy metrics equal SDMetrics' on the same rows (synthetic.privacy)."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest
from sdmetrics.single_table import DCROverfittingProtection, NewRowSynthesis
from sdmetrics.single_table.privacy.dcr_utils import calculate_dcr

from synthetic import privacy

KINDS = {"sex": "categorical", "code": "categorical", "age": "numerical", "value": "numerical",
         "day": "numerical", "flat": "numerical"}


def frame(rng: np.random.Generator, n: int) -> pl.DataFrame:
    value = rng.normal(5, 2, n).round(1)
    value[rng.random(n) < 0.1] = np.nan
    return pl.DataFrame({
        "sex": rng.choice(["F", "M"], n),
        "code": pl.Series(rng.integers(1, 6, n)).cast(pl.Int64),
        "age": rng.integers(0, 90, n).astype(float),
        "value": pl.Series(value, nan_to_null=True),
        "day": rng.integers(19000, 19100, n).astype(float),
        "flat": np.full(n, 3.0),
    }).with_columns(pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("code"))
                    .alias("code"))


def meta() -> dict:
    return {"tables": {"t": {"columns": {c: {"sdtype": k} for c, k in KINDS.items()}}}}


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(3)
    train, holdout, syn = frame(rng, 300), frame(rng, 300), frame(rng, 200)
    syn = pl.concat([syn.head(150), train.head(50)])  # some copied rows
    return train, holdout, syn


def test_dcr_equals_sdmetrics(rows):
    train, _, syn = rows
    ours = privacy.dcr(syn, train, KINDS)
    theirs = calculate_dcr(syn.to_pandas(), train.to_pandas(), meta()["tables"]["t"]).to_numpy()
    assert ours.shape == theirs.shape
    assert np.allclose(ours, theirs)
    assert (ours[150:] == 0).all() and (ours[:150] > 0).mean() > 0.5


def test_overfitting_protection_equals_sdmetrics(rows):
    train, holdout, syn = rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = DCROverfittingProtection.compute(train.to_pandas(), syn.to_pandas(), holdout.to_pandas(),
                                                  meta(), "t")
    assert privacy.dcr_overfitting_protection(train, syn, holdout, KINDS) == pytest.approx(theirs)


def test_new_row_synthesis_equals_sdmetrics(rows):
    train, _, syn = rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = NewRowSynthesis.compute(train.to_pandas(), syn.to_pandas(), meta(), "t")
    ours = privacy.new_row_synthesis(train, syn, KINDS)
    assert ours == pytest.approx(theirs) and ours <= 150 / 200


def test_baseline_protection_of_copies_is_zero_and_of_random_rows_about_one(rows):
    train, _, _ = rows
    rng = np.random.default_rng(5)
    assert privacy.dcr_baseline_protection(train, train.head(100), KINDS, rng) == 0.0
    noise = privacy.random_like(train.select(list(KINDS)), 300, np.random.default_rng(9))
    assert noise.schema == train.select(list(KINDS)).schema
    assert privacy.dcr_baseline_protection(train, noise, KINDS, rng) > 0.8


def _report(**over) -> dict:
    r = {"dcr_baseline_protection": 0.4, "holdout_dcr_baseline_protection": 0.4,
         "dcr_overfitting_protection": 0.95, "new_row_synthesis": 0.95, "holdout_new_row_synthesis": 0.95,
         "identical_share": 0.0, "holdout_identical_share": 0.0, "unique_identical_share": 0.0,
         "holdout_unique_identical_share": 0.0}
    return r | over


def test_the_privacy_bar():
    from enclave.core.settings import SynthSettings
    from synthetic.evaluate import privacy_failures

    bar = SynthSettings()
    assert privacy_failures({"t": _report()}, bar) == []
    # a twin closer to the real rows than the holdout is fails, metric named, no value of a row
    fails = privacy_failures({"t": _report(dcr_baseline_protection=0.1)}, bar)
    assert fails == ["t: DCR baseline protection 0.100 < 0.300"]
    assert privacy_failures({"t": _report(dcr_overfitting_protection=0.7)}, bar)
    assert privacy_failures({"t": _report(new_row_synthesis=0.6)}, bar)
    assert privacy_failures({"t": _report(unique_identical_share=0.2)}, bar)
    # small record domain (most unseen real records repeat a training one): the knife-edge DCR
    # baseline / new-row bars do not apply, the identical-record bars still do
    small = {"holdout_identical_share": 0.82, "identical_share": 0.85, "dcr_baseline_protection": 0.0,
             "holdout_dcr_baseline_protection": 0.333, "new_row_synthesis": 0.2,
             "holdout_new_row_synthesis": 0.3}
    assert privacy_failures({"person": _report(**small)}, bar) == []
    assert privacy_failures({"person": _report(**small | {"identical_share": 0.99})}, bar)
