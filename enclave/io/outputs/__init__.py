"""The trusted checking of outputs (security-critical): everything that decides what may leave.

Below both the notebook API (:mod:`enclave.research`, a thin client running in the researcher's
kernel) and the airlock (:mod:`enclave.io.airlock`), and importing neither (a test enforces it):

* :mod:`.record` — an output record's format and hashes;
* :mod:`.sql` — what SQL a record may carry, and where its patient column must come from;
* :mod:`.evaluation`, :mod:`.tables`, :mod:`.models` — result and per-cell disclosure evidence of
  an output from its SQL and spec (the same code in the kernel and in the sandbox); :mod:`.cells`
  — the cells and helpers they share;
* :mod:`.sandbox`, :mod:`.child` — the process that re-runs a record with the requester's rights:
  one release, no network, no writes that outlive it, resource limits;
* :mod:`.recheck` — refuse a record that is altered, foreign or unsafe, else re-run and compare;
* :mod:`.ledger` — the differencing ledger.

Nothing here trusts the researcher's process: not the SQL, not the patient column, not the
release it names, not the cells it claims.
"""
