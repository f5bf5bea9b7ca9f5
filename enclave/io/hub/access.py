"""Access follows the control database, now (security-critical; root only).

The operating system decides who reads a release (project groups, :mod:`.permissions`), but a Unix
group outlives the reason it was given, and a running process keeps the groups it started with.
:func:`reconcile` makes the host agree with the control database again:

* a project's Unix group holds only the members of that project while it is **usable** (active and
  not past its expiry date); anyone else is taken out of it (a removed member, every member of a
  closed or expired project, a disabled user);
* every process of a user who lost a group — their notebook server and kernels — is stopped
  (SIGTERM, then SIGKILL after a grace period), so no running kernel keeps reading;
* the release folder of a project that is not usable becomes root-only (``0700 root:root``);
* each step is an audit event (``access.group_removed``, ``access.processes_stopped``,
  ``access.release_closed``);
* the researchers' egress set (:mod:`.egress`) is rebuilt when it is installed.

It runs after every membership or lifecycle command that can take access away (``enclave project
member remove|close|expire``, ``enclave user disable|remove``), from ``enclave hub sync``, and
every ``hub.access_check_interval_s`` seconds from the hub's ``enclave-access`` service (``enclave
hub watch``), which catches an expiry date that passes while the hub runs.
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from enclave.core import audit
from enclave.core.errors import PermissionDeniedError
from enclave.core.settings import Settings
from enclave.io.hub import egress
from enclave.io.hub.permissions import groups_of, project_group, role_groups
from enclave.io.projects import SqlProjectStore

ACTOR = "enclave-access"


@dataclass(frozen=True, slots=True)
class Revocation:
    user: str
    project: str
    reason: str  # "not a member", "project closed", "project expired", …


def _project_states(settings: Settings, today: date) -> dict[str, tuple[set[str], str | None]]:
    """project id → (members who may read now, why nobody may — None while usable)."""
    out = {}
    for p in SqlProjectStore(settings).list():
        if p.is_usable(today):
            out[p.id] = (set(p.members), None)
        else:
            out[p.id] = (set(), f"project {p.effective_status(today).value}")
    return out


def _members(group: str) -> set[str]:
    try:
        return set(grp.getgrnam(group).gr_mem)
    except KeyError:
        return set()


def _zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True  # gone


def user_processes(user: str) -> list[int]:
    """Pids of every live process owned by ``user`` (a zombie, exited and waiting for its
    parent to reap it, holds nothing and counts as gone)."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid and not _zombie(entry):
                    out.append(int(entry))
            except OSError:
                continue
    return out


def stop_processes(user: str, grace_s: float = 3.0) -> list[int]:
    """SIGTERM every process of ``user``, SIGKILL what is left after ``grace_s``; returns pids."""
    found = user_processes(user)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in user_processes(user):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while user_processes(user) and time.monotonic() < deadline:
            time.sleep(0.1)
    return found


def _close_release(settings: Settings, project: str) -> bool:
    folder = settings.releases_dir / "desensitized" / project
    if not folder.is_dir():
        return False
    st = folder.stat()
    if st.st_mode & 0o077 == 0 and st.st_gid == 0:
        return False
    os.chown(folder, 0, 0)
    os.chmod(folder, 0o700)
    return True


def reconcile(settings: Settings, *, today: date | None = None,
              echo: Callable[[str], None] = lambda _: None) -> list[Revocation]:
    """Take away what the control database no longer grants (see the module docstring)."""
    if os.geteuid() != 0:
        return []
    states = _project_states(settings, today or date.today())
    airlock = settings.hub.airlock_user
    done: list[Revocation] = []
    written: list[int] = []

    def event(action: str, subject: str, detail: dict) -> None:  # each step as it is taken
        written.append(audit.record_event(settings, actor=ACTOR, action=action, subject=subject,
                                          detail=detail))

    for project, (allowed, why) in sorted(states.items()):
        group = project_group(settings, project)
        for user in sorted(_members(group) - allowed - {airlock}):
            subprocess.run(["gpasswd", "--delete", user, group], capture_output=True, check=False)
            reason = why or "not a member"
            done.append(Revocation(user, project, reason))
            event("access.group_removed", f"user:{user}",
                  {"project": project, "group": group, "reason": reason})
            echo(f"{user}: removed from {group} ({reason})")
        if why and _close_release(settings, project):
            event("access.release_closed", f"project:{project}", {"reason": why})
            echo(f"releases of {project}: closed ({why})")
    for user in sorted({r.user for r in done}):
        stopped = stop_processes(user)
        if stopped:
            event("access.processes_stopped", f"user:{user}", {"processes": len(stopped)})
            echo(f"{user}: {len(stopped)} process(es) stopped")
    if written:  # root wrote the airlock's database: its service user keeps owning it
        audit.hand_over(settings)

    egress.refresh(settings)
    return done


def watch(settings: Settings, interval_s: float, *, rounds: int | None = None,
          echo: Callable[[str], None] = print) -> None:
    """:func:`reconcile` every ``interval_s`` seconds (forever, or ``rounds`` times)."""
    n = 0
    while rounds is None or n < rounds:
        try:
            reconcile(settings, echo=echo)
        except Exception as exc:  # noqa: BLE001 - one failed round must not end the watch
            echo(f"access check failed: {type(exc).__name__}: {exc}")
        n += 1
        if rounds is None or n < rounds:
            time.sleep(interval_s)


def disable_user(settings: Settings, name: str) -> list[str]:
    """Lock NAME's password, take every enclave group away, stop their processes (audited)."""
    if os.geteuid() != 0:
        raise PermissionDeniedError("disabling a user needs root")
    prefix = settings.hub.project_group_prefix
    ours = set(role_groups(settings).values())
    removed = sorted(g for g in groups_of(name) if g in ours or g.startswith(prefix))
    subprocess.run(["usermod", "--lock", "--expiredate", "1", name], capture_output=True,
                   check=False)
    for g in removed:
        subprocess.run(["gpasswd", "--delete", name, g], capture_output=True, check=False)
    stopped = stop_processes(name)
    audit.record_event(settings, actor=ACTOR, action="access.user_disabled",
                       subject=f"user:{name}",
                       detail={"groups": removed, "processes": len(stopped)})
    audit.hand_over(settings)

    egress.refresh(settings)
    return removed
