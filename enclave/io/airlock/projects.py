"""The project lifecycle with its permission checks and audit events.

proposed → approved (steward) → active (admin) → expired (system, past the expiry date) / closed
(steward). Membership changes are made by stewards only. The rules are the tables in
:mod:`enclave.core.model.project`.

Projects live in the control database with the audit trail (SQLite, ``Settings.control_path``):
the project change and its audit event are written in one transaction, so neither exists without
the other, a crash included.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import date

from enclave.core.audit import record_event_in, transaction
from enclave.core.errors import BadInputError, InvalidTransitionError, PermissionDeniedError
from enclave.core.model.project import (
    PROJECT_ACTORS,
    PROJECT_TRANSITIONS,
    USER_NAME,
    Project,
    ProjectAction,
    ProjectStatus,
)
from enclave.io.airlock.workflow import Actor, Role


def check_project_action(actor: Actor | None, project: Project, action: ProjectAction,
                         today: date) -> ProjectStatus:
    """The status ``action`` leads to; the transition is checked first, then the actor
    (``None`` = the enclave itself, for system actions)."""
    current = project.status
    key = (current, action)
    if key not in PROJECT_TRANSITIONS:
        raise InvalidTransitionError(f"cannot {action.value.replace('_', ' ')} project "
                                     f"{project.id}: it is {current.value}")
    if action is ProjectAction.EXPIRE and not project.is_expired(today):
        raise InvalidTransitionError(f"project {project.id} expires on {project.expires}: "
                                     "not yet expired")
    need = PROJECT_ACTORS[action]
    if need == "system":
        if actor is not None and not actor.is_admin:
            raise PermissionDeniedError(f"{actor.name} may not {action.value} projects")
    elif actor is None or Role(need) not in actor.roles:
        name = actor.name if actor else "nobody"
        raise PermissionDeniedError(f"{name} is not a {need}: only {need}s may "
                                    f"{action.value.replace('_', ' ')} a project")
    return PROJECT_TRANSITIONS[key]


def change_project(con: sqlite3.Connection, projects, actor: Actor | None, project_id: str,
                   action: ProjectAction, *, member: str | None = None, reason: str = "",
                   today: date | None = None) -> Project:
    """Apply one lifecycle action, audited. ``projects`` is a ProjectStore with ``update``."""
    today = today or date.today()
    with transaction(con):
        project = projects.get(project_id)
        to = check_project_action(actor, project, action, today)
        members = list(project.members)
        if action in (ProjectAction.ADD_MEMBER, ProjectAction.REMOVE_MEMBER):
            if not USER_NAME.fullmatch(member or ""):
                raise BadInputError(f"'{member}' is not a user name (lower-case Unix login)")
            if action is ProjectAction.ADD_MEMBER:
                if member in members:
                    raise BadInputError(f"{member} is already a member of {project_id}")
                members.append(member)
            else:
                if member not in members:
                    raise BadInputError(f"{member} is not a member of {project_id}")
                if member == project.principal_investigator:
                    raise BadInputError(f"{member} is the principal investigator of {project_id} "
                                        "and stays a member")
                members.remove(member)
        if action is ProjectAction.CLOSE and not reason.strip():
            raise BadInputError("closing a project needs a written reason")
        changed = replace(project, status=to, members=tuple(members))
        detail = {"from": project.status.value, "to": to.value}
        if member:
            detail["member"] = member
        if reason.strip():
            detail["reason"] = reason.strip()
        record_event_in(con, actor=actor.name if actor else "enclave",
                        action=f"project.{action.value}", subject=f"project:{project_id}",
                        detail=detail)
        projects.update(changed, con=con)  # in this transaction: change and event commit together
    return changed


def expire_projects(con: sqlite3.Connection, projects, today: date | None = None) -> list[str]:
    """Record every active project past its expiry date as expired (a system action)."""
    today = today or date.today()
    done = []
    for p in projects.list():
        if p.status is ProjectStatus.ACTIVE and p.is_expired(today):
            change_project(con, projects, None, p.id, ProjectAction.EXPIRE, today=today)
            done.append(p.id)
    return done
