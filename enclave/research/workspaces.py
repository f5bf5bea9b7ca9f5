"""The researcher's workspace: which releases this user may read, and read-only tables on them.

Access is decided by the operating system, not by this code: in the hub every desensitized release
is group-owned by its project's Unix group with mode 0440, so a release whose manifest and database
this process can read is a release this user may use; a user without a project sees the synthetic
twins only. Tables are ibis expressions on a DuckDB connection opened ``read_only=True``.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from enclave.core.errors import BadInputError, PermissionDeniedError
from enclave.core.manifest import MANIFEST, RELEASE_DB
from enclave.core.settings import Settings, load_settings
from enclave.io.airlock.client import record_event
from enclave.io.ibis_backend import connect_release
from enclave.io.outputs.codelists import CodeList, CodeListLimits, create

TIERS = ("desensitized", "synthetic")  # preference order: the real data where the user may read it


@dataclass(frozen=True, slots=True)
class ReleaseRef:
    """One release this user can read: its name (as ``resolve_release`` takes it) and hashes."""

    name: str  # "alpha/v1" (desensitized) or "synthetic/alpha/v1"
    tier: str
    project: str
    version: int
    path: Path
    release_sha256: str  # of release.duckdb, from the manifest
    manifest_sha256: str  # of manifest.json itself

    @property
    def database(self) -> Path:
        return self.path / RELEASE_DB


def read_release(path: Path) -> ReleaseRef:
    """The reference of the release folder ``path`` (its manifest must be readable)."""
    raw = (path / MANIFEST).read_bytes()
    manifest = json.loads(raw)
    return ReleaseRef(
        name=manifest.get("release", f"{path.parent.name}/{path.name}"),
        tier=path.parent.parent.name,
        project=manifest.get("project", path.parent.name),
        version=int(manifest.get("version", path.name[1:] or 0)),
        path=path,
        release_sha256=manifest["files"][RELEASE_DB]["sha256"],
        manifest_sha256=hashlib.sha256(raw).hexdigest(),
    )


def _my_projects(settings: Settings) -> set[str]:
    """Projects named by this process's Unix groups (``<project_group_prefix><id>``) and by
    ``$ENCLAVE_PROJECT``: where to look when a tier's folder may be entered but not listed (the
    hub makes ``releases/desensitized`` 0711 so that nobody can list other projects)."""
    prefix = settings.hub.project_group_prefix
    names = set()
    for gid in os.getgroups():
        try:
            name = grp.getgrgid(gid).gr_name
        except KeyError:
            continue
        if name.startswith(prefix):
            names.add(name[len(prefix):])
    if os.environ.get("ENCLAVE_PROJECT"):
        names.add(os.environ["ENCLAVE_PROJECT"])
    return names


def readable_releases(settings: Settings) -> list[ReleaseRef]:
    """Every release under the home whose manifest and database this process may read."""
    out = []
    for tier in TIERS:
        root = settings.releases_dir / tier
        if not os.access(root, os.X_OK):
            continue
        if os.access(root, os.R_OK):
            project_dirs = sorted(root.iterdir())
        else:  # enterable, not listable: only the user's own projects can be found
            project_dirs = [root / p for p in sorted(_my_projects(settings))]
        for project_dir in project_dirs:
            if not project_dir.is_dir() or not os.access(project_dir, os.R_OK | os.X_OK):
                continue
            for vdir in sorted(project_dir.glob("v*")):
                m, db = vdir / MANIFEST, vdir / RELEASE_DB
                if not (vdir.name[1:].isdigit() and os.access(m, os.R_OK)
                        and os.access(db, os.R_OK)):
                    continue
                try:
                    out.append(read_release(vdir))
                except (OSError, KeyError, ValueError):
                    continue  # a half-written or foreign folder is not a release
    return out


@dataclass
class Workspace:
    """The projects and releases the current user may use, and the chosen project/release.

    ``table(name)`` opens the chosen release read-only; without an explicit release that is the
    project's newest desensitized release the user can read, else its newest synthetic twin.
    ``codelist(name, codes)`` adds a small table of the researcher's own codes beside it.
    """

    settings: Settings
    releases: list[ReleaseRef]
    project: str | None = None
    release: ReleaseRef | None = None
    _backends: dict = field(default_factory=dict, repr=False)

    @property
    def projects(self) -> list[str]:
        return sorted({r.project for r in self.releases})

    def _available(self) -> str:
        return ", ".join(r.name for r in self.releases) or "none"

    def current(self) -> ReleaseRef:
        """The release ``table()`` reads (explicit, else the project's newest, best tier)."""
        if self.release is not None:
            return self.release
        if self.project is None:
            if not self.projects:
                raise PermissionDeniedError(
                    f"no release under {self.settings.releases_dir} is readable by this user "
                    "(ask a steward to add you to a project, or to publish a synthetic twin)")
            raise BadInputError(
                f"several projects are available ({', '.join(self.projects)}); choose one with "
                "workspace(project=...)")
        for tier in TIERS:
            mine = [r for r in self.releases if r.project == self.project and r.tier == tier]
            if mine:
                return max(mine, key=lambda r: r.version)
        raise BadInputError(f"no readable release of project '{self.project}' "
                            f"(available: {self._available()})")

    def tables(self) -> list[str]:
        return sorted(self.backend().list_tables())

    def backend(self, release: ReleaseRef | None = None):
        """The ibis DuckDB backend of ``release`` (default: the current one), opened read-only."""
        ref = release or self.current()
        if ref.name not in self._backends:
            con = connect_release(str(ref.database))

            # a trail that cannot take the event is said in one plain line on stdout (a notebook
            # shows stderr, where logging's last resort writes, as a red error)
            record_event("release.read", f"release:{ref.name}", {"tier": ref.tier},
                         settings=self.settings, note=print)
            con._enclave_release = ref  # how the checked outputs find the release of a table
            con._enclave_settings = self.settings
            con._enclave_codelists = {}  # name → CodeList: what an output's record carries
            self._backends[ref.name] = con
        return self._backends[ref.name]

    def table(self, name: str):
        """An ibis table of the current release (read-only)."""
        con = self.backend()
        names = con.list_tables()
        if name not in names:
            raise BadInputError(f"release {self.current().name} has no table '{name}' "
                                f"(tables: {', '.join(sorted(names))})")
        return con.table(name)

    def codelist(self, name: str, codes):
        """A code list of your own: the table ``name``, one column ``code``, beside the current
        release's tables, to join in ibis expressions and in SQL (``ws.backend().sql(...)``).

        ``codes`` is a list of text codes or of integer codes (a pandas or polars Series works;
        repeats are kept once; at most ``research.codelist_max_codes``, text codes at most
        ``research.codelist_max_code_chars`` characters). ``name`` is a lower-case identifier
        (a letter, then letters, digits or ``_``) that is not a release table's name, of this
        project or of any other (no OMOP CDM or vocabulary table). Calling it again with the same
        name replaces the list. Returns the ibis table:

        >>> dm = ws.codelist("diabetes", ["E10", "E11", "E13"])                   # doctest: +SKIP
        >>> c, p = ws.table("condition_occurrence"), ws.table("person")            # doctest: +SKIP
        >>> cases = c.filter(c.condition_source_value.isin(dm.code))               # doctest: +SKIP
        >>> crosstab(cases.join(p, "person_id"), "region", "condition_source_value",
        ...          aggfunc="patients")                                          # doctest: +SKIP

        Every output whose SQL reads a code list carries its name and codes in its record
        (``out.record["codelists"]``); the airlock's re-check creates it from there in its
        sandbox before it re-runs the output's SQL, never from a file.
        """
        codelist = CodeList.of(name, codes, CodeListLimits.from_settings(self.settings))
        con = self.backend()
        create(con.con, [codelist])  # refuses a name of one of this release's tables
        con._enclave_codelists[codelist.name] = codelist
        return con.table(codelist.name)

    def close(self) -> None:
        for con in self._backends.values():
            con.disconnect()
        self._backends.clear()

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{r.project}</td><td>{r.tier}</td><td>{r.name}</td>"
            f"<td>{'✔' if self.release is not None and r == self.release else ''}</td></tr>"
            for r in self.releases)
        try:
            cur = self.current().name
        except (BadInputError, PermissionDeniedError) as exc:
            cur = str(exc)
        return (f"<div><b>Workspace</b> (home {self.settings.home}); current release: "
                f"<code>{cur}</code><table><tr><th>project</th><th>tier</th><th>release</th>"
                f"<th></th></tr>{rows}</table></div>")


def workspace(home: str | Path | None = None, project: str | None = None,
              release: str | None = None, tier: str | None = None,
              settings: Settings | None = None) -> Workspace:
    """The workspace of the current OS user.

    ``home``: the enclave home (else ``$ENCLAVE_HOME``, else the settings default). ``project``:
    which project ``table()`` reads (needed only when several are readable). ``release``: an
    explicit release by name (``synthetic/alpha/v1`` or ``alpha/v1``) instead of the newest.
    ``tier``: ``synthetic`` or ``desensitized`` to use only that tier's releases (e.g. develop on
    the twin although the desensitized release is readable).
    """
    settings = settings or load_settings(home)
    refs = readable_releases(settings)
    if tier is not None:
        if tier not in TIERS:
            raise BadInputError(f"tier must be one of {', '.join(TIERS)}, not '{tier}'")
        refs = [r for r in refs if r.tier == tier]
    ws = Workspace(settings=settings, releases=refs)
    if release is not None:
        match = [r for r in refs if r.name == release or
                 (r.tier == "desensitized" and f"desensitized/{r.name}" == release)]
        if not match:
            raise BadInputError(f"no readable release '{release}' "
                                f"(available: {ws._available()})")
        ws.release = match[0]
        ws.project = match[0].project
        if project is not None and project != ws.project:
            raise BadInputError(f"release '{release}' belongs to project '{ws.project}', "
                                f"not '{project}'")
    elif project is not None:
        if project not in ws.projects:
            raise BadInputError(f"no readable release of project '{project}' "
                                f"(projects: {', '.join(ws.projects) or 'none'})")
        ws.project = project
    elif len(ws.projects) == 1:
        ws.project = ws.projects[0]
    return ws
