"""The I/O layer: everything that reads or writes data (DuckDB, the store, the engine, ingest,
releases, indicators, output checks, the airlock, the hub). Imports the core and the logic;
its packages' own order is the import-rule test's (tests/unit/test_layers.py).
"""
