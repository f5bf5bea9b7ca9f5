"""``enclave ingest`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import click

from enclave.cli._main import _Ctx, cli, pass_ctx


@cli.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--site", required=True, help="Site (hospital) id, as in its mapping file.")
@click.option("--mapping", "mapping_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The site's mapping file (default: site.toml next to the extract).")
@click.option("--dialect", help="Use the built-in profile of a standard format: synthea, fhir, hl7v2, omop.")
@click.option("--json", "as_json", is_flag=True, help="Print per-file counts as JSON.")
@pass_ctx
def ingest(obj: _Ctx, path: Path, site: str, mapping_file: Path | None, dialect: str | None,
           as_json: bool) -> None:
    """Ingest a hospital extract (file or folder) into the OMOP store.

    Every source record is loaded, quarantined in etl_reject with a reason, or merged as a duplicate;
    re-ingesting the same file changes nothing, and a failed ingest leaves the store as it was.
    """
    from enclave.ingest.pipeline import ingest_path

    reports = ingest_path(obj.settings, path, site, mapping_file=mapping_file, dialect=dialect)
    if as_json:
        click.echo(json.dumps({"site": site, "files": [r.as_dict() for r in reports]}, ensure_ascii=False, indent=2))
        return
    for r in reports:
        rej = ", ".join(f"{k} {v}" for k, v in sorted(r.rejected.items())) or "none"
        note = " (already ingested)" if r.already_ingested else ""
        click.echo(f"{r.file}{note}: read {r.read}, loaded {r.loaded}, rejected {r.rejected_total} "
                   f"({rej}), merged duplicates {r.merged_duplicates}")
