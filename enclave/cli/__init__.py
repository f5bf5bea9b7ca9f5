"""The ``enclave`` command line. Every command takes ``--home DIR`` (or ``ENCLAVE_HOME``).

Each area registers its commands on the root group in its own module; importing this package
imports them all.
"""

from enclave.cli import catalog, demo, ingest, project, release, store, up  # noqa: F401  (registers the commands)
from enclave.cli._main import cli, main

__all__ = ["cli", "main"]
