"""Statistical disclosure control of outputs: policy, evidence, rules, secondary suppression.

Security-critical and small: :mod:`.rules` (one module per rule, found by :mod:`.registry`: its
thresholds, presets, settings, check and docs), :mod:`.policy` (the thresholds as one frozen value
and the presets), :mod:`.evidence` (one DuckDB statement per output), :mod:`.check` (every rule as
pure polars per-cell outcomes), :mod:`.suppression` (complementary suppression with margins).
:func:`check_table` chains them for a two-way table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import polars as pl

from enclave.core.disclosure_registry import (
    Outcome,
    Rounding,
    Rule,
    Statistic,
    Threshold,
    rules_table,
)
from enclave.logic.disclosure.check import (
    check_cells,
    check_dof,
    class_outcome,
    evidence_needed,
    residual_dof,
    round_counts,
    round_significant,
)
from enclave.logic.disclosure.evidence import (
    compute_evidence,
    evidence_expr,
    evidence_frame,
    margin_evidence,
)
from enclave.logic.disclosure.policy import (
    ABS,
    ACRO,
    OPENSAFELY,
    OPENSAFELY_MIDPOINT6,
    PRESETS,
    STRICT,
    DisclosurePolicy,
    get_preset,
    policy_dict,
    policy_from_dict,
    policy_from_settings,
    policy_hash,
    presets_table,
)
from enclave.logic.disclosure.suppression import (
    SuppressedTable,
    recoverable,
    secondary_suppression,
    suppress_frame,
)

__all__ = [
    "ABS",
    "ACRO",
    "OPENSAFELY",
    "OPENSAFELY_MIDPOINT6",
    "PRESETS",
    "STRICT",
    "CheckedTable",
    "DisclosurePolicy",
    "Outcome",
    "Rounding",
    "Rule",
    "Statistic",
    "SuppressedTable",
    "Threshold",
    "check_cells",
    "check_dof",
    "check_table",
    "class_outcome",
    "compute_evidence",
    "evidence_expr",
    "evidence_frame",
    "evidence_needed",
    "get_preset",
    "margin_evidence",
    "policy_dict",
    "policy_from_dict",
    "policy_from_settings",
    "policy_hash",
    "presets_table",
    "recoverable",
    "residual_dof",
    "round_counts",
    "round_significant",
    "rules_table",
    "secondary_suppression",
    "suppress_frame",
]


@dataclass(frozen=True, slots=True)
class CheckedTable:
    """One checked output: per-cell outcomes and, for two-way tables, the table with margins."""

    cells: pl.DataFrame
    table: SuppressedTable | None


def check_table(con: duckdb.DuckDBPyConnection, relation: str, patient: str,
                groups: Sequence[str], statistic: Statistic | str, policy: DisclosurePolicy,
                value: str | None = None, sensitive: str | None = None,
                label: str | None = None, per_patient: bool = False) -> CheckedTable:
    """Evidence, rules and (for two grouping columns) secondary suppression of one output.

    ``cells`` has one row per cell (empty cells included): the grouping columns, ``outcome``,
    ``reasons``, the publishable ``value`` and the cell's ``rows`` (evidence, not for
    publication). For a two-way table the margins are checked too
    (zeros and distinct patients): a failing margin is suppressed as a primary cell, and
    ``table.suppressed`` says which cells and margins may not be published. ``label`` names the
    published statistic in reasons (e.g. ``std``, checked as a mean). ``per_patient``: the
    relation is one row per cell × patient with that patient's rows and value aggregates (see
    :func:`enclave.logic.disclosure.evidence.evidence_expr`).
    """
    stat = Statistic(statistic)
    # compute the extremes / bounds evidence only when a rule reads it
    needed = set(evidence_needed(policy, stat))
    ev = compute_evidence(con, relation, patient, groups, value, sensitive, complete=True,
                          extremes=bool(needed & {"patients_at_min", "patients_at_max"}),
                          bounds=bool(needed & {"min", "max"}), per_patient=per_patient)
    cells = check_cells(ev, stat, policy, groups, label)
    table = None
    if len(groups) == 2:
        margins = _uncertain_margins(con, relation, patient, groups[0], groups[1], ev, policy,
                                     per_patient)
        # a margin is a count cell: the rules of a count (zeros, minimum patients …) decide
        fails = None if margins is None else margins.filter(
            check_cells(margins, Statistic.COUNT, policy)["outcome"] == Outcome.SUPPRESS.value)
        cells, table = suppress_frame(cells, groups[0], groups[1], margin_failures=fails)
    return CheckedTable(cells.rename({"weight": "rows"}), table)


def _uncertain_margins(con: duckdb.DuckDBPyConnection, relation: str, patient: str, row: str,
                       col: str, ev: pl.DataFrame, policy: DisclosurePolicy,
                       per_patient: bool = False) -> pl.DataFrame | None:
    """Exact margin evidence where the cells cannot vouch for it: a total has at least as many
    patients as its largest cell, so only totals whose cells all fall short are counted."""
    k = policy.min_patients
    short_rows = ev.group_by(row).agg(pl.col("patients").max()).filter(pl.col("patients") < k)
    short_cols = ev.group_by(col).agg(pl.col("patients").max()).filter(pl.col("patients") < k)
    if ev.height == 0 or ev["patients"].max() < k:
        return margin_evidence(con, relation, patient, row, col, per_patient=per_patient)
    if short_rows.height == 0 and short_cols.height == 0:
        return None
    return margin_evidence(con, relation, patient, row, col, short_rows[row].to_list(),
                           short_cols[col].to_list(), per_patient=per_patient)
