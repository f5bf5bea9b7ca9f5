"""The one adapter between the airlock and the trusted output checks (:mod:`enclave.outputs`).

On submission the airlock does not trust what the researcher's process claimed: it re-runs the
recorded query in the sandbox (:func:`enclave.outputs.recheck.recheck`, which first refuses an
altered or foreign record and unsafe SQL) and checks the project's differencing ledger with the
patient sets that re-run computed. Everything the workflow needs passes through
:func:`run_checks` and :func:`add_to_ledger`, so the workflow (and its unit tests) take a plain
:class:`CheckOutcome`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from enclave.airlock.workflow import CheckStatus
from enclave.audit import airlock_dir
from enclave.outputs.ledger import add_members, check_members
from enclave.outputs.recheck import policy_for, recheck
from enclave.settings import Settings


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """What the airlock's own checks found. ``ok`` False: the record could not be reproduced
    (tampered, or the release/policy changed) and the request is rejected by the system."""

    ok: bool
    status: CheckStatus
    problems: tuple[str, ...] = ()
    ledger_hits: tuple[dict, ...] = ()
    rechecked: bool = True
    detail: dict = field(default_factory=dict)
    #: the re-run's patient sets per published cell, for the ledger (never stored or shown)
    members: object = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "status": self.status.value, "problems": list(self.problems),
                "ledger_hits": list(self.ledger_hits), "rechecked": self.rechecked,
                "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict) -> CheckOutcome:
        return cls(ok=d["ok"], status=CheckStatus(d["status"]), problems=tuple(d["problems"]),
                   ledger_hits=tuple(d["ledger_hits"]), rechecked=d.get("rechecked", True),
                   detail=d.get("detail", {}))


def ledger_path(settings: Settings, project: str) -> Path:
    """The project's authoritative differencing ledger (a DuckDB file, service user only)."""
    return airlock_dir(settings) / "ledger" / f"{project}.duckdb"


#: the ledger is one DuckDB file per project: one writer at a time in this process
_LEDGER_LOCK = threading.Lock()


def run_checks(record: dict, settings: Settings) -> CheckOutcome:
    """Re-run the record in the sandbox and check the project's ledger with the patient sets of
    that re-run; a record the re-run does not reproduce (or refuses) is not ``ok``."""
    result = recheck(record, settings, members=True)
    ok = bool(result.get("verified"))
    problems = tuple(str(p) for p in result.get("problems") or ())
    try:
        status = CheckStatus(str(result.get("status", "fail")))
    except ValueError:
        status = CheckStatus.FAIL
        problems += (f"the re-run returned an unknown status {result.get('status')!r}",)
    detail = {"cells": result.get("cells") or [], "reasons": list(result.get("reasons") or []),
              "sandbox": result.get("sandbox") or {}}
    members = result.get("members")
    hits: tuple[dict, ...] = ()
    if ok and members is not None:
        path = ledger_path(settings, str(record.get("project", "")))
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        threshold = policy_for(record, settings).min_patients
        with _LEDGER_LOCK:
            hits = tuple(h.as_dict() for h in check_members(path, record, members, threshold))
    return CheckOutcome(ok=ok, status=status, problems=problems, ledger_hits=hits, detail=detail,
                        members=members)


def add_to_ledger(record: dict, outcome: CheckOutcome, settings: Settings) -> bool:
    """Record a reproduced output (its re-run's patient sets) in the project's ledger, so later
    requests are compared with it (whatever becomes of this one)."""
    if outcome.members is None:
        return False
    path = ledger_path(settings, str(record.get("project", "")))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _LEDGER_LOCK:
        return bool(add_members(path, record, outcome.members))
