"""The dashboards served in tests as the hub serves them: ``python -m dashboards.serve`` under
the hub's base path, on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import REPO, free_port

BASE = "/services/dashboards"


@contextmanager
def served(indicators: Path, timeout: float = 90) -> Iterator[int]:
    """Serve the dashboards on ``indicators`` (a published indicators folder, or one without a
    table); yield the port once the server listens, stop it afterwards."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "dashboards.serve", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true",
         "--server.baseUrlPath", BASE.strip("/"), "--browser.gatherUsageStats", "false"],
        env=dict(os.environ, ENCLAVE_INDICATORS=str(indicators)), cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
