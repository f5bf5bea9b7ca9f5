"""Research projects as values: who may use which columns of the store, how, for what, until when.

A project is the unit of approval (Five Safes: *safe projects*). It names its purpose and principal
investigator, its members (Unix user names: each researcher is one Unix user in the hub), the tier
of data it may see (the ``synthetic`` twin only, or a ``desensitized`` release of its own), the
tables and columns it may use, the sharing form its outputs take (GB/T 37964: public, controlled
or enclave — which fixes the re-identification risk threshold of its releases), and an expiry date.

Pure values and parsing only; validation against the store model and persistence live in
:mod:`enclave.io.projects`.

>>> parse_table_spec("visit_occurrence:visit_start_date, care_site_id")
('visit_occurrence', ('visit_start_date', 'care_site_id'))
>>> parse_table_spec("person")
('person', ('*',))
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from types import MappingProxyType

from enclave.core.errors import BadInputError
from enclave.core.settings import ReleaseSettings, Settings

#: Marks "every column of the table" in :attr:`Project.allowed`.
ALL_COLUMNS = "*"

#: Project ids become Unix group and directory names (``releases/desensitized/<id>/``): lower-case
#: letters, digits and single hyphens, starting with a letter, 3 to 24 characters (room is left for
#: a group prefix within the 32-character limit on group names).
PROJECT_ID = re.compile(r"[a-z](?:[a-z0-9]|-(?=[a-z0-9])){2,23}")

#: Members are Unix user names (one per researcher in the hub).
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


class Tier(StrEnum):
    """Which data a project sees."""

    SYNTHETIC = "synthetic"
    DESENSITIZED = "desensitized"


class SharingForm(StrEnum):
    """GB/T 37964 sharing forms; each fixes the highest re-identification risk of a release."""

    PUBLIC = "public"
    CONTROLLED = "controlled"
    ENCLAVE = "enclave"

    def risk_threshold(self, settings: Settings | ReleaseSettings) -> float:
        """The highest re-identification risk a release for this form may have (a setting)."""
        release = settings.release if isinstance(settings, Settings) else settings
        return {
            SharingForm.PUBLIC: release.risk_threshold_public,
            SharingForm.CONTROLLED: release.risk_threshold_controlled,
            SharingForm.ENCLAVE: release.risk_threshold_enclave,
        }[self]


class ProjectStatus(StrEnum):
    """Where a project stands (the string values are stored and must stay stable).

    proposed → approved (by a steward) → active (by an admin, once provisioned) → closed; an
    active project past its expiry date is expired (derived from the date, and recorded by
    ``enclave project expire``). Only an active, unexpired project reads releases and exports."""

    PROPOSED = "proposed"
    APPROVED = "approved"
    ACTIVE = "active"
    EXPIRED = "expired"
    CLOSED = "closed"


class ProjectAction(StrEnum):
    APPROVE = "approve"
    ACTIVATE = "activate"
    EXPIRE = "expire"
    CLOSE = "close"
    ADD_MEMBER = "add_member"
    REMOVE_MEMBER = "remove_member"


_P, _PA = ProjectStatus, ProjectAction
#: (from, action) → to; membership changes keep the status
PROJECT_TRANSITIONS = {
    (_P.PROPOSED, _PA.APPROVE): _P.APPROVED,
    (_P.PROPOSED, _PA.CLOSE): _P.CLOSED,
    (_P.APPROVED, _PA.ACTIVATE): _P.ACTIVE,
    (_P.APPROVED, _PA.CLOSE): _P.CLOSED,
    (_P.ACTIVE, _PA.EXPIRE): _P.EXPIRED,
    (_P.ACTIVE, _PA.CLOSE): _P.CLOSED,
    (_P.EXPIRED, _PA.CLOSE): _P.CLOSED,
    **{(s, a): s for s in (_P.PROPOSED, _P.APPROVED, _P.ACTIVE)
       for a in (_PA.ADD_MEMBER, _PA.REMOVE_MEMBER)},
}
#: who acts on a project in each state (steward: approve, membership, close; admin: activate)
PROJECT_OWNERS = {
    _P.PROPOSED: "steward", _P.APPROVED: "admin", _P.ACTIVE: "steward",
    _P.EXPIRED: "steward", _P.CLOSED: "system",
}
#: which global role may take each action ("system" actions are taken by the enclave itself)
PROJECT_ACTORS = {
    _PA.APPROVE: "steward", _PA.ACTIVATE: "admin", _PA.EXPIRE: "system", _PA.CLOSE: "steward",
    _PA.ADD_MEMBER: "steward", _PA.REMOVE_MEMBER: "steward",
}


@dataclass(frozen=True, slots=True)
class Project:
    """A research project. ``allowed`` maps a table to its permitted columns, or to ``("*",)``."""

    id: str
    title: str
    purpose: str
    principal_investigator: str
    members: tuple[str, ...]
    tier: Tier
    allowed: Mapping[str, tuple[str, ...]]
    sharing_form: SharingForm
    expires: date
    created_at: datetime
    status: ProjectStatus = ProjectStatus.PROPOSED

    def __post_init__(self) -> None:
        # a read-only view, so the frozen value cannot be changed through its mapping
        frozen = {table: tuple(cols) for table, cols in self.allowed.items()}
        object.__setattr__(self, "allowed", MappingProxyType(frozen))
        object.__setattr__(self, "members", tuple(self.members))

    def allows_all(self, table: str) -> bool:
        return self.allowed.get(table) == (ALL_COLUMNS,)

    def is_expired(self, today: date) -> bool:
        """A project may be used up to and including its expiry date."""
        return today > self.expires

    def is_usable(self, today: date) -> bool:
        """Active and not past its expiry date: only then may it read releases or export."""
        return self.status is ProjectStatus.ACTIVE and not self.is_expired(today)

    def effective_status(self, today: date) -> ProjectStatus:
        if self.status is ProjectStatus.ACTIVE and self.is_expired(today):
            return ProjectStatus.EXPIRED
        return self.status

    def risk_threshold(self, settings: Settings | ReleaseSettings) -> float:
        return self.sharing_form.risk_threshold(settings)

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "purpose": self.purpose,
            "principal_investigator": self.principal_investigator,
            "members": list(self.members),
            "tier": self.tier.value,
            "allowed": {t: list(cols) for t, cols in self.allowed.items()},
            "sharing_form": self.sharing_form.value,
            "expires": self.expires.isoformat(),
            "created_at": self.created_at.isoformat(),
            "status": self.status.value,
        }


def parse_table_spec(spec: str) -> tuple[str, tuple[str, ...]]:
    """``table`` (every column) or ``table:col1,col2`` → (table, columns)."""
    table, sep, rest = spec.partition(":")
    table = table.strip()
    if not table:
        raise BadInputError(f"table spec '{spec}' names no table (use TABLE or TABLE:COL1,COL2)")
    if not sep:
        return table, (ALL_COLUMNS,)
    cols = tuple(c.strip() for c in rest.split(","))
    if not any(cols) or not all(cols):
        raise BadInputError(
            f"table spec '{spec}' has an empty column name (use TABLE or TABLE:COL1,COL2)"
        )
    if ALL_COLUMNS in cols:
        return table, (ALL_COLUMNS,)
    return table, tuple(dict.fromkeys(cols))


def merge_allowed(specs: Iterable[tuple[str, tuple[str, ...]]]) -> dict[str, tuple[str, ...]]:
    """Collect (table, columns) pairs into a mapping; a table given twice is refused (its columns
    are listed once, so no column name is silently absorbed by another entry's ``*``)."""
    merged: dict[str, tuple[str, ...]] = {}
    for table, cols in specs:
        if table in merged:
            raise BadInputError(
                f"table '{table}' is given twice; give it once, with all its columns "
                f"(--table {table}:COL1,COL2) or none for every column (--table {table})"
            )
        merged[table] = cols
    return merged
