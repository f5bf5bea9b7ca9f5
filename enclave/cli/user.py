"""``enclave user`` commands: the Unix users of researchers, stewards and policymakers (root only)."""

from __future__ import annotations

import json

import click

from enclave.cli._main import _Ctx, cli, json_option, pass_ctx


@cli.group()
def user() -> None:
    """Enclave users: one Unix user each (home 0700), in a role group and their projects' groups."""


@user.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["researcher", "steward", "policymaker"]),
              help="What the user does in the enclave.")
@click.option("--project", "projects", multiple=True,
              help="A project the researcher is a member of: joins its Unix group (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (else generated).")
@pass_ctx
def user_add(obj: _Ctx, name: str, role: str, projects: tuple[str, ...], password_stdin: bool) -> None:
    """Create NAME as a Unix user with a 0700 home and print its password (shown once)."""
    from enclave.io.hub.permissions import add_user

    password = click.get_text_stream("stdin").readline().strip() if password_stdin else None
    password = add_user(obj.settings, name, role, projects=projects, password=password)
    click.echo(f"created {role} {name}" + (f" in {', '.join(projects)}" if projects else ""))
    if not password_stdin:
        click.echo(f"password: {password}")


@user.command("grant")
@click.argument("name")
@click.option("--project", required=True, help="The project NAME is a member of.")
@pass_ctx
def user_grant(obj: _Ctx, name: str, project: str) -> None:
    """Give a project member read access to the project's releases (at their next server start)."""
    from enclave.io.hub.permissions import grant

    grant(obj.settings, name, project)
    click.echo(f"{name} reads the releases of {project}")


@user.command("remove")
@click.argument("name")
@pass_ctx
def user_remove(obj: _Ctx, name: str) -> None:
    """Stop NAME's processes and delete the user with their home."""
    from enclave.io.hub.permissions import list_users, remove_user

    if name not in {u.name for u in list_users(obj.settings)}:
        raise click.BadParameter(f"'{name}' is not an enclave user", param_hint="NAME")
    remove_user(name)
    from enclave.io.hub import egress, registry

    registry.release(obj.settings.home, users=[name])  # the name is free for any home again
    egress.refresh(obj.settings)
    click.echo(f"removed {name}")


@user.command("disable")
@click.argument("name")
@pass_ctx
def user_disable(obj: _Ctx, name: str) -> None:
    """Lock NAME's login, take every enclave group away and stop their server and kernels
    (audited; their home stays for the record)."""
    from enclave.io.hub.access import disable_user
    from enclave.io.hub.permissions import list_users

    if name not in {u.name for u in list_users(obj.settings)}:
        raise click.BadParameter(f"'{name}' is not an enclave user", param_hint="NAME")
    removed = disable_user(obj.settings, name)
    click.echo(f"disabled {name}: login locked, removed from {', '.join(removed) or 'no group'}")


@user.command("list")
@json_option
@pass_ctx
def user_list(obj: _Ctx, as_json: bool) -> None:
    """Enclave users with their roles and projects."""
    from enclave.io.hub.permissions import list_users

    users = list_users(obj.settings)
    if as_json:
        click.echo(json.dumps([{"name": u.name, "uid": u.uid, "roles": list(u.roles),
                                "projects": list(u.projects)} for u in users], indent=2))
        return
    for u in users:
        click.echo(f"{u.name:20s} {','.join(u.roles):20s} {','.join(u.projects)}")
