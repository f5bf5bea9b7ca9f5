"""Who holds which global role (steward, policymaker, admin).

Two sources, united: the ``user_role`` table of the airlock database (granted and removed by an
admin with ``enclave airlock role add|remove``, each change audited in its transaction), and the
Unix groups the hub provisions (``hub.stewards_group``, ``hub.policymakers_group``). ``root`` is
always an admin: whoever runs the CLI as root already owns every file of the enclave.
Being a *researcher* is not a global role: it is membership of a project.
"""

from __future__ import annotations

import grp
import pwd
import sqlite3

from enclave.core.audit import record_event_in, transaction
from enclave.core.errors import BadInputError, PermissionDeniedError
from enclave.core.model.project import USER_NAME
from enclave.core.settings import Settings
from enclave.io.airlock.workflow import Actor, Role

SCHEMA = ("""CREATE TABLE IF NOT EXISTS user_role (
    user_name TEXT NOT NULL, role TEXT NOT NULL, granted_by TEXT NOT NULL, ts TEXT NOT NULL,
    PRIMARY KEY (user_name, role))""",)


def _group_members(name: str) -> set[str]:
    try:
        group = grp.getgrnam(name)
    except KeyError:
        return set()
    members = set(group.gr_mem)
    members.update(p.pw_name for p in pwd.getpwall() if p.pw_gid == group.gr_gid)
    return members


def roles_of(con: sqlite3.Connection, settings: Settings, user: str) -> frozenset[Role]:
    roles = {Role(r) for (r,) in con.execute(
        "SELECT role FROM user_role WHERE user_name = ?", (user,)).fetchall()}
    if user in _group_members(settings.hub.stewards_group):
        roles.add(Role.STEWARD)
    if user in _group_members(settings.hub.policymakers_group):
        roles.add(Role.POLICYMAKER)
    if user == "root":
        roles.add(Role.ADMIN)
    return frozenset(roles)


def list_roles(con: sqlite3.Connection) -> list[tuple[str, str]]:
    return con.execute("SELECT user_name, role FROM user_role ORDER BY user_name, role").fetchall()


def _check_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise PermissionDeniedError(f"{actor.name} is not an admin: only admins {what}")


def add_role(con: sqlite3.Connection, actor: Actor, user: str, role: str, now: str) -> None:
    _check_admin(actor, "grant roles")
    if not USER_NAME.fullmatch(user or ""):
        raise BadInputError(f"'{user}' is not a user name (lower-case Unix login)")
    try:
        role_v = Role(role)
    except ValueError:
        raise BadInputError(f"role must be one of {', '.join(r.value for r in Role)}, "
                            f"not '{role}'") from None
    with transaction(con):
        con.execute("INSERT OR IGNORE INTO user_role VALUES (?, ?, ?, ?)",
                    (user, role_v.value, actor.name, now))
        record_event_in(con, actor=actor.name, action="role.add", subject=f"user:{user}",
                        detail={"role": role_v.value})


def remove_role(con: sqlite3.Connection, actor: Actor, user: str, role: str) -> None:
    _check_admin(actor, "remove roles")
    with transaction(con):
        gone = con.execute("DELETE FROM user_role WHERE user_name = ? AND role = ?",
                           (user, role)).rowcount
        if not gone:
            raise BadInputError(f"{user} does not hold the role '{role}' in the airlock database")
        record_event_in(con, actor=actor.name, action="role.remove", subject=f"user:{user}",
                        detail={"role": role})
