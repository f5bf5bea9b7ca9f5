"""Ingest adapters: one per source dialect.

An adapter is a function ``stage(path: Path, mapping: SiteMapping) -> StagedBatch`` (see
``enclave.io.ingest.staging`` for the contract). ``path`` is a file or a folder; adapters that read
folders pick their files by the patterns in the mapping. Adapters do no I/O other than reading the
source, never write the store, and never print or log field contents.

An adapter in ``BACKGROUND`` also takes ``background=True``: it then returns at once with its kinds
pending (:meth:`StagedBatch.ready` waits for one), still reading, so that the loader can start on
the patients while the events are read. Without it, every adapter returns a complete batch.

``ADAPTERS`` maps dialect names (the ``dialect`` key of a site mapping) to ``module:function``; modules
are imported lazily so that one dialect's dependencies never slow another's ingest.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from importlib import import_module

from enclave.core.errors import ConfigurationError

ADAPTERS: dict[str, str] = {
    "csv": "enclave.io.ingest.adapters.csv_dialect:stage",
    "frontsheet": "enclave.io.ingest.adapters.frontsheet:stage",
    "fhir": "enclave.io.ingest.adapters.fhir:stage",
    "hl7v2": "enclave.io.ingest.adapters.hl7v2:stage",
    "synthea": "enclave.io.ingest.adapters.synthea:stage",
    "omop": "enclave.io.ingest.adapters.omop_csv:stage",
}
BACKGROUND = frozenset({"csv"})


def get_adapter(dialect: str, *, background: bool = False) -> Callable:
    """The dialect's ``stage`` function; ``background``: one that returns with its kinds still
    being read where the dialect can (``BACKGROUND``), a complete batch otherwise."""
    try:
        target = ADAPTERS[dialect]
    except KeyError:
        raise ConfigurationError(
            f"unknown dialect '{dialect}' (known: {', '.join(sorted(ADAPTERS))})"
        ) from None
    module, func = target.split(":")
    stage = getattr(import_module(module), func)
    return partial(stage, background=True) if background and dialect in BACKGROUND else stage
