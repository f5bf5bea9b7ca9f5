"""Re-checking a record: recompute its result and evidence from the record alone, elsewhere.

:func:`recheck` runs ``python -m enclave.research.recheck`` in a separate process (the record on
stdin, JSON out), so nothing the researcher's process computed or holds is trusted. The child
(:func:`recheck_here`) resolves the release by name under the enclave home, verifies the release's
manifest hash and the database's SHA-256, opens it read-only, verifies the policy (the record's
policy must hash to its policy hash, and that must be the policy in force), re-runs the recorded
SQL and spec, and compares every cell. Any mismatch fails the output.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict

import duckdb

from enclave.crypto import file_sha256
from enclave.disclosure import DisclosurePolicy, policy_from_settings, policy_hash
from enclave.errors import BadInputError, ConfigurationError, EnclaveError
from enclave.release.manifest import MANIFEST, RELEASE_DB, resolve_release
from enclave.settings import DisclosureSettings, Settings, load_settings

RECORD_FORMAT = 1


def record_hash(record: Mapping) -> str:
    """SHA-256 of the record's canonical JSON without its own ``record_sha256``."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def policy_dict(policy: DisclosurePolicy) -> dict:
    data = asdict(policy)
    data["rounding"] = policy.rounding.value
    data["nk_rules"] = [list(r) for r in policy.nk_rules]
    return data


def policy_for(record: Mapping, settings: Settings | None) -> DisclosurePolicy:
    """The policy in force (from settings); the record is checked against it, never its own."""
    settings = settings or load_settings()
    return policy_from_settings(settings.disclosure)


def open_record_release(record: Mapping, settings: Settings | None,
                        problems: list[str] | None = None) -> duckdb.DuckDBPyConnection:
    """Resolve the record's release under the home, verify its hashes, open it read-only.

    Hash mismatches are appended to ``problems`` when given (the caller decides), else raised.
    """
    settings = settings or load_settings()
    name = record.get("release")
    if not name:
        raise BadInputError("the record names no release")
    path = resolve_release(settings, name)
    found: list[str] = []
    raw = (path / MANIFEST).read_bytes()
    if hashlib.sha256(raw).hexdigest() != record.get("manifest_sha256"):
        found.append(f"release {name}: its manifest does not match the recorded manifest hash")
    manifest = json.loads(raw)
    listed = manifest.get("files", {}).get(RELEASE_DB, {}).get("sha256")
    if listed != record.get("release_sha256"):
        found.append(f"release {name}: its database hash does not match the recorded release hash")
    if file_sha256(path / RELEASE_DB) != listed:
        found.append(f"release {name}: release.duckdb differs from its manifest (altered release)")
    if found and problems is None:
        raise BadInputError("; ".join(found))
    if problems is not None:
        problems.extend(found)
    return duckdb.connect(str(path / RELEASE_DB), read_only=True)


def recheck_here(record: Mapping, settings: Settings | None = None) -> dict:
    """The recheck itself (runs in the child process; see :func:`recheck`)."""
    from enclave.research.evaluation import compare_cells, evaluate, status_of, summarize

    settings = settings or load_settings()
    problems: list[str] = []
    out = {"output_id": record.get("output_id"), "kind": record.get("kind"),
           "process": os.getpid()}
    if record.get("record_sha256") != record_hash(record):
        problems.append("the record was altered after it was made (its hash does not match)")
    policy = policy_for(record, settings)
    if record.get("policy") is None or policy_hash(
            DisclosurePolicy(**{**record["policy"], "nk_rules": tuple(
                tuple(r) for r in record["policy"].get("nk_rules", []))})) != record.get(
            "policy_sha256"):
        problems.append("the recorded policy does not match the recorded policy hash")
    if record.get("policy_sha256") != policy_hash(policy):
        problems.append(f"the output was checked under another policy than the one in force "
                        f"({policy.name}, {policy_hash(policy)[:12]})")
    out["policy_sha256"] = policy_hash(policy)
    if record.get("kind") == "custom":
        return out | {"verified": not problems, "status": "fail" if problems else "review",
                      "problems": problems, "reasons": [("a custom file: no rule can read it, a "
                                                        "steward must review it")], "cells": []}
    try:
        con = open_record_release(record, settings, problems)
    except EnclaveError as exc:
        problems.append(str(exc))
        return out | {"verified": False, "status": "fail", "problems": problems, "reasons": [],
                      "cells": []}
    try:
        ev = evaluate(con, record["sql"], record["spec"], policy)
    except EnclaveError as exc:
        problems.append(f"the recorded query could not be re-run: {exc}")
        return out | {"verified": False, "status": "fail", "problems": problems, "reasons": [],
                      "cells": []}
    except duckdb.Error as exc:
        problems.append(f"the recorded query could not be re-run: {type(exc).__name__}")
        return out | {"verified": False, "status": "fail", "problems": problems, "reasons": [],
                      "cells": []}
    finally:
        con.close()
    problems += compare_cells(record.get("cells", []), ev.cells)
    status = status_of(ev.cells)
    if not problems and record.get("status") != status:
        problems.append(f"recorded status {record.get('status')}, recomputed {status}")
    return out | {"verified": not problems, "status": "fail" if problems else status,
                  "problems": problems, "reasons": ev.notes + summarize(ev.cells),
                  "cells": ev.cells}


def recheck(record: Mapping, settings: Settings | None = None) -> dict:
    """Recompute ``record``'s result and evidence in a separate process and compare.

    Returns ``{"output_id", "verified", "status", "problems", "reasons", "cells",
    "policy_sha256"}``: ``status`` is ``fail`` whenever ``verified`` is false (the stored result
    differs from the recomputation, the release or policy hash does not match, or the record was
    altered), else the recomputed status (``pass`` / ``review`` / ``fail``). ``settings`` gives the
    home and the policy in force (default: loaded from ``$ENCLAVE_HOME``).
    """
    settings = settings or load_settings()
    payload = {"record": dict(record), "home": str(settings.home),
               "disclosure": asdict(settings.disclosure)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "enclave.research.recheck"],
            input=json.dumps(payload, default=str), capture_output=True, text=True,
            timeout=settings.research.recheck_timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"output_id": record.get("output_id"), "verified": False, "status": "fail",
                "problems": [(f"the recheck took longer than "
                             f"{settings.research.recheck_timeout_s} s")], "reasons": [],
                "cells": []}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"output_id": record.get("output_id"), "verified": False, "status": "fail",
                "problems": [f"the recheck process failed: {tail[0][:300]}"], "reasons": [],
                "cells": []}
    return json.loads(proc.stdout)


def main() -> int:
    """Entry of ``python -m enclave.research.recheck``: payload on stdin, result JSON on stdout."""
    try:
        payload = json.loads(sys.stdin.read())
        record = payload["record"]
        settings = load_settings(payload.get("home"))
        if payload.get("disclosure") is not None:
            from dataclasses import replace

            settings = replace(settings, disclosure=DisclosureSettings(**payload["disclosure"]))
        result = recheck_here(record, settings)
    except (ValueError, KeyError, TypeError, ConfigurationError) as exc:
        result = {"verified": False, "status": "fail", "problems": [
            f"the recheck could not read its input: {type(exc).__name__}"], "reasons": [],
                  "cells": []}
    except EnclaveError as exc:
        result = {"verified": False, "status": "fail", "problems": [str(exc)], "reasons": [],
                  "cells": []}
    sys.stdout.write(json.dumps(result, default=str))
    return 0
