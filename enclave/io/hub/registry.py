"""Which enclave home owns which machine-wide names: Unix users and groups, the nftables table,
the ports.

``--home`` separates files only; users, groups, nftables tables and ports belong to the machine.
Each home's names derive from its instance (:func:`enclave.core.settings.instance_names`), so two homes
do not share them unless settings make them (an explicit ``hub.instance`` or name, or two derived
port blocks that happen to meet). This registry catches that: one root-owned JSON file per home
under :func:`enclave.core.settings.registry_dir` records what the home uses, and whatever would create
or take over such a name — a serving ``enclave up``, ``start_hub``, ``enclave user add``,
``enclave hub sync|egress`` — first calls :func:`claim`, which refuses, before anything is done,
when another home that still exists holds one of them (naming the name, that home and the fix).
The names of a home that no longer exists are taken over (and said so). Names that exist on the
machine but are in no record (made before this registry, or by hand) are claimed by the first home
that asks; a port that something else listens on is refused by
:func:`enclave.io.hub.serve.check_ports_free`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from enclave.core.errors import ConfigurationError
from enclave.core.settings import MACHINE_WIDE, Settings, registry_dir

PORT_SETTINGS = tuple(n for n in MACHINE_WIDE if n.endswith("port"))


class NameConflictError(ConfigurationError):
    """A machine-wide name (Unix user or group, nftables table, port) belongs to another enclave
    home, or a port to another program."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What one enclave home uses machine-wide."""

    home: str
    instance: str
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    group_prefixes: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()

    @classmethod
    def of(cls, settings: Settings, users: Iterable[str] = ()) -> Claim:
        """The names ``settings`` give: the service users, role groups, project group prefix,
        egress table and ports, and ``users`` (demo users, users added by name)."""
        h = settings.hub
        return cls(str(settings.home), h.instance,
                   tuple(sorted({h.airlock_user, h.dashboards_user, *users})),
                   tuple(sorted({h.researchers_group, h.stewards_group, h.policymakers_group})),
                   (h.project_group_prefix,), (h.egress_table,),
                   tuple(sorted({getattr(h, n) for n in PORT_SETTINGS})))

    def merged(self, other: Claim) -> Claim:
        """This claim, keeping the users ``other`` (this home's earlier record) held."""
        return replace(self, users=tuple(sorted({*self.users, *other.users})))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Claim:
        data = json.loads(text)  # fields a later version adds are ignored
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
                      if k in cls.__dataclass_fields__})


def overlap(mine: Claim, other: Claim) -> list[tuple[str, str | int]]:
    """The names of ``mine`` that ``other`` holds too, as (kind, name): ``user``, ``group``,
    ``prefix`` (project groups ``<prefix><project id>``: two prefixes overlap when one starts the
    other, and a group overlaps a prefix that starts it), ``table``, ``port``."""
    groups = set(mine.groups) & set(other.groups)
    groups |= {g for g in mine.groups for p in other.group_prefixes if g.startswith(p)}
    groups |= {g for g in other.groups for p in mine.group_prefixes if g.startswith(p)}
    return ([("user", u) for u in sorted(set(mine.users) & set(other.users))]
            + [("group", g) for g in sorted(groups)]
            + [("prefix", p) for p in mine.group_prefixes
               if any(p.startswith(q) or q.startswith(p) for q in other.group_prefixes)]
            + [("table", t) for t in sorted(set(mine.tables) & set(other.tables))]
            + [("port", p) for p in sorted(set(mine.ports) & set(other.ports))])


def describe(kind: str, name: str | int) -> str:
    return {"user": f"Unix user '{name}'", "group": f"Unix group '{name}'",
            "prefix": f"project groups '{name}*'", "table": f"nftables table 'inet {name}'",
            "port": f"port {name}"}[kind]


def setting_of(settings: Settings, kind: str, name: str | int) -> str:
    """The [hub] setting that gives this home the name (for the fix)."""
    h = settings.hub
    if kind == "prefix":
        return "hub.project_group_prefix"
    for setting in MACHINE_WIDE:
        if getattr(h, setting) == name:
            return f"hub.{setting}"
    if kind == "user" and str(name).startswith(h.demo_user_prefix):
        return "hub.demo_user_prefix"
    if kind == "group" and str(name).startswith(h.project_group_prefix):
        return "hub.project_group_prefix"
    return f"another name than '{name}'"


def record_path(home: str | Path, directory: Path | None = None) -> Path:
    """The registry file of ``home`` (named by a hash of its path)."""
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    return (directory or registry_dir()) / f"{digest}.json"


def _read(path: Path) -> Claim | None:
    """The record in ``path``; ``None`` when missing or garbled (it claims nothing)."""
    try:
        return Claim.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None


def _each(folder: Path) -> Iterator[tuple[Path, Claim]]:
    """Every readable record of ``folder`` with its file."""
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if (record := _read(path)) is not None:
            yield path, record


def records(directory: Path | None = None) -> list[Claim]:
    """Every readable record (a garbled file is skipped: it claims nothing)."""
    return [record for _, record in _each(directory or registry_dir())]


def record_of(settings: Settings) -> Claim | None:
    """This home's record, if it has one."""
    return _read(record_path(settings.home))


@contextmanager
def _locked() -> Iterator[Path]:
    """The registry folder (root, 0755), locked against another ``claim`` running at once."""
    folder = registry_dir()
    try:
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except PermissionError:
        raise ConfigurationError(
            f"cannot write the enclave registry {folder}: the names an enclave takes on the "
            "machine are recorded there; run this as root") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder
    finally:
        os.close(fd)


def _write(path: Path, claim: Claim) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(claim.to_json(), encoding="utf-8")
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _others(settings: Settings, mine: Claim, folder: Path) -> tuple[list, list]:
    """(blocking, stale): the other homes' records that share a name with ``mine``, as
    (record, its file, the shared names), split by whether that home still exists."""
    blocking, stale = [], []
    own = record_path(settings.home, folder)
    for path, other in _each(folder):
        if path == own:
            continue
        shared = overlap(mine, other)
        if shared:
            (blocking if Path(other.home).is_dir() else stale).append((other, path, shared))
    return blocking, stale


def claim(settings: Settings, users: Iterable[str] = (),
          echo: Callable[[str], None] = lambda _: None, *, write: bool = True) -> Claim:
    """Record that ``settings.home`` uses its machine-wide names (and ``users``), or refuse.

    Refused (:class:`NameConflictError`, nothing recorded) when another home that still exists
    holds one of them; a record of a home that no longer exists is dropped and its names taken
    over (``echo`` says so). Returns the record written (this home's earlier users kept).
    ``write=False`` only checks (records and drops nothing)."""
    mine = Claim.of(settings, users)
    with _locked() as folder:
        blocking, stale = _others(settings, mine, folder)
        if blocking:
            raise NameConflictError(_refusal(settings, blocking))
        if not write:
            return mine
        for other, path, shared in stale:
            path.unlink(missing_ok=True)
            echo(f"took over {', '.join(describe(*x) for x in shared)} from the enclave at "
                 f"{other.home} (instance {other.instance}), which no longer exists")
        own = record_path(settings.home, folder)
        earlier = _read(own)
        record = mine.merged(earlier) if earlier is not None else mine
        if record != earlier:
            _write(own, record)
        return record


def summary(settings: Settings) -> dict:
    """The instance, its machine-wide names, whether the registry holds them for this home, and
    the other existing homes that share one (what ``enclave status`` shows; reads only)."""
    h = settings.hub
    record = record_of(settings)
    try:
        blocking, _ = _others(settings, Claim.of(settings, record.users if record else ()),
                              registry_dir())
    except OSError:
        blocking = []
    return {"instance": h.instance, **{n: getattr(h, n) for n in MACHINE_WIDE},
            "registered": record is not None, "users": list(record.users) if record else [],
            "registry": str(record_path(settings.home)),
            "shared_with": [{"home": o.home, "instance": o.instance,
                             "names": [describe(*x) for x in shared]}
                            for o, _, shared in blocking]}


def _refusal(settings: Settings, blocking: list[tuple[Claim, Path, list]]) -> str:
    lines = [(f"the enclave at {settings.home} (instance {settings.hub.instance}) would take "
              "machine-wide names that belong to another enclave; nothing was done:")]
    knobs = set()
    for other, _, shared in blocking:
        lines.append(f"  {', '.join(describe(*x) for x in shared)}: used by the enclave at "
                     f"{other.home} (instance {other.instance})")
        if other.instance == settings.hub.instance:  # the same instance: every derived name
            knobs.add("hub.instance")
        else:
            knobs |= {setting_of(settings, *x) for x in shared}
    homes = " or ".join(sorted({o.home for o, _, _ in blocking}))
    lines.append(
        f"  fix: to work on that enclave, run 'enclave --home {homes} ...'; to run this one beside "
        f"it, give it its own names in {settings.home / 'settings.toml'} [hub]: "
        f"{', '.join(sorted(knobs))} (an explicit hub.instance or name there wins over the "
        "derived one; with none set, each home derives its own). The names of a home that no "
        "longer exists are taken over.")
    return "\n".join(lines)


def release(home: str | Path, users: Iterable[str] | None = None) -> None:
    """Forget ``users`` of the home's record (``enclave user remove``), or the whole record
    (``users`` None: the home is being deleted)."""
    with _locked() as folder:
        own = record_path(home, folder)
        if users is None:
            own.unlink(missing_ok=True)
            return
        if (record := _read(own)) is None:
            return
        gone = set(users)
        _write(own, replace(record, users=tuple(u for u in record.users if u not in gone)))
