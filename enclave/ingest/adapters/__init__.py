"""Ingest adapters: one per source dialect.

An adapter is a function ``stage(path: Path, mapping: SiteMapping) -> StagedBatch`` (see
``enclave.ingest.staging`` for the contract). ``path`` is a file or a folder; adapters that read
folders pick their files by the patterns in the mapping. Adapters do no I/O other than reading the
source, never write the store, and never print or log field contents.

``ADAPTERS`` maps dialect names (the ``dialect`` key of a site mapping) to ``module:function``; modules
are imported lazily so that one dialect's dependencies never slow another's ingest.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from enclave.errors import ConfigurationError

ADAPTERS: dict[str, str] = {
    "csv": "enclave.ingest.adapters.csv_dialect:stage",
    "frontsheet": "enclave.ingest.adapters.frontsheet:stage",
    "fhir": "enclave.ingest.adapters.fhir:stage",
    "hl7v2": "enclave.ingest.adapters.hl7v2:stage",
    "synthea": "enclave.ingest.adapters.synthea:stage",
    "omop": "enclave.ingest.adapters.omop_csv:stage",
}


def get_adapter(dialect: str) -> Callable:
    try:
        target = ADAPTERS[dialect]
    except KeyError:
        raise ConfigurationError(
            f"unknown dialect '{dialect}' (known: {', '.join(sorted(ADAPTERS))})"
        ) from None
    module, func = target.split(":")
    return getattr(import_module(module), func)
