"""The researcher API: the one import a notebook needs.

>>> from enclave.research import workspace, crosstab, export   # doctest: +SKIP
>>> ws = workspace()                                             # doctest: +SKIP
>>> out = crosstab(ws.table("person"), "region", "sex")          # doctest: +SKIP
>>> out.status, out.reasons                                      # doctest: +SKIP
>>> request = export(out, justification="Table 1 of the paper")  # doctest: +SKIP
>>> request.refresh().status                                     # doctest: +SKIP
>>> my_requests()                                                # doctest: +SKIP
>>> dm = ws.codelist("diabetes", ["E10", "E11"])                 # doctest: +SKIP

Every output is checked for disclosure from the SQL its ibis expression compiles to, records that
SQL with the release and policy hashes and the code lists it reads (``ws.codelist``: name and
codes, ``out.record["codelists"]``), and is compared with the user's earlier outputs in a local
differencing ledger. This package is a thin client: the checking itself (SQL
validation, evaluation, rules, ledger, the sandboxed re-check the airlock runs) lives in the
trusted package :mod:`enclave.io.outputs`, which never imports this one. ``recheck(record,
settings)`` re-runs a record exactly as the airlock will.
"""

from __future__ import annotations

import importlib

# Names are imported on first use (PEP 562): importing the package loads neither ibis nor the
# notebook helpers. The names of the trusted package come from enclave.io.outputs (full module names).
_EXPORTS = {
    "crosstab": "api", "custom": "api", "histogram": "api", "logit": "api", "ols": "api",
    "pivot_table": "api", "survival": "api", "export": "exports", "ExportRequest": "exports",
    "ExportRequests": "exports", "my_requests": "exports", "recheck": "exports",
    "Output": "output", "ReleaseRef": "workspaces", "Workspace": "workspaces",
    "workspace": "workspaces",
    "Hit": "enclave.io.outputs.ledger",
    "ledger_add": "enclave.io.outputs.ledger",
    "ledger_check": "enclave.io.outputs.ledger",
    "record_hash": "enclave.io.outputs.record",
}

__all__ = [
    "ExportRequest", "ExportRequests", "Hit", "Output", "ReleaseRef", "Workspace", "crosstab",
    "custom", "export", "histogram", "ledger_add", "ledger_check", "logit", "my_requests", "ols",
    "pivot_table", "recheck", "record_hash", "survival", "workspace",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'enclave.research' has no attribute '{name}'")
    where = _EXPORTS[name]
    module = importlib.import_module(where if "." in where else f"enclave.research.{where}")
    for other, place in _EXPORTS.items():  # bind every name of that module at once
        if place == where:
            globals()[other] = getattr(module, other)
    return globals()[name]


def __dir__() -> list[str]:
    return __all__
