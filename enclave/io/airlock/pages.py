"""Server-rendered HTML of the airlock's web pages (tornado templates, autoescaped)."""

from __future__ import annotations

import csv
import io

from tornado.template import DictLoader

MAX_PREVIEW_ROWS = 200

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} · airlock</title>
<link rel="stylesheet" href="{{ hub }}hub/static/css/style.min.css">
<style>
body{font-family:system-ui,sans-serif;margin:0}main{margin:0 1.5em 2em;max-width:90em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th a{color:inherit}.status{font-weight:bold}.flag{color:#a00}pre{background:#f4f4f4;padding:.5em;overflow:auto}
nav.bar{display:flex;gap:1.2em;align-items:center;padding:.6em 1.5em;margin-bottom:1em;background:#f2f2f2;border-bottom:1px solid #ddd}
nav.bar .brand{font-weight:bold}nav.bar .me{margin-left:auto}
.form-error{border:1px solid #cf222e;background:#ffebe9;color:#82071e;padding:.5em .8em;margin:.5em 0}
form.filters{display:flex;gap:1em;flex-wrap:wrap;align-items:end;margin:.5em 0 1em}
td.just{max-width:28em}.badge-vote{background:#9a6700;color:#fff;padding:0 .4em;border-radius:3px}
.num{text-align:right;font-variant-numeric:tabular-nums}
</style></head><body>
<nav class="bar" aria-label="airlock"><span class="brand">Enclave airlock</span>
<a href="{{ hub }}hub/home" id="hub-home">Hub home</a>
<a href="{{ prefix }}requests" id="nav-mine">My requests</a>
{% if is_steward %}<a href="{{ prefix }}requests?queue=1&amp;needs_my_vote=1" id="nav-queue">Review queue</a>{% end %}
{% if is_admin %}<a href="{{ prefix }}status" id="nav-status">Status</a>{% end %}
<span class="me">signed in as <b id="user">{{ user }}</b></span></nav>
<main>{% block body %}{% end %}</main>
</body></html>"""

_LOGIN = """{% extends "base.html" %}{% block body %}
<h1>Sign in to the airlock</h1>
<form method="post" action="{{ prefix }}login">{% module xsrf_form_html() %}
<label>Token <input type="password" name="token" id="token"></label>
<button type="submit" id="signin">Sign in</button></form>{% end %}"""

_LIST = """{% extends "base.html" %}{% block body %}
<h1>{{ heading }}</h1>
{% if queue %}<form class="filters" method="get" action="{{ prefix }}requests" id="filters">
<input type="hidden" name="queue" value="1">
<label>State<br><select name="status" id="filter-status" class="form-select">
<option value="">any</option>{% for s in states %}<option value="{{ s }}"{% if s == f_status %} selected{% end %}>{{ s.replace('_', ' ') }}</option>{% end %}</select></label>
<label>Project<br><select name="project" id="filter-project" class="form-select">
<option value="">any</option>{% for p in projects %}<option value="{{ p }}"{% if p == f_project %} selected{% end %}>{{ p }}</option>{% end %}</select></label>
<label><input type="checkbox" name="needs_my_vote" value="1" id="filter-mine"{% if f_mine %} checked{% end %}> needs my vote</label>
<input type="hidden" name="sort" value="{{ sort }}">
<button type="submit" class="btn btn-primary" id="filter-apply">Show</button>
<a href="{{ prefix }}requests?queue=1" id="filter-clear">all requests</a></form>{% end %}
<p id="count">{{ len(rows) }} request{{ '' if len(rows) == 1 else 's' }}{% if queue and f_mine %} waiting for your vote{% end %}.</p>
{% if not rows %}<p id="empty">{{ empty }}</p>{% else %}
<table id="requests" class="table table-striped"><tr>
{% for key, label in columns %}<th><a href="{{ sort_link(key) }}">{{ label }}{{ ' ▲' if sort == key else (' ▼' if sort == '-' + key else '') }}</a></th>{% end %}</tr>
{% for r in rows %}<tr data-status="{{ r['status'] }}"><td><a href="{{ prefix }}requests/{{ r['id'] }}">{{ r['id'] }}</a>{% if r.get('needs_my_vote') %} <span class="badge-vote">your vote</span>{% end %}</td>
<td>{{ r['project'] }}</td><td>{{ r['requester'] }}</td><td>{{ r['kind'] }}</td><td>{{ r['tier'] }}</td>
<td class="status">{{ r['status'].replace('_', ' ') }}</td><td class="num">{{ r['round'] }}</td>
<td class="num">{{ r['required'] if r['required'] is not None else '' }}</td>
<td class="just" title="{{ r['justification'] }}">{{ r['justification'] if len(r['justification']) <= 90 else r['justification'][:88] + '…' }}</td>
<td>{{ r['created_at'][:16].replace('T', ' ') }}</td></tr>{% end %}</table>{% end %}{% end %}"""

_STATUS = """{% extends "base.html" %}{% block body %}
<h1>Enclave status</h1>
<p id="waiting">{{ status['waiting'] }} request{{ '' if status['waiting'] == 1 else 's' }} in review
(<a href="{{ prefix }}requests?queue=1&amp;status=in_review">see them</a>).</p>
<h2>Requests by state</h2>
{% if not status['requests'] %}<p>No export requests yet.</p>{% else %}
<table id="request-states"><tr><th>state</th><th>requests</th></tr>
{% for state, n in sorted(status['requests'].items()) %}<tr><td>{{ state.replace('_', ' ') }}</td>
<td class="num"><a href="{{ prefix }}requests?queue=1&amp;status={{ state }}">{{ n }}</a></td></tr>{% end %}</table>{% end %}
<h2>Projects</h2>
{% if not status['projects'] %}<p>No projects.</p>{% else %}
<table id="projects"><tr><th>project</th><th>title</th><th>state</th><th>tier</th><th>members</th>
<th>expires</th><th>open to its members</th><th>requests</th></tr>
{% for p in status['projects'] %}<tr><td>{{ p['id'] }}</td><td>{{ p['title'] }}</td><td>{{ p['status'] }}</td>
<td>{{ p['tier'] }}</td><td class="num">{{ p['members'] }}</td><td>{{ p['expires'] }}</td>
<td>{{ 'yes' if p['usable'] else 'no' }}</td>
<td>{{ ', '.join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(p['requests'].items())) or '—' }}</td></tr>{% end %}</table>{% end %}
<p>The command line says more: <code>enclave status</code> (environments, services, instance),
<code>enclave audit verify</code> (the audit trail).</p>{% end %}"""

#: the list page's columns: (sort key, heading)
COLUMNS = (("id", "request"), ("project", "project"), ("requester", "requester"),
           ("kind", "kind"), ("tier", "tier"), ("status", "state"), ("round", "round"),
           ("required", "approvals needed"), ("justification", "justification"),
           ("created_at", "submitted"))


def sort_rows(rows: list[dict], sort: str) -> list[dict]:
    """``rows`` by column ``sort`` (``-column``: descending); unknown columns: newest first."""
    key = sort.lstrip("-")
    if key not in {k for k, _ in COLUMNS}:
        return sorted(rows, key=lambda r: r["created_at"], reverse=True)
    return sorted(rows, key=lambda r: (r.get(key) is None, str(r.get(key) or "")
                                       if key != "round" and key != "required"
                                       else f"{r.get(key) or 0:09d}"),
                  reverse=sort.startswith("-"))

_REQUEST = """{% extends "base.html" %}{% block body %}
<p><a href="{{ prefix }}requests{{ '?queue=1&needs_my_vote=1' if is_steward else '' }}" id="back">← {{ 'review queue' if is_steward else 'my requests' }}</a></p>
<h1>Export request {{ req['id'] }}</h1>
<p>Project <b>{{ req['project'] }}</b>, requested by <b>{{ req['requester'] }}</b>, round {{ req['round'] }}.
Kind: {{ req['kind'] }}{% if req['record'].get('tier') %}, tier: <b id="tier">{{ req['record'].get('tier') }}</b>{% end %}.
Status: <span class="status" id="status">{{ req['status'].replace('_', ' ') }}</span></p>
{% if req['decision_reason'] %}<p id="reason">Reason: {{ req['decision_reason'] }}</p>{% end %}
<h2>Justification</h2><p>{{ req['justification'] }}</p>
{% set checks = req['checks'] or {} %}
<h2>The airlock's own checks</h2>
{% if checks %}<p>Re-run result: <b id="check-status">{{ checks.get('status') }}</b>
({{ 'reproduced' if checks.get('ok') else 'NOT reproduced' }}{{ '' if checks.get('rechecked', True) else ', not re-run' }});
approvals needed: <b id="required">{{ req['required'] }}</b>, votes in: {{ req['votes_in'] }}.
The researcher's process claimed: {{ req['record'].get('status', '?') }}.</p>
{% if checks.get('problems') %}<ul class="flag">{% for p in checks['problems'] %}<li>{{ p }}</li>{% end %}</ul>{% end %}
<h3>Differencing ledger hits</h3>
{% if checks.get('ledger_hits') %}<ul class="flag" id="ledger">{% for h in checks['ledger_hits'] %}<li><code>{{ json_encode(h) }}</code></li>{% end %}</ul>
{% else %}<p id="ledger">none</p>{% end %}
{% else %}<p>Not run yet.</p>{% end %}
<h2>Query</h2><pre id="sql">{{ req['record'].get('sql', '(no query recorded)') }}</pre>
<p>Release: <code>{{ json_encode(req['record'].get('release')) }}</code>; policy:
<code>{{ json_encode(req['record'].get('policy_hash', req['record'].get('policy'))) }}</code></p>
<h2>Per-cell evidence</h2><p id="evidence-source">{{ evidence_source }}</p>
{% if cell_cols %}<table id="evidence"><tr>{% for c in cell_cols %}<th>{{ c }}</th>{% end %}</tr>
{% for cell in cells %}<tr>{% for c in cell_cols %}<td>{{ cell.get(c, '') }}</td>{% end %}</tr>{% end %}</table>
{% else %}<p>No cells recorded.</p>{% end %}
<h2>Output</h2>
{% for f in previews %}<h3>{{ f['name'] }} <small>({{ f['bytes'] }} bytes, sha256 {{ f['sha256'][:12] }}…)</small></h3>
{% if f['table'] %}<table class="output">{% for i, row in enumerate(f['table']) %}<tr>{% for v in row %}{% if i == 0 %}<th>{{ v }}</th>{% else %}<td>{{ v }}</td>{% end %}{% end %}</tr>{% end %}</table>
{% elif f['text'] is not None %}<pre>{{ f['text'] }}</pre>{% else %}<p>(binary file)</p>{% end %}
{% if req['status'] == 'released' and user == req['requester'] %}<p><a class="download" href="{{ prefix }}requests/{{ req['id'] }}/download/{{ f['name'] }}">download {{ f['name'] }}</a></p>{% end %}
{% end %}
{% if req['votes'] %}<h2>Votes</h2><table id="votes"><tr><th>round</th><th>steward</th><th>vote</th><th>reason</th></tr>
{% for v in req['votes'] %}<tr><td>{{ v['round'] }}</td><td>{{ v['steward'] }}</td><td>{{ v['vote'] }}</td><td>{{ v['reason'] }}</td></tr>{% end %}</table>{% end %}
{% if req['my_vote'] %}<p id="my-vote">Your vote: {{ req['my_vote'] }}{% if not req['votes'] %} (other votes stay hidden until the decision){% end %}.</p>{% end %}
{% if can_vote %}<h2>Your review</h2>
<form method="post" action="{{ prefix }}requests/{{ req['id'] }}/vote" id="vote-form">{% module xsrf_form_html() %}
{% if form_error %}<div class="form-error" id="form-error" role="alert">{{ form_error }}</div>{% end %}
<label><input type="radio" name="vote" value="approve" id="vote-approve"{% if form.get('vote') == 'approve' %} checked{% end %}> approve</label>
<label><input type="radio" name="vote" value="request_changes" id="vote-changes"{% if form.get('vote') == 'request_changes' %} checked{% end %}> request changes</label>
<label><input type="radio" name="vote" value="reject" id="vote-reject"{% if form.get('vote') == 'reject' %} checked{% end %}> reject</label><br>
<label>Reason (required to reject or request changes)<br><textarea name="reason" id="vote-reason" rows="3" cols="60">{{ form.get('reason', '') }}</textarea></label><br>
<button type="submit" id="vote-submit">Submit review</button></form>{% end %}
{% if can_revoke %}<form method="post" action="{{ prefix }}requests/{{ req['id'] }}/revoke">{% module xsrf_form_html() %}
<label>Reason <input name="reason" id="revoke-reason"></label> <button type="submit" id="revoke">Revoke</button></form>{% end %}
{% if can_withdraw %}<form method="post" action="{{ prefix }}requests/{{ req['id'] }}/withdraw">{% module xsrf_form_html() %}
<button type="submit" id="withdraw">Withdraw</button></form>{% end %}
<h2>Comments</h2>{% for c in req['comments'] %}<p><b>{{ c['author'] }}</b> ({{ c['ts'][:19] }}): {{ c['body'] }}</p>{% end %}
<form method="post" action="{{ prefix }}requests/{{ req['id'] }}/comment">{% module xsrf_form_html() %}
<textarea name="body" rows="2" cols="60" id="comment-body"></textarea> <button type="submit" id="comment">Comment</button></form>
{% end %}"""

_ERROR = """{% extends "base.html" %}{% block body %}<h1>{{ status_code }}</h1><p id="error">{{ message }}</p>
<p><a href="{{ prefix }}requests">back to the requests</a></p>{% end %}"""

LOADER = DictLoader({"base.html": _BASE, "login.html": _LOGIN, "list.html": _LIST,
                     "request.html": _REQUEST, "error.html": _ERROR, "status.html": _STATUS})


def preview(name: str, data: bytes, meta: dict) -> dict:
    """A file as the review page shows it: CSV as a table, text as text."""
    out = {"name": name, "bytes": meta["bytes"], "sha256": meta["sha256"], "table": None,
           "text": None}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return out
    if name.lower().endswith(".csv"):
        out["table"] = list(csv.reader(io.StringIO(text)))[: MAX_PREVIEW_ROWS + 1]
    else:
        out["text"] = text[:100_000]
    return out


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return "" if value is None else str(value)


def cell_table(req: dict) -> tuple[list[str], list[dict], str]:
    """Per-cell evidence: the airlock's own recomputation when it has one, else the record's."""
    checks = req.get("checks") or {}
    ours = (checks.get("detail") or {}).get("cells")
    theirs = ("as recorded by the researcher's process (the airlock reproduced it; its own "
              "evidence is shown to the stewards)" if checks.get("ok") else
              "as recorded by the researcher's process (not reproduced by the airlock)")
    cells, source = (ours, "recomputed by the airlock") if ours else (
        req["record"].get("cells"), theirs)
    if isinstance(cells, dict):
        cells = cells.get("rows") or list(cells.values())
    if not isinstance(cells, list):
        return [], [], source
    rows = [c for c in cells if isinstance(c, dict)][:MAX_PREVIEW_ROWS]
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    shown = [{k: ("withheld" if k == "value" and v is None and r.get("outcome") == "fail"
                  else _show(v)) for k, v in r.items()} for r in rows]
    return cols, shown, source
