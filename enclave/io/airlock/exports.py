"""Export requests through the workflow (security-critical): submit, check, vote, release, revoke.

:class:`Airlock` is what the service, the CLI and the client call. Every status change and vote is
written with its audit event in one SQLite transaction (``BEGIN IMMEDIATE``), after the rules of
:mod:`enclave.io.airlock.workflow` were checked *inside* that transaction against the current row, so
concurrent voters cannot both see "one vote missing". Steps that touch files happen outside
transactions and are idempotent; :meth:`Airlock.recover` (run when the service starts) finishes any
request a crash left between steps:

* ``submitted`` → the airlock's checks are run (again; adding to the ledger is idempotent);
* ``approved`` → the outbox is (re)written and the request released;
* ``revoked`` with its outbox folder still present → the folder is moved out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path

from enclave.core.audit import connect, hand_over, now, record_event_in, transaction
from enclave.core.canonical import canonical_sha256
from enclave.core.errors import BadInputError, EnclaveError, PermissionDeniedError, StoreError
from enclave.core.model.project import Project
from enclave.core.settings import Settings
from enclave.io.airlock import store
from enclave.io.airlock.checks import CheckOutcome, add_to_ledger, run_checks
from enclave.io.airlock.filecheck import unproduced_fields
from enclave.io.airlock.outbox import (
    MANIFEST,
    outbox_dir,
    requests_dir,
    revoke_outbox,
    write_files_atomically,
    write_outbox,
)
from enclave.io.airlock.roles import SCHEMA as ROLE_SCHEMA
from enclave.io.airlock.roles import roles_of
from enclave.io.airlock.workflow import (
    AUDIT_ACTIONS,
    Action,
    Actor,
    CheckStatus,
    RequestStatus,
    Vote,
    can_vote,
    check_download,
    check_queue,
    check_resubmit,
    check_revoke,
    check_submit,
    check_view,
    check_vote,
    check_withdraw,
    decide,
    next_status,
    required_approvals,
)
from enclave.io.projects import SqlProjectStore

#: the actor name of the airlock's own (system) transitions
SYSTEM = "airlock"
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
CRASH_ENV = "ENCLAVE_AIRLOCK_CRASH_AT"
FILES_UNCOMPARED = ("the files were not compared with a re-run of the query: compare the output "
                    "with the per-cell evidence")

S, A = RequestStatus, Action
Checks = Callable[[dict, Settings], CheckOutcome]


def _crash_point(name: str) -> None:
    """Fault injection for the crash tests: SIGKILL this process at a named point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def record_sha256(record: dict) -> str:
    return canonical_sha256(record)


#: the states in which the re-run's cells are what was published (the requester may see them)
PUBLISHED = frozenset({RequestStatus.APPROVED, RequestStatus.RELEASED})


def requester_checks(checks: dict | None, status: RequestStatus,
                     project: str | None = None) -> dict | None:
    """The airlock's check outcome as a requester may see it: whether it reproduced, the status,
    the problems and ledger hits (no data; a hit against another project's output says only that
    a differencing risk exists), and the re-run's cells only once the output was approved — never
    recomputed cells of a refused, failed or pending request."""
    if not checks:
        return checks
    out = {k: checks.get(k) for k in ("ok", "status", "problems", "rechecked")}
    out["ledger_hits"] = [_requester_hit(h, project) for h in checks.get("ledger_hits") or []]
    detail = checks.get("detail") or {}
    out["detail"] = ({"cells": [c for c in detail.get("cells") or [] if c.get("outcome") != "fail"],
                      "reasons": detail.get("reasons") or []} if status in PUBLISHED else {})
    return out


def _requester_hit(hit: dict, project: str | None) -> dict:
    """A ledger hit as the requester sees it: whole when the earlier output is of their own
    project, else only which of their cells is at risk (no output, project or difference)."""
    if not hit.get("earlier_project") or hit.get("earlier_project") == project:
        return hit
    return {"kind": "differencing", "new_cell": hit.get("new_cell"), "unit": hit.get("unit"),
            "message": hit.get("researcher_message") or "differencing: a risk with an earlier "
            "output exists; the stewards review it"}


class Airlock:
    """The export workflow on one enclave home. Not thread-safe: one instance per thread."""

    def __init__(self, settings: Settings, *, checks: Checks = run_checks,
                 ledger_add: Callable[[dict, CheckOutcome, Settings], bool] = add_to_ledger,
                 projects: object | None = None, today: Callable[[], date] = date.today):
        self.settings = settings
        self.checks = checks
        self.ledger_add = ledger_add
        self.projects = projects if projects is not None else SqlProjectStore(settings)
        self.today = today
        self.con = connect(settings, schema=store.SCHEMA + ROLE_SCHEMA)

    def close(self) -> None:
        self.con.close()
        hand_over(self.settings)  # root (the CLI) wrote here: the service user owns its folder

    def __enter__(self) -> Airlock:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- who --------------------------------------------------------------------------------
    def _project_list(self) -> list[Project]:
        # the control database is DuckDB: while a CLI command writes it, readers are refused
        for attempt in range(50):
            try:
                return self.projects.list()
            except StoreError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def _project(self, project_id: str) -> Project | None:
        return next((p for p in self._project_list() if p.id == project_id), None)

    def usable(self, project_id: str) -> bool:
        p = self._project(project_id)
        return bool(p and p.is_usable(self.today()))

    def actor(self, name: str) -> Actor:
        return Actor(name=name, roles=roles_of(self.con, self.settings, name),
                     projects=frozenset(p.id for p in self._project_list() if name in p.members))

    def _get(self, request_id: str) -> dict:
        req = store.get_request(self.con, request_id)
        if req is None:
            raise BadInputError(f"no export request '{request_id}'")
        return req

    def _event(self, actor: str, action: Action, req: dict, to: RequestStatus, **detail) -> None:
        record_event_in(self.con, actor=actor, action=AUDIT_ACTIONS[action],
                        subject=f"request:{req['id']}",
                        detail={"from": req["status"].value if req.get("status") else None,
                                "to": to.value, "round": req["round"],
                                "project": req["project"], **detail})

    # --- submission -------------------------------------------------------------------------
    def _validate(self, record: dict, files: dict[str, bytes], justification: str) -> None:
        problems = []
        if not isinstance(record, dict) or not record.get("project"):
            problems.append("the output record must be a JSON object naming its project")
        if not (justification or "").strip():
            problems.append("an export request needs a justification (why it must leave)")
        if not files:
            problems.append("an export request needs at least one file")
        if len(files) > self.settings.airlock.max_files:
            problems.append(f"at most {self.settings.airlock.max_files} files per request")
        bad = [n for n in files if not FILE_NAME.fullmatch(n) or n == MANIFEST]
        if bad:
            problems.append(f"file name(s) {', '.join(map(repr, bad))} not allowed (letters, "
                            "digits, '.', '_', '-'; not manifest.json)")
        total = sum(len(d) for d in files.values())
        if total > self.settings.airlock.max_upload_bytes:
            problems.append(f"the files hold {total:,} bytes, more than the "
                            f"{self.settings.airlock.max_upload_bytes:,} allowed")
        if problems:
            raise BadInputError("export request refused:\n" +
                                "\n".join(f"  - {p}" for p in problems))

    def _store_files(self, request_id: str, round_: int, files: dict[str, bytes]) -> None:
        target = requests_dir(self.settings) / request_id / f"r{round_}"
        if target.exists():  # left by a crash before the row was committed: the row rules
            shutil.rmtree(target)
        write_files_atomically(target, files)
        for name in files:
            os.chmod(target / name, 0o400)

    def _insert_files(self, request_id: str, round_: int, files: dict[str, bytes]) -> dict:
        hashes = {}
        for name, data in sorted(files.items()):
            digest = hashlib.sha256(data).hexdigest()
            self.con.execute("INSERT INTO request_file VALUES (?, ?, ?, ?, ?)",
                             (request_id, round_, name, digest, len(data)))
            hashes[name] = digest
        return hashes

    def submit(self, user: str, record: dict, files: dict[str, bytes],
               justification: str) -> dict:
        """A member of an active project asks for an output to leave; the airlock then runs its
        own checks (see :meth:`process_checks`). Returns the request as the requester sees it."""
        self._validate(record, files, justification)
        actor = self.actor(user)
        project = str(record["project"])
        check_submit(actor, project, self.usable(project))
        request_id = f"r-{secrets.token_hex(6)}"
        self._store_files(request_id, 1, files)
        ts, digest = now(), record_sha256(record)
        with transaction(self.con):
            self.con.execute(
                "INSERT INTO export_request (id, project, requester, status, round, kind, "
                "justification, record, record_sha256, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
                (request_id, project, user, S.SUBMITTED.value, str(record.get("kind", "output")),
                 justification.strip(), json.dumps(record, ensure_ascii=False, default=str),
                 digest, ts, ts))
            hashes = self._insert_files(request_id, 1, files)
            req = {"id": request_id, "status": None, "round": 1, "project": project}
            self._event(user, A.SUBMIT, req, S.SUBMITTED, record_sha256=digest, files=hashes)
        self.process_checks(request_id)
        return self.describe(request_id, user)

    def process_checks(self, request_id: str) -> None:
        """Run the airlock's own checks on a submitted request and move it on."""
        req = self._get(request_id)
        if req["status"] is not S.SUBMITTED:
            return
        try:
            refusal = self._requester_refusal(req)
            outcome = (CheckOutcome(ok=False, status=CheckStatus.FAIL, problems=(refusal,),
                                    rechecked=False) if refusal else
                       self.checks(req["record"], self.settings))
        except EnclaveError as exc:
            outcome = CheckOutcome(ok=False, status=CheckStatus.FAIL,
                                   problems=(f"the airlock's re-run failed: {exc}",))
        except Exception as exc:  # noqa: BLE001  (anything unexpected fails closed)
            outcome = CheckOutcome(ok=False, status=CheckStatus.FAIL,
                                   problems=(f"the airlock's re-run failed: "
                                             f"{exc.__class__.__name__}"),)
        outcome = self._check_files(req, outcome)
        required = required_approvals(
            outcome.status, len(outcome.ledger_hits),
            approvals_pass=self.settings.airlock.approvals_pass,
            approvals_review=self.settings.airlock.approvals_review)
        action = A.CHECKS_PASSED if outcome.ok else A.CHECKS_FAILED
        with transaction(self.con):
            req = self._get(request_id)
            if req["status"] is not S.SUBMITTED:
                return
            to = next_status(req["status"], action)
            reason = None if outcome.ok else "; ".join(outcome.problems) or "checks failed"
            store.set_status(self.con, request_id, to, now(),
                             checks=json.dumps(outcome.as_dict(), default=str),
                             required=required, decision_reason=reason)
            self._event(SYSTEM, action, req, to, check_status=outcome.status.value,
                        required=required, ledger_hits=len(outcome.ledger_hits),
                        rechecked=outcome.rechecked, problems=list(outcome.problems))
        if outcome.ok:  # later requests of the project are compared with this one
            self.ledger_add(req["record"], outcome, self.settings)

    def _requester_refusal(self, req: dict) -> str | None:
        """Why the requester may not have this record re-run (None: they may). The record must
        be of the request's project, and the requester an active member of it *now* (the control
        database decides, not the record); the release is checked against the project by the
        re-check itself (:func:`enclave.io.outputs.recheck.record_release_dir`)."""
        record = req["record"]
        if not isinstance(record, dict) or str(record.get("project")) != req["project"]:
            return "the output record does not belong to the request's project"
        project = self._project(req["project"])
        if project is None:
            return f"no project '{req['project']}'"
        if req["requester"] not in project.members:
            return (f"{req['requester']} is not a member of project {project.id}; its releases "
                    "are not theirs to re-run")
        if not project.is_usable(self.today()):
            return f"project {project.id} is not active (or has expired)"
        return None

    def _check_files(self, req: dict, outcome: CheckOutcome) -> CheckOutcome:
        """Each file may hold only the re-run's published cells, each at its own key (custom
        files: stewards look). An outcome without evidence (a check adapter that gives no cells)
        is flagged; one with cells but no result table (an older check) fails closed."""
        if not outcome.ok or req["kind"] == "custom":
            return outcome
        detail = outcome.detail if isinstance(outcome.detail, dict) else {}
        if detail.get("cells") is None:
            return replace(outcome, problems=(*outcome.problems, FILES_UNCOMPARED))
        try:
            problems = unproduced_fields(self._round_files(req), detail.get("result_csv"),
                                         detail.get("result_keys"))
        except Exception as exc:  # noqa: BLE001  (anything unexpected fails closed)
            problems = [f"the files could not be compared with the re-run ({type(exc).__name__})"]
        if problems:
            return replace(outcome, ok=False, status=CheckStatus.FAIL,
                           problems=(*outcome.problems, *problems))
        return outcome

    # --- review -----------------------------------------------------------------------------
    def vote(self, user: str, request_id: str, vote: str, reason: str = "") -> dict:
        """A steward's blind vote; once the required votes are in, the decision is taken in the
        same transaction, and an approved output is released."""
        try:
            vote_v = Vote(vote)
        except ValueError:
            raise BadInputError(f"vote must be one of {', '.join(v.value for v in Vote)}, "
                                f"not '{vote}'") from None
        actor = self.actor(user)
        decision = None
        with transaction(self.con):
            req = self._get(request_id)
            check_vote(actor, store.view(self.con, req), vote_v, reason)
            self.con.execute("INSERT INTO request_vote VALUES (?, ?, ?, ?, ?, ?)",
                             (request_id, req["round"], user, vote_v.value, reason.strip(), now()))
            self._event(user, A.VOTE, req, S.IN_REVIEW, vote=vote_v.value, reason=reason.strip())
            round_votes = store.votes(self.con, request_id, req["round"])
            decision = decide([v["vote"] for v in round_votes], req["required"])
            if decision is not None:
                to = next_status(req["status"], decision)
                why = "; ".join(f"{v['vote'].value}: {v['reason']}" for v in round_votes
                                if v["vote"] is not Vote.APPROVE) or None
                store.set_status(self.con, request_id, to, now(), decision_reason=why)
                self._event(SYSTEM, decision, req, to,
                            votes={v["steward"]: v["vote"].value for v in round_votes})
            _crash_point("vote_before_commit")
        _crash_point("vote_committed")
        if decision is A.DECIDE_APPROVE:
            self.release(request_id)
        return self.describe(request_id, user)

    def comment(self, user: str, request_id: str, body: str) -> None:
        actor = self.actor(user)
        req = self._get(request_id)
        check_view(actor, store.view(self.con, req))
        if not (actor.is_steward or user == req["requester"]):
            raise PermissionDeniedError(f"{user} may not comment on request {request_id}")
        if not (body or "").strip():
            raise BadInputError("a comment needs some text")
        with transaction(self.con):
            self.con.execute("INSERT INTO request_comment (request_id, author, body, ts) "
                             "VALUES (?, ?, ?, ?)", (request_id, user, body.strip(), now()))
            record_event_in(self.con, actor=user, action="request.comment",
                            subject=f"request:{request_id}", detail={"round": req["round"]})

    # --- release and after ------------------------------------------------------------------
    def _round_files(self, req: dict) -> dict[str, bytes]:
        folder = requests_dir(self.settings) / req["id"] / f"r{req['round']}"
        out = {}
        for meta in store.files(self.con, req["id"], req["round"]):
            data = (folder / meta["name"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise StoreError(f"request {req['id']}: file {meta['name']} changed since it was "
                                 "submitted; it is not released")
            out[meta["name"]] = data
        return out

    def release(self, request_id: str) -> None:
        """Write an approved request's outbox, add it to the ledger, and mark it released."""
        req = self._get(request_id)
        if req["status"] is not S.APPROVED:
            return
        manifest = {
            "request": {k: req[k] for k in ("id", "project", "requester", "round", "kind",
                                            "justification", "record_sha256", "created_at")},
            "record": req["record"],
            "checks": req["checks"],
            "votes": [{**v, "vote": v["vote"].value}
                      for v in store.votes(self.con, request_id)],
            "approved_at": req["updated_at"],
        }
        digest = write_outbox(self.settings, request_id, self._round_files(req), manifest)
        _crash_point("outbox_written")
        with transaction(self.con):
            req = self._get(request_id)
            if req["status"] is not S.APPROVED:
                return
            store.set_status(self.con, request_id, S.RELEASED, now(), outbox_sha256=digest)
            self._event(SYSTEM, A.RELEASE, req, S.RELEASED, manifest_sha256=digest)

    def withdraw(self, user: str, request_id: str) -> dict:
        actor = self.actor(user)
        with transaction(self.con):
            req = self._get(request_id)
            check_withdraw(actor, store.view(self.con, req))
            to = next_status(req["status"], A.WITHDRAW)
            store.set_status(self.con, request_id, to, now())
            self._event(user, A.WITHDRAW, req, to)
        return self.describe(request_id, user)

    def resubmit(self, user: str, request_id: str, record: dict, files: dict[str, bytes],
                 justification: str) -> dict:
        """After changes were requested: a new round with a new record and files."""
        self._validate(record, files, justification)
        actor = self.actor(user)
        req = self._get(request_id)
        if str(record["project"]) != req["project"]:
            raise BadInputError(f"request {request_id} belongs to project {req['project']}")
        check_resubmit(actor, store.view(self.con, req), self.usable(req["project"]))
        round_ = req["round"] + 1
        self._store_files(request_id, round_, files)
        digest = record_sha256(record)
        with transaction(self.con):
            req = self._get(request_id)
            check_resubmit(actor, store.view(self.con, req), True)
            if req["round"] + 1 != round_:
                raise BadInputError(f"request {request_id} changed meanwhile; try again")
            to = next_status(req["status"], A.RESUBMIT)
            store.set_status(self.con, request_id, to, now(), round=round_,
                             record=json.dumps(record, ensure_ascii=False, default=str),
                             record_sha256=digest, justification=justification.strip(),
                             checks=None, required=None, decision_reason=None)
            hashes = self._insert_files(request_id, round_, files)
            self._event(user, A.RESUBMIT, {**req, "round": round_}, to, record_sha256=digest,
                        files=hashes)
        self.process_checks(request_id)
        return self.describe(request_id, user)

    def revoke(self, user: str, request_id: str, reason: str) -> dict:
        actor = self.actor(user)
        with transaction(self.con):
            req = self._get(request_id)
            check_revoke(actor, store.view(self.con, req), reason)
            to = next_status(req["status"], A.REVOKE)
            store.set_status(self.con, request_id, to, now(), decision_reason=reason.strip())
            self._event(user, A.REVOKE, req, to, reason=reason.strip())
        revoke_outbox(self.settings, request_id)
        return self.describe(request_id, user)

    def download(self, user: str, request_id: str, name: str) -> Path:
        """The path of a released file, for its requester only; the download is audited."""
        actor = self.actor(user)
        req = self._get(request_id)
        check_download(actor, store.view(self.con, req), self.usable(req["project"]))
        folder = outbox_dir(self.settings) / request_id
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
        if name not in listed and name != MANIFEST:
            raise BadInputError(f"request {request_id} released no file '{name}'")
        with transaction(self.con):
            record_event_in(self.con, actor=user, action="request.download",
                            subject=f"request:{request_id}", detail={"file": name})
        return folder / name

    def recover(self) -> list[str]:
        """Finish what a crash interrupted (see the module docstring); returns request ids."""
        done = []
        for req in store.list_requests(self.con, status=S.SUBMITTED.value):
            self.process_checks(req["id"])
            done.append(req["id"])
        for req in store.list_requests(self.con, status=S.APPROVED.value):
            self.release(req["id"])
            done.append(req["id"])
        for req in store.list_requests(self.con, status=S.REVOKED.value):
            if (outbox_dir(self.settings) / req["id"]).exists():
                revoke_outbox(self.settings, req["id"])
                done.append(req["id"])
        return done

    # --- reading ----------------------------------------------------------------------------
    def describe(self, request_id: str, user: str) -> dict:
        """The request as ``user`` may see it. Votes are blind: while a round is open a steward
        sees only their own vote and how many are in; requesters never see who voted what."""
        actor = self.actor(user)
        req = self._get(request_id)
        check_view(actor, store.view(self.con, req))
        round_votes = store.votes(self.con, request_id, req["round"])
        reviewer = actor.is_steward or actor.is_admin
        out = {k: req[k] for k in ("id", "project", "requester", "round", "kind", "justification",
                                   "record_sha256", "required", "decision_reason",
                                   "outbox_sha256", "created_at", "updated_at")}
        out["request_id"] = req["id"]
        out["status"] = req["status"].value
        out["record"] = req["record"]
        out["checks"] = req["checks"] if reviewer and user != req["requester"] else requester_checks(
            req["checks"], req["status"], req["project"])
        out["files"] = store.files(self.con, request_id, req["round"])
        out["votes_in"] = len(round_votes)
        out["comments"] = store.comments(self.con, request_id)
        mine = [v for v in round_votes if v["steward"] == user]
        out["my_vote"] = mine[0]["vote"].value if mine else None
        revealed = req["status"] is not S.IN_REVIEW
        out["votes"] = ([{**v, "vote": v["vote"].value} for v in store.votes(self.con, request_id)]
                        if reviewer and revealed else [])
        return out

    def list(self, user: str, *, status: str | None = None, queue: bool = False) -> list[dict]:
        """``queue``: every request (stewards and admins); else the user's own requests;
        ``status``: only those in that state.

        Each row: id, project, requester, status, round, kind, tier (the record's: ``synthetic``
        or ``desensitized``), justification, required, created_at, updated_at, and
        ``needs_my_vote`` (in review, not the user's, no vote of theirs in the current round)."""
        actor = self.actor(user)
        if queue:
            check_queue(actor)
            rows = store.list_requests(self.con, status=status)
        else:
            rows = store.list_requests(self.con, status=status, requester=user)
        return [{"id": r["id"], "project": r["project"], "requester": r["requester"],
                 "status": r["status"].value, "round": r["round"], "kind": r["kind"],
                 "tier": str(r["record"].get("tier") or ""), "justification": r["justification"],
                 "required": r["required"], "created_at": r["created_at"],
                 "updated_at": r["updated_at"],
                 "needs_my_vote": (actor.is_steward and r["status"] == RequestStatus.IN_REVIEW
                                   and can_vote(actor, store.view(self.con, r)))}
                for r in rows]

    def status(self, user: str) -> dict:
        """The enclave at a glance, for admins: every project (state, members, expiry, its
        requests by state) and the requests by state. Names, counts and dates only."""
        actor = self.actor(user)
        if not actor.is_admin:
            raise PermissionDeniedError(f"{user} is not an admin: the status page is theirs")
        counts: dict[str, dict[str, int]] = {}
        for pid, state, n in self.con.execute(
                "SELECT project, status, count(*) FROM export_request GROUP BY 1, 2"):
            counts.setdefault(pid, {})[state] = n
        today = self.today()
        projects = [{"id": p.id, "title": p.title, "status": p.status.value,
                     "tier": p.tier.value, "members": len(p.members),
                     "expires": p.expires.isoformat(), "usable": p.is_usable(today),
                     "requests": counts.get(p.id, {})}
                    for p in sorted(self._project_list(), key=lambda p: p.id)]
        by_state: dict[str, int] = {}
        for per in counts.values():
            for state, n in per.items():
                by_state[state] = by_state.get(state, 0) + n
        return {"projects": projects, "requests": by_state,
                "waiting": by_state.get(RequestStatus.IN_REVIEW.value, 0)}

    def read_round_file(self, user: str, request_id: str, name: str) -> bytes:
        """A submitted (not yet released) file, for the review page: stewards only."""
        actor = self.actor(user)
        req = self._get(request_id)
        check_view(actor, store.view(self.con, req))
        if not actor.is_steward and user != req["requester"]:
            raise PermissionDeniedError(f"{user} may not read the files of {request_id}")
        files = self._round_files(req)
        if name not in files:
            raise BadInputError(f"request {request_id} has no file '{name}'")
        return files[name]
