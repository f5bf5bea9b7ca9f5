"""Can every service user and researcher reach what it needs? Checked before any work is done.

The hub services run as their own Unix users (the airlock, the dashboards, the idle culler) and a
researcher's server and kernels as the researcher. Each must *search* (``x``) every directory on
the way to what it uses: the enclave home (``settings.toml``, the airlock folder, the releases),
the service or user environment, the repository the dashboards app imports from. A home inside a
folder only root may enter (``mktemp -d`` makes 0700 folders) used to pass unnoticed until the hub
died at start with a ``PermissionError`` in its log.

:func:`blockages` walks each needed path from ``/`` and decides, from each directory's owner,
group, mode bits and POSIX ACL (by ``stat``; it never switches users, and never asks
``os.access``, which answers for root), whether that user may pass, in the kernel's order: owner
class, else group class, else other. :func:`check_reachable` raises a :class:`ConfigurationError`
naming the directory, its owner and mode, who needs it for what, and the fix.

Two moments use it:

- *planned* (``enclave up``, before it generates anything): a user ``up`` has yet to create counts
  as "other" (neither owner nor in the group), which is what a fresh user is; directories whose
  modes the enclave sets itself before anyone needs them (the home and everything below it, an
  environment it builds) are skipped; a directory that does not exist yet is judged by the mode
  the umask will give it;
- *as it is* (:func:`enclave.io.hub.serve.start_hub`, ``enclave airlock serve``): the existing users
  with their groups, every directory on the way.

Stewards and policymakers run no process on the host (they use web pages), so they need no path.
"""

from __future__ import annotations

import os
import pwd
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from enclave.core.errors import ConfigurationError
from enclave.core.settings import Settings
from enclave.io.hub.config import REPO

SEARCH, READ = 1, 4  # permission bits within one class (x, r)

# POSIX ACL xattr (Linux): a version word, then entries (tag u16, perm u16, id u32), little-endian
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


@dataclass(frozen=True, slots=True)
class Account:
    """Who needs a path: a Unix user by uid and groups, or (uid None) one not created yet."""

    name: str
    role: str
    uid: int | None = None
    gids: frozenset[int] = frozenset()

    @classmethod
    def of(cls, name: str, role: str) -> Account:
        """The user ``name`` as it is now (its uid and every group), or not yet created."""
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return cls(name, role)
        return cls(name, role, pw.pw_uid, frozenset(os.getgrouplist(name, pw.pw_gid)))

    @classmethod
    def current(cls, role: str) -> Account:
        """This process's own effective user and groups."""
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, role, uid, frozenset({os.getegid(), *os.getgroups()}))


@dataclass(frozen=True, slots=True)
class Need:
    """``account`` must reach ``path`` (a folder it enters, or with ``read`` a file it reads) to
    do ``purpose``. Directories in ``managed`` (and below them) are left out of the walk: the
    enclave sets their modes itself before the account needs them."""

    account: Account
    path: Path
    purpose: str
    read: bool = False
    managed: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class Blockage:
    """``path`` stops ``need``: it lacks the bit (``SEARCH`` or ``READ``) for the account, who
    falls in ``who`` ("u", "g" or "o") of its permissions. ``exists`` False: a directory not made
    yet, whose ``mode`` is the one the umask will give it (owner root)."""

    path: Path
    owner: str
    group: str
    mode: int
    bit: int
    who: str
    need: Need
    exists: bool = True


def permits(st: os.stat_result, account: Account, bit: int, acl: bytes | None = None) -> bool:
    """Whether ``account`` has ``bit`` on a file with this stat (and ACL xattr), as the kernel
    decides: the owner class, else the group class, else other (no falling through)."""
    return _class_bits(st, account, acl)[1] & bit != 0


def _class_bits(st: os.stat_result, account: Account, acl: bytes | None) -> tuple[str, int]:
    """("u"|"g"|"o", the permission bits that apply to ``account``)."""
    uid, gids, mode = account.uid, account.gids, st.st_mode
    if uid == 0:  # root passes every directory and reads every file
        return "u", 7
    if uid is not None and uid == st.st_uid:
        return "u", (mode >> 6) & 7
    entries = _acl_entries(acl)
    if entries:
        mask = next((p for t, p, _ in entries if t == _MASK), 7)
        if uid is not None:
            for tag, perm, ident in entries:
                if tag == _USER and ident == uid:
                    return "g", perm & mask
        groups = [p for t, p, i in entries
                  if (t == _GROUP_OBJ and st.st_gid in gids) or (t == _GROUP and i in gids)]
        if groups:  # any matching group entry may grant; when one matches, other does not count
            bits = 0
            for p in groups:
                bits |= p & mask
            return "g", bits
        other = next((p for t, p, _ in entries if t == _OTHER), mode & 7)
        return "o", other
    if st.st_gid in gids:
        return "g", (mode >> 3) & 7
    return "o", mode & 7


def _acl_entries(raw: bytes | None) -> list[tuple[int, int, int]]:
    if not raw or len(raw) < 4 or struct.unpack_from("<I", raw)[0] != _ACL_VERSION:
        return []
    return [struct.unpack_from("<HHI", raw, off) for off in range(4, len(raw) - 7, 8)]


def _acl(path: Path) -> bytes | None:
    try:
        return os.getxattr(path, _ACL_XATTR)
    except OSError:  # no ACL, or a file system without them
        return None


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _chain(path: Path) -> list[Path]:
    """The directories entered on the way to ``path`` (``/`` first), following symbolic links:
    the folders as written, then those of the real path."""
    out: list[Path] = []
    for p in (path, Path(os.path.realpath(path))):
        for d in reversed(p.parents):
            if d not in out:
                out.append(d)
    return out


def _name(fn, ident: int) -> str:
    try:
        return fn(ident)[0]
    except KeyError:
        return str(ident)


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def blockages(needs: Iterable[Need], *, planned: bool = False) -> list[Blockage]:
    """Every (directory, need) where the need's account cannot pass; ``planned``: directories that
    do not exist yet are judged by the mode the umask will give them (owner root), else the walk of
    that path ends there (what does not exist is made by the code that needs it)."""
    import grp

    stats: dict[Path, tuple[os.stat_result, bytes | None] | None] = {}

    def look(p: Path):
        if p not in stats:
            try:
                stats[p] = (os.stat(p), _acl(p))
            except OSError:
                stats[p] = None
        return stats[p]

    made = os.stat_result((stat.S_IFDIR | (0o777 & ~_umask()), 0, 0, 0, 0, 0, 0, 0, 0, 0))
    out: list[Blockage] = []
    for need in needs:
        steps = [(d, SEARCH) for d in _chain(need.path)]
        final = look(need.path)
        if need.read:
            steps.append((need.path, READ))
        elif final is None or stat.S_ISDIR(final[0].st_mode):
            steps.append((need.path, SEARCH))
        for path, bit in steps:
            if bit == SEARCH and _inside(path, need.managed):
                continue
            found = look(path)
            if found is None:
                if not planned or bit == READ:
                    break
                st, acl, exists = made, None, False
            else:
                (st, acl), exists = found, True
            who, bits = _class_bits(st, need.account, acl)
            if bits & bit:
                continue
            out.append(Blockage(path, _name(pwd.getpwuid, st.st_uid), _name(grp.getgrgid, st.st_gid),
                                stat.S_IMODE(st.st_mode), bit, who, need, exists))
            break  # one blocking directory per need: the first on the way
    return out


def can_reach(needs: Iterable[Need], *, planned: bool = False) -> bool:
    return not blockages(needs, planned=planned)


def check_reachable(needs: Iterable[Need], *, home: Path, planned: bool = False) -> None:
    """Raise a :class:`ConfigurationError` naming each blocking directory (or file), its owner and
    mode, who needs it for what, and the fix; ``home``: the enclave home (its folders are put right
    by ``enclave hub sync``; a folder above it is left by choosing another home)."""
    found = blockages(needs, planned=planned)
    if not found:
        return
    by_path: dict[tuple[Path, int], list[Blockage]] = {}
    for b in found:
        by_path.setdefault((b.path, b.bit), []).append(b)
    lines = []
    for (path, bit), group in by_path.items():
        first, acc = group[0], group[0].need.account
        state = (f"{first.owner}:{first.group}, mode {first.mode:04o}" if first.exists else
                 f"not made yet: 'enclave up' would make it root's with mode {first.mode:04o}, "
                 f"umask {_umask():04o}")
        what = "read it" if bit == READ else "pass through it (search, x)"
        others = sorted({f"{b.need.account.name} ({b.need.account.role})" for b in group[1:]}
                        - {f"{acc.name} ({acc.role})"})
        lines.append(f"{path} ({state}) blocks the way to {first.need.path}: {acc.name} "
                     f"({acc.role}) cannot {what} to {first.need.purpose}"
                     + (f"; nor can {', '.join(others)}" if others else "") + ".")
        lines.append(f"  fix: {_fix(path, group, home)}")
    head = "a service user or researcher cannot reach what it needs; nothing was done:"
    raise ConfigurationError("\n".join([head, *lines]))


def _fix(path: Path, group: list[Blockage], home: Path) -> str:
    first = group[0]
    who = "".join(c for c in "ugo" if any(b.who == c for b in group))
    if first.bit == READ:
        return f"chmod {who}+r {path} (or move what it holds that is secret elsewhere)"
    if not first.exists:
        return (f"create it beforehand (mkdir -p -m 0711 {path}) or run with umask 022, or "
                "choose an enclave home (--home) elsewhere")
    if _inside(path, (home,)):
        return ("run 'enclave hub sync' as root (it sets the owners and modes of the enclave's "
                "folders)")
    fix = f"chmod {who}+x {path} (lets them pass through it, not list it)"
    if path in home.parents:
        fix += f", or choose an enclave home (--home) outside {path}"
    return fix


# --- what each user needs ----------------------------------------------------------------------

def hub_needs(settings: Settings, *, planned: bool, airlock: bool = True, dashboards: bool = False,
              researchers: Iterable[str] = ()) -> list[Need]:
    """What the hub's users need: the airlock service (when ``airlock``), the dashboards service
    (when ``dashboards``; its app imports from the repository), the idle culler, and each of
    ``researchers``. ``planned``: before ``enclave up`` made anything (see the module docstring)."""
    h, home = settings.hub, settings.home
    service_env, user_env = Path(h.serviceenv_dir), Path(h.userenv_dir)
    at_home = (home,) if planned else ()

    def env(path: Path) -> tuple[Path, ...]:  # an environment the build makes world-readable
        if not planned:
            return ()
        return (path,) if (path / "bin" / "python").exists() else (path, path.parent)

    def common(acc: Account) -> list[Need]:
        needs = [Need(acc, home / "settings.toml", "load the enclave's settings", read=True,
                      managed=at_home)]
        if acc.uid is not None:
            pw_dir = Path(pwd.getpwuid(acc.uid).pw_dir)
            if pw_dir.is_dir():
                needs.append(Need(acc, pw_dir, "work in its home folder"))
        return needs

    out: list[Need] = []
    if airlock:
        acc = Account.of(h.airlock_user, "the airlock service")
        out += common(acc) + [
            Need(acc, settings.control_path.parent, "keep the control database and requests",
                 managed=at_home),
            Need(acc, settings.releases_dir / "desensitized", "re-check outputs on the releases",
                 managed=at_home),
            Need(acc, service_env / "bin", "run Python from the service environment",
                 managed=env(service_env))]
    if dashboards:
        acc = Account.of(h.dashboards_user, "the dashboards service")
        out += common(acc) + [
            Need(acc, settings.releases_dir / "indicators", "read the indicator tables",
                 managed=at_home),
            Need(acc, service_env / "bin", "run Python from the service environment",
                 managed=env(service_env)),
            Need(acc, REPO / "dashboards", "import the dashboards app from the repository")]
    culler = Account.of(h.culler_user, "the idle culler")
    out.append(Need(culler, service_env / "bin", "run Python from the service environment",
                    managed=env(service_env)))
    for name in dict.fromkeys(researchers):
        acc = Account.of(name, "researcher")
        out += common(acc) + [
            Need(acc, settings.releases_dir / "desensitized", "read their projects' releases",
                 managed=at_home),
            Need(acc, user_env / "bin", "run notebook servers and kernels from the user "
                 "environment", managed=env(user_env))]
    return out


def researchers(settings: Settings) -> list[str]:
    """The members of the researchers group now (none when it does not exist yet)."""
    import grp

    try:
        return sorted(grp.getgrnam(settings.hub.researchers_group).gr_mem)
    except KeyError:
        return []


def check_hub(settings: Settings, *, planned: bool, airlock: bool = True, dashboards: bool = False,
              researchers: Iterable[str] = ()) -> None:
    """:func:`check_reachable` for :func:`hub_needs`."""
    check_reachable(hub_needs(settings, planned=planned, airlock=airlock, dashboards=dashboards,
                              researchers=researchers), home=settings.home, planned=planned)


def check_own_reach(home: Path, role: str) -> None:
    """Before a service loads its settings: can this process (not root) read ``settings.toml``
    and enter the airlock folder of ``home``? Root passes everything, so it is not checked."""
    if os.geteuid() == 0:
        return
    acc, s = Account.current(role), Settings(home=home)
    check_reachable([Need(acc, home / "settings.toml", "load the enclave's settings", read=True),
                     Need(acc, s.control_path.parent, "keep the control database and requests")],
                    home=home)
