"""``enclave demo`` commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from enclave.cli._main import cli


@cli.group()
def demo() -> None:
    """Demo data: a synthetic multi-hospital Chinese population in each hospital's own dialect."""


@demo.command("generate")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write one sub-folder per hospital (plus truth.json) into.")
@click.option("--patients", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="Number of distinct persons.")
@click.option("--hospitals", default=5, show_default=True, type=click.IntRange(min=1, max=50),
              help="Number of hospitals; dialects cycle through GB18030 CSV, Chinese CSV, 病案首页, FHIR, HL7 v2.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same data).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo_generate(out: Path, patients: int, hospitals: int, seed: int, as_json: bool) -> None:
    """Write demo hospital extracts, each with its site.toml mapping, and truth.json."""
    from enclave.io.demo.generate import generate

    truth = generate(out, patients=patients, hospitals=hospitals, seed=seed,
                     progress=sys.stderr.isatty())
    summary = {k: truth[k] for k in ("persons", "hospitals", "patients_per_hospital") if k in truth}
    summary["out"] = str(out)
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        click.echo(f"wrote {truth.get('hospitals')} hospitals, {truth.get('persons')} persons to {out}")
        click.echo(f"ingest each with: enclave ingest {out}/<site> --site <site>")
