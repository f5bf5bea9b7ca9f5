"""The only kernel researchers get: IPython in an empty network namespace, talking ZMQ over ipc.

Why: the release a kernel reads must not leave by the network. The kernel re-executes itself under
``unshare --user --map-current-user --net`` (an unprivileged user namespace owning a fresh network
namespace with nothing in it but a downed loopback), so no socket it opens reaches any host, this
machine's loopback included. Its channels to the Jupyter server are Unix sockets in the user's
0700 runtime dir (``KernelManager.transport = "ipc"``), which a network namespace does not cut.

It fails closed: a connection file with TCP transport, or a network namespace that still has an
interface other than loopback after the re-exec, stops the kernel before user code can run. The
capabilities the user namespace grants are used once, to bring the namespace's own loopback up for
the airlock relay (:mod:`enclave.hub.relay`), and dropped before user code runs.

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


def _refuse(why: str) -> None:
    print(f"enclave kernel refused to start: {why}", file=sys.stderr)
    raise SystemExit(3)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    cf = _connection_file(argv)
    if cf is None:
        _refuse("no connection file (-f)")
    with open(cf, encoding="utf-8") as fh:
        if json.load(fh).get("transport") != "ipc":
            _refuse("the kernel's channels must use the ipc transport (KernelManager.transport)")
    if _MARK in argv:
        argv.remove(_MARK)
        if not isolated():
            _refuse("still attached to a network after unshare")
        from enclave.hub import relay

        relay.loopback_up()  # the namespace's own loopback: the airlock relay listens there
        relay.drop_capabilities()
        relay.start_kernel_relay()
    elif not isolated():
        unshare = shutil.which("unshare") or "/usr/bin/unshare"
        os.execv(unshare, [unshare, "--user", "--map-current-user", "--net", "--keep-caps", "--",
                           sys.executable, "-I", "-m", "enclave.hub.kernel", _MARK, *argv])
    # started isolated (-I: no cwd on sys.path, so a file in the user's folder cannot replace this
    # launcher); now that the namespace is checked, user modules next to notebooks import again
    sys.path.insert(0, os.getcwd())
    from ipykernel.kernelapp import launch_new_instance

    sys.argv = [sys.argv[0], *argv]
    launch_new_instance()


if __name__ == "__main__":
    main()
