"""A research data enclave for electronic medical records."""

__version__ = "0.1.0"
