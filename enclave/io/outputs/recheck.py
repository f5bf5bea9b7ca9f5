"""Re-checking a record: recompute its result and evidence from the record alone, in the sandbox.

:func:`recheck` is what the airlock calls on every submission (and what ``enclave.research``
offers a researcher as ``recheck(record, settings)``). Nothing of the record is trusted; each step refuses
the record, naming the problem, before anything runs:

1. the record's own hash (``record_sha256``) must match its content;
2. its policy must hash to its policy hash, and that must be the policy in force;
3. the release it names must be a release **of the record's own project and tier**, by name
   (``<project>/vN`` or ``synthetic/<project>/vN``; no path, no ``..``), under the enclave home;
4. the release's manifest must hash to the recorded manifest hash, and ``release.duckdb`` to the
   recorded (and listed) database hash;
5. its SQL must be one SELECT without forbidden constructs (:mod:`enclave.io.outputs.sql`);
6. its code lists (``codelists``: name, column ``code``, type, values; nothing else, never a
   file) must be well formed, within ``research.codelist_max_codes``, and named like no release
   table of any project (:mod:`enclave.io.outputs.codelists`).

Only then is the SQL run — in the sandbox (:mod:`enclave.io.outputs.sandbox`), which sees that one
release database and nothing else, creates the record's code lists from the record, validates the
SQL again against the release's tables and those code lists (and no other name) and checks where
the patient column comes from — and every recomputed cell is compared with the recorded one. Any
difference fails the output.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import polars as pl

from enclave.core.crypto import file_sha256
from enclave.core.errors import EnclaveError
from enclave.core.manifest import MANIFEST, RELEASE_DB
from enclave.core.settings import Settings
from enclave.io.outputs.cells import compare_cells, status_of, summarize
from enclave.io.outputs.codelists import CodeListError, CodeListLimits, from_record
from enclave.io.outputs.record import record_hash
from enclave.io.outputs.sandbox import run_in_sandbox
from enclave.io.outputs.sql import UnsafeQueryError, validate_query
from enclave.logic.disclosure import (
    DisclosurePolicy,
    policy_from_dict,
    policy_from_settings,
    policy_hash,
)

RELEASE_NAME = re.compile(r"(?:(synthetic)/)?([A-Za-z0-9][A-Za-z0-9_-]{0,63})/v([1-9][0-9]{0,5})")
CUSTOM_REASON = "a custom file: no rule can read it, a steward must review it"


class RecordRefused(EnclaveError):
    """The record cannot be re-run as it is (altered, foreign release, hash mismatch, bad SQL)."""


def policy_for(record: Mapping, settings: Settings) -> DisclosurePolicy:
    """The policy in force (from settings); the record is checked against it, never its own."""
    return policy_from_settings(settings.disclosure)


def check_policy(record: Mapping, settings: Settings) -> None:
    policy = policy_for(record, settings)
    recorded = record.get("policy")
    try:
        own = policy_hash(policy_from_dict(recorded)) if recorded else None
    except (TypeError, ValueError, AttributeError):
        own = None
    if own is None or own != record.get("policy_sha256"):
        raise RecordRefused("the recorded policy does not match the recorded policy hash")
    if record.get("policy_sha256") != policy_hash(policy):
        raise RecordRefused(f"the output was checked under another policy than the one in force "
                            f"({policy.name}, {policy_hash(policy)[:12]})")


def record_release_dir(record: Mapping, settings: Settings) -> Path:
    """The folder of the release the record names, which must be of the record's project and
    tier; resolved by name under the home only."""
    name, project, tier = record.get("release"), record.get("project"), record.get("tier")
    m = RELEASE_NAME.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise RecordRefused("the record's release name is not '<project>/vN' or "
                            "'synthetic/<project>/vN'")
    named_tier = "synthetic" if m.group(1) else "desensitized"
    if m.group(2) != project or named_tier != tier:
        raise RecordRefused(f"the record names release {name}, which is not a release of its own "
                            f"project and tier ({project}, {tier})")
    root = (settings.releases_dir / named_tier).resolve()
    path = (root / m.group(2) / f"v{m.group(3)}").resolve()
    if root not in path.parents or not (path / MANIFEST).is_file():
        raise RecordRefused(f"no release {name} under this enclave's home")
    return path


def verify_release(record: Mapping, path: Path) -> Path:
    """The release database, once the manifest and the database match the record's hashes."""
    raw = (path / MANIFEST).read_bytes()
    if hashlib.sha256(raw).hexdigest() != record.get("manifest_sha256"):
        raise RecordRefused(f"release {record.get('release')}: its manifest does not match the "
                            "recorded manifest hash")
    try:
        manifest = json.loads(raw)
        listed = manifest["files"][RELEASE_DB]["sha256"]
        if manifest.get("project", record.get("project")) != record.get("project"):
            raise RecordRefused(f"release {record.get('release')} belongs to another project")
    except (ValueError, KeyError, TypeError):
        raise RecordRefused(f"release {record.get('release')}: its manifest is unreadable"
                            ) from None
    if listed != record.get("release_sha256"):
        raise RecordRefused(f"release {record.get('release')}: its database hash does not match "
                            "the recorded release hash")
    db = path / RELEASE_DB
    if file_sha256(db) != listed:
        raise RecordRefused(f"release {record.get('release')}: release.duckdb differs from its "
                            "manifest (altered release)")
    return db


def refused(record: Mapping, problem: str, **extra) -> dict:
    return {"output_id": record.get("output_id"), "kind": record.get("kind"), "verified": False,
            "status": "fail", "problems": [problem], "reasons": [], "cells": []} | extra


def recheck(record: Mapping, settings: Settings, *, members: bool = False) -> dict:
    """Recompute ``record``'s result and evidence in the sandbox and compare.

    Returns ``{"output_id", "kind", "verified", "status", "problems", "reasons", "cells",
    "policy_sha256", "sandbox", "result_csv", "result_keys"}``: ``status`` is ``fail`` whenever
    ``verified`` is false (refused before running, or the stored result differs from the
    recomputation), else the recomputed status (``pass`` / ``review`` / ``fail``);
    ``result_csv`` is the recomputed publishable result table (withheld values ``withheld``) and
    ``result_keys`` its key columns, which the airlock compares the submitted files with (both
    absent when nothing was run). ``members=True`` adds ``members`` (a polars frame
    of ``cell_key, person_id`` for the differencing ledger; never JSON, never shown).
    ``settings`` gives the home and the policy in force.
    """
    try:
        if not isinstance(record, Mapping):
            raise RecordRefused("the output record is not a JSON object")
        if record.get("record_sha256") != record_hash(record):
            raise RecordRefused("the record was altered after it was made (its hash does not "
                                "match)")
        check_policy(record, settings)
        out = {"output_id": record.get("output_id"), "kind": record.get("kind"),
               "policy_sha256": policy_hash(policy_for(record, settings))}
        if record.get("kind") == "custom":
            return out | {"verified": True, "status": "review", "problems": [],
                          "reasons": [CUSTOM_REASON], "cells": []}
        db = verify_release(record, record_release_dir(record, settings))
        if not isinstance(record.get("spec"), Mapping):
            raise RecordRefused("the record carries no output spec")
        validate_query(record.get("sql"))
        limits = CodeListLimits.from_settings(settings)
        codelists = [c.as_record() for c in from_record(record.get("codelists"), limits)]
    except (RecordRefused, UnsafeQueryError, CodeListError) as exc:
        return refused(record if isinstance(record, Mapping) else {}, str(exc))
    except OSError as exc:
        return refused(record, f"the release could not be read ({type(exc).__name__})")
    try:
        header, frame = run_in_sandbox(db, {
            "sql": record["sql"], "spec": dict(record["spec"]), "codelists": codelists,
            "codelist_limits": limits.as_dict(), "disclosure": asdict(settings.disclosure),
            "members": members}, settings)
    except EnclaveError as exc:
        return refused(record, str(exc))
    sandbox = header.get("sandbox", {})
    if not header.get("ok"):
        return refused(record, f"the recorded query could not be re-run: {header.get('error')}",
                       sandbox=sandbox)
    cells = header.get("cells") or []
    problems = compare_cells(record.get("cells", []), cells)
    status = status_of(cells)
    if not problems and record.get("status") != status:
        problems.append(f"recorded status {record.get('status')}, recomputed {status}")
    result = out | {"verified": not problems, "status": "fail" if problems else status,
                    "problems": problems, "reasons": list(header.get("notes") or []) +
                    summarize(cells), "cells": cells, "sandbox": sandbox,
                    "result_csv": header.get("result_csv"),
                    "result_keys": header.get("result_keys")}
    if members:
        result["members"] = frame if frame is not None else pl.DataFrame(
            schema={"cell_key": pl.String, "person_id": pl.UInt64})
    return result
