"""The researcher API: the one import a notebook needs.

>>> from enclave.research import workspace, crosstab, export   # doctest: +SKIP
>>> ws = workspace()                                             # doctest: +SKIP
>>> out = crosstab(ws.table("person"), "region", "sex")          # doctest: +SKIP
>>> out.status, out.reasons                                      # doctest: +SKIP
>>> export(out, justification="Table 1 of the paper")            # doctest: +SKIP

Every output is checked for disclosure from the SQL its ibis expression compiles to, records that
SQL with the release and policy hashes (``out.record``), and is compared with the user's earlier
outputs in a local differencing ledger. ``recheck(record)`` re-runs a record in a separate
process; ``ledger_check`` / ``ledger_add`` serve the airlock's per-project ledger.
"""

from __future__ import annotations

import importlib

# Names are imported on first use (PEP 562): the recheck child process and the airlock need the
# evaluation code only, not ibis or the notebook helpers.
_EXPORTS = {
    "crosstab": "api", "custom": "api", "histogram": "api", "logit": "api", "ols": "api",
    "pivot_table": "api", "survival": "api", "export": "exports", "Hit": "ledger",
    "ledger_add": "ledger", "ledger_check": "ledger", "Output": "output", "recheck": "rerun",
    "record_hash": "rerun", "ReleaseRef": "workspaces", "Workspace": "workspaces",
    "workspace": "workspaces",
}

__all__ = [
    "Hit", "Output", "ReleaseRef", "Workspace", "crosstab", "custom", "export", "histogram",
    "ledger_add", "ledger_check", "logit", "ols", "pivot_table", "recheck", "record_hash",
    "survival", "workspace",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'enclave.research' has no attribute '{name}'")
    module = importlib.import_module(f"enclave.research.{_EXPORTS[name]}")
    for other, where in _EXPORTS.items():  # bind every name of that module at once
        if where == _EXPORTS[name]:
            globals()[other] = getattr(module, other)
    return globals()[name]


def __dir__() -> list[str]:
    return __all__
