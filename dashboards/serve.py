"""Serve the dashboards: ``python -m dashboards.serve [streamlit options]``.

The same as ``streamlit run dashboards/app.py [options]``, with two changes for the first visit:

* **Imports first.** The app's modules (pandas, polars, DuckDB, pyarrow, about 2 s on a 2-core
  machine) are imported, and the indicator table the pages will show is opened
  (:func:`dashboards.data.preopen`), before the server starts listening. Streamlit runs the page
  scripts in this process, so the first visitor after a (re)start no longer waits for those.
* **Front end from memory.** Streamlit's web front end is about 160 small hashed files under
  ``static/``; a new browser fetches about 65 of them before the page can connect, and the
  dashboards' charts and tables about 90 more as the page draws. Streamlit serves each from
  disk through its whole middleware stack (path checks, session cookie, gzip selection, a
  thread per read). :class:`MemoryStatic` reads those files once at start and answers
  ``GET``/``HEAD`` for them from memory, with Streamlit's own headers (content type, length,
  ``Cache-Control: public, immutable``), ahead of that stack; every other path (the page,
  ``_stcore``, the websocket) goes to Streamlit unchanged. The page also carries a small script
  that, once the page has loaded, preloads the chunks the dashboards draw with
  (``modulepreload``), so the browser fetches them while the page connects and its script runs
  instead of one after another as each element arrives (:func:`preload_script`).

  Only the files found under Streamlit's ``static/js``, ``static/css`` and ``static/media`` at
  start are served this way (a fixed table: no path from the request reaches the file system).
  If a future Streamlit no longer has the hook this uses, the server starts without it and says
  so on standard error.

The hub starts the dashboards service this way.
"""

from __future__ import annotations

import json
import mimetypes
import re
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

APP = Path(__file__).with_name("app.py")
#: the front-end chunks the dashboards' pages draw with (widgets, metrics, Vega-Lite charts,
#: data grids, download buttons): preloaded with the page; their imports follow them
PRELOAD = ("Radio", "Selectbox", "Metric", "ArrowVegaLiteChart", "DataFrame", "DownloadButton",
           "embed", "arrowFormatUtils", "Quiver", "recordbatch", "serialization")
#: paths that are never the page: passed on untouched
PASS_ON = ("/_stcore/", "/media/", "/component/", "/static/", "/app/static/")
CACHE = "public, immutable, max-age=31536000"
_IMPORT = re.compile(rb"""(?:from|import)\s*["']\./([\w.\-]+\.js)["']""")

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                Awaitable[None]]


def _content_type(name: str) -> str:
    if name.endswith(".js"):
        return "application/javascript"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def load_static(static_dir: Path) -> dict[str, tuple[bytes, bytes]]:
    """``{"/static/js/x.js": (body, content type)}`` for every file under the front end's
    ``js``, ``css`` and ``media`` folders (read once; the files are part of the installed
    package)."""
    files = {}
    for sub in ("js", "css", "media"):
        folder = static_dir / "static" / sub
        if folder.is_dir():
            for f in folder.iterdir():
                if f.is_file():
                    files[f"/static/{sub}/{f.name}"] = (f.read_bytes(),
                                                        _content_type(f.name).encode())
    return files


def preload_closure(files: dict[str, tuple[bytes, bytes]], roots: tuple[str, ...]) -> list[str]:
    """The ``static/js`` files whose name starts with one of ``roots`` (``"Selectbox"`` →
    ``Selectbox.<hash>.js``) and every module they import, in import order (parents first)."""
    js = {p.rsplit("/", 1)[1]: body for p, (body, _) in files.items() if p.startswith("/static/js/")}
    todo = [n for r in roots for n in sorted(js) if n.startswith(f"{r}.") and n.count(".") == 2]
    seen: list[str] = []
    while todo:
        name = todo.pop(0)
        if name in seen or name not in js:
            continue
        seen.append(name)
        todo.extend(m.decode() for m in _IMPORT.findall(js[name]))
    return seen


def preload_script(names: list[str]) -> str:
    """An inline script that, once the page has loaded (Streamlit's main bundle has run), adds a
    ``modulepreload`` link for each of ``names``: the chunks then load while the page connects
    and its script runs, not ahead of the main bundle (links in the page's head made the first
    render slower on two cores) nor one after another as each element arrives. Empty when
    there is nothing to preload."""
    if not names:
        return ""
    return ('<script>addEventListener("load",()=>{for(const n of ' + json.dumps(names)
            + '){const l=document.createElement("link");l.rel="modulepreload";'
            'l.crossOrigin="";l.href="./static/js/"+n;document.head.appendChild(l)}})</script>')


class MemoryStatic:
    """ASGI middleware answering Streamlit's front-end files from memory and adding the
    script that preloads ``preload`` to the page (see the module docstring)."""

    def __init__(self, app: ASGI, files: dict[str, tuple[bytes, bytes]], base_url: str = "",
                 preload: list[str] | None = None) -> None:
        self.app = app
        self.files = files
        self.base = "/" + base_url.strip("/") if base_url.strip("/") else ""
        self.links = preload_script(preload or []).encode()

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if self.base and path.startswith(self.base + "/"):
            path = path[len(self.base):]
        hit = self.files.get(path)
        if hit is None:
            if self.links and not path.startswith(PASS_ON):
                await self._with_preload(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        body, ctype = hit
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", ctype), (b"content-length", str(len(body)).encode()),
            (b"cache-control", CACHE.encode())]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})

    async def _with_preload(self, scope: Scope, receive, send) -> None:
        """Pass the request on; if the answer is Streamlit's page (HTML, not compressed), put
        the preload script before ``</head>``. The page is asked for uncompressed (it is about
        10 kB)."""
        scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", [])
                                      if k.lower() != b"accept-encoding"]}
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if (headers.get(b"content-type", b"").startswith(b"text/html")
                        and b"content-encoding" not in headers):
                    start.update(message)
                    return
                await send(message)
            elif message["type"] == "http.response.body" and start:
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    html = b"".join(chunks).replace(b"</head>", self.links + b"</head>", 1)
                    headers = [(k, v) for k, v in start.get("headers", [])
                               if k.lower() != b"content-length"]
                    headers.append((b"content-length", str(len(html)).encode()))
                    await send({**start, "headers": headers})
                    await send({"type": "http.response.body",
                                "body": b"" if scope["method"] == "HEAD" else html})
            else:
                await send(message)

        await self.app(scope, receive, capture)


def _install_memory_static() -> None:
    """Put :class:`MemoryStatic` in front of Streamlit's middleware (see the module docstring)."""
    try:
        from starlette.middleware import Middleware
        from streamlit import config, file_util
        from streamlit.web.server.starlette import starlette_app
        original = starlette_app.create_streamlit_middleware
    except (ImportError, AttributeError) as exc:
        print(f"dashboards.serve: front end served by Streamlit as is ({exc})", file=sys.stderr)
        return
    files = load_static(Path(file_util.get_static_dir()))
    preload = preload_closure(files, PRELOAD)

    def middleware() -> list[Any]:
        base = config.get_option("server.baseUrlPath") or ""
        return [Middleware(MemoryStatic, files=files, base_url=base, preload=preload),
                *original()]

    starlette_app.create_streamlit_middleware = middleware


def main(argv: list[str] | None = None) -> None:
    from streamlit.web import cli

    import dashboards.common
    import dashboards.data  # imported here for the first visitor, see above
    from enclave.core.errors import BadInputError

    args = sys.argv[1:] if argv is None else argv
    script_args = args[args.index("--") + 1:] if "--" in args else []
    try:  # the table the pages will open, loaded before the first visitor asks for it
        dashboards.data.preopen(dashboards.data.resolve_path(
            dashboards.common._arguments(script_args).indicators))
    except BadInputError:
        pass  # no table (yet) or one that fails its manifest: the pages say so themselves
    _install_memory_static()
    sys.argv = ["streamlit", "run", str(APP), *args]
    cli.main()


if __name__ == "__main__":
    main()
