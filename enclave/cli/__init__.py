"""The ``enclave`` command line. Every command takes ``--home DIR`` (or ``ENCLAVE_HOME``).

Each area registers its commands on the root group in its own module; importing this package
imports them all.
"""

import sys
from importlib.metadata import entry_points

from enclave.cli import (  # noqa: F401  (registers the commands)
    airlock,
    audit,
    catalog,
    demo,
    hub,
    indicators,
    ingest,
    project,
    release,
    store,
    up,
    user,
    vocab,
)
from enclave.cli._main import cli, main

# plug-in commands (e.g. ``enclave synth`` from the ``synthetic`` package): enclave never imports them
for _ep in entry_points(group="enclave.commands"):
    try:
        cli.add_command(_ep.load(), _ep.name)
    except Exception as _exc:  # noqa: BLE001  (a broken plug-in must not take the CLI down)
        print(f"warning: enclave plug-in '{_ep.name}' ({_ep.value}) failed to load: "
              f"{_exc.__class__.__name__}: {_exc}", file=sys.stderr)

__all__ = ["cli", "main"]
