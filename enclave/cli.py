"""The ``enclave`` command line. Every command takes ``--home DIR`` (or ``ENCLAVE_HOME``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from enclave.errors import EnclaveError
from enclave.settings import Settings, load_settings


class _Ctx:
    def __init__(self, home: str | None):
        self.home = home

    @property
    def settings(self) -> Settings:
        return load_settings(self.home)


pass_ctx = click.make_pass_decorator(_Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=str),
    envvar="ENCLAVE_HOME",
    help="The enclave's data root (default: $ENCLAVE_HOME or ~/.local/share/enclave).",
)
@click.version_option(package_name="emr-enclave")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """A research data enclave for electronic medical records."""
    ctx.obj = _Ctx(home)


# --- demo ------------------------------------------------------------------------------------
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
    from enclave.demo.generate import generate

    truth = generate(out, patients=patients, hospitals=hospitals, seed=seed,
                     progress=sys.stderr.isatty())
    summary = {k: truth[k] for k in ("persons", "hospitals", "patients_per_hospital") if k in truth}
    summary["out"] = str(out)
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        click.echo(f"wrote {truth.get('hospitals')} hospitals, {truth.get('persons')} persons to {out}")
        click.echo(f"ingest each with: enclave ingest {out}/<site> --site <site>")


# --- ingest ----------------------------------------------------------------------------------
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


# --- up ------------------------------------------------------------------------------------
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


# --- store -----------------------------------------------------------------------------------
@cli.group()
def store() -> None:
    """The identified OMOP store (restricted zone)."""


@store.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def store_stats_cmd(obj: _Ctx, as_json: bool) -> None:
    """Row counts per table, the person count and rejects by reason."""
    from enclave.store import open_store, store_stats

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


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, standalone_mode=False, prog_name="enclave")
    except EnclaveError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
