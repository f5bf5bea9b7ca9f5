"""The locked-down JupyterHub: configuration, lock-down extension, user environment, kernel, services.

Security-critical modules (keep them small): :mod:`enclave.io.hub.lockdown` (the server extension that
refuses download, upload, terminal and conversion routes), :mod:`enclave.io.hub.kernel` and
:mod:`enclave.io.hub.relay` (the no-network kernel and its one way out, to the airlock API),
:mod:`enclave.io.hub.permissions` (who may read which release), :mod:`enclave.io.hub.egress` (nftables
per researcher uid) and :mod:`enclave.io.hub.gate` (hub-OAuth gate of services without a login).
See docs/hub.md.

This package imports nothing heavy at import time: the kernel launcher runs ``python -m
enclave.io.hub.kernel`` inside the user environment.
"""
