"""The export workflow as tables (security-critical): states, transitions, owners, audit events,
and the permission checks. Pure logic: no I/O, no clock.

An export request moves only along :data:`TRANSITIONS`; each state has one :data:`OWNERS` entry
(who is expected to act next); each transition has one audit action (:data:`AUDIT_ACTIONS`). The
docs' state diagram (``docs/airlock.md``) is generated from these tables by :func:`mermaid`.

Rules enforced here:

* outputs whose airlock checks pass need ``approvals_pass`` steward approvals (1); outputs the
  checks flag for review, fail, or that hit the differencing ledger need ``approvals_review`` (2)
  independent ones;
* votes are blind: a decision is taken only once the required number of votes is in, and no
  steward sees another's vote before that;
* nobody reviews their own request, nor votes twice in one round;
* reject, request-changes and revoke need a written reason;
* final states (rejected, withdrawn, revoked) have no way out.

Permission checks come in pairs: ``check_x`` raises a specific error (the transition is checked
first, then the actor), ``can_x`` returns a bool built on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from enclave.core.errors import BadInputError, InvalidTransitionError, PermissionDeniedError


class RequestStatus(StrEnum):
    SUBMITTED = "submitted"          # the airlock re-runs the query and the ledger
    IN_REVIEW = "in_review"          # stewards vote, blind to each other
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"            # votes complete; the outbox is being written
    RELEASED = "released"            # in the outbox, downloadable by the requester
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    REVOKED = "revoked"


class Owner(StrEnum):
    RESEARCHER = "researcher"
    REVIEWER = "reviewer"
    SYSTEM = "system"


class Role(StrEnum):
    """Global roles (project membership makes a user a researcher of that project)."""

    STEWARD = "steward"
    POLICYMAKER = "policymaker"
    ADMIN = "admin"


class Action(StrEnum):
    SUBMIT = "submit"
    CHECKS_PASSED = "checks_passed"
    CHECKS_FAILED = "checks_failed"
    VOTE = "vote"                    # a steward's approve / request changes / reject
    DECIDE_APPROVE = "decide_approve"
    DECIDE_CHANGES = "decide_changes"
    DECIDE_REJECT = "decide_reject"
    RESUBMIT = "resubmit"
    WITHDRAW = "withdraw"
    RELEASE = "release"
    REVOKE = "revoke"


class Vote(StrEnum):
    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"
    REJECT = "reject"


class CheckStatus(StrEnum):
    PASS = "pass"
    REVIEW = "review"
    FAIL = "fail"


S, A = RequestStatus, Action
#: (from, action) → to. ``None`` as "from" is creation.
TRANSITIONS: Mapping[tuple[RequestStatus | None, Action], RequestStatus] = {
    (None, A.SUBMIT): S.SUBMITTED,
    (S.SUBMITTED, A.CHECKS_PASSED): S.IN_REVIEW,
    (S.SUBMITTED, A.CHECKS_FAILED): S.REJECTED,
    (S.SUBMITTED, A.WITHDRAW): S.WITHDRAWN,
    (S.IN_REVIEW, A.VOTE): S.IN_REVIEW,
    (S.IN_REVIEW, A.DECIDE_APPROVE): S.APPROVED,
    (S.IN_REVIEW, A.DECIDE_CHANGES): S.CHANGES_REQUESTED,
    (S.IN_REVIEW, A.DECIDE_REJECT): S.REJECTED,
    (S.IN_REVIEW, A.WITHDRAW): S.WITHDRAWN,
    (S.CHANGES_REQUESTED, A.RESUBMIT): S.SUBMITTED,
    (S.CHANGES_REQUESTED, A.WITHDRAW): S.WITHDRAWN,
    (S.APPROVED, A.RELEASE): S.RELEASED,
    (S.RELEASED, A.REVOKE): S.REVOKED,
}

#: who acts on a request in each state
OWNERS: Mapping[RequestStatus, Owner] = {
    S.SUBMITTED: Owner.SYSTEM,
    S.IN_REVIEW: Owner.REVIEWER,
    S.CHANGES_REQUESTED: Owner.RESEARCHER,
    S.APPROVED: Owner.SYSTEM,
    S.RELEASED: Owner.REVIEWER,   # only a steward can still act: revoke
    S.REJECTED: Owner.SYSTEM,
    S.WITHDRAWN: Owner.SYSTEM,
    S.REVOKED: Owner.SYSTEM,
}

#: who may perform each action
ACTORS: Mapping[Action, Owner] = {
    A.SUBMIT: Owner.RESEARCHER, A.RESUBMIT: Owner.RESEARCHER, A.WITHDRAW: Owner.RESEARCHER,
    A.CHECKS_PASSED: Owner.SYSTEM, A.CHECKS_FAILED: Owner.SYSTEM, A.RELEASE: Owner.SYSTEM,
    A.DECIDE_APPROVE: Owner.SYSTEM, A.DECIDE_CHANGES: Owner.SYSTEM, A.DECIDE_REJECT: Owner.SYSTEM,
    A.VOTE: Owner.REVIEWER, A.REVOKE: Owner.REVIEWER,
}

#: the audit action written in the same transaction as each transition
AUDIT_ACTIONS: Mapping[Action, str] = {a: f"request.{a.value}" for a in Action}

FINAL: frozenset[RequestStatus] = frozenset(
    s for s in RequestStatus if not any(f == s for f, _ in TRANSITIONS))
VOTES_NEEDING_REASON = frozenset({Vote.REQUEST_CHANGES, Vote.REJECT})


def next_status(current: RequestStatus | None, action: Action) -> RequestStatus:
    """The state ``action`` leads to from ``current``; InvalidTransitionError when not allowed."""
    try:
        return TRANSITIONS[(current, action)]
    except KeyError:
        allowed = sorted(a.value for f, a in TRANSITIONS if f == current)
        where = current.value if current else "nothing"
        raise InvalidTransitionError(
            f"cannot {action.value} a request that is {where} "
            f"(possible: {', '.join(allowed) or 'nothing, it is final'})") from None


def required_approvals(check: CheckStatus, ledger_hits: int, *, approvals_pass: int,
                       approvals_review: int) -> int:
    """Pass outputs need one steward; review/fail outputs and ledger hits need two."""
    if check is CheckStatus.PASS and ledger_hits == 0:
        return approvals_pass
    return max(approvals_review, approvals_pass)


def decide(votes: Iterable[Vote], required: int) -> Action | None:
    """The decision once ``required`` votes are in (blind until then): any reject rejects, any
    request-changes asks for changes, otherwise approve. ``None``: keep waiting."""
    votes = list(votes)
    if len(votes) < required:
        return None
    if Vote.REJECT in votes:
        return A.DECIDE_REJECT
    if Vote.REQUEST_CHANGES in votes:
        return A.DECIDE_CHANGES
    return A.DECIDE_APPROVE


# --- permissions --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a user name, their global roles, and the projects they are a member of."""

    name: str
    roles: frozenset[Role] = frozenset()
    projects: frozenset[str] = frozenset()

    @property
    def is_steward(self) -> bool:
        return Role.STEWARD in self.roles

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the permission checks need to know about a request."""

    id: str
    project: str
    requester: str
    status: RequestStatus
    round: int = 1
    voters: frozenset[str] = frozenset()  #: who voted in the current round


def _deny(msg: str) -> None:
    raise PermissionDeniedError(msg)


def check_submit(actor: Actor, project: str, project_usable: bool) -> None:
    next_status(None, A.SUBMIT)
    if project not in actor.projects:
        _deny(f"{actor.name} is not a member of project {project}: only its members may export")
    if not project_usable:
        _deny(f"project {project} is not active (or has expired): nothing can be exported")


def check_vote(actor: Actor, req: RequestView, vote: Vote, reason: str) -> None:
    next_status(req.status, A.VOTE)
    if not actor.is_steward:
        _deny(f"{actor.name} is not a data steward: only stewards review export requests")
    if actor.name == req.requester:
        _deny(f"{actor.name} cannot review their own request {req.id}")
    if actor.name in req.voters:
        _deny(f"{actor.name} has already voted on request {req.id} in this round")
    if vote in VOTES_NEEDING_REASON and not (reason or "").strip():
        raise BadInputError(f"a {vote.value.replace('_', ' ')} vote needs a written reason")


def check_withdraw(actor: Actor, req: RequestView) -> None:
    next_status(req.status, A.WITHDRAW)
    if actor.name != req.requester:
        _deny(f"only the requester of {req.id} may withdraw it")


def check_resubmit(actor: Actor, req: RequestView, project_usable: bool) -> None:
    next_status(req.status, A.RESUBMIT)
    if actor.name != req.requester:
        _deny(f"only the requester of {req.id} may resubmit it")
    if req.project not in actor.projects or not project_usable:
        _deny(f"project {req.project} is not active for {actor.name}: nothing can be exported")


def check_revoke(actor: Actor, req: RequestView, reason: str) -> None:
    next_status(req.status, A.REVOKE)
    if not actor.is_steward:
        _deny(f"{actor.name} is not a data steward: only stewards revoke released outputs")
    if not (reason or "").strip():
        raise BadInputError("revoking a released output needs a written reason")


def check_download(actor: Actor, req: RequestView, project_usable: bool) -> None:
    if req.status is not S.RELEASED:
        raise InvalidTransitionError(f"request {req.id} is {req.status.value}: only released "
                                     "outputs can be downloaded")
    if actor.name != req.requester:
        _deny(f"only the requester of {req.id} may download its released files")
    if not project_usable:
        _deny(f"project {req.project} is not active (or has expired): no downloads")


def check_view(actor: Actor, req: RequestView) -> None:
    """Stewards and admins see every request; researchers those of their own projects."""
    if actor.is_steward or actor.is_admin or req.project in actor.projects:
        return
    _deny(f"{actor.name} may not see request {req.id}")


def check_queue(actor: Actor) -> None:
    if not (actor.is_steward or actor.is_admin):
        _deny(f"{actor.name} is not a data steward: the review queue is for stewards")


def _can(check, *args) -> bool:
    try:
        check(*args)
    except (PermissionDeniedError, InvalidTransitionError, BadInputError):
        return False
    return True


def can_vote(actor: Actor, req: RequestView, vote: Vote = Vote.APPROVE, reason: str = "x") -> bool:
    return _can(check_vote, actor, req, vote, reason)


def can_withdraw(actor: Actor, req: RequestView) -> bool:
    return _can(check_withdraw, actor, req)


def can_revoke(actor: Actor, req: RequestView, reason: str = "x") -> bool:
    return _can(check_revoke, actor, req, reason)


# --- documentation ------------------------------------------------------------------------------

def mermaid() -> str:
    """The state diagram of :data:`TRANSITIONS` (mermaid), with each state's owner."""
    lines = ["stateDiagram-v2"]
    for state in RequestStatus:
        lines.append(f"    {state.value}: {state.value} ({OWNERS[state].value})")
    for (src, action), dst in TRANSITIONS.items():
        if action is A.VOTE:
            continue  # a vote keeps the state; shown in the table instead
        left = "[*]" if src is None else src.value
        lines.append(f"    {left} --> {dst.value}: {action.value} ({ACTORS[action].value})")
    for state in sorted(FINAL, key=list(RequestStatus).index):
        lines.append(f"    {state.value} --> [*]")
    return "\n".join(lines)


def transition_table() -> str:
    """A markdown table of every transition, who makes it, and the audit event it writes."""
    rows = ["| from | action | to | made by | audit event |", "|---|---|---|---|---|"]
    for (src, action), dst in TRANSITIONS.items():
        rows.append(f"| {src.value if src else '(new)'} | {action.value} | {dst.value} | "
                    f"{ACTORS[action].value} | `{AUDIT_ACTIONS[action]}` |")
    return "\n".join(rows)
