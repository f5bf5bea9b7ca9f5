"""What the tests of the delimited adapters (Synthea CSV, OMOP CSV) share: the rows a batch staged
from a file, and a sample file corrupted by edits Hypothesis draws."""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from pathlib import Path

import polars as pl
from hypothesis import strategies as st

#: how many bytes to cut off the end of a corrupted file (None: none)
TRUNCATIONS = st.one_of(st.none(), st.integers(min_value=1, max_value=60))


def line_edits(max_pos: int) -> st.SearchStrategy:
    """Up to six edits ``(line, what, position)`` of a nine-line sample (never its header line);
    the position is taken modulo the line's length."""
    return st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=8),
            st.sampled_from(["delete", "insert", "sep", "quote", "badbyte", "newline"]),
            st.integers(min_value=0, max_value=max_pos),
        ),
        max_size=6,
    )


def corrupt(lines: list[bytes], edits, truncate: int | None, inserted: Mapping[str, bytes],
            deleted: int) -> bytes:
    """``lines`` (a file's, split at ``\\n``) with ``edits`` applied, joined: ``delete`` removes
    ``deleted`` bytes at the position, any other edit inserts ``inserted[what]`` there; then
    ``truncate`` bytes cut off the end (never into the header)."""
    lines = list(lines)
    for index, what, pos in edits:
        line = lines[index]
        pos = pos % (len(line) + 1)
        if what == "delete":
            line = line[:pos] + line[pos + deleted :]
        else:
            line = line[:pos] + inserted[what] + line[pos:]
        lines[index] = line
    data = b"\n".join(lines)
    if truncate:
        data = data[: max(len(data) - truncate, len(lines[0]) + 1)]
    return data


def csv_records(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def staged_rows(batch, file: Path) -> list[int]:
    """The record numbers (``_row``) of ``file`` in every frame of ``batch``, sorted."""
    rows: list[int] = []
    for frame in batch.frames.values():
        rows += frame.filter(pl.col("_file") == str(file))["_row"].to_list()
    return sorted(rows)


def stage_accounted(stage: Callable, mapping, file: Path, data: bytes) -> tuple:
    """Write ``data`` to ``file`` and ``stage`` its folder with ``mapping``, checking that every
    record read from it is staged exactly once: the batch and the number of records."""
    file.write_bytes(data)
    batch = stage(file.parent, mapping)
    n = batch.read_counts[str(file)]
    assert staged_rows(batch, file) == list(range(1, n + 1)), "a record staged twice or never"
    return batch, n


def assert_every_row_staged_once(batch, files: list[Path]) -> None:
    """``batch`` counts every one of the CSV ``files`` with its records, and stages each record
    exactly once."""
    assert sorted(batch.read_counts) == [str(f) for f in files]
    for file in files:
        n = len(csv_records(file))
        assert batch.read_counts[str(file)] == n, file.name
        assert staged_rows(batch, file) == list(range(1, n + 1)), file.name
