"""Models and curves: OLS and logistic regression (statsmodels formulas), Kaplan–Meier curves.

Regression: every coefficient's cell is the whole estimation sample (the rows the formula kept
after dropping missing values): it needs ``min_patients`` distinct patients, and the model needs
``min_dof`` residual degrees of freedom. Every column and factor level of the design matrix needs
``min_patients`` patients too, else the model fails; a level whose patients all share one outcome
(class disclosure) sends the model to review (:mod:`enclave.io.outputs.support`).

Kaplan–Meier, coarsened: durations are rounded up to the end of their reporting interval ``w``
(``t → max(1, ⌈t / w⌉) · w``) and the estimator is computed on those times, so the curve steps only
at multiples of ``w``. A reported step needs ``min_patients`` patients at risk and either no event
or at least ``min_patients`` events; a step where every patient at risk has the event (survival
drops to 0) is class disclosure: review (or fail, as :func:`~.support.class_outcome` says). The
curve of each group ends at the last step that still has ``min_patients`` patients at risk (later
steps are not reported). Without an explicit interval the
smallest one of ``research.survival_intervals`` whose every reported step passes is used (else
the one with the fewest failing steps). Published counts (at risk, events) are rounded as the
policy says; the survival estimate is computed from the exact counts.
"""

from __future__ import annotations

import math
import warnings

import duckdb
import polars as pl

from enclave.core.errors import BadInputError
from enclave.io.db import frame
from enclave.io.outputs.cells import POPULATION, Evaluation, cell_key, make_cell, q, sub
from enclave.io.outputs.formula import check_formula
from enclave.io.outputs.membership import patient_hashes, person_hash
from enclave.io.outputs.support import check_model, class_outcome
from enclave.logic.disclosure import DisclosurePolicy, check_dof, round_counts


def _fit(kind: str, formula: str, data):
    import statsmodels.formula.api as smf  # heavy; imported only for models

    fitter = smf.ols if kind == "ols" else smf.logit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fitter(formula, data)
            return model.fit() if kind == "ols" else model.fit(disp=0)
    except Exception as exc:  # noqa: BLE001 - statsmodels/formulaic errors name columns only
        raise BadInputError(f"could not fit the {kind} model '{formula}': "
                            f"{type(exc).__name__}: {str(exc)[:200]}") from None


def evaluate_model(con: duckdb.DuckDBPyConnection, sql: str, spec: dict,
                   policy: DisclosurePolicy) -> Evaluation:
    """Coefficients of the ``ols`` / ``logit`` model ``spec["formula"]`` over the rows of ``sql``,
    one cell per term, all with the model's one outcome: ``fail`` (values null) when the sample,
    the degrees of freedom or the support of a design column / factor level falls short, else
    ``review`` on class disclosure, else ``pass``."""
    patient, formula, kind = spec["patient"], spec["formula"], spec["kind"]
    df = frame(con, f"SELECT * FROM {sub(sql)} AS _r").to_pandas()
    check_formula(formula, df.columns)
    res = _fit(kind, formula, df)
    rows = res.model.data.row_labels
    sample = df.loc[rows, patient] if rows is not None else df[patient]
    n_pat, nobs, k = int(sample.nunique()), int(res.nobs), len(res.params)
    reasons: list[str] = []
    if n_pat < policy.min_patients:
        reasons.append(f"the estimation sample has {n_pat} patients; at least "
                       f"{policy.min_patients} are needed")
    if n_pat < policy.min_values:
        reasons.append(f"the estimation sample has complete values from {n_pat} patients; at "
                       f"least {policy.min_values} are needed")
    _, dof_reasons = check_dof(nobs, k, policy)
    reasons += dof_reasons
    support, classes = check_model(res, sample.to_numpy(), kind, policy)
    reasons += support
    outcome = "fail" if reasons else class_outcome(policy) if classes else "pass"
    reasons += classes
    ci = res.conf_int()
    cells, out = [], []
    for name in res.params.index:
        extra = {"std_err": float(res.bse[name]), "p_value": float(res.pvalues[name]),
                 "ci_low": float(ci.loc[name, 0]), "ci_high": float(ci.loc[name, 1])}
        cells.append(make_cell({"term": name}, "coefficient", float(res.params[name]), outcome,
                               reasons, extra if outcome != "fail" else {}))
        out.append({"term": name, "coef": float(res.params[name]), **extra})
    result = pl.DataFrame(out, schema={"term": pl.String, "coef": pl.Float64,
                                       "std_err": pl.Float64, "p_value": pl.Float64,
                                       "ci_low": pl.Float64, "ci_high": pl.Float64})
    if outcome == "fail":
        result = result.with_columns(pl.exclude("term").map_batches(
            lambda s: pl.Series([None] * len(s), dtype=pl.Float64), is_elementwise=True))
    notes = [(f"{nobs} observations from {n_pat} patients, {k} parameters, "
             f"{nobs - k} residual degrees of freedom")] if outcome != "fail" else []
    pats = patient_hashes(con, sample.drop_duplicates().to_frame(patient), patient)
    return Evaluation(result=result, cells=cells, notes=notes,
                      members=lambda: pl.DataFrame({"cell_key": [POPULATION] * len(pats),
                                                    "person_id": pats}))


# --- Kaplan–Meier ------------------------------------------------------------------------


def _km_data(con: duckdb.DuckDBPyConnection, sql: str, spec: dict) -> pl.DataFrame:
    patient, duration, event, group = (spec["patient"], spec["duration"], spec["event"],
                                       spec.get("group"))
    g = f"{q(group)} AS _g" if group else "NULL AS _g"
    data = frame(con, f"SELECT {person_hash(q(patient))} AS _pid, "
                      f"CAST({q(duration)} AS DOUBLE) AS _t, "
                      f"CAST(coalesce(CAST({q(event)} AS INTEGER), 0) <> 0 AS INTEGER) AS _e, "
                      f"{g} FROM {sub(sql)} AS _r WHERE {q(duration)} IS NOT NULL")
    if data.height != data["_pid"].n_unique():
        raise BadInputError(f"a survival curve needs one row per patient; the data has "
                            f"{data.height} rows for {data['_pid'].n_unique()} patients")
    if data.height and data["_t"].min() < 0:
        raise BadInputError(f"column '{duration}' has negative durations")
    return data


def _km_steps(data: pl.DataFrame, w: float, policy: DisclosurePolicy) -> pl.DataFrame:
    """One row per group × step (time, at risk, events, survival, ``reason``: why the step
    fails, ``flag``: its class disclosure, if the policy checks it)."""
    k = policy.min_patients
    coarse = data.with_columns(
        (pl.max_horizontal((pl.col("_t") / w).ceil(), pl.lit(1.0)) * w).alias("_c"))
    out = []
    for (grp,), part in coarse.group_by("_g", maintain_order=False):
        times = part["_c"].to_numpy()
        events = part["_e"].to_numpy()
        surv, j = 1.0, 1
        top = times.max() if len(times) else 0
        while j * w <= top + 1e-9:
            t = j * w
            at_risk = int((times >= t - 1e-9).sum())
            d = int(((times > t - w + 1e-9) & (times <= t + 1e-9) & (events == 1)).sum())
            if at_risk < k:
                break
            surv *= 1 - d / at_risk
            reason = None if d == 0 or d >= k else (
                f"{d} event(s) in this interval; 0 or at least {k} are needed (use a longer "
                "interval)")
            flag = None
            if policy.class_disclosure and d == at_risk:
                flag = ("every patient at risk has the event in this interval (survival drops "
                        "to 0): class disclosure")
            out.append({"_g": grp, "time": t, "at_risk": at_risk, "events": d,
                        "survival": surv, "reason": reason, "flag": flag})
            j += 1
    return pl.DataFrame(out, schema={"_g": data.schema["_g"], "time": pl.Float64,
                                     "at_risk": pl.Int64, "events": pl.Int64,
                                     "survival": pl.Float64, "reason": pl.String,
                                     "flag": pl.String})


def _step_outcome(policy: DisclosurePolicy) -> pl.Expr:
    """Each step's outcome: ``fail`` on a reason, else the class outcome on a flag, else pass."""
    return (pl.when(pl.col("reason").is_not_null()).then(pl.lit("fail"))
            .when(pl.col("flag").is_not_null()).then(pl.lit(class_outcome(policy)))
            .otherwise(pl.lit("pass")))


def choose_interval(data: pl.DataFrame, intervals, policy: DisclosurePolicy) -> float:
    """The smallest interval whose every reported step passes (else the fewest failures)."""
    best = None
    for w in intervals:
        steps = _km_steps(data, float(w), policy)
        fails = (steps.select(_step_outcome(policy) == "fail").to_series().sum()
                 if steps.height else 0)
        if steps.height and fails == 0:
            return float(w)
        if steps.height and (best is None or fails < best[0]):
            best = (fails, float(w))
    return best[1] if best else float(intervals[-1])


def evaluate_survival(con: duckdb.DuckDBPyConnection, sql: str, spec: dict,
                      policy: DisclosurePolicy) -> Evaluation:
    data = _km_data(con, sql, spec)
    group = spec.get("group")
    w = spec.get("interval")
    chosen = {}
    if w is None:
        w = choose_interval(data, spec.get("intervals") or [1], policy)
        chosen = {"interval": w}
    w = float(w)
    if not w > 0 or not math.isfinite(w):
        raise BadInputError("the survival interval must be a positive number")
    steps = _km_steps(data, w, policy)
    rounded = steps.with_columns(round_counts(pl.col("at_risk"), policy).alias("at_risk_pub"),
                                 round_counts(pl.col("events"), policy).alias("events_pub"),
                                 _step_outcome(policy).alias("outcome"))
    cells, notes = [], []
    gname = group or "group"
    for r in rounded.sort("_g", "time", nulls_last=True).iter_rows(named=True):
        ok = r["outcome"] != "fail"
        cell = ({group: r["_g"]} if group else {}) | {"time": r["time"]}
        cells.append(make_cell(cell, "survival", r["survival"], r["outcome"],
                               [x for x in (r["reason"], r["flag"]) if x is not None],
                               {"at_risk": r["at_risk_pub"], "events": r["events_pub"]} if ok
                               else {}))
    groups_seen = data["_g"].unique().to_list()
    for grp in groups_seen:
        label = f"{gname} {grp}: " if group else ""
        if not steps.filter(pl.col("_g").eq_missing(grp)).height:
            cells.append(make_cell(({group: grp} if group else {}) | {"time": None}, "survival",
                                   None, "fail", [(f"{label}fewer than {policy.min_patients} "
                                                  "patients at risk at the first step")]))
            continue
        last = steps.filter(pl.col("_g").eq_missing(grp))["time"].max()
        top = data.filter(pl.col("_g").eq_missing(grp))["_t"].max()
        if top > last:
            notes.append(f"{label}the curve is reported up to time {last:g}; after it fewer than "
                         f"{policy.min_patients} patients remain at risk")
    notes.insert(0, f"times coarsened to intervals of {w:g} (survival steps only at multiples "
                    "of it)")
    result = rounded.filter(pl.col("outcome") != "fail").select(
        pl.col("_g").alias(gname), "time", pl.col("at_risk_pub").alias("at_risk"),
        pl.col("events_pub").alias("events"), "survival").sort(gname, "time", nulls_last=True)
    if not group:
        result = result.drop(gname)

    def members() -> pl.DataFrame:
        """The population, each group, and the patients at risk at each published step (so
        that two curves whose at-risk counts differ by a few patients are a ledger hit)."""
        pop = data.select(pl.lit(POPULATION).alias("cell_key"), pl.col("_pid").alias("person_id"))
        published = rounded.filter(pl.col("outcome") != "fail").select("_g", "time")
        keys = [cell_key(({group: g} if group else {}) | {"time": t})
                for g, t in published.rows()]
        published = published.with_columns(pl.Series("cell_key", keys, dtype=pl.String))
        coarse = data.with_columns(
            (pl.max_horizontal((pl.col("_t") / w).ceil(), pl.lit(1.0)) * w).alias("_c"))
        at_risk = coarse.join(published, on="_g", how="inner", nulls_equal=True).filter(
            pl.col("_c") >= pl.col("time") - 1e-9).select("cell_key",
                                                          pl.col("_pid").alias("person_id"))
        parts = [pop, at_risk]
        if group:
            keys = [cell_key({group: g}) for g in data["_g"].to_list()]
            parts.append(data.select(pl.Series("cell_key", keys, dtype=pl.String),
                                     pl.col("_pid").alias("person_id")))
        return pl.concat(parts)

    return Evaluation(result=result, cells=cells, notes=notes, members=members, spec=chosen)
