"""Benchmark of the airlock's handling of one submission, with and without the sandbox (issue 15).

Run: ``python tests/benchmarks/bench_airlock_sandbox.py [--repeats N]``. The release is the one of
``bench_research.py`` (1M rows, 100k patients, 20 × 10 cells). A researcher's ``crosstab`` (mean,
with dominance) makes the record; then, in interleaved rounds after a warm-up of each:

* **sandboxed** — :func:`enclave.io.airlock.checks.run_checks` as the airlock calls it: record and
  policy hashes, release name and hashes, SQL validation, the re-run in the bubblewrap sandbox
  (``prlimit`` + ``bwrap`` + the child), the cell comparison and the differencing ledger check
  with the re-run's patient sets;
* **unsandboxed** — exactly the same call with the child started as a plain subprocess on the
  release file (no ``prlimit``, no ``bwrap``): what the re-run cost before the sandbox.

Prints median and p95 of each, and the sandbox's cost per submission (difference of medians).
Target: ≤ 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.bench_research import make_home


def unsandboxed(release_db, payload, settings):
    """The child as a plain subprocess on the release file: the same work, no sandbox."""
    from enclave.io.outputs.sandbox import SandboxError, SandboxLimits, decode_answer

    limits = SandboxLimits.from_settings(settings)
    payload = payload | {"threads": limits.threads,
                         "memory_limit": f"{max(64, limits.memory_mb * 3 // 5)}MB"}
    proc = subprocess.run([sys.executable, "-I", "-m", "enclave.io.outputs.child", str(release_db)],
                          input=json.dumps(payload, default=str).encode(), capture_output=True,
                          timeout=limits.wall_s, check=False)
    if proc.returncode:
        raise SandboxError(f"exit {proc.returncode}")
    return decode_answer(proc.stdout)


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        os.environ["HOME"] = str(Path(tmp) / "user")
        home = make_home(Path(tmp))
        from enclave.core.settings import load_settings
        from enclave.io.airlock.checks import run_checks
        from enclave.io.outputs import recheck as rc
        from enclave.research import crosstab, workspace

        settings = load_settings(home)
        t = workspace(home).table("visit")
        out = crosstab(t, "r", "c", values="v", aggfunc="mean")
        record = out.record
        sandboxed_run = rc.run_in_sandbox

        def once(sandbox: bool) -> float:
            rc.run_in_sandbox = sandboxed_run if sandbox else unsandboxed
            t0 = time.perf_counter()
            outcome = run_checks(record, settings)
            dt = time.perf_counter() - t0
            assert outcome.ok, outcome.problems
            if sandbox:
                assert outcome.detail["sandbox"]["uid"] == 65534
            return dt

        once(True), once(False)  # warm-ups
        times: dict[bool, list[float]] = {True: [], False: []}
        for i in range(args.repeats):
            for sandbox in ((True, False) if i % 2 == 0 else (False, True)):
                times[sandbox].append(once(sandbox))
        rc.run_in_sandbox = sandboxed_run
        n = len(record["cells"])
        print(f"release: 1,000,000 rows, 100,000 patients; output: crosstab mean, {n} cells; "
              f"{args.repeats} interleaved rounds")
        for label, key in (("sandboxed", True), ("unsandboxed", False)):
            xs = times[key]
            print(f"  {label:12s} median {statistics.median(xs):.3f} s   p95 {p95(xs):.3f} s")
        cost = statistics.median(times[True]) - statistics.median(times[False])
        print(f"  sandbox cost per submission (difference of medians): {cost:+.3f} s "
              f"(target <= 0.5 s: {'met' if cost <= 0.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
