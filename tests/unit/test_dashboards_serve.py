"""dashboards.serve's front end from memory (:class:`dashboards.serve.MemoryStatic`), driven as
an ASGI application: the files it answers, the headers, what it passes on, the page's preload
script, and that no request path reaches the file system."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from streamlit import file_util

from dashboards.serve import CACHE, PRELOAD, MemoryStatic, load_static, preload_closure

PAGE = b"<html><head><title>t</title></head><body></body></html>"


def _page_app(log: list):
    """A stand-in for Streamlit behind the middleware: answers every path with a page (what
    Streamlit's single-page fallback does) and records what reached it."""
    async def app(scope, receive, send):
        log.append((scope["path"], dict(scope["headers"])))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                (b"content-length", str(len(PAGE)).encode())]})
        await send({"type": "http.response.body", "body": PAGE[:20], "more_body": True})
        await send({"type": "http.response.body", "body": PAGE[20:]})
    return app


def _get(app, path: str, method: str = "GET", headers=()) -> tuple[int, dict, bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return (start["status"], dict(start["headers"]),
            b"".join(m.get("body", b"") for m in sent[1:]))


@pytest.fixture(scope="module")
def files():
    return load_static(Path(file_util.get_static_dir()))


def test_front_end_files_come_from_memory_with_streamlits_headers(files):
    log: list = []
    app = MemoryStatic(_page_app(log), files, base_url="services/dashboards")
    name = next(p for p in files if p.startswith("/static/js/index."))
    status, headers, body = _get(app, f"/services/dashboards{name}")
    assert status == 200 and body == files[name][0] and log == []
    assert headers[b"content-type"] == b"application/javascript"
    assert headers[b"cache-control"] == CACHE.encode()
    assert int(headers[b"content-length"]) == len(body)
    status, headers, body = _get(app, f"/services/dashboards{name}", method="HEAD")
    assert status == 200 and body == b"" and int(headers[b"content-length"]) == len(files[name][0])
    css = next(p for p in files if p.endswith(".css"))
    assert _get(app, f"/services/dashboards{css}")[1][b"content-type"] == b"text/css"


@pytest.mark.parametrize("path", ["/static/js/../../config.py", "/static/js/nope.js",
                                  "/static/../index.html", "/etc/passwd", "/static/js/"])
def test_a_path_outside_the_table_is_passed_on_and_never_read(files, path):
    """Only the names read at start are answered; anything else (traversal included) goes to
    Streamlit, which has its own path checks."""
    log: list = []
    app = MemoryStatic(_page_app(log), files)
    status, _, body = _get(app, path)
    assert status == 200
    assert [p for p, _ in log] == [path] and body == PAGE


def test_the_page_gets_the_preload_links_uncompressed(files):
    log: list = []
    preload = preload_closure(files, PRELOAD)
    app = MemoryStatic(_page_app(log), files, base_url="services/dashboards", preload=preload)
    status, headers, body = _get(app, "/services/dashboards/overview",
                                 headers=[(b"accept-encoding", b"gzip, br")])
    assert status == 200 and b"accept-encoding" not in log[0][1]  # asked for uncompressed
    # one script, before the end of the head, that preloads every chunk once the page loaded
    assert body.count(b"<script>") == 1 and body.index(b"<script>") < body.index(b"</head>")
    script = body[body.index(b"<script>"):body.index(b"</script>")].decode()
    assert 'addEventListener("load"' in script and 'l.rel="modulepreload"' in script
    assert json.loads(script[script.index("["):script.index("]") + 1]) == preload
    assert int(headers[b"content-length"]) == len(body)
    # websocket, health and media go straight through, headers intact
    log.clear()
    _get(app, "/services/dashboards/_stcore/health", headers=[(b"accept-encoding", b"gzip")])
    assert log[0][1] == {b"accept-encoding": b"gzip"}


def test_preload_names_the_drawing_chunks_and_their_imports(files):
    preload = preload_closure(files, PRELOAD)
    for root in ("Selectbox", "ArrowVegaLiteChart", "DataFrame", "Metric"):
        assert any(n.startswith(f"{root}.") for n in preload), root
    # every preloaded module exists, and what each imports is preloaded too
    assert all(f"/static/js/{n}" in files for n in preload)
    assert len(preload) == len(set(preload))
    js = files[next(p for p in files if p.startswith("/static/js/DataFrame."))][0]
    assert b'from"./' in js or b"from './" in js or b'from "./' in js
