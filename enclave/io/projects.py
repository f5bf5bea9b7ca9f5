"""Research projects: validation and the repository in the control database.

:func:`create_project` validates a proposal against the store model and the classification catalog
and records it with status ``proposed`` (steward approval comes with the airlock). Storage sits
behind the small :class:`ProjectStore` protocol; :class:`SqlProjectStore` keeps projects in the
control database (``Settings.control_path``, SQLite, with the export requests and the audit trail),
which holds no patient data.

Rules (every refusal is one :class:`~enclave.core.errors.BadInputError` listing everything wrong):

* the id is a slug (see :data:`enclave.core.model.project.PROJECT_ID`) and not taken;
* title, purpose are given; the principal investigator and members are Unix user names;
* **the principal investigator is always a member**: when not listed among the members, they are
  added (first), so a project never lacks someone accountable inside it and members are never empty;
* at least one table; tables and columns must exist in the OMOP model (``cdm_columns()``), named
  exactly; every permitted column must be classified (``check_classified``), ``*`` included;
* the expiry date lies in the future (after today).
"""

from __future__ import annotations

import getpass
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Protocol

from enclave.core import audit
from enclave.core.errors import BadInputError, ConfigurationError, StoreError
from enclave.core.model.catalog import Catalog, check_classified
from enclave.core.model.omop import CDM_TABLES, cdm_columns
from enclave.core.model.project import (
    ALL_COLUMNS,
    PROJECT_ID,
    USER_NAME,
    Project,
    ProjectStatus,
    SharingForm,
    Tier,
)
from enclave.core.settings import Settings


class ProjectStore(Protocol):
    """Where projects are kept."""

    def create(self, project: Project) -> Project:
        """Record a new project; BadInputError when its id is taken."""
        ...

    def get(self, project_id: str) -> Project:
        """The project with this id; BadInputError when there is none."""
        ...

    def list(self) -> list[Project]:
        """Every project, by id."""
        ...


# --- validation ---------------------------------------------------------------------------------

def _enum(cls: type, value: object, what: str, problems: list[str]):
    try:
        return cls(value)
    except ValueError:
        problems.append(f"{what} must be one of {', '.join(m.value for m in cls)}, not '{value}'")
        return None


def _check_allowed(
    allowed: Mapping[str, Sequence[str]], classes: Catalog | None, problems: list[str]
) -> dict[str, tuple[str, ...]]:
    model = cdm_columns()
    clean: dict[str, tuple[str, ...]] = {}
    if not allowed:
        problems.append("a project needs at least one table (--table TABLE or TABLE:COL1,COL2)")
    for table, given in allowed.items():
        cols = tuple(dict.fromkeys(given))
        if table not in model:
            problems.append(f"unknown table '{table}' (known: {', '.join(CDM_TABLES)})")
            continue
        known = [c.name for c in model[table]]
        if not cols:
            problems.append(f"table '{table}' lists no columns (omit the column list for all)")
            continue
        if ALL_COLUMNS in cols:
            cols = (ALL_COLUMNS,)
            wanted = known
        else:
            unknown = [c for c in cols if c not in known]
            if unknown:
                problems.append(
                    f"unknown column(s) of table '{table}': {', '.join(unknown)}"
                )
                continue
            wanted = list(cols)
        try:
            check_classified(table, wanted, classes)
        except ConfigurationError as exc:
            problems.append(str(exc))
            continue
        clean[table] = cols
    return clean


def validate_project(
    *,
    id: str,
    title: str,
    purpose: str,
    principal_investigator: str,
    members: Sequence[str],
    tier: str | Tier,
    allowed: Mapping[str, Sequence[str]],
    sharing_form: str | SharingForm,
    expires: date | str,
    today: date,
    created_at: datetime,
    classes: Catalog | None = None,
) -> Project:
    """A new ``proposed`` project, or BadInputError listing every problem (field names only)."""
    problems: list[str] = []
    if not PROJECT_ID.fullmatch(id or ""):
        problems.append(
            f"project id '{id}' is not a slug: 3-24 lower-case letters, digits and single hyphens, "
            "starting with a letter (it becomes a Unix group and directory name)"
        )
    if not (title or "").strip():
        problems.append("a project needs a title")
    if not (purpose or "").strip():
        problems.append("a project needs a purpose (what the data will be used for)")
    pi = (principal_investigator or "").strip()
    if not USER_NAME.fullmatch(pi):
        problems.append(f"principal investigator '{pi}' is not a user name (lower-case Unix login)")
    names = [m.strip() for m in members]
    bad = [m for m in names if not USER_NAME.fullmatch(m)]
    if bad:
        problems.append(f"member(s) {', '.join(repr(m) for m in bad)} are not user names "
                        "(lower-case Unix logins)")
    all_members = tuple(dict.fromkeys([pi, *names]))  # the PI is always a member, listed first
    tier_v = _enum(Tier, tier, "tier", problems)
    form_v = _enum(SharingForm, sharing_form, "sharing form", problems)
    if isinstance(expires, str):
        try:
            expires = date.fromisoformat(expires)
        except ValueError:
            problems.append(f"expiry date '{expires}' is not a date (YYYY-MM-DD)")
            expires = None  # type: ignore[assignment]
    if isinstance(expires, date) and expires <= today:
        problems.append(f"expiry date {expires.isoformat()} is not in the future (today is "
                        f"{today.isoformat()})")
    clean = _check_allowed(allowed, classes, problems)
    if problems:
        raise BadInputError("project refused:\n" + "\n".join(f"  - {p}" for p in problems))
    return Project(
        id=id,
        title=title.strip(),
        purpose=purpose.strip(),
        principal_investigator=pi,
        members=all_members,
        tier=tier_v,
        allowed=clean,
        sharing_form=form_v,
        expires=expires,
        created_at=created_at,
        status=ProjectStatus.PROPOSED,
    )


def create_project(store: ProjectStore, *, today: date | None = None,
                   now: datetime | None = None, classes: Catalog | None = None,
                   **fields: object) -> Project:
    """Validate a proposal (see :func:`validate_project` for the fields) and record it."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    project = validate_project(today=today or now.date(), created_at=now, classes=classes,
                               **fields)  # type: ignore[arg-type]
    return store.create(project)


# --- the control database -----------------------------------------------------------------------

_DDL = (
    """CREATE TABLE IF NOT EXISTS project (
        project_id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        purpose TEXT NOT NULL,
        principal_investigator TEXT NOT NULL,
        tier TEXT NOT NULL,
        sharing_form TEXT NOT NULL,
        expires TEXT NOT NULL,      -- ISO date
        created_at TEXT NOT NULL,   -- ISO timestamp, UTC
        status TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS project_member (
        project_id TEXT NOT NULL REFERENCES project (project_id),
        position INTEGER NOT NULL,
        user_name TEXT NOT NULL,
        PRIMARY KEY (project_id, user_name)
    )""",
    """CREATE TABLE IF NOT EXISTS project_scope (
        project_id TEXT NOT NULL REFERENCES project (project_id),
        position INTEGER NOT NULL,
        table_name TEXT NOT NULL,
        column_name TEXT NOT NULL,  -- '*' for every column
        PRIMARY KEY (project_id, table_name, column_name)
    )""",
)

_COLUMNS = ("project_id, title, purpose, principal_investigator, tier, sharing_form, expires, "
            "created_at, status")


class SqlProjectStore:
    """Projects in the control database (SQLite, ``Settings.control_path``), beside the export
    requests and the audit trail: a project change and its audit event commit together.

    ``update`` and ``create`` take the caller's open connection (inside its transaction) or open
    their own; every other operation uses one short connection.
    """

    def __init__(self, settings: Settings):
        self.settings = settings

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A plain reading connection: no schema transaction, so reads never wait for a writer
        (WAL), not even for the lifecycle transaction that is reading before it writes."""
        try:
            con = sqlite3.connect(str(self.settings.control_path),
                                  timeout=self.settings.airlock.busy_timeout_s)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the control database: {exc}") from None
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def _write(self, con: sqlite3.Connection | None) -> Iterator[sqlite3.Connection]:
        if con is not None:  # the caller's transaction
            yield con
            return
        own = audit.connect(self.settings, schema=_DDL)
        try:
            with audit.transaction(own):
                yield own
        finally:
            own.close()

    def create(self, project: Project, *, con: sqlite3.Connection | None = None) -> Project:
        """Record a new project and its ``project.create`` audit event in one transaction."""
        with self._write(con) as c:
            for ddl in _DDL:
                c.execute(ddl)
            if c.execute("SELECT count(*) FROM project WHERE project_id = ?", (project.id,)).fetchone()[0]:
                raise BadInputError(f"project '{project.id}' already exists; choose another id")
            c.execute(f"INSERT INTO project ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                project.id, project.title, project.purpose, project.principal_investigator,
                project.tier.value, project.sharing_form.value, project.expires.isoformat(),
                project.created_at.astimezone(UTC).isoformat(), project.status.value))
            c.executemany("INSERT INTO project_member VALUES (?, ?, ?)",
                          [(project.id, i, m) for i, m in enumerate(project.members)])
            scope = [(t, col) for t, cols in project.allowed.items() for col in cols]
            c.executemany("INSERT INTO project_scope VALUES (?, ?, ?, ?)",
                          [(project.id, i, t, col) for i, (t, col) in enumerate(scope)])
            audit.record_event_in(c, actor=getpass.getuser(), action="project.create",
                                  subject=f"project:{project.id}",
                                  detail={"status": project.status.value, "tier": project.tier.value,
                                          "members": list(project.members)})
        return project

    def update(self, project: Project, *, con: sqlite3.Connection | None = None) -> Project:
        """Store a changed status and member list (the lifecycle in ``enclave.io.airlock.projects``
        decides who may change them, and writes its audit event in the same transaction)."""
        with self._write(con) as c:
            for ddl in _DDL:
                c.execute(ddl)
            if not c.execute("SELECT count(*) FROM project WHERE project_id = ?",
                             (project.id,)).fetchone()[0]:
                raise BadInputError(f"no project '{project.id}' (see 'enclave project list')")
            c.execute("UPDATE project SET status = ? WHERE project_id = ?",
                      (project.status.value, project.id))
            c.execute("DELETE FROM project_member WHERE project_id = ?", (project.id,))
            c.executemany("INSERT INTO project_member VALUES (?, ?, ?)",
                          [(project.id, i, m) for i, m in enumerate(project.members)])
        return project

    def get(self, project_id: str) -> Project:
        found = self._load(project_id)
        if not found:
            raise BadInputError(f"no project '{project_id}' (see 'enclave project list')")
        return found[0]

    def list(self) -> list[Project]:
        return self._load(None)

    def _load(self, project_id: str | None) -> list[Project]:
        if not self.settings.control_path.exists():
            return []  # nothing recorded yet
        where, params = ("", ()) if project_id is None else ("WHERE project_id = ?", (project_id,))
        with self._read() as con:
            if not con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'project'").fetchone()[0]:
                return []  # the control database exists, but no project was ever recorded
            heads = con.execute(f"SELECT {_COLUMNS} FROM project {where} ORDER BY project_id",
                                params).fetchall()
            members: dict[str, list[str]] = {}
            for pid, user in con.execute(
                    f"SELECT project_id, user_name FROM project_member {where} "
                    "ORDER BY project_id, position", params).fetchall():
                members.setdefault(pid, []).append(user)
            scope: dict[str, dict[str, list[str]]] = {}
            for pid, table, column in con.execute(
                    f"SELECT project_id, table_name, column_name FROM project_scope {where} "
                    "ORDER BY project_id, position", params).fetchall():
                scope.setdefault(pid, {}).setdefault(table, []).append(column)
        return [
            Project(
                id=pid, title=title, purpose=purpose, principal_investigator=pi,
                members=tuple(members.get(pid, ())), tier=Tier(tier),
                allowed={t: tuple(c) for t, c in scope.get(pid, {}).items()},
                sharing_form=SharingForm(form), expires=date.fromisoformat(expires),
                created_at=datetime.fromisoformat(created).astimezone(UTC),
                status=ProjectStatus(status),
            )
            for pid, title, purpose, pi, tier, form, expires, created, status in heads
        ]
