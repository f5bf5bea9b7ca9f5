"""``enclave indicators`` commands: build and list the published indicator tables."""

from __future__ import annotations

import json

import click

from enclave.cli._main import _Ctx, cli, json_option, pass_ctx


@cli.group()
def indicators() -> None:
    """Policymaker indicators: checked aggregates of a release, read by the dashboards."""


@indicators.command("build")
@click.option("--release", "release", required=True,
              help="The release to compute from: project/vN, synthetic/<project>/vN or a folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--skip-missing", is_flag=True,
              help="Publish the indicators the release can make and skip those whose tables it "
                   "lacks (by default such a release is refused).")
@pass_ctx
def indicators_build(obj: _Ctx, release: str, as_json: bool, skip_missing: bool) -> None:
    """Compute every indicator, check each cell (suppression, secondary suppression, cell-key
    rounding) and atomically publish releases/indicators/vN."""
    from enclave.io.indicators import build_indicators

    manifest = build_indicators(obj.settings, release, skip_missing=skip_missing)
    if as_json:
        click.echo(json.dumps(manifest, ensure_ascii=False, indent=2))
        return
    stats = manifest["indicators"]
    cells = sum(s["cells"] for s in stats.values())
    sup = sum(s["suppressed"] for s in stats.values())
    click.echo(f"published {manifest['release']} from {manifest['source_release']}: "
               f"{len(stats)} indicators, {cells:,} cells, {sup:,} suppressed; policy "
               f"{manifest['policy']} ({manifest['policy_sha256'][:12]})")
    for ind, why in manifest["skipped"].items():
        click.echo(f"  skipped {ind}: {why}")


@indicators.command("list")
@json_option
@pass_ctx
def indicators_list(obj: _Ctx, as_json: bool) -> None:
    """Published indicator tables, newest last."""
    from enclave.core.manifest import load_manifest
    from enclave.core.publish import versions
    from enclave.io.indicators import indicators_root

    root = indicators_root(obj.settings)
    rows = []
    for v in versions(root) if root.exists() else []:
        m = load_manifest(root / f"v{v}")
        rows.append({"release": m["release"], "path": str(root / f"v{v}"),
                     "source_release": m["source_release"], "policy": m["policy"],
                     "created_at": m["created_at"], "indicators": len(m["indicators"])})
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no indicator table published yet")
    for r in rows:
        click.echo(f"{r['release']:16s} from {r['source_release']:20s} {r['policy']:12s} "
                   f"{r['indicators']} indicators  {r['created_at']}")
