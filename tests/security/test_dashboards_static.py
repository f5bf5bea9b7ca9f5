"""The dashboards' server answers Streamlit's front-end files from memory (dashboards.serve,
MemoryStatic). Against the real server, as the hub runs it (under its base path): paths that
climb out of the front-end folder, in every spelling, get nothing from the file system, while
the front end's own files come back byte for byte."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
from streamlit import file_util

from tests.conftest import REPO
from tests.dashboards_support import BASE, served

#: text that would show a file outside the front end was served
LEAKS = (b"root:x:0:0", b"def get_option", b"[project]", b"import streamlit", b"BEGIN PRIVATE")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served(tmp_path_factory.mktemp("none")) as port:
        yield port


def _raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as given (no client-side normalization)."""
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    con.putrequest("GET", path, skip_accept_encoding=True)
    con.endheaders()
    resp = con.getresponse()
    body = resp.read()
    con.close()
    return resp.status, body


def test_the_front_end_comes_back_byte_for_byte(server):
    static = Path(file_util.get_static_dir()) / "static" / "js"
    name = next(p.name for p in static.iterdir() if p.name.startswith("index."))
    status, body = _raw_get(server, f"{BASE}/static/js/{name}")
    assert status == 200 and body == (static / name).read_bytes()


@pytest.mark.parametrize("path", [
    "/static/../../../../../../etc/passwd",
    "/static/js/../../../../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/js/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/..%5c..%5c..%5cetc%5cpasswd",
    "/static/js/%252e%252e/%252e%252e/config.py",
    "/static/../config.py",
    "/static/../../../../../../" + str(REPO).lstrip("/") + "/pyproject.toml",
    "//etc/passwd",
    "/static//etc/passwd",
])
def test_no_path_reaches_a_file_outside_the_front_end(server, path):
    status, body = _raw_get(server, BASE + path)
    assert not any(leak in body for leak in LEAKS), (path, status)
    assert status in (200, 301, 307, 308, 400, 403, 404), (path, status)
    if status == 200:  # Streamlit's single-page fallback: its own page, nothing else
        assert body.lstrip().lower().startswith((b"<!--", b"<!doctype")), path
