"""Export requests: the bundle a researcher submits, the hand-over to the airlock, and following it.

``export(output, justification=...)`` first writes the request bundle under the user's folder
(``<research.user_dir>/exports/<output_id>/``: ``record.json``, ``justification.txt`` and the
files under ``files/``), then submits exactly that bundle with
``enclave.io.airlock.client.submit_export(record, files, justification, settings=...)`` and returns
an :class:`ExportRequest`: the airlock's answer (a dict, as ``submitted.json`` keeps it) that a
notebook displays as the request's id, state and check status with a link to its page, and that
``refresh()`` re-reads. ``my_requests()`` lists the caller's own requests the same way.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from enclave.core.errors import BadInputError
from enclave.core.settings import Settings, load_settings
from enclave.io.airlock.client import get_request, list_requests, submit_export
from enclave.io.outputs.recheck import recheck as trusted_recheck
from enclave.research.api import user_dir
from enclave.research.output import COLOURS, Output


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


#: the airlock's pages under the hub's base URL (the service is named ``airlock``)
AIRLOCK_PAGES = "services/airlock/"
BASE_URL_ENV = "JUPYTERHUB_BASE_URL"
#: colours of request states and check statuses in a notebook (the Output's, for pass/review/fail)
STATE_COLOURS = {"submitted": "#57606a", "in_review": "#9a6700", "changes_requested": "#9a6700",
                 "approved": "#1a7f37", "released": "#1a7f37", "rejected": "#cf222e",
                 "withdrawn": "#57606a", "revoked": "#cf222e", **COLOURS}
#: what a researcher does next, by state
NEXT_STEP = {
    "submitted": "the airlock is re-running the output",
    "in_review": "the airlock reproduced the output; the stewards are reviewing it",
    "changes_requested": "the stewards asked for changes: see the request page",
    "approved": "approved; the files are being released",
    "released": "released: download the files from the request page",
    "rejected": "rejected: the reasons are on the request page",
    "withdrawn": "withdrawn",
    "revoked": "revoked by a steward: the reason is on the request page",
}


def request_url(request_id: str) -> str:
    """The browser path of a request's page: ``<hub base URL>services/airlock/requests/<id>``
    (the hub's base URL from ``JUPYTERHUB_BASE_URL``, default ``/``)."""
    base = os.environ.get(BASE_URL_ENV) or "/"
    return f"{base.rstrip('/')}/{AIRLOCK_PAGES}requests/{request_id}"


def _badge(text: str) -> str:
    colour = STATE_COLOURS.get(text, "#57606a")
    return (f'<span style="background:{colour};color:white;padding:1px 6px;border-radius:3px">'
            f"{html.escape(text.replace('_', ' '))}</span>")


class ExportRequest(dict):
    """An export request as its requester sees it: what :func:`export` returns.

    A dict of the airlock's answer (``request_id``, ``status``, ``checks`` …, and ``bundle``, the
    folder it was submitted from), so ``request["request_id"]`` works as before; in a notebook it
    shows its id, state and the airlock's check status, with a link to the request's page.
    ``refresh()`` re-reads it from the airlock (in the hub ``GET api/requests/<id>`` with the
    user's token; elsewhere the workflow directly) and returns it; ``status`` is the state as of
    the last read, ``check_status`` the airlock's verdict on the re-run (``pass`` / ``review`` /
    ``fail``; None until it ran).
    """

    def __init__(self, answer: dict, *, settings: Settings | None = None):
        super().__init__(answer)
        self.settings = settings

    @property
    def request_id(self) -> str:
        return str(self.get("request_id") or self.get("id"))

    @property
    def status(self) -> str:
        return str(self.get("status"))

    @property
    def check_status(self) -> str | None:
        checks = self.get("checks")
        return checks.get("status") if isinstance(checks, dict) else None

    @property
    def problems(self) -> list[str]:
        """What the airlock's checks found (a rejected request says why here)."""
        checks = self.get("checks")
        return list(checks.get("problems") or []) if isinstance(checks, dict) else []

    @property
    def url(self) -> str:
        return request_url(self.request_id)

    def refresh(self) -> ExportRequest:
        """Re-read the request from the airlock; returns itself, updated."""
        answer = get_request(self.request_id, settings=self.settings)
        bundle = self.get("bundle")
        self.clear()
        self.update(answer)
        self.setdefault("request_id", self.request_id)
        if bundle is not None:
            self["bundle"] = bundle
        return self

    def __repr__(self) -> str:
        check = f" checks={self.check_status}" if self.check_status else ""
        return f"<ExportRequest {self.request_id} status={self.status}{check} {self.url}>"

    def _repr_html_(self) -> str:
        check = self.check_status
        problems = "".join(f"<li>{html.escape(str(p))}</li>" for p in self.problems[:10])
        reason = self.get("decision_reason")
        why = (f"<div>decision: {html.escape(str(reason))}</div>"
               if reason and self.status in ("rejected", "changes_requested", "revoked") else "")
        return (
            f'<div style="border-left:6px solid {STATE_COLOURS.get(self.status, "#57606a")};'
            f'padding-left:8px">'
            f"<b>export request</b> <code>{html.escape(self.request_id)}</code> · "
            f"{_badge(self.status)} · airlock checks: "
            f"{_badge(check) if check else '<i>not run yet</i>'} · "
            f'<a href="{html.escape(self.url)}" target="_blank">open the request page</a>'
            f"<div>{html.escape(NEXT_STEP.get(self.status, ''))}; "
            f"<code>.refresh()</code> shows its state now</div>{why}"
            f"{f'<ul>{problems}</ul>' if problems else ''}</div>")


class ExportRequests(list):
    """The caller's own export requests (:func:`my_requests`): a list of dicts (``id``,
    ``project``, ``kind``, ``status``, ``created_at``, ``updated_at``, ``url`` …) that a
    notebook shows as a table with a link to each request's page."""

    def __repr__(self) -> str:
        lines = [f"{r['id']}  {r['status']:<17} {r.get('project')}  {r.get('kind')}  "
                 f"{r.get('created_at')}" for r in self]
        return "\n".join([f"{len(self)} export request(s)", *lines])

    def _repr_html_(self) -> str:
        if not self:
            return "<div><i>no export requests yet</i></div>"
        head = "".join(f'<th style="text-align:left">{h}</th>' for h in (
            "request", "state", "project", "kind", "submitted", "last change"))
        rows = "".join(
            f'<tr><td><a href="{html.escape(r["url"])}" target="_blank"><code>'
            f'{html.escape(r["id"])}</code></a></td><td>{_badge(str(r["status"]))}</td>'
            f"<td>{html.escape(str(r.get('project')))}</td>"
            f"<td>{html.escape(str(r.get('kind')))}</td>"
            f"<td>{html.escape(str(r.get('created_at')))}</td>"
            f"<td>{html.escape(str(r.get('updated_at')))}</td></tr>" for r in self)
        return (f"<div><b>my export requests</b> ({len(self)})<table><thead><tr>{head}</tr>"
                f"</thead><tbody>{rows}</tbody></table></div>")


def my_requests(*, settings: Settings | None = None) -> ExportRequests:
    """The caller's own export requests with their state, project, kind, submission time and a
    link to each page, newest first (in the hub from the airlock's ``GET api/requests``).

    A notebook's entry point, like :func:`~enclave.research.workspace`: without ``settings`` it
    loads the enclave's (``ENCLAVE_HOME``)."""
    rows = list_requests(settings=load_settings() if settings is None else settings)
    rows = sorted(rows, key=lambda r: str(r.get("created_at") or ""), reverse=True)
    return ExportRequests({**r, "url": request_url(str(r["id"]))} for r in rows)


def export(output: Output, justification: str, *,
           settings: Settings | None = None) -> ExportRequest:
    """Create an export request for ``output``; returns an :class:`ExportRequest` (a dict with
    ``request_id``, ``status``, ``checks`` and ``bundle``, displayed with a link to its page)."""
    if not isinstance(output, Output):
        raise BadInputError("export takes an output of crosstab, pivot_table, ols, logit, "
                            "histogram, survival or custom")
    if not justification or not justification.strip():
        raise BadInputError("an export needs a justification: why this output must leave the "
                            "enclave")
    settings = settings or output.settings
    if settings is None:
        raise BadInputError("the output carries no settings: make it from a workspace's tables "
                            "(ws = workspace(); t = ws.table(...)) or pass settings=")

    bundle = write_bundle(output, justification, settings)
    answer = dict(submit_export(output.record, output.files(), justification, settings=settings))
    (bundle / "submitted.json").write_text(json.dumps(answer, default=str), encoding="utf-8")
    return ExportRequest(answer | {"bundle": str(bundle)}, settings=settings)


def recheck(record: dict, settings: Settings) -> dict:
    """Re-check ``record`` as the airlock will, in ``settings`` (e.g. ``ws.settings``): refused
    unless intact, then re-run in the sandbox on its release and compared cell by cell
    (:func:`enclave.io.outputs.recheck.recheck`)."""
    result = trusted_recheck(record, settings)
    result.pop("members", None)
    return result
