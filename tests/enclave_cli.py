"""Run the real ``enclave`` command line in a subprocess, as a user would (shared by test modules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_enclave(home: Path, *args: str, check: bool = True, timeout: int = 900,
                cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m enclave --home HOME ARGS``; with ``check``, a non-zero exit fails the test with
    the arguments and the end of stderr."""
    proc = subprocess.run([sys.executable, "-m", "enclave", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)
    if check:
        assert proc.returncode == 0, (args, proc.stderr[-3000:])
    return proc
