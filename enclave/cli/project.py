"""``enclave project`` commands: create, list and show research projects."""

from __future__ import annotations

import json
from datetime import date

import click

from enclave.cli._main import _Ctx, as_option, cli, json_option, pass_ctx
from enclave.core.model.project import SharingForm, Tier


@cli.group()
def project() -> None:
    """Research projects: who may use which tables and columns, how, and until when."""


def _show(p, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(p.as_dict(), ensure_ascii=False, indent=2))
        return
    click.echo(f"{p.id}: {p.title}")
    click.echo(f"  status:       {p.status.value}")
    click.echo(f"  purpose:      {p.purpose}")
    click.echo(f"  PI:           {p.principal_investigator}")
    click.echo(f"  members:      {', '.join(p.members)}")
    click.echo(f"  tier:         {p.tier.value}")
    click.echo(f"  sharing form: {p.sharing_form.value}")
    click.echo(f"  expires:      {p.expires.isoformat()}")
    click.echo(f"  created:      {p.created_at.isoformat()}")
    click.echo("  tables:")
    for table, cols in p.allowed.items():
        click.echo(f"    {table}: {'all columns' if cols == ('*',) else ', '.join(cols)}")


@project.command("create")
@click.option("--id", "project_id", required=True,
              help="Project id: 3-24 lower-case letters, digits and hyphens, starting with a "
                   "letter.")
@click.option("--title", required=True, help="Short title of the project.")
@click.option("--purpose", required=True, help="What the data will be used for (the approved use).")
@click.option("--pi", "pi", required=True,
              help="Principal investigator's user name; always a member (added when not listed).")
@click.option("--member", "members", multiple=True, metavar="USER",
              help="A member's user name (repeatable).")
@click.option("--tier", required=True, type=click.Choice([t.value for t in Tier]),
              help="Data the project sees: the synthetic twin only, or a desensitized release.")
@click.option("--table", "tables", multiple=True, metavar="TABLE[:COL1,COL2]",
              help="A permitted OMOP table, optionally only some columns (repeatable; "
                   "no column list = every column).")
@click.option("--sharing", required=True, type=click.Choice([s.value for s in SharingForm]),
              help="Sharing form (GB/T 37964); fixes the risk threshold of the project's releases.")
@click.option("--expires", required=True, metavar="YYYY-MM-DD",
              help="Last day the project may use data; must be in the future.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded project as JSON.")
@pass_ctx
def project_create_cmd(obj: _Ctx, project_id: str, title: str, purpose: str, pi: str,
                       members: tuple[str, ...], tier: str, tables: tuple[str, ...], sharing: str,
                       expires: str, as_json: bool) -> None:
    """Record a research project (status 'proposed'; stewards approve it through the airlock)."""
    from enclave.core.model.project import merge_allowed, parse_table_spec
    from enclave.io.projects import SqlProjectStore, create_project

    allowed = merge_allowed(parse_table_spec(spec) for spec in tables)
    p = create_project(
        SqlProjectStore(obj.settings), id=project_id, title=title, purpose=purpose,
        principal_investigator=pi, members=members, tier=tier, allowed=allowed,
        sharing_form=sharing, expires=expires,
    )
    if as_json:
        _show(p, True)
    else:
        click.echo(f"project {p.id} recorded (status {p.status.value}, expires "
                   f"{p.expires.isoformat()})")


@project.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (a list of projects).")
@pass_ctx
def project_list_cmd(obj: _Ctx, as_json: bool) -> None:
    """Every recorded project, by id."""
    from enclave.io.projects import SqlProjectStore

    projects = SqlProjectStore(obj.settings).list()
    if as_json:
        click.echo(json.dumps([p.as_dict() for p in projects], ensure_ascii=False, indent=2))
        return
    if not projects:
        click.echo("no projects (create one with 'enclave project create')")
        return
    today = date.today()
    for p in projects:
        state = "expired" if p.is_expired(today) else p.status.value
        click.echo(f"{p.id:24s} {state:10s} {p.tier.value:13s} {p.sharing_form.value:10s} "
                   f"expires {p.expires.isoformat()}  PI {p.principal_investigator}  {p.title}")


@project.command("show")
@click.argument("project_id", metavar="ID")
@json_option
@pass_ctx
def project_show_cmd(obj: _Ctx, project_id: str, as_json: bool) -> None:
    """One project in full."""
    from enclave.io.projects import SqlProjectStore

    _show(SqlProjectStore(obj.settings).get(project_id), as_json)


# --- lifecycle: proposed → approved (steward) → active (admin) → expired / closed ---------------

def _lifecycle(obj: _Ctx, project_id: str, action: str, as_user: str | None, *,
               member: str | None = None, reason: str = "") -> None:
    from enclave.cli.airlock import acting_user
    from enclave.core.model.project import ProjectAction
    from enclave.io.airlock.exports import Airlock
    from enclave.io.airlock.projects import change_project
    from enclave.io.projects import SqlProjectStore

    store = SqlProjectStore(obj.settings)
    with Airlock(obj.settings, projects=store) as a:
        actor = a.actor(acting_user(as_user))
        p = change_project(a.con, store, actor, project_id, ProjectAction(action), member=member,
                           reason=reason)
    click.echo(f"project {p.id}: {p.status.value}; members {', '.join(p.members)}")
    if action in ("remove_member", "close"):
        _take_access_away(obj)


def _take_access_away(obj: _Ctx) -> None:
    """At once, not at the next check of the hub's access watch (root only; else the watch)."""
    import os

    if os.geteuid() == 0:
        from enclave.io.hub.access import reconcile

        reconcile(obj.settings, echo=click.echo)


@project.command("approve")
@click.argument("project_id", metavar="ID")
@as_option
@pass_ctx
def project_approve_cmd(obj: _Ctx, project_id: str, as_user: str | None) -> None:
    """A steward approves a proposed project."""
    _lifecycle(obj, project_id, "approve", as_user)


@project.command("activate")
@click.argument("project_id", metavar="ID")
@as_option
@pass_ctx
def project_activate_cmd(obj: _Ctx, project_id: str, as_user: str | None) -> None:
    """An admin activates an approved project (once its group and data are provisioned)."""
    _lifecycle(obj, project_id, "activate", as_user)


@project.command("close")
@click.argument("project_id", metavar="ID")
@click.option("--reason", required=True, help="Why the project is closed (required).")
@as_option
@pass_ctx
def project_close_cmd(obj: _Ctx, project_id: str, reason: str, as_user: str | None) -> None:
    """A steward closes a project: no more reads or exports."""
    _lifecycle(obj, project_id, "close", as_user, reason=reason)


@project.command("expire")
@pass_ctx
def project_expire_cmd(obj: _Ctx) -> None:
    """Record every active project past its expiry date as expired (run daily)."""
    from enclave.io.airlock.exports import Airlock
    from enclave.io.airlock.projects import expire_projects
    from enclave.io.projects import SqlProjectStore

    store = SqlProjectStore(obj.settings)
    with Airlock(obj.settings, projects=store) as a:
        done = expire_projects(a.con, store)
    click.echo(f"expired: {', '.join(done) or 'none'}")
    _take_access_away(obj)


@project.group("member")
def project_member() -> None:
    """Membership changes (stewards only; audited)."""


@project_member.command("add")
@click.argument("project_id", metavar="ID")
@click.argument("user")
@as_option
@pass_ctx
def project_member_add(obj: _Ctx, project_id: str, user: str, as_user: str | None) -> None:
    """Add USER to the project."""
    _lifecycle(obj, project_id, "add_member", as_user, member=user)


@project_member.command("remove")
@click.argument("project_id", metavar="ID")
@click.argument("user")
@as_option
@pass_ctx
def project_member_remove(obj: _Ctx, project_id: str, user: str, as_user: str | None) -> None:
    """Remove USER from the project (not its principal investigator)."""
    _lifecycle(obj, project_id, "remove_member", as_user, member=user)
