"""Workflows: multi-step operations built on the store, ingest and (later) release modules."""
