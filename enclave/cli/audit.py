"""``enclave audit`` commands: verify the hash chain, read the trail."""

from __future__ import annotations

import json

import click

from enclave.cli._main import _Ctx, cli, json_option, pass_ctx


@cli.group()
def audit() -> None:
    """The append-only, hash-chained audit trail."""


@audit.command("verify")
@click.option("--anchor", metavar="HASH",
              help="A head hash recorded earlier; must be in the chain (default: the newest "
                   "anchor in <home>/audit/anchors, whose event must still carry its hash).")
@click.option("--no-anchor", is_flag=True, help="Check the chain alone, without any anchor.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def audit_verify(obj: _Ctx, anchor: str | None, no_anchor: bool, as_json: bool) -> None:
    """Check every link of the chain and the newest anchor; exit 1 naming the first broken one."""
    from enclave.core.audit import Anchor, newest_anchor, verify

    note = ""
    used: str | Anchor | None = anchor
    if anchor is None and not no_anchor:
        try:
            used = newest_anchor(obj.settings)
            note = "" if used else "no anchor written yet"
        except PermissionError:
            note = "the anchors are readable by root only: checked without an anchor"
    result = verify(obj.settings, used)
    if as_json:
        out = {**result.as_dict(), "anchor": used.as_dict() if isinstance(used, Anchor) else used}
        click.echo(json.dumps({**out, **({"note": note} if note else {})}, indent=2))
    elif result.ok:
        if isinstance(used, Anchor):
            where = f"; anchored event {used.seq} ({used.ts}) matches"
        else:
            where = f"; anchor {used[:12]}… found" if used else f"; {note}" if note else ""
        click.echo(f"audit trail intact: {result.events} events, head {result.head}{where}")
    else:
        click.echo(f"audit trail BROKEN at event {result.first_broken}: {result.problem}")
    if not result.ok:
        raise SystemExit(1)


@audit.command("anchor")
@click.option("--if-due", is_flag=True,
              help="Only when due: an approval since the newest anchor, or that anchor older "
                   "than hub.anchor_max_age_s (for cron).")
@pass_ctx
def audit_anchor(obj: _Ctx, if_due: bool) -> None:
    """Verify the chain, then append its head to <home>/audit/anchors (run as root: the
    airlock's service user must not be able to write there). The hub does this by itself after
    approvals and daily; this command is for hosts or moments without the hub."""
    from enclave.core.audit import anchor_due, write_anchor

    s = obj.settings
    if if_due and not anchor_due(s, s.hub.anchor_max_age_s):
        click.echo("no anchor due")
        return
    a = write_anchor(s, "cli")
    click.echo(f"anchored event {a.seq} ({a.hash}) at {a.ts}")


@audit.command("log")
@click.option("--subject", help="Only events about this subject (e.g. request:r-…, project:alpha).")
@json_option
@pass_ctx
def audit_log(obj: _Ctx, subject: str | None, as_json: bool) -> None:
    """The recorded events, oldest first."""
    from enclave.core.audit import connect, database_path, events

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
