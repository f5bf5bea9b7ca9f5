"""``enclave ingest`` commands."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click

from enclave.cli._main import _Ctx, cli, pass_ctx
from enclave.core.errors import NothingLoadedError


@cli.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--site", required=True, help="Site (hospital) id, as in its mapping file.")
@click.option("--mapping", "mapping_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The site's mapping file (default: site.toml next to the extract).")
@click.option("--dialect", help="Use the built-in profile of a standard format: synthea, fhir, hl7v2, omop.")
@click.option("--redo", is_flag=True,
              help="Forget what earlier runs loaded from these files (every row, reject and record) "
                   "and load them afresh, in the same transaction; audited. For files ingested with "
                   "a wrong mapping.")
@click.option("--allow-empty", is_flag=True,
              help="Exit 0 even when a file or the folder loaded nothing (the warnings still print).")
@click.option("--json", "as_json", is_flag=True, help="Print per-file counts as JSON.")
@pass_ctx
def ingest(obj: _Ctx, path: Path, site: str, mapping_file: Path | None, dialect: str | None,
           redo: bool, allow_empty: bool, as_json: bool) -> None:
    """Ingest a hospital extract (file or folder) into the OMOP store.

    Every source record is loaded, quarantined in etl_reject with a reason, or merged as a duplicate;
    re-ingesting the same file changes nothing, and a failed ingest leaves the store as it was.
    A file counts as ingested once a row of it loaded: after a run that loaded nothing from it
    (wrong encoding or dialect), the corrected run loads it. A run that loads nothing from a file
    or folder ends with a warning naming the likely cause and exit code 7 (see --allow-empty).
    """
    from enclave.core import audit
    from enclave.io.ingest.pipeline import ingest as run_ingest

    settings = obj.settings
    run = run_ingest(settings, path, site, mapping_file=mapping_file, dialect=dialect, redo=redo)
    redone = [r.file for r in run.reports if r.redone]
    if redone:
        audit.record_event(settings, actor=getpass.getuser(), action="ingest.redo", subject=f"site:{site}",
                           detail={"files": redone})
    if as_json:
        click.echo(json.dumps({"site": site, "files": [r.as_dict() for r in run.reports],
                               "warnings": run.warnings}, ensure_ascii=False, indent=2))
    else:
        for r in run.reports:
            click.echo(_line(r))
    for w in run.warnings:
        click.echo(f"warning: {w}", err=True)
    if run.warnings and not allow_empty:
        raise NothingLoadedError(
            f"nothing loaded from {len(run.warnings)} of the extract's files or folders (see the "
            "warnings above); fix the cause and run again, or pass --allow-empty")


def _line(r) -> str:
    rej = ", ".join(f"{k} {v}" for k, v in sorted(r.rejected.items())) or "none"
    note = (" (already ingested)" if r.already_ingested else
            f" (same bytes as {r.duplicate_of})" if r.duplicate_of else
            " (redone)" if r.redone else " (retried: the last run loaded nothing)" if r.retried else "")
    warn = ", ".join(f"{k} {v}" for k, v in sorted(r.warnings.items()))
    return (f"{r.file}{note}: read {r.read}, loaded {r.loaded}, rejected {r.rejected_total} "
            f"({rej}), merged duplicates {r.merged_duplicates}"
            + (f"; loaded with warnings: {warn}" if warn else ""))
