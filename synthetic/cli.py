"""``enclave synth`` commands, registered on the ``enclave`` CLI through the ``enclave.commands``
entry point (``enclave`` itself never imports ``synthetic``)."""

from __future__ import annotations

import json

import click


@click.group()
def synth() -> None:
    """Synthetic twins of desensitized releases, readable by every researcher."""


@synth.command("build")
@click.option("--release", "release", required=True,
              help="The desensitized release to fit on (project/vN, or a release folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_obj
def synth_build(obj, release: str, as_json: bool) -> None:
    """Fit, sample, evaluate and atomically publish the next synthetic twin of RELEASE.

    Refused (exit 5) when the twin misses the privacy bar (``[synthetic]`` in settings.toml).
    """
    from synthetic.build import build_twin

    manifest = build_twin(obj.settings, release)
    if as_json:
        click.echo(json.dumps(manifest, ensure_ascii=False, indent=2))
        return
    p = manifest["privacy"]
    click.echo(
        f"published {manifest['release']} from {manifest['source_release']}: "
        f"{sum(manifest['tables'].values()):,} rows in {len(manifest['tables'])} tables; "
        f"quality {manifest['quality']['score']:.3f}, diagnostic {manifest['diagnostic']['score']:.3f}; "
        f"DCR overfitting protection ≥ {min(r['dcr_overfitting_protection'] for r in p.values()):.3f}, "
        f"identical records ≤ {max(r['identical_share'] for r in p.values()):.2%}; "
        f"{manifest['timing_s']['total']:.1f} s")
