"""``enclave airlock`` commands: the export queue, decisions, roles, and the service."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path

import click

from enclave.cli._main import _Ctx, as_option, cli, json_option, pass_ctx
from enclave.core.errors import PermissionDeniedError


def acting_user(as_user: str | None) -> str:
    """The CLI acts as the OS user; root may act for someone (``--as``), for operations and tests:
    whoever runs as root already owns every file of the enclave."""
    me = getpass.getuser()
    if as_user and as_user != me:
        if os.geteuid() != 0:
            raise PermissionDeniedError("only root may act as another user (--as)")
        return as_user
    return me


@cli.group()
def airlock() -> None:
    """Export requests: the review queue, steward decisions, roles, and the airlock service."""


def _open(obj: _Ctx):
    from enclave.io.airlock.exports import Airlock

    return Airlock(obj.settings)


def _print_request(req: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(req, ensure_ascii=False, indent=2, default=str))
        return
    click.echo(f"{req['id']}: {req['status']} (project {req['project']}, requester "
               f"{req['requester']}, round {req['round']})")
    checks = req.get("checks") or {}
    if checks:
        click.echo(f"  checks:    {checks['status']} ({'reproduced' if checks['ok'] else 'NOT reproduced'}"
                   f"), ledger hits {len(checks['ledger_hits'])}, approvals needed "
                   f"{req['required']}, votes in {req['votes_in']}")
        for p in checks["problems"]:
            click.echo(f"    - {p}")
    if req.get("decision_reason"):
        click.echo(f"  reason:    {req['decision_reason']}")
    click.echo(f"  files:     {', '.join(f['name'] for f in req['files'])}")
    for v in req.get("votes", []):
        click.echo(f"  vote:      round {v['round']} {v['steward']}: {v['vote']} {v['reason']}")


@airlock.command("list")
@click.option("--status", help="Only requests in this state.")
@click.option("--mine", is_flag=True, help="Only my own requests (default for non-stewards).")
@as_option
@json_option
@pass_ctx
def airlock_list(obj: _Ctx, status: str | None, mine: bool, as_user: str | None,
                 as_json: bool) -> None:
    """The review queue (stewards, admins) or your own requests."""
    user = acting_user(as_user)
    with _open(obj) as a:
        actor = a.actor(user)
        queue = not mine and (actor.is_steward or actor.is_admin)
        rows = a.list(user, status=status, queue=queue)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no export requests")
    for r in rows:
        click.echo(f"{r['id']:16s} {r['status']:18s} {r['project']:24s} {r['requester']:12s} "
                   f"round {r['round']}  needs {r['required'] or '-'}  {r['created_at'][:19]}")


@airlock.command("show")
@click.argument("request_id")
@as_option
@json_option
@pass_ctx
def airlock_show(obj: _Ctx, request_id: str, as_user: str | None, as_json: bool) -> None:
    """One export request (votes stay hidden until the round is decided)."""
    with _open(obj) as a:
        _print_request(a.describe(request_id, acting_user(as_user)), as_json)


def _vote(obj: _Ctx, request_id: str, vote: str, reason: str, as_user: str | None,
          as_json: bool) -> None:
    with _open(obj) as a:
        _print_request(a.vote(acting_user(as_user), request_id, vote, reason or ""), as_json)


@airlock.command("approve")
@click.argument("request_id")
@click.option("--reason", default="", help="Optional note kept with the vote.")
@as_option
@json_option
@pass_ctx
def airlock_approve(obj: _Ctx, request_id: str, reason: str, as_user: str | None,
                    as_json: bool) -> None:
    """Vote to approve (a steward; never your own request)."""
    _vote(obj, request_id, "approve", reason, as_user, as_json)


@airlock.command("request-changes")
@click.argument("request_id")
@click.option("--reason", required=True, help="What must change (required).")
@as_option
@json_option
@pass_ctx
def airlock_changes(obj: _Ctx, request_id: str, reason: str, as_user: str | None,
                    as_json: bool) -> None:
    """Vote to send the request back to its requester for changes."""
    _vote(obj, request_id, "request_changes", reason, as_user, as_json)


@airlock.command("reject")
@click.argument("request_id")
@click.option("--reason", required=True, help="Why it may not leave (required).")
@as_option
@json_option
@pass_ctx
def airlock_reject(obj: _Ctx, request_id: str, reason: str, as_user: str | None,
                   as_json: bool) -> None:
    """Vote to reject."""
    _vote(obj, request_id, "reject", reason, as_user, as_json)


@airlock.command("revoke")
@click.argument("request_id")
@click.option("--reason", required=True, help="Why the released output is revoked (required).")
@as_option
@json_option
@pass_ctx
def airlock_revoke(obj: _Ctx, request_id: str, reason: str, as_user: str | None,
                   as_json: bool) -> None:
    """Revoke a released output: it leaves the outbox (kept as evidence)."""
    with _open(obj) as a:
        _print_request(a.revoke(acting_user(as_user), request_id, reason), as_json)


@airlock.command("withdraw")
@click.argument("request_id")
@as_option
@json_option
@pass_ctx
def airlock_withdraw(obj: _Ctx, request_id: str, as_user: str | None, as_json: bool) -> None:
    """Withdraw your own request."""
    with _open(obj) as a:
        _print_request(a.withdraw(acting_user(as_user), request_id), as_json)


@airlock.command("recover")
@pass_ctx
def airlock_recover(obj: _Ctx) -> None:
    """Finish requests a crash left between steps (the service does this when it starts)."""
    with _open(obj) as a:
        done = a.recover()
    click.echo(f"recovered {len(done)} request(s)" + (f": {', '.join(done)}" if done else ""))


@airlock.group("role")
def airlock_role() -> None:
    """Global roles held in the airlock database (steward, policymaker, admin)."""


@airlock_role.command("add")
@click.argument("user")
@click.argument("role")
@as_option
@pass_ctx
def role_add(obj: _Ctx, user: str, role: str, as_user: str | None) -> None:
    """Grant USER the ROLE (admins only; audited)."""
    from enclave.core.audit import now
    from enclave.io.airlock.roles import add_role

    with _open(obj) as a:
        add_role(a.con, a.actor(acting_user(as_user)), user, role, now())
    click.echo(f"{user} is now {role}")


@airlock_role.command("remove")
@click.argument("user")
@click.argument("role")
@as_option
@pass_ctx
def role_remove(obj: _Ctx, user: str, role: str, as_user: str | None) -> None:
    """Take the ROLE from USER (admins only; audited)."""
    from enclave.io.airlock.roles import remove_role

    with _open(obj) as a:
        remove_role(a.con, a.actor(acting_user(as_user)), user, role)
    click.echo(f"{user} is no longer {role}")


@airlock_role.command("list")
@json_option
@pass_ctx
def role_list(obj: _Ctx, as_json: bool) -> None:
    """Roles granted in the airlock database (Unix-group roles are not listed)."""
    from enclave.io.airlock.roles import list_roles

    with _open(obj) as a:
        rows = list_roles(a.con)
    if as_json:
        click.echo(json.dumps([{"user": u, "role": r} for u, r in rows]))
        return
    for u, r in rows:
        click.echo(f"{u:24s} {r}")


@airlock.command("serve")
@click.option("--port", type=int, help="Port to listen on (default: setting hub.airlock_port).")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--tokens", "tokens_file", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
              help="Standalone mode: a JSON token table {token: user} (tests and demos only; "
                   "refused under JupyterHub). Without it the service uses hub OAuth.")
@pass_ctx
def airlock_serve(obj: _Ctx, port: int | None, bind: str, tokens_file: Path | None) -> None:
    """Run the airlock HTTP service (as a JupyterHub service, or standalone with --tokens)."""
    import asyncio

    from enclave.core.settings import resolve_home
    from enclave.io.airlock.server import load_tokens, serve
    from enclave.io.hub.preflight import check_own_reach

    # run by the hub as its own user: a folder it cannot pass is named before loading settings
    check_own_reach(resolve_home(obj.home), "the airlock service")
    settings = obj.settings
    tokens = load_tokens(tokens_file) if tokens_file else None
    try:
        asyncio.run(serve(settings, port=port or settings.hub.airlock_port, bind=bind,
                          tokens=tokens))
    except KeyboardInterrupt:
        pass
