"""``python -m enclave.io.outputs.child``: the program the sandbox runs (see :mod:`.sandbox`).

It reads ``{"sql", "spec", "disclosure", "codelists", "codelist_limits", "members",
"memory_limit", "threads"}`` as JSON on stdin, opens the one release database the sandbox exposes
(:data:`~.sandbox.SANDBOX_DB`) read-only with external access, extensions and configuration
locked, creates the record's code lists as temporary tables from the payload (checked again:
:func:`enclave.io.outputs.codelists.from_record`, no name of a release table), evaluates the output
(which validates the SQL first, see :func:`enclave.io.outputs.evaluation.evaluate`) and answers on
stdout:
one JSON line (``ok``, ``cells``, ``notes``, ``spec``, ``result_csv``, ``result_keys``,
``sandbox`` and ``members_bytes``), then the member sets of the published cells as an Arrow IPC
stream when ``members`` was asked for. ``result_csv`` is the publishable result table (withheld
values the word ``withheld``, nulls empty: :func:`enclave.io.outputs.layout.publishable_csv`, as the
kernel renders the files), ``result_keys`` its key columns (:mod:`enclave.io.outputs.layout`), ``sandbox`` the
identity the child ran with. A refusal or failure is ``ok: false`` with an ``error`` that names the
problem, never a value of the data (DuckDB errors are reported by their kind only).
"""

from __future__ import annotations

import io
import json
import os
import sys


def identity() -> dict:
    return {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
            "pid": os.getpid(), "cwd": os.getcwd()}


def answer(header: dict, members: bytes = b"") -> None:
    out = sys.stdout.buffer
    out.write(json.dumps(header | {"members_bytes": len(members)}, default=str).encode() + b"\n")
    out.write(members)
    out.flush()


def main(argv: list[str] | None = None) -> int:
    """``argv[0]``, when given, is the database to open instead of the sandbox's one path (the
    benchmark's unsandboxed baseline; the airlock never passes it)."""
    import duckdb

    from enclave.core.errors import EnclaveError
    from enclave.core.settings import DisclosureSettings
    from enclave.io.outputs import codelists
    from enclave.io.outputs.evaluation import evaluate
    from enclave.io.outputs.layout import checked_keys, publishable_csv
    from enclave.io.outputs.sandbox import SANDBOX_DB
    from enclave.io.outputs.sql import locked_config
    from enclave.logic.disclosure import policy_from_settings

    who = identity()
    try:
        payload = json.loads(sys.stdin.buffer.read())
        policy = policy_from_settings(DisclosureSettings(**payload["disclosure"]))
        limits = codelists.CodeListLimits(**payload.get("codelist_limits") or {
            "max_codes": 0, "max_code_chars": 0})
        database = (argv or [SANDBOX_DB])[0]
        con = duckdb.connect(database, read_only=True, config=locked_config(
            payload.get("memory_limit"), payload.get("threads")))
    except (ValueError, KeyError, TypeError) as exc:
        answer({"ok": False, "error": f"the sandbox could not read its input "
                                      f"({type(exc).__name__})", "sandbox": who})
        return 0
    except duckdb.Error as exc:
        answer({"ok": False, "error": f"the release could not be opened ({type(exc).__name__})",
                "sandbox": who})
        return 0
    try:
        lists = codelists.from_record(payload.get("codelists"), limits)
        codelists.create(con, lists)
        ev = evaluate(con, payload["sql"], payload["spec"], policy, lists)
        blob = b""
        if payload.get("members") and ev.members is not None:
            buf = io.BytesIO()
            ev.members().write_ipc_stream(buf)
            blob = buf.getvalue()
        spec = {**payload["spec"], **ev.spec}
        keys = checked_keys(spec, ev.result.columns)
        answer({"ok": True, "cells": ev.cells, "notes": ev.notes, "spec": ev.spec,
                "result_csv": publishable_csv(ev.result, ev.cells, spec), "result_keys": keys,
                "sandbox": who}, blob)
    except EnclaveError as exc:
        answer({"ok": False, "error": str(exc), "sandbox": who})
    except duckdb.Error as exc:  # its messages may quote values: the kind only
        answer({"ok": False, "error": f"the query failed in DuckDB ({type(exc).__name__})",
                "sandbox": who})
    finally:
        con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
