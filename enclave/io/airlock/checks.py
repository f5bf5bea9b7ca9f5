"""The one adapter between the airlock and the trusted output checks (:mod:`enclave.io.outputs`).

On submission the airlock does not trust what the researcher's process claimed: it re-runs the
recorded query in the sandbox (:func:`enclave.io.outputs.recheck.recheck`, which first refuses an
altered or foreign record and unsafe SQL) and checks the differencing ledger with the patient sets
that re-run computed. Outputs of desensitized releases are compared across **every project of the
store**: the re-run's patients are translated to ledger tokens through the release's identity map
(:mod:`enclave.io.release.identity`) and go to one ledger, ``ledger/store.duckdb``. Outputs of a
release without a map (a synthetic twin, a release built before maps existed) are compared within
their project and tier, by pseudonym, in ``ledger/<project>.duckdb``. Everything the workflow needs passes through
:func:`run_checks` and :func:`add_to_ledger`, so the workflow (and its unit tests) take a plain
:class:`CheckOutcome`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from enclave.core.audit import airlock_dir
from enclave.core.settings import Settings
from enclave.io.airlock.workflow import CheckStatus
from enclave.io.outputs.ledger import STORE_SCOPE, add_members, check_members
from enclave.io.outputs.recheck import policy_for, recheck
from enclave.io.release.identity import identity_map_path, to_tokens


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
    #: the ledger file and scope they were compared in (and are added to)
    ledger: tuple[Path, str] | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "status": self.status.value, "problems": list(self.problems),
                "ledger_hits": list(self.ledger_hits), "rechecked": self.rechecked,
                "detail": self.detail}


def ledger_path(settings: Settings, project: str) -> Path:
    """A project's own differencing ledger (outputs without store identities: twins), a DuckDB
    file, service user only."""
    return airlock_dir(settings) / "ledger" / f"{project}.duckdb"


def store_ledger_path(settings: Settings) -> Path:
    """The ledger of every desensitized output drawn from the store, keyed by ledger token."""
    return airlock_dir(settings) / "ledger" / "store.duckdb"


def ledger_target(record: dict, members, settings: Settings) -> tuple[Path, str, object]:
    """Where ``record``'s output is compared and recorded, and its members as keyed there:
    tokens in the store's ledger when its release has an identity map, else pseudonyms in the
    project's own. A map that exists but does not cover the output raises ``LookupError``."""
    ids = identity_map_path(settings, str(record.get("release") or ""))
    if record.get("tier") == "desensitized" and ids is not None and ids.is_file():
        return store_ledger_path(settings), STORE_SCOPE, to_tokens(members, ids)
    return ledger_path(settings, str(record.get("project", ""))), "", members


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
              "sandbox": result.get("sandbox") or {}, "result_csv": result.get("result_csv"),
              "result_keys": result.get("result_keys")}
    members = result.get("members")
    hits: tuple[dict, ...] = ()
    target = None
    if ok and members is not None:
        try:
            path, scope, members = ledger_target(record, members, settings)
        except LookupError as exc:
            return CheckOutcome(ok=False, status=CheckStatus.FAIL, detail=detail, problems=(
                *problems, f"the differencing ledger cannot compare this output: {exc}"))
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        threshold = policy_for(record, settings).min_patients
        with _LEDGER_LOCK:
            hits = tuple(h.as_dict() for h in check_members(path, record, members, threshold,
                                                            scope or None))
        target = (path, scope)
    return CheckOutcome(ok=ok, status=status, problems=problems, ledger_hits=hits, detail=detail,
                        members=members, ledger=target)


def add_to_ledger(record: dict, outcome: CheckOutcome, settings: Settings) -> bool:
    """Record a reproduced output (its re-run's patient sets) in the project's ledger, so later
    requests are compared with it (whatever becomes of this one)."""
    if outcome.members is None or outcome.ledger is None:
        return False
    path, scope = outcome.ledger
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _LEDGER_LOCK:
        return bool(add_members(path, record, outcome.members, scope or None))
