"""Anchoring the audit trail from the hub process, which runs as root.

The airlock's service user owns the database that holds the trail, so it could rewrite the whole
chain consistently; it cannot write ``<home>/audit/anchors`` (root, 0700). The hub process can:
every ``hub.anchor_check_s`` seconds it looks for an approval after the newest anchor (or an anchor
older than ``hub.anchor_max_age_s``) and, when one is due, verifies the chain against the previous
anchor and appends the head (:func:`enclave.core.audit.write_anchor`). The work (SQLite, the walk of the
chain) runs in a thread, never on the hub's event loop; a failure is logged and never stops the hub.

An approval is therefore anchored within ``hub.anchor_check_s`` of being committed, not in the
same transaction: the service that commits it cannot write the anchor by design.
"""

from __future__ import annotations

import asyncio
import logging

from enclave.core import audit
from enclave.core.settings import Settings

log = logging.getLogger("enclave.io.hub.anchor")


def anchor_if_due(settings: Settings) -> audit.Anchor | None:
    """Write an anchor when one is due; returns it (None when none was due or it failed)."""
    try:
        if not audit.anchor_due(settings, settings.hub.anchor_max_age_s):
            return None
        anchor = audit.write_anchor(settings, "hub")
    except Exception as exc:  # noqa: BLE001  (reported in the hub log; the hub keeps serving)
        log.error("audit anchor not written: %s", exc)
        return None
    log.info("audit trail anchored at event %d", anchor.seq)
    return anchor


def schedule_anchors(settings: Settings):
    """Start the periodic check on the running event loop (the hub's); returns the tornado
    ``PeriodicCallback``, or None when no loop runs (e.g. a config loaded outside the hub)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    from tornado.ioloop import PeriodicCallback

    busy = False

    async def tick() -> None:
        nonlocal busy
        if busy:  # a slow walk of a long chain: never two at once
            return
        busy = True
        try:
            await loop.run_in_executor(None, anchor_if_due, settings)
        finally:
            busy = False

    callback = PeriodicCallback(tick, settings.hub.anchor_check_s * 1000)
    callback.start()
    loop.call_soon(lambda: asyncio.ensure_future(tick()))  # and once at start
    return callback
