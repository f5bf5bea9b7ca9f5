"""Hub benchmark (root): server spawn p50/p95 over N spawns, kernel start with and without the
network namespace, and R simulated researchers in parallel (PAM login, spawn, a DuckDB query on
their project's release in a no-network kernel, then an output made with the research API and
submitted through the kernel's airlock relay to the REAL airlock service, which re-runs it in its
own process as its own user: a researcher counts as an error unless the airlock answers
``in_review``).

    .venv/bin/python tests/benchmarks/bench_hub.py [--spawns 10] [--researchers 20]

Reference measured in the same run: a stock ipykernel started by the same user environment
without the enclave launcher (no namespace), against which the enclave kernel start is a ratio.
Target from the issue: spawn p50 <= 5 s; zero errors with 20 researchers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration import hubbed

QUERY = """
import duckdb
con = duckdb.connect({path!r}, read_only=True)
n = con.sql("select count(*) from person").fetchall()[0][0]
con.close()
import os
from enclave.research import workspace, pivot_table, export
ws = workspace(project=os.environ["ENCLAVE_PROJECT"], tier="desensitized")
out = pivot_table(ws.table("person"), "sex", aggfunc="patients")
req = export(out, justification="benchmark: patients by sex")
print(n, out.status, req["request_id"], req["status"])
"""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def kernel_starts(env: str, user: str, launcher: bool, n: int) -> list[float]:
    """Seconds from launch to the first reply, via jupyter_client in the user environment."""
    name = "enclave" if launcher else "python3"
    code = f"""
import time, jupyter_client, tempfile, os, json
from jupyter_client.kernelspec import KernelSpec
os.chdir(os.path.expanduser('~'))
out = []
for _ in range({n}):
    km = jupyter_client.KernelManager(kernel_name={name!r}, transport='ipc',
                                      connection_file=tempfile.mktemp(suffix='.json', dir=os.getcwd()))
    if {name!r} == 'python3':
        km._kernel_spec = KernelSpec(argv=['{env}/bin/python', '-m', 'ipykernel_launcher', '-f',
                                           '{{connection_file}}'], language='python', display_name='p')
    t = time.perf_counter(); km.start_kernel(); kc = km.client(); kc.start_channels()
    kc.wait_for_ready(timeout=60); out.append(time.perf_counter() - t)
    kc.stop_channels(); km.shutdown_kernel(now=True)
print(json.dumps(out))
"""
    proc = subprocess.run(["runuser", "-u", user, "--", f"{env}/bin/python", "-I", "-c", code],
                          capture_output=True, text=True, timeout=600, cwd="/")
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    import json

    return json.loads(proc.stdout.strip().splitlines()[-1])


def researcher(bed: hubbed.Bed, short: str) -> dict:
    t0 = time.perf_counter()
    status, _ = bed.login(short)
    if status != 302:
        return {"error": f"login {status}"}
    name = bed.name(short)
    try:
        spawn = bed.hub.spawn(name, timeout=300)
        server = hubbed.UserServer(bed.base, name, bed.hub.user_token(name))
        project = "beta" if short == "r1" else "alpha"          # r1 is beta's researcher
        out = server.run(QUERY.format(path=str(bed.release(project))), timeout=120)
    except Exception as exc:  # noqa: BLE001  (counted as an error of this researcher)
        return {"error": f"{exc.__class__.__name__}: {str(exc)[:200]}"}
    if out["error"] or not out["stdout"].strip().endswith(" in_review"):
        return {"error": out["error"] or out["stdout"][-200:]}
    return {"spawn": spawn, "query": out["seconds"], "total": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spawns", type=int, default=10)
    ap.add_argument("--researchers", type=int, default=20)
    ap.add_argument("--kernels", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_hub needs root (real Unix users)")
    t = time.perf_counter()
    bed = hubbed.make_bed(hubbed.port_block(), researchers=max(2, args.researchers), real_airlock=True,
                          hub_settings="spawn_timeout_s = 300\n")
    print(f"setup (data, {len(bed.users)} users, hub start): {time.perf_counter() - t:.1f} s")
    try:
        name = bed.name("r0")
        spawns = []
        for _ in range(args.spawns):
            spawns.append(bed.hub.spawn(name))
            bed.hub.stop(name)
        print(f"server spawn over {len(spawns)}: p50 {pct(spawns, .5):.2f} s, "
              f"p95 {pct(spawns, .95):.2f} s (target p50 <= 5 s: "
              f"{'met' if pct(spawns, .5) <= 5 else 'MISSED'})")

        env = bed.settings.hub.userenv_dir
        stock = kernel_starts(env, name, False, args.kernels)
        ours = kernel_starts(env, name, True, args.kernels)
        print(f"kernel start: stock ipykernel median {statistics.median(stock):.2f} s, enclave "
              f"(netns + relay) median {statistics.median(ours):.2f} s, ratio "
              f"{statistics.median(ours) / statistics.median(stock):.2f}x")

        shorts = [f"r{i}" for i in range(args.researchers)]
        t = time.perf_counter()
        with ThreadPoolExecutor(len(shorts)) as pool:
            results = list(pool.map(lambda s: researcher(bed, s), shorts))
        wall = time.perf_counter() - t
        errors = [r["error"] for r in results if "error" in r]
        ok = [r for r in results if "error" not in r]
        from enclave.core import audit

        con = audit.connect(bed.settings)
        submitted = [e for e in audit.events(con) if e["action"] == "request.submit"]
        chain = audit.verify_connection(con)
        con.close()
        print(f"{len(shorts)} researchers in parallel: {len(errors)} errors, wall {wall:.1f} s; "
              f"spawn p50 {pct([r['spawn'] for r in ok], .5):.1f} s / p95 "
              f"{pct([r['spawn'] for r in ok], .95):.1f} s; query+submit p50 "
              f"{pct([r['query'] for r in ok], .5):.2f} s; submissions the airlock recorded "
              f"{len(submitted)}; audit chain {'intact' if chain.ok else 'BROKEN'}"
              if ok else f"{len(errors)} errors, none succeeded")
        for e in errors[:5]:
            print("  error:", e)
    finally:
        hubbed.teardown(bed)


if __name__ == "__main__":
    main()
