"""``enclave release`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import click

from enclave.cli._main import _Ctx, cli, json_option, pass_ctx


@cli.group()
def release() -> None:
    """Desensitized, versioned, verifiable releases for projects."""


@release.command("build")
@click.option("--project", "project_id", required=True, help="The project to build the next release for.")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A release policy (TOML) over the defaults of the project's sharing form.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@pass_ctx
def release_build(obj: _Ctx, project_id: str, policy_file: Path | None, as_json: bool) -> None:
    """Build and atomically publish the next release of a desensitized-tier project.

    Refused (exit 5) when the measured re-identification risk is above the threshold of the
    project's sharing form; the message names the quasi-identifier that drives the risk.
    """
    from enclave.io.release.build import build_release

    manifest = build_release(obj.settings, project_id, policy_file=policy_file)
    if as_json:
        click.echo(json.dumps(manifest, ensure_ascii=False, indent=2))
        return
    r = manifest["risk"]
    click.echo(f"published {manifest['release']}: {sum(manifest['tables'].values()):,} rows in "
               f"{len(manifest['tables'])} tables; k = {r['k']}, prosecutor risk {r['prosecutor_max']:.3f} "
               f"(threshold {r['threshold']:.3f}), {r['suppressed']} patients suppressed, "
               f"loss {manifest['utility']['loss']:.3f}")


@release.command("verify")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def release_verify(obj: _Ctx, name: str, as_json: bool) -> None:
    """Check a release's files against the hashes in its manifest (NAME: project/vN or a folder)."""
    from enclave.core.manifest import resolve_release, verify_release

    path = resolve_release(obj.settings, name)
    problems = verify_release(path)
    if as_json:
        click.echo(json.dumps({"release": name, "ok": not problems, "problems": problems}, indent=2))
    else:
        click.echo(f"{name}: " + ("ok" if not problems else "; ".join(problems)))
    if problems:
        raise SystemExit(1)


@release.command("list")
@json_option
@pass_ctx
def release_list(obj: _Ctx, as_json: bool) -> None:
    """Published releases with their risk and size."""
    from enclave.core.manifest import load_manifest, release_dirs

    rows = []
    for path in release_dirs(obj.settings):
        m = load_manifest(path)
        rows.append({"release": m["release"], "tier": m["tier"], "sharing_form": m.get("sharing_form"),
                     "created_at": m["created_at"], "k": m.get("risk", {}).get("k"),
                     "rows": sum(m["tables"].values())})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['release']:30s} {r['tier']:13s} {r['sharing_form'] or '':10s} k={r['k']} "
                   f"rows={r['rows']:,} {r['created_at']}")
