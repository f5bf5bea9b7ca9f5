"""``enclave up`` commands."""

from __future__ import annotations

import json

import click

from enclave.cli._main import _Ctx, cli, pass_ctx


@cli.command()
@click.option("--patients", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="Demo population size.")
@click.option("--hospitals", default=5, show_default=True, type=click.IntRange(min=1, max=50),
              help="Demo hospitals.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of the demo data.")
@pass_ctx
def up(obj: _Ctx, patients: int, hospitals: int, seed: int) -> None:
    """Bring the enclave up on demo data.

    Generates the demo hospitals (once), ingests every hospital's extract into the OMOP store and
    prints what was loaded. Safe to run again: files already ingested are recognised and skipped.
    """
    from enclave.workflows.demo_up import bring_up

    summary = bring_up(obj.settings, patients=patients, hospitals=hospitals, seed=seed,
                       echo=click.echo)
    click.echo(json.dumps(summary, ensure_ascii=False, indent=2))
