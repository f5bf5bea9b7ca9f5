"""The only kernel researchers get: IPython in an empty network namespace, talking ZMQ over ipc.

Why: the release a kernel reads must not leave by the network. The kernel re-executes itself under
``unshare --user --map-current-user --net --mount`` (an unprivileged user namespace owning a fresh
network namespace with nothing in it but a downed loopback, and its own mount namespace), so no
socket it opens reaches any host, this machine's loopback included; and ``/tmp`` is a private
tmpfs of this kernel alone, so nothing it writes there is seen by another user's kernel (or
anyone else's process). Its channels to the Jupyter server are Unix sockets in the user's
0700 runtime dir (``KernelManager.transport = "ipc"``), which a network namespace does not cut.

It fails closed: a connection file with TCP transport, or a network namespace that still has an
interface other than loopback after the re-exec, stops the kernel before user code can run. The
capabilities the user namespace grants are used once, to bring the namespace's own loopback up for
the airlock relay (:mod:`enclave.io.hub.relay`) and to mount the private ``/tmp``, and dropped
before user code runs. A kernel whose ``/tmp`` cannot be made private does not start.

Residual: filesystem (path-bound) Unix sockets of other services cross network namespaces; no
world-writable service socket may exist on an enclave host.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys

_MARK = "--enclave-netns"


def _interfaces() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


def isolated() -> bool:
    """True when this process's network namespace holds nothing but loopback."""
    return _interfaces() <= {"lo"}


def _connection_file(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "-f" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("-f=") or arg.startswith("--f="):
            return arg.split("=", 1)[1]
    return None


def private_tmp(size_mb: int = 1024) -> None:
    """Mount a tmpfs of this kernel's own over ``/tmp`` (needs the user namespace's capabilities
    and its own mount namespace: call before dropping them)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    # an enclave home under /tmp (test enclaves) stays reachable: held open, bound back after
    home = os.path.realpath(os.environ.get("ENCLAVE_HOME") or "/nonexistent")
    keep = (os.open(home, os.O_PATH | os.O_DIRECTORY)
            if home.startswith("/tmp/") and os.path.isdir(home) else None)
    flags = 0x2 | 0x4 | 0x8  # MS_NOSUID | MS_NODEV | MS_NOEXEC
    opts = f"mode=0700,size={size_mb}m".encode()
    if libc.mount(b"tmpfs", b"/tmp", b"tmpfs", flags, opts) != 0:
        _refuse(f"could not give the kernel a private /tmp (errno {ctypes.get_errno()})")
    if keep is not None:
        os.makedirs(home, mode=0o700)
        source = f"/proc/self/fd/{keep}".encode()
        if libc.mount(source, home.encode(), None, 0x1000 | 0x4000, None) != 0:  # BIND | REC
            _refuse(f"could not keep the enclave home reachable (errno {ctypes.get_errno()})")
        os.close(keep)
    os.environ["TMPDIR"] = "/tmp"


def _refuse(why: str) -> None:
    print(f"enclave kernel refused to start: {why}", file=sys.stderr)
    raise SystemExit(3)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    cf = _connection_file(argv)
    if cf is None:
        _refuse("no connection file (-f)")
    with open(cf, encoding="utf-8") as fh:
        info = json.load(fh)
    if info.get("transport") != "ipc":
        _refuse("the kernel's channels must use the ipc transport (KernelManager.transport)")
    sockets = os.path.realpath(info.get("ip") or os.path.splitext(cf)[0] + "-ipc")
    if sockets.startswith("/tmp/"):  # the kernel's /tmp is its own: the server could not connect
        _refuse("the kernel's ipc sockets must not be in /tmp, which is private to each kernel "
                "(use the runtime folder in the user's home)")
    if _MARK in argv:
        argv.remove(_MARK)
        if not isolated():
            _refuse("still attached to a network after unshare")
        from enclave.io.hub import relay

        relay.loopback_up()  # the namespace's own loopback: the airlock relay listens there
        private_tmp()
        relay.drop_capabilities()
        relay.start_kernel_relay()
    else:  # always re-executed: the private /tmp needs the namespaces even without a network
        unshare = shutil.which("unshare") or "/usr/bin/unshare"
        os.execv(unshare, [unshare, "--user", "--map-current-user", "--net", "--mount",
                           "--propagation", "private", "--keep-caps", "--",
                           sys.executable, "-I", "-m", "enclave.io.hub.kernel", _MARK, *argv])
    # started isolated (-I: no cwd on sys.path, so a file in the user's folder cannot replace this
    # launcher); now that the namespace is checked, user modules next to notebooks import again
    sys.path.insert(0, os.getcwd())
    from ipykernel.kernelapp import launch_new_instance

    sys.argv = [sys.argv[0], *argv]
    launch_new_instance()


if __name__ == "__main__":
    main()
