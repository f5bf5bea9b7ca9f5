"""Export requests: the bundle a researcher submits, and the hand-over to the airlock.

``export(output, justification=...)`` first writes the request bundle under the user's folder
(``<research.user_dir>/exports/<output_id>/``: ``record.json``, ``justification.txt`` and the
files under ``files/``), then submits exactly that bundle with
``enclave.airlock.client.submit_export(record, files, justification, settings=...)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from enclave.errors import BadInputError
from enclave.research.api import user_dir
from enclave.research.output import Output
from enclave.settings import Settings, load_settings


def write_bundle(output: Output, justification: str, settings: Settings) -> Path:
    """The request bundle on disk (0700 folder); returns its path."""
    root = user_dir(settings) / "exports" / output.output_id
    (root / "files").mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    for name, data in output.files().items():
        if "/" in name or name.startswith("."):
            raise BadInputError(f"file name '{name}' is not a plain file name")
        (root / "files" / name).write_bytes(data)
    (root / "justification.txt").write_text(justification, encoding="utf-8")
    (root / "record.json").write_text(json.dumps(output.record, indent=2, ensure_ascii=False,
                                                 default=str), encoding="utf-8")
    return root


def export(output: Output, justification: str, *, settings: Settings | None = None) -> dict:
    """Create an export request for ``output``; returns ``{"request_id", "status", "bundle"}``."""
    if not isinstance(output, Output):
        raise BadInputError("export takes an output of crosstab, pivot_table, ols, logit, "
                            "histogram, survival or custom")
    if not justification or not justification.strip():
        raise BadInputError("an export needs a justification: why this output must leave the "
                            "enclave")
    settings = settings or output.settings or load_settings()
    from enclave.airlock.client import submit_export  # the airlock decides, not this process

    bundle = write_bundle(output, justification, settings)
    answer = dict(submit_export(output.record, output.files(), justification, settings=settings))
    (bundle / "submitted.json").write_text(json.dumps(answer, default=str), encoding="utf-8")
    return answer | {"bundle": str(bundle)}


def recheck(record: dict, settings: Settings | None = None) -> dict:
    """Re-check ``record`` as the airlock will: refused unless intact, then re-run in the sandbox
    on its release and compared cell by cell (:func:`enclave.outputs.recheck.recheck`)."""
    from enclave.outputs.recheck import recheck as trusted_recheck

    result = trusted_recheck(record, settings or load_settings())
    result.pop("members", None)
    return result
