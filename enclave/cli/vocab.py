"""``enclave vocab`` commands: standard vocabularies (OHDSI Athena) in the store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from enclave.cli._main import _Ctx, cli, pass_ctx


@cli.group()
def vocab() -> None:
    """Standard vocabularies (OHDSI Athena): load a download, re-map rows.

    The store starts with a small shipped subset of concepts. Load a full Athena download with
    'vocab load', then give the rows ingested before it their concepts with 'vocab remap'.
    """


@vocab.command("load", short_help="Load an Athena vocabulary download into the store.")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the counts per table as JSON.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: the ingest.progress setting; terminals only).")
@pass_ctx
def vocab_load_cmd(obj: _Ctx, folder: Path, as_json: bool, progress: bool | None) -> None:
    """Load the OHDSI Athena vocabulary download unzipped in FOLDER into the store.

    Reads CONCEPT.csv (required) and, where present, VOCABULARY, DOMAIN, CONCEPT_CLASS,
    RELATIONSHIP, CONCEPT_RELATIONSHIP, CONCEPT_ANCESTOR, CONCEPT_SYNONYM and DRUG_STRENGTH.csv,
    as Athena ships them (tab separated, header row, no quoting, dates YYYYMMDD; run Athena's
    CPT4 tool first if the download has CPT4). New rows are added and rows with the same key are
    updated, so a newer download replaces older concepts; the enclave's local concepts (ids above
    2,000,000,000) are never touched. Everything loads in one transaction: on an error (named
    with its file and line) the store is unchanged. Loading the same download again changes
    nothing. Audited as vocab.load.
    """
    from enclave.io.ingest.vocabulary import load_vocabulary

    result = load_vocabulary(obj.settings, folder, progress=progress)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(f"vocabulary release: {result.vocabulary_version or 'not stated'}")
    click.echo(f"  {'table':22s} {'read':>12s} {'inserted':>12s} {'updated':>10s} {'removed':>10s}"
               f" {'unchanged':>12s}")
    for t in result.tables:
        click.echo(f"  {t.table:22s} {t.read:>12,} {t.inserted:>12,} {t.updated:>10,} {t.removed:>10,}"
                   f" {t.unchanged:>12,}")
        if t.skipped_local:
            click.echo(f"    {t.skipped_local:,} line(s) with a local concept id (above 2,000,000,000) skipped")
        if t.repeated:
            click.echo(f"    {t.repeated:,} repeated line(s) loaded once")
    if result.missing:
        click.echo(f"not in the download (tables left as they were): {', '.join(result.missing)}")
    if not result.changed:
        click.echo("nothing changed (this download was already loaded)")
    else:
        click.echo("next: 'enclave vocab remap' maps the rows already ingested")


@vocab.command("remap", short_help="Map the rows already ingested through the loaded vocabulary.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts per table as JSON.")
@pass_ctx
def vocab_remap_cmd(obj: _Ctx, as_json: bool) -> None:
    """Map the rows already in the store through the loaded vocabulary, without re-ingesting.

    In condition_occurrence, drug_exposure, procedure_occurrence, measurement, observation and
    death (cause): a local source concept whose vocabulary and code the vocabulary now holds
    becomes the vocabulary's concept, and a row whose standard concept is 0 gets its source
    concept's standard concept (the concept itself when standard, else its 'Maps to' target,
    preferring the table's domain). Measurements without a unit concept get the UCUM concept of
    their unit. One transaction; running it again changes nothing. Audited as vocab.remap.
    """
    from enclave.io.ingest.vocabulary import remap_vocabulary

    result = remap_vocabulary(obj.settings)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(f"  {'table':22s} {'concept 0 before':>18s} {'after':>12s} {'source concepts replaced':>26s}")
    for t in result.tables:
        click.echo(f"  {t.table:22s} {t.unmapped_before:>18,} {t.unmapped_after:>12,}"
                   f" {t.source_concepts_replaced:>26,}")
    click.echo(f"measurement units mapped to UCUM: {result.units_mapped:,}")
