"""``enclave store`` commands."""

from __future__ import annotations

import json

import click

from enclave.cli._main import _Ctx, cli, json_option, pass_ctx


@cli.group()
def store() -> None:
    """The identified OMOP store (restricted zone)."""


@store.command("stats")
@json_option
@pass_ctx
def store_stats_cmd(obj: _Ctx, as_json: bool) -> None:
    """Row counts per table, the person count, rejects by reason and warnings."""
    from enclave.io.store import open_store, store_stats

    with open_store(obj.settings, read_only=True) as con:
        stats = store_stats(con)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    click.echo(f"persons: {stats['persons']}")
    for t, n in stats["tables"].items():
        click.echo(f"  {t:24s} {n:>12,}")
    if stats["rejects_by_reason"]:
        click.echo("rejects by reason:")
        for r, n in stats["rejects_by_reason"].items():
            click.echo(f"  {r:24s} {n:>12,}")
    if stats["loaded_with_warnings"]:
        click.echo("loaded rows counted under a warning:")
        for w, n in stats["loaded_with_warnings"].items():
            click.echo(f"  {w:24s} {n:>12,}")


@store.command("check")
@json_option
@pass_ctx
def store_check_cmd(obj: _Ctx, as_json: bool) -> None:
    """Check the store's integrity: unique keys, no orphans, balanced file counts (exit 1 if not)."""
    from enclave.io.store import open_store, store_check

    with open_store(obj.settings, read_only=True) as con:
        result = store_check(con)
    bad = {k: v for k, v in result.items() if v}
    if as_json:
        click.echo(json.dumps({"ok": not bad, "violations": result}, indent=2))
    else:
        for what, n in result.items():
            click.echo(f"{'FAIL' if n else 'ok  '} {what}" + (f": {n}" if n else ""))
    if bad:
        raise SystemExit(1)
