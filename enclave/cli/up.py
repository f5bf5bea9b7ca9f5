"""``enclave up``, ``enclave down`` and ``enclave status``: the whole enclave from one command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from enclave.cli._main import _Ctx, cli, json_option, pass_ctx


def _serve_default() -> bool:
    """Serve unless ``ENCLAVE_UP_SERVE`` says no (tests pass ``--data-only`` or ``--no-serve``)."""
    value = os.environ.get("ENCLAVE_UP_SERVE")
    return value is None or value.lower() not in ("0", "no", "false", "")


@cli.command()
@click.option("--patients", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="Demo population size.")
@click.option("--hospitals", default=5, show_default=True, type=click.IntRange(min=1, max=50),
              help="Demo hospitals.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of the demo data.")
@click.option("--data-only", is_flag=True,
              help="Only generate and ingest the demo hospitals (no project, release or hub).")
@click.option("--serve/--no-serve", default=None,
              help="Create the demo users and serve the hub (default: serve, unless "
                   "ENCLAVE_UP_SERVE=0; without serving, up stops after the release, twin and "
                   "indicators).")
@click.option("--show-passwords", is_flag=True,
              help="Also print the demo users' passwords (they go to standard output, and to "
                   "whatever log keeps it); by default only the root-only file holding them is "
                   "named.")
@pass_ctx
def up(obj: _Ctx, patients: int, hospitals: int, seed: int, data_only: bool,
       serve: bool | None, show_passwords: bool) -> None:
    """Bring the enclave up on demo data, and serve it.

    Generates the demo hospitals (once) and ingests them; then (unless --data-only) records the
    demo project and builds its release, twin and indicators; then (when serving, as root)
    creates the demo users (a researcher, two stewards, a policymaker) with fresh passwords,
    written to <home>/restricted/demo-credentials.txt (0600, root; its path is printed, the
    passwords only with --show-passwords), and starts the hub in the background on its port
    (the URL is printed). Safe to run again: done work is kept. 'enclave down' stops everything
    it started. A serving run first checks (in milliseconds) that root runs it and that the
    service users and researchers can pass through every folder on the way to what they need,
    and refuses with the folder that blocks and the fix before doing anything.

    The users, groups, nftables table and ports are the home's own: named after its instance
    (hub.instance, else derived from the home; the default home keeps demo-researcher ... and
    port 8000; 'enclave status' shows them). A serving run refuses, before any work, users,
    groups, a table or ports that another existing enclave home owns, or a port another program
    listens on, naming it, that home and the fix.
    """
    settings = obj.settings
    serve = _serve_default() if serve is None else serve
    if serve and not data_only:  # before any work: can the services and researchers get in?
        from enclave.workflows.enclave_up import check_can_serve

        check_can_serve(settings, echo=click.echo)
    from enclave.workflows.demo_up import bring_up  # (seconds of imports: after the check)

    summary = bring_up(settings, patients=patients, hospitals=hospitals, seed=seed,
                       echo=click.echo)
    if not data_only:
        from enclave.workflows.enclave_up import build_demo_project, serve_demo

        summary.update(build_demo_project(settings, echo=click.echo))
        if serve:
            from enclave.workflows.enclave_up import credentials_path

            users = serve_demo(settings, echo=click.echo)
            summary["users"] = {name: u if show_passwords else {"role": u["role"]}
                                for name, u in users.items()}
            summary["credentials"] = str(credentials_path(settings))
            summary["hub"] = f"http://{settings.hub.ip}:{settings.hub.port}/"
    click.echo(json.dumps(summary, ensure_ascii=False, indent=2))


@cli.command()
@pass_ctx
def down(obj: _Ctx) -> None:
    """Stop the hub and every process it started (proxy, servers, kernels, services); waits."""
    from enclave.workflows.enclave_up import bring_down

    stopped = bring_down(obj.settings)
    click.echo(f"stopped {len(stopped)} processes" if stopped else "nothing was running")


@cli.command()
@json_option
@pass_ctx
def status(obj: _Ctx, as_json: bool) -> None:
    """What runs (the hub, its URL and its processes); the enclave's instance: the Unix users and
    groups, nftables table and ports it uses on this machine, whether the machine-wide registry
    records them for this home, and any other enclave home sharing one; and whether each Python
    environment (this one, the user and the service environment) holds exactly its lock in
    requirements/."""
    from enclave.io.envlock import LOCKS, check_environment, environments
    from enclave.io.hub import registry
    from enclave.io.hub.serve import status as hub_status

    st = hub_status(obj.settings)
    st["instance"] = registry.summary(obj.settings)
    st["environments"] = {name: check_environment(env, LOCKS[name].path)
                          for name, env in environments(obj.settings).items()}
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    h = st["hub"]
    if h["running"]:
        click.echo(f"hub running (pid {h['pid']}, {h['processes']} processes below it) at {h['url']}"
                   f"{'' if h['responding'] else ' — not answering'}; log {st['log']}")
    else:
        click.echo(f"hub not running ({st['home']})")
    i = st["instance"]
    click.echo(
        f"instance {i['instance']}: demo users {i['demo_user_prefix']}*, service users "
        f"{i['airlock_user']} and {i['dashboards_user']}, groups {i['researchers_group']}, "
        f"{i['stewards_group']}, {i['policymakers_group']} and {i['project_group_prefix']}<project>, "
        f"nftables table inet {i['egress_table']}, ports {i['port']} (hub), {i['hub_port']}, "
        f"{i['proxy_api_port']}, {i['airlock_port']}, {i['dashboards_port']}, "
        f"{i['dashboards_app_port']}; "
        + ("recorded as this home's" if i["registered"] else "not recorded yet (a serving "
           "'enclave up' records them)") + f" in {i['registry']}")
    for other in i["shared_with"]:
        click.echo(f"  shared with the enclave at {other['home']} (instance {other['instance']}): "
                   f"{', '.join(other['names'])}")
    for name, env in st["environments"].items():
        click.echo(f"environment {name} ({env['path']}): {_describe_env(name, env)}")


def _describe_env(name: str, env: dict) -> str:
    """One line on an environment of ``check_environment``: matches, differs (how, and the fix),
    not built, or why it could not be checked."""
    from enclave.io.envlock import REPO, diff_of

    fix = "bash .ci/install" if name == "admin" else f"enclave hub {name}"
    if not env["built"]:
        return f"not built ({fix})"
    if "error" in env:
        return env["error"]
    lock, diff = Path(env["lock"]), diff_of(env)
    text = diff.describe(str(lock.relative_to(REPO) if lock.is_relative_to(REPO) else lock))
    return text if diff.matches else f"{text}; to install exactly the lock: {fix}"
