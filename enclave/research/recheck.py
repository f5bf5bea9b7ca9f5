"""``python -m enclave.research.recheck``: re-run one output record in this fresh process.

The record (and the home and policy in force) arrive as JSON on stdin; the result leaves as JSON
on stdout. See :mod:`enclave.research.rerun`. Importing this module makes it callable as
``recheck(record, settings=...)``, so ``enclave.research.recheck`` stays the function the airlock
calls even after the module itself was imported (which rebinds the package attribute).
"""

from __future__ import annotations

import sys
import types

from enclave.research.rerun import main, recheck


class _CallableModule(types.ModuleType):
    def __call__(self, record, settings=None):
        return recheck(record, settings=settings)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
