"""An output record's format and hashes: what the kernel writes and the airlock re-checks.

A record is a JSON object: ``format``, ``output_id``, ``kind``, ``created_at``, ``user``,
``project``, ``tier``, ``release`` (by name) with ``release_sha256`` and ``manifest_sha256``,
``sql`` (what ibis compiled), ``codelists`` (the researcher's code lists the SQL reads, each
``{"name", "column", "type", "values"}``: see :mod:`enclave.io.outputs.codelists`), ``spec``,
``policy`` with ``policy_sha256``, ``cells``, ``status``, ``reasons``, ``ledger_hits`` and
``record_sha256`` over all of it. It holds no patient-level values; nothing in it is trusted by
the airlock (see :mod:`enclave.io.outputs.recheck`).
"""

from __future__ import annotations

from collections.abc import Mapping

from enclave.core.canonical import canonical_sha256

RECORD_FORMAT = 1


def record_hash(record: Mapping) -> str:
    """SHA-256 of the record's canonical JSON without its own ``record_sha256``."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return canonical_sha256(body)


