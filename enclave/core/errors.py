"""One error tree for the whole enclave.

Every error says what was wrong and what to do, and never contains patient-level values:
messages name tables, columns, files and row numbers, not contents.
"""

from __future__ import annotations


class EnclaveError(Exception):
    """Base of every error the enclave raises on purpose."""

    exit_code = 1


class BadInputError(EnclaveError):
    """Input (a file, a mapping, a command-line argument) is malformed or inconsistent."""

    exit_code = 2


class ConfigurationError(EnclaveError):
    """Settings or a site mapping are missing or invalid."""

    exit_code = 2


class PermissionDeniedError(EnclaveError):
    """The actor may not do this."""

    exit_code = 3


class InvalidTransitionError(EnclaveError):
    """A workflow object cannot move from its current state to the requested one."""

    exit_code = 4


class DisclosureRiskError(EnclaveError):
    """An output or release would disclose too much."""

    exit_code = 5


class StoreError(EnclaveError):
    """The store is missing, locked or inconsistent."""

    exit_code = 6


class NothingLoadedError(EnclaveError):
    """An ingest ran but loaded nothing from a file or folder (wrong encoding, dialect or
    pattern, an empty or binary file); what it did is recorded, and the message names the
    likely cause. ``enclave ingest --allow-empty`` accepts such a run."""

    exit_code = 7
