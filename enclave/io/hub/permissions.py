"""Who may read what, enforced by the operating system: Unix users, groups and file modes.

One Unix user per person (home 0700), one group per role (researchers, stewards, policymakers) and
one group per project (``enp-<id>``, members = the project's approved members). Release files are
group-owned and read-only:

    <home>                          0711 root        (traverse only)
    <home>/restricted               0700 root        (identified data, keys)
    <home>/control, audit, hub ...  0700 root
    <home>/releases                 0711 root
    releases/desensitized           0711 root        (no listing of other projects)
    releases/desensitized/<p>/      0750 root:enp-<p>
    releases/desensitized/<p>/vN/*  0440 root:enp-<p>
    releases/synthetic              0750 root:enclave-researchers (every researcher reads twins)
    releases/synthetic/**           0750 / 0440 same group
    releases/indicators/**          0750 / 0440 root:enclave-dash (the dashboards user's group)
    <home>/airlock/**               0700 enclave-airlock (the airlock service's own folder)

The hub services run as their own system users (:func:`ensure_service_users`), never as root:
``enclave-airlock`` owns the airlock folder (control database with the audit trail, request files,
ledger, outbox) and reads the project releases as a member of every project group (and of the
researchers group, for the twins), so its re-runs see what the researcher saw; ``enclave-dash``
reads the indicator tables only. Neither can enter the restricted zone.

Kernels run as the researcher, so these modes are the whole access check: nothing in the kernel
is trusted to enforce them. Needs root; every function here says plainly what it changes.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from enclave.core.errors import BadInputError, ConfigurationError, PermissionDeniedError
from enclave.core.model.project import USER_NAME
from enclave.core.settings import Settings
from enclave.io.hub import egress, registry
from enclave.io.projects import SqlProjectStore

ROLES = ("researcher", "steward", "policymaker")


@dataclass(frozen=True, slots=True)
class EnclaveUser:
    name: str
    uid: int
    roles: tuple[str, ...]
    projects: tuple[str, ...]


def role_groups(settings: Settings) -> dict[str, str]:
    h = settings.hub
    return {"researcher": h.researchers_group, "steward": h.stewards_group,
            "policymaker": h.policymakers_group}


def project_group(settings: Settings, project_id: str) -> str:
    return f"{settings.hub.project_group_prefix}{project_id}"


def _require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionDeniedError("managing enclave users and permissions needs root")


def _sh(cmd: list[str], *, stdin: str | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigurationError(f"{cmd[0]} failed: {proc.stderr.strip()[-500:]}")


def _known(lookup: Callable[[str], object], name: str) -> bool:
    """Whether ``lookup`` (``grp.getgrnam``, ``pwd.getpwnam``) finds ``name``."""
    try:
        lookup(name)
        return True
    except KeyError:
        return False


def group_exists(name: str) -> bool:
    return _known(grp.getgrnam, name)


def user_exists(name: str) -> bool:
    return _known(pwd.getpwnam, name)


def ensure_group(name: str) -> int:
    if not group_exists(name):
        _require_root()
        _sh(["groupadd", name])
    return grp.getgrnam(name).gr_gid


def groups_of(name: str) -> set[str]:
    pw = pwd.getpwnam(name)
    return {grp.getgrgid(g).gr_name for g in os.getgrouplist(name, pw.pw_gid)}


def add_user(settings: Settings, name: str, role: str, *, projects: tuple[str, ...] = (),
             password: str | None = None) -> str:
    """Create the Unix user (home 0700, no login shell) in its role group; returns the password.

    ``projects``: the user must be a member of each (``enclave project``); they join its group.
    """
    _require_root()
    if not USER_NAME.fullmatch(name):
        raise BadInputError(f"user name '{name}' is not a valid Unix user name")
    if role not in ROLES:
        raise BadInputError(f"role must be one of {', '.join(ROLES)}")
    if projects and role != "researcher":
        raise BadInputError("only researchers join projects")
    _check_membership(settings, name, projects)
    if user_exists(name):
        raise BadInputError(f"user '{name}' already exists (use 'enclave user grant' to add projects)")

    registry.claim(settings, users=[name])
    for g in role_groups(settings).values():
        ensure_group(g)
    _sh(["useradd", "--create-home", "-K", "HOME_MODE=0700", "--shell", "/usr/sbin/nologin",
         "--groups", role_groups(settings)[role], name])
    os.chmod(pwd.getpwnam(name).pw_dir, 0o700)
    password = password or secrets.token_urlsafe(12)
    _sh(["chpasswd"], stdin=f"{name}:{password}\n")
    if role == "researcher":
        copy_examples(name)
    for p in projects:
        grant(settings, name, p)

    egress.refresh(settings)
    return password


def copy_examples(name: str) -> None:
    """The example notebooks (``notebooks/`` of the repository), into ``~/examples`` of NAME, set
    to open in the enclave's kernel."""
    src = Path(__file__).resolve().parents[3] / "notebooks"
    if not src.is_dir():
        return
    pw = pwd.getpwnam(name)
    dest = Path(pw.pw_dir) / "examples"
    dest.mkdir(exist_ok=True)
    os.chown(dest, pw.pw_uid, pw.pw_gid)
    for nb in sorted(src.glob("*.ipynb")):
        target = dest / nb.name
        doc = json.loads(nb.read_text(encoding="utf-8"))
        # the enclave's only kernel, so the notebook opens without a "select kernel" prompt
        doc.setdefault("metadata", {})["kernelspec"] = {
            "name": "enclave", "display_name": "Python 3 (enclave, no network)",
            "language": "python"}
        target.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        os.chown(target, pw.pw_uid, pw.pw_gid)
        os.chmod(target, 0o600)


def _check_membership(settings: Settings, name: str, projects: tuple[str, ...]) -> None:
    if not projects:
        return

    store = SqlProjectStore(settings)
    for p in projects:
        if name not in store.get(p).members:
            raise PermissionDeniedError(
                f"'{name}' is not a member of project '{p}': a steward adds members first")


def grant(settings: Settings, name: str, project_id: str) -> None:
    """Add a project member to the project's group (takes effect at their next server start)."""
    _require_root()
    _check_membership(settings, name, (project_id,))
    ensure_group(project_group(settings, project_id))
    _sh(["usermod", "--append", "--groups", project_group(settings, project_id), name])

    egress.refresh(settings)


def ensure_service_users(settings: Settings) -> dict[str, int]:
    """Create the airlock and dashboards system users (no login shell, no password, own group,
    0700 home under /var/lib) when missing; returns their uids. Refused when another enclave
    home owns them (:mod:`enclave.io.hub.registry`)."""
    registry.claim(settings)
    out = {}
    for name in (settings.hub.airlock_user, settings.hub.dashboards_user):
        if not user_exists(name):
            _require_root()
            _sh(["useradd", "--system", "--user-group", "--create-home", "--home-dir",
                 f"/var/lib/{name}", "--shell", "/usr/sbin/nologin", name])
        pw = pwd.getpwnam(name)
        os.chmod(pw.pw_dir, 0o700)
        out[name] = pw.pw_uid
    return out


def _service(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _join(user: str, groups: list[str]) -> list[str]:
    missing = sorted(set(groups) - groups_of(user))
    if missing:
        _sh(["usermod", "--append", "--groups", ",".join(missing), user])
    return missing


def restart_service_processes(uid: int, needle: str) -> list[int]:
    """SIGTERM the processes of ``uid`` whose command line holds ``needle``; the hub starts a
    managed service that exited again (within its poll interval), with the user's current groups.
    The airlock is crash-safe (it recovers interrupted requests at start)."""
    import signal

    stopped = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            try:
                os.kill(int(entry), signal.SIGTERM)
                stopped.append(int(entry))
            except ProcessLookupError:
                pass
    return stopped


def remove_user(name: str) -> None:
    _require_root()
    if user_exists(name):
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        _sh(["userdel", "--remove", name])


def list_users(settings: Settings) -> list[EnclaveUser]:
    by_group = {g: r for r, g in role_groups(settings).items()}
    prefix = settings.hub.project_group_prefix
    out, services = [], {settings.hub.airlock_user, settings.hub.dashboards_user}
    for pw in sorted(pwd.getpwall(), key=lambda p: p.pw_name):
        if pw.pw_name in services:  # the airlock reads releases through groups: not a person
            continue
        groups = groups_of(pw.pw_name)
        roles = tuple(sorted(by_group[g] for g in groups if g in by_group))
        if roles:
            projects = tuple(sorted(g[len(prefix):] for g in groups if g.startswith(prefix)))
            out.append(EnclaveUser(pw.pw_name, pw.pw_uid, roles, projects))
    return out


def _set(path: Path, mode: int, gid: int = 0) -> None:
    os.chown(path, 0, gid)
    os.chmod(path, mode)


def apply_release_permissions(settings: Settings, echo: Callable[[str], None] = lambda _: None) -> None:
    """Set owners and modes of the zones and every published release (idempotent)."""
    _require_root()
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    _set(home, 0o711)
    for zone in (settings.restricted_dir, settings.control_path.parent, settings.audit_dir,
                 home / "hub"):
        if zone.exists():
            _set(zone, 0o700)
    airlock, dash = _service(settings.hub.airlock_user), _service(settings.hub.dashboards_user)
    if airlock is not None:  # the airlock service's own folder, whoever (root) wrote in it
        folder = settings.control_path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d, dirs, files in os.walk(folder):
            for p in (d, *(os.path.join(d, n) for n in dirs + files)):
                os.chown(p, airlock.pw_uid, airlock.pw_gid, follow_symlinks=False)
                if not os.path.islink(p):  # private: no group or other bits
                    os.chmod(p, os.lstat(p).st_mode & 0o700)
    rel = settings.releases_dir
    rel.mkdir(exist_ok=True)
    _set(rel, 0o711)
    for other in rel.iterdir():
        if other.is_dir() and other.name == "indicators" and dash is not None:
            _tree(other, dash.pw_gid)  # the dashboards user's own group: read only
        elif other.is_dir() and other.name not in ("desensitized", "synthetic"):
            _set(other, 0o700)  # anything else: root only
    des = rel / "desensitized"
    readable = []  # groups the airlock joins to re-run outputs on what the researcher read
    if des.exists():
        _set(des, 0o711)
        usable = _usable_projects(settings)
        for project_dir in sorted(p for p in des.iterdir() if p.is_dir()):
            gid = ensure_group(project_group(settings, project_dir.name))
            _tree(project_dir, gid)
            readable.append(project_group(settings, project_dir.name))
            if project_dir.name not in usable:  # closed, expired or unknown: root only
                _set(project_dir, 0o700)
                echo(f"releases of {project_dir.name}: closed (the project is not active)")
                continue
            echo(f"releases of {project_dir.name}: group {project_group(settings, project_dir.name)}")
    syn = rel / "synthetic"
    if syn.exists():
        _tree(syn, ensure_group(settings.hub.researchers_group))
        readable.append(settings.hub.researchers_group)
    if airlock is not None and readable and _join(airlock.pw_name, readable):
        # a process keeps the supplementary groups it started with: a running airlock would not
        # read the new project's release, so it is restarted (by the hub) with its new groups
        if restart_service_processes(airlock.pw_uid, "airlock serve"):
            echo("the airlock joined new project groups: restarted (the hub starts it again)")


def _usable_projects(settings: Settings) -> set[str]:
    from datetime import date


    return {p.id for p in SqlProjectStore(settings).list() if p.is_usable(date.today())}


def _tree(root: Path, gid: int) -> None:
    _set(root, 0o750, gid)
    for d, dirs, files in os.walk(root):
        for name in dirs:
            _set(Path(d) / name, 0o750, gid)
        for name in files:
            p = Path(d) / name
            _set(p, 0o600 if name.startswith(".") else 0o440, 0 if name.startswith(".") else gid)
