"""The one adapter between the airlock and the research package's independent checks.

On submission the airlock does not trust what the researcher's process claimed: it re-runs the
recorded query on the release in a separate process (``enclave.research.recheck``) and checks the
project's differencing ledger (``enclave.research.ledger``). Everything the airlock needs from them
passes through :func:`run_checks` and :func:`add_to_ledger`, so the workflow (and its unit tests)
take a plain :class:`CheckOutcome`.

When ``enclave.research`` cannot be imported the outcome is *not* a pass: it is ``fail`` with the
problem named, so the request needs the two-steward review and the reviewers see that nothing was
re-run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from enclave.airlock.workflow import CheckStatus
from enclave.audit import airlock_dir
from enclave.settings import Settings

UNAVAILABLE = "the airlock could not re-run the query: enclave.research is not available"


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


def _field(result: object, name: str, default: object = None) -> object:
    if isinstance(result, dict):
        return result.get(name, default)
    return getattr(result, name, default)


def run_checks(record: dict, settings: Settings) -> CheckOutcome:
    """Re-run the record's query (``enclave.research.recheck``, a separate process) and check the
    project's ledger; a record the re-run does not reproduce is not ``ok``."""
    try:
        from enclave.research import recheck
        from enclave.research.ledger import ledger_check
    except ImportError:
        return CheckOutcome(ok=True, status=CheckStatus.FAIL, problems=(UNAVAILABLE,),
                            rechecked=False)
    result = recheck(record, settings=settings)
    ok = bool(_field(result, "ok", _field(result, "verified", False)))
    problems = tuple(str(p) for p in _field(result, "problems", ()) or ())
    try:
        status = CheckStatus(str(_field(result, "status", "fail")))
    except ValueError:
        status = CheckStatus.FAIL
        problems += (f"the re-run returned an unknown status {_field(result, 'status')!r}",)
    detail = {"cells": _field(result, "cells", []) or [],
              "reasons": list(_field(result, "reasons", []) or [])}
    hits: tuple[dict, ...] = ()
    if ok:
        path = ledger_path(settings, str(record.get("project", "")))
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _LEDGER_LOCK:
            hits = tuple(dict(h) for h in ledger_check(path, record, settings=settings))
    return CheckOutcome(ok=ok, status=status, problems=problems, ledger_hits=hits, detail=detail)


def add_to_ledger(record: dict, settings: Settings) -> bool:
    """Record a reproduced output in the project's ledger, so later requests are compared with
    it (whatever becomes of this one); False when the ledger is unavailable."""
    try:
        from enclave.research.ledger import ledger_add
    except ImportError:
        return False
    path = ledger_path(settings, str(record.get("project", "")))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _LEDGER_LOCK:
        return bool(ledger_add(path, record, settings=settings))
