"""The sandbox a record's SQL runs in outside the researcher's kernel (security-critical).

The airlock service may read every project's release, so it never runs a record's SQL itself.
:func:`run_in_sandbox` starts :mod:`enclave.io.outputs.child` under bubblewrap (``bwrap``) in fresh
user, mount, PID, network, IPC, UTS and cgroup namespaces:

* the file system is a new empty root with, read-only, the system's ``/usr`` (and the ``/lib``,
  ``/bin`` links), the Python environment this process runs from, the ``enclave`` package and
  **one file: the release database the record names**, at :data:`SANDBOX_DB`; nothing of the
  enclave home (other releases, ``restricted/``, the airlock's folder, the control database) exists
  in it;
* the root is read-only; ``/tmp`` is a private, size-limited tmpfs; nothing the sandbox writes
  outlives it or reaches a path the airlock reads: results leave only through the pipe on its
  standard output;
* no network (a new, empty network namespace), no environment (no hub token), a new session, no
  inherited file descriptors, uid/gid 65534 inside, and it dies with its parent;
* address space and CPU time are limited (``prlimit``), the wall time by :func:`run_in_sandbox`.

The child answers one JSON header line followed by the ledger's member sets as an Arrow IPC
stream (see :func:`decode_answer`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

import enclave
from enclave.core.errors import ConfigurationError, EnclaveError
from enclave.core.settings import Settings

SANDBOX_DB = "/release/release.duckdb"
SANDBOX_UID = 65534
CHILD = "enclave.io.outputs.child"
#: host paths that are symbolic links into /usr on a merged-/usr system (recreated as links)
ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxError(EnclaveError):
    """The sandbox could not be started or did not answer (the message names why)."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    memory_mb: int
    cpu_s: int
    wall_s: int
    tmp_mb: int
    threads: int
    max_answer_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        r = settings.research
        return cls(memory_mb=r.sandbox_memory_mb, cpu_s=r.sandbox_cpu_s,
                   wall_s=r.recheck_timeout_s, tmp_mb=r.sandbox_tmp_mb,
                   threads=r.sandbox_threads, max_answer_bytes=r.sandbox_max_answer_mb << 20)


def _tool(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/bin/{name}")
                                       if os.path.exists(p)), None)
    if path is None:
        raise ConfigurationError(f"the output sandbox needs '{name}' (Debian package "
                                 f"{'bubblewrap' if name == 'bwrap' else 'util-linux'}); "
                                 "install it (bash .ci/install does)")
    return path


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def code_paths() -> list[Path]:
    """What the child needs to run, read-only: the interpreter's prefixes, the site-packages
    it imports from, and the ``enclave`` package itself (not the folder around it)."""
    wanted = [Path("/usr"), Path(sys.base_prefix), Path(sys.prefix), Path(sys.exec_prefix),
              Path(os.path.realpath(sys.executable)).parent.parent,
              Path(enclave.__file__).resolve().parent]
    wanted += [Path(p) for p in sys.path if p and "-packages" in Path(p).parts[-1]]
    out: list[Path] = []
    for p in sorted({Path(os.path.realpath(w)) for w in wanted if os.path.isdir(w)},
                    key=lambda x: len(x.parts)):
        if not _under(p, out):
            out.append(p)
    return out


def command(release_db: Path, settings: Settings, limits: SandboxLimits,
            argv: Sequence[str] | None = None) -> list[str]:
    """The full command line: ``prlimit`` (address space, CPU) around ``bwrap`` around the child
    (``argv`` instead of the child: the tests' probes of what the sandbox can reach)."""
    release_db = Path(os.path.realpath(release_db))
    binds = code_paths()
    home = Path(os.path.realpath(settings.home))
    for p in binds:
        if _under(home, [p]) or _under(p, [home]):
            raise ConfigurationError(
                f"the enclave home {home} lies inside {p}, which the output sandbox must bind "
                "read-only (the interpreter or the enclave package): move the home elsewhere")
    cmd = [_tool("prlimit"), f"--as={limits.memory_mb << 20}", f"--cpu={limits.cpu_s}",
           "--nofile=256", "--", _tool("bwrap"), "--unshare-all", "--die-with-parent",
           "--new-session", "--cap-drop", "ALL", "--uid", str(SANDBOX_UID), "--gid",
           str(SANDBOX_UID), "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
           "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
           "--setenv", "OMP_NUM_THREADS", str(limits.threads),
           "--setenv", "POLARS_MAX_THREADS", str(limits.threads)]
    # the private /tmp first: code that lives under /tmp (a checkout there) is bound on top of it
    cmd += ["--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp"]
    for p in binds:
        cmd += ["--ro-bind", str(p), str(p)]
    for link in ROOT_LINKS:
        if os.path.islink(link) and not _under(Path(link), binds):
            cmd += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link) and not _under(Path(link), binds):
            cmd += ["--ro-bind", link, link]
    cmd += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
            "--ro-bind", str(release_db), SANDBOX_DB,
            "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/",
            "--chdir", "/tmp",
            "--", *(argv or (sys.executable, "-I", "-m", CHILD))]
    return cmd


def decode_answer(raw: bytes) -> tuple[dict, pl.DataFrame | None]:
    """The child's answer: a JSON header line, then ``members_bytes`` of Arrow IPC stream."""
    head, sep, rest = raw.partition(b"\n")
    if not sep:
        raise SandboxError("the sandbox gave no answer")
    try:
        header = json.loads(head)
    except ValueError:
        raise SandboxError("the sandbox's answer is not JSON") from None
    size = int(header.get("members_bytes") or 0)
    if size != len(rest):
        raise SandboxError("the sandbox's answer is incomplete")
    members = pl.read_ipc_stream(rest) if size else None
    return header, members


def run_in_sandbox(release_db: Path, payload: dict, settings: Settings) -> tuple[dict, pl.DataFrame
                                                                               | None]:
    """Run the child on ``release_db`` with ``payload`` (JSON on its stdin); returns its header
    and member sets. Raises :class:`SandboxError` when it cannot start, is killed by a limit, or
    answers nonsense; what the child reports as refused comes back in the header."""
    limits = SandboxLimits.from_settings(settings)
    payload = payload | {"threads": limits.threads,
                         "memory_limit": f"{max(64, limits.memory_mb * 3 // 5)}MB"}
    try:
        proc = subprocess.run(command(release_db, settings, limits), input=json.dumps(
            payload, default=str).encode(), capture_output=True, timeout=limits.wall_s,
            check=False, close_fds=True, cwd="/")
    except subprocess.TimeoutExpired:
        raise SandboxError(f"the re-run took longer than {limits.wall_s} s (research."
                           "recheck_timeout_s) and was stopped") from None
    if proc.returncode != 0:
        # the child's own errors come in its JSON; stderr may hold data, so only bwrap's words
        tool = [ln for ln in proc.stderr.decode(errors="replace").splitlines()
                if ln.startswith(("bwrap:", "prlimit:"))][-1:]
        why = (f"killed by signal {-proc.returncode}" if proc.returncode < 0 else
               f"exit code {proc.returncode}")
        if proc.returncode in (-9, 137, -24, 152):
            why += " (a memory or CPU limit of the sandbox)"
        raise SandboxError(f"the sandboxed re-run failed ({why})"
                           + (f": {tool[0][:200]}" if tool else ""))
    if len(proc.stdout) > limits.max_answer_bytes:
        raise SandboxError(f"the sandbox answered {len(proc.stdout):,} bytes, more than "
                           f"research.sandbox_max_answer_mb allows")
    return decode_answer(proc.stdout)
