"""``enclave audit`` commands: verify the hash chain, read the trail."""

from __future__ import annotations

import json

import click

from enclave.cli._main import _Ctx, cli, pass_ctx


@cli.group()
def audit() -> None:
    """The append-only, hash-chained audit trail."""


@audit.command("verify")
@click.option("--anchor", metavar="HASH", help="A head hash recorded earlier; must be in the chain.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def audit_verify(obj: _Ctx, anchor: str | None, as_json: bool) -> None:
    """Check every link of the chain; exit 1 naming the first broken one."""
    from enclave.audit import verify

    result = verify(obj.settings, anchor)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    elif result.ok:
        click.echo(f"audit trail intact: {result.events} events, head {result.head}")
    else:
        click.echo(f"audit trail BROKEN at event {result.first_broken}: {result.problem}")
    if not result.ok:
        raise SystemExit(1)


@audit.command("log")
@click.option("--subject", help="Only events about this subject (e.g. request:r-…, project:alpha).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def audit_log(obj: _Ctx, subject: str | None, as_json: bool) -> None:
    """The recorded events, oldest first."""
    from enclave.audit import connect, database_path, events

    if not database_path(obj.settings).exists():
        rows = []
    else:
        con = connect(obj.settings)
        try:
            rows = events(con, subject)
        finally:
            con.close()
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for e in rows:
        click.echo(f"{e['seq']:6d} {e['ts'][:19]} {e['actor']:12s} {e['action']:24s} "
                   f"{e['subject']}  {json.dumps(e['detail'], ensure_ascii=False)}")
