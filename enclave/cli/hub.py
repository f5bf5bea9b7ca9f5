"""``enclave hub`` commands: the user environment, permissions, the hub itself and its gate."""

from __future__ import annotations

import json

import click

from enclave.cli._main import _Ctx, cli, pass_ctx


@cli.group()
def hub() -> None:
    """The locked-down JupyterHub (see docs/hub.md)."""


@hub.command("userenv")
@click.option("--force", is_flag=True, help="Rebuild even when the cached environment matches.")
@pass_ctx
def hub_userenv(obj: _Ctx, force: bool) -> None:
    """Build (or reuse) the user environment the notebook servers and kernels run from: exactly
    requirements/userenv.lock, rebuilt when the lock changed or the environment left it."""
    from enclave.io.hub.userenv import build_userenv

    env = build_userenv(obj.settings, force=force, echo=click.echo)
    click.echo(f"user environment ready: {env}")


@hub.command("serviceenv")
@click.option("--force", is_flag=True, help="Rebuild even when the cached environment matches.")
@pass_ctx
def hub_serviceenv(obj: _Ctx, force: bool) -> None:
    """Build (or reuse) the environment the hub services (airlock, dashboards, culler) run from:
    exactly requirements/serviceenv.lock, rebuilt when the lock changed or the environment left it."""
    from enclave.io.hub.userenv import build_serviceenv

    env = build_serviceenv(obj.settings, force=force, echo=click.echo)
    click.echo(f"service environment ready: {env}")


@hub.command("sync")
@pass_ctx
def hub_sync(obj: _Ctx) -> None:
    """Create the service users and re-apply owners and modes of the zones and releases
    (project groups, 0440 files, the airlock's own folder); refused when another enclave home
    owns these users or groups."""
    from enclave.io.hub.access import reconcile
    from enclave.io.hub.permissions import apply_release_permissions, ensure_service_users

    ensure_service_users(obj.settings)
    apply_release_permissions(obj.settings, echo=click.echo)
    reconcile(obj.settings, echo=click.echo)


@hub.command("watch")
@click.option("--every", "every", type=float, default=None, metavar="SECONDS",
              help="Seconds between checks (default: hub.access_check_interval_s).")
@click.option("--once", is_flag=True, help="Check once and exit.")
@pass_ctx
def hub_watch(obj: _Ctx, every: float | None, once: bool) -> None:
    """Make project groups, running processes and release modes agree with the control database,
    again and again: removed members, closed or expired projects and disabled users lose access
    (the hub runs this as its enclave-access service; root only)."""
    from enclave.io.hub.access import watch

    watch(obj.settings, every or obj.settings.hub.access_check_interval_s,
          rounds=1 if once else None, echo=lambda m: click.echo(m, err=True))


@hub.command("egress")
@click.option("--remove", is_flag=True, help="Remove the enclave's nftables table.")
@pass_ctx
def hub_egress(obj: _Ctx, remove: bool) -> None:
    """Install (or remove) the nftables rule denying researchers' network egress (table
    hub.egress_table; refused when another enclave home owns it)."""
    from enclave.io.hub import registry
    from enclave.io.hub.egress import apply_egress, remove_egress

    registry.claim(obj.settings)  # refused when another enclave home owns the table
    if remove:
        remove_egress(obj.settings)
        click.echo("egress rules removed")
    else:
        click.echo(apply_egress(obj.settings))


@hub.command("config")
@pass_ctx
def hub_config(obj: _Ctx) -> None:
    """Write <home>/hub/jupyterhub_config.py and print its path."""
    from enclave.io.hub.config import write_hub_config

    click.echo(write_hub_config(obj.settings))


@hub.command("gate")
@click.option("--port", type=int, required=True, help="Port to listen on (127.0.0.1).")
@click.option("--upstream", required=True, help="The app behind the gate, e.g. http://127.0.0.1:8093.")
def hub_gate(port: int, upstream: str) -> None:
    """Run a hub-OAuth gate in front of an app without a login (run by the hub as a service)."""
    import asyncio

    from enclave.io.hub.gate import serve

    asyncio.run(serve(port, upstream))


@hub.command("k8s-values")
@click.option("--image", default="enclave-userenv:latest", show_default=True,
              help="The single-user image (the user environment, built the same way).")
def hub_k8s_values(image: str) -> None:
    """Print Zero to JupyterHub values carrying the enclave policy (YAML)."""
    from enclave.io.hub.k8s import render_values_yaml

    click.echo(render_values_yaml(image=image), nl=False)


@hub.command("status")
@pass_ctx
def hub_status(obj: _Ctx) -> None:
    """Whether the hub runs, with its URL and processes (JSON)."""
    from enclave.io.hub.serve import status

    click.echo(json.dumps(status(obj.settings), indent=2))
