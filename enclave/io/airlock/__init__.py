"""The airlock: the only way out of the enclave (security-critical).

Researchers submit export requests (an output record and its rendered files); the airlock re-runs
the recorded query and the differencing ledger itself (:mod:`enclave.io.airlock.checks`), stewards vote
blind (:mod:`enclave.io.airlock.workflow` holds the rules as tables), approved outputs are written
atomically to the outbox with a manifest (:mod:`enclave.io.airlock.outbox`), and every status change is
committed with its audit event (:mod:`enclave.core.audit`). :mod:`enclave.io.airlock.server` is the HTTP
service (hub service or standalone), :mod:`enclave.io.airlock.client` what kernels call.
"""
