"""Read one delimited text file (CSV, TSV ...) robustly: every record as all-Utf8, with its number.

This is the shared reader of the adapters for delimited extracts (Synthea CSV, OMOP CSV, and any
hospital CSV dialect). It never raises on bad content: what it cannot read comes back as a
*malformed* record with its number, so the adapter can stage it as ``unparsed``/``malformed_row``.

API
---
``read_delimited(path, encoding=..., separator=..., quote_char=...) -> DelimitedTable``

``DelimitedTable`` holds

* ``columns``   the header names as written in the file (deduplicated: a repeated name gets a
  ``_2``, ``_3`` ... suffix; an empty name becomes ``column_<n>``);
* ``rows``      one row per well-formed record: one Utf8 column per header name (empty field → null)
  plus ``_row`` (Int64, 1-based record number) and ``_line`` (Int64, 1-based physical line where the
  record starts; the header is line 1 when the file does not begin with blank lines);
* ``malformed`` ``_row`` and ``_line`` of every record that could not be read;
* ``record_count`` = ``rows.height + malformed.height``: the number of data records in the file.

and two helpers: :meth:`DelimitedTable.find` (case-insensitive column lookup → the real name or
``None``) and :meth:`DelimitedTable.col` (the column as a polars expression, or a null Utf8 literal
when the file lacks it, so adapters can map optional columns without branching).

Records
-------
The header is the first non-blank line. After it, a *record* is one line, or several lines when a
quoted field holds line breaks (RFC 4180). Blank lines (empty after removing ``\\r``) are not
records and are not counted; a trailing newline at the end of the file is not a record. ``_row``
numbers the records 1, 2, 3 ... with no gaps (it equals the data line number when no field holds a
line break). A record is **malformed** when

* it has fewer or more fields than the header (it is neither dropped nor padded nor truncated);
* one of its lines cannot be decoded with the given encoding (only that line is malformed, the rest
  of the file is read normally);
* its quoting is broken: a quote opened at the start of a field that does not close within
  ``max_record_lines`` lines into a record with the header's number of fields, or a closing quote
  followed by anything but a separator. Recovery is local: the line that opened the broken quote
  is the malformed record and reading resumes at the next line, so one stray quote never swallows
  the rest of the file.

A quote inside an unquoted field (``5'10" tall``) is taken literally, as Python's ``csv`` does.

Speed
-----
The fast path is vectorized: one strict decode of the whole file, the lines as a polars Series,
per-line field counts by polars string expressions, and polars' CSV parser (multi-threaded) on the
well-formed lines. Python touches records one by one only on the exact path, i.e. for lines that
failed to decode or whose quoting is not self-contained (a field with a line break, a stray quote);
everything else in such a file still goes through the fast path.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from enclave.io.ingest.mapping import SITE_FILE

#: Longest record, in physical lines, that a quoted field may stretch over (notes with line breaks).
MAX_RECORD_LINES = 1000

_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True, slots=True)
class DelimitedTable:
    """One delimited file read as text: well-formed records, malformed record numbers, header."""

    path: Path
    columns: tuple[str, ...]
    rows: pl.DataFrame
    malformed: pl.DataFrame

    @property
    def record_count(self) -> int:
        return self.rows.height + self.malformed.height

    def find(self, name: str) -> str | None:
        """The real name of header column ``name`` compared case-insensitively, or ``None``."""
        wanted = name.strip().casefold()
        for column in self.columns:
            if column.strip().casefold() == wanted:
                return column
        return None

    def col(self, name: str) -> pl.Expr:
        """Column ``name`` (case-insensitive) as an expression; a null Utf8 literal when absent."""
        real = self.find(name)
        return pl.col(real) if real is not None else pl.lit(None, pl.Utf8)


def read_delimited(
    path: Path,
    *,
    encoding: str = "utf-8",
    separator: str = ",",
    quote_char: str | None = '"',
    max_record_lines: int = MAX_RECORD_LINES,
) -> DelimitedTable:
    """Read ``path`` (see the module docstring for what a record and a malformed record are)."""
    if len(separator) != 1 or separator in "\r\n" or separator == quote_char:
        raise ValueError("separator must be one character, not a line break or the quote char")
    if quote_char is not None and len(quote_char) != 1:
        raise ValueError("quote_char must be one character or None")
    text, bad_lines = _decode(Path(path).read_bytes(), encoding)
    lines = pl.Series("text", [text], pl.Utf8).str.split("\n").explode().str.strip_suffix("\r")
    frame = pl.DataFrame({"text": lines}).with_row_index("idx")
    nonblank = frame.filter(pl.col("text") != "")
    if nonblank.height == 0:
        return DelimitedTable(Path(path), (), _empty_rows(()), _empty_malformed())
    header_idx = int(nonblank["idx"][0])
    header_text = str(nonblank["text"][0])
    raw_header = _split_record(header_text, separator, quote_char) or header_text.split(separator)
    columns = _dedupe(raw_header)
    width = len(columns)
    body = _classify(frame.slice(header_idx + 1), separator, quote_char, bad_lines)

    problems = body.filter(~pl.col("ok") & (pl.col("text") != ""))
    exact: dict[int, tuple[int, list[str] | None]] = {}  # start idx → (last idx, fields | None)
    if problems.height:
        exact = _resolve_problems(body, problems, width, separator, quote_char, max_record_lines)
    if exact:
        consumed = [i for start, (end, _) in exact.items() for i in range(start, end + 1)]
        body = body.with_columns(
            pl.col("idx").is_in(pl.Series(consumed, dtype=pl.UInt32).implode()).alias("_exact")
        )
    else:
        body = body.with_columns(pl.lit(False).alias("_exact"))
    starts = pl.Series(list(exact), dtype=pl.UInt32)
    body = body.with_columns(
        # a record starts at every non-blank line not handled exactly, and at every exact start
        (
            (~pl.col("_exact") & (pl.col("text") != "")) | pl.col("idx").is_in(starts.implode())
        ).alias("_start")
    )
    records = body.filter(pl.col("_start")).with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_row"),
        (pl.col("idx").cast(pl.Int64) + 1).alias("_line"),
    )
    fast = records.filter(~pl.col("_exact"))
    good = fast.filter(pl.col("nfields") == width)
    bad_fast = fast.filter(pl.col("nfields") != width).select("_row", "_line")

    # the common case (no blank or bad line anywhere): hand polars the decoded text as it is
    direct = (
        good.height > 0
        and header_idx == 0
        and good.height == body.filter(pl.col("text") != "").height
        and body.slice(0, max(body.height - 1, 0)).filter(pl.col("text") == "").height == 0
    )
    whole = text[text.index("\n") + 1 :] if direct else None
    del text
    parsed = _parse_fast(good, columns, separator, quote_char, whole)
    exact_rows = records.filter(pl.col("_exact")).select("idx", "_row", "_line")
    exact_good: list[tuple[int, int, list[str]]] = []
    exact_bad: list[tuple[int, int]] = []
    for idx, row, line in exact_rows.iter_rows():
        fields = exact[idx][1]
        if fields is None:
            exact_bad.append((row, line))
        else:
            exact_good.append((row, line, fields))
    rows = parsed
    if exact_good:
        extra = pl.DataFrame(
            {
                **{c: [f[2][i] or None for f in exact_good] for i, c in enumerate(columns)},
                "_row": [f[0] for f in exact_good],
                "_line": [f[1] for f in exact_good],
            },
            schema=_rows_schema(columns),
        )
        rows = pl.concat([rows, extra]).sort("_row")
    malformed = pl.concat(
        [bad_fast, pl.DataFrame(exact_bad, schema=_empty_malformed().schema, orient="row")]
    ).sort("_row")
    return DelimitedTable(Path(path), tuple(columns), rows, malformed)


# --- decoding ------------------------------------------------------------------------------------


def _decode(data: bytes, encoding: str) -> tuple[str, set[int]]:
    """Decode; on failure mark the lines (0-based) holding undecodable bytes and blank them out."""
    try:
        text = data.decode(encoding)
        bad: set[int] = set()
    except UnicodeDecodeError:
        text = data.decode(encoding, errors="surrogateescape")
        parts = text.split("\n")
        bad = {i for i, part in enumerate(parts) if _SURROGATE.search(part)}
        for i in bad:  # keep the line (it is still a record, a malformed one) but make it valid text
            parts[i] = _SURROGATE.sub("\ufffd", parts[i])
        text = "\n".join(parts)
    text = text.removeprefix("\ufeff")
    return text, bad


# --- per-line classification (vectorized) ---------------------------------------------------------


def _classify(
    frame: pl.DataFrame, separator: str, quote_char: str | None, bad_lines: set[int]
) -> pl.DataFrame:
    """Add ``ok`` (line is a self-contained record the fast parser reads exactly), ``nfields``."""
    sep = re.escape(separator)
    text = pl.col("text")
    if quote_char is None:
        ok = pl.lit(True)
        nfields = text.str.count_matches(separator, literal=True) + 1
    else:
        q = re.escape(quote_char)
        # fast-path grammar: fields are either fully quoted ("" escapes a quote) or contain no quote
        field = f"(?:{q}(?:[^{q}]|{q}{q})*{q}|[^{q}{sep}]*)"
        line_ok = f"^{field}(?:{sep}{field})*$"
        has_quote = text.str.contains(quote_char, literal=True)
        ok = ~has_quote | text.str.contains(line_ok)
        # exact for ``ok`` lines only (there every quote belongs to a quoted field, and a doubled
        # quote splits a field into two adjacent quoted chunks); other lines go the exact path
        unquoted = text.str.replace_all(f"{q}[^{q}]*{q}", "")
        nfields = (
            pl.when(has_quote).then(unquoted).otherwise(text).str.count_matches(separator, literal=True)
            + 1
        )
    out = frame.with_columns(ok.alias("ok"), nfields.cast(pl.Int64).alias("nfields"))
    if bad_lines:
        bad = pl.Series(sorted(bad_lines), dtype=pl.UInt32).implode()
        out = out.with_columns(
            (pl.col("ok") & ~pl.col("idx").is_in(bad))
            .alias("ok"),
            pl.col("idx").is_in(bad).alias("undecodable"),
        )
    else:
        out = out.with_columns(pl.lit(False).alias("undecodable"))
    return out


# --- exact path (Python, only for problem lines) --------------------------------------------------


def _split_record(text: str, separator: str, quote_char: str | None) -> list[str] | None:
    """Fields of one record (may contain line breaks inside quotes); ``None`` if quoting is broken.

    A field starting with the quote char runs to the next quote not doubled, which must be followed
    by the separator or the end; any other field runs to the next separator (quotes inside it are
    literal). A line break outside quotes is not allowed.
    """
    if quote_char is None:
        return None if "\n" in text else text.split(separator)
    fields: list[str] = []
    pos, end = 0, len(text)
    while True:
        if pos < end and text[pos] == quote_char:
            chunks, i = [], pos + 1
            while True:
                j = text.find(quote_char, i)
                if j < 0:
                    return None
                chunks.append(text[i:j])
                if j + 1 < end and text[j + 1] == quote_char:
                    chunks.append(quote_char)
                    i = j + 2
                    continue
                pos = j + 1
                break
            fields.append("".join(chunks))
            if pos < end and text[pos] != separator:
                return None
        else:
            j = text.find(separator, pos)
            value = text[pos:] if j < 0 else text[pos:j]
            if "\n" in value:
                return None
            fields.append(value)
            pos = end if j < 0 else j
        if pos >= end:
            return fields
        pos += 1  # skip the separator
        if pos == end:
            fields.append("")
            return fields


def _resolve_problems(
    body: pl.DataFrame,
    problems: pl.DataFrame,
    width: int,
    separator: str,
    quote_char: str | None,
    max_record_lines: int,
) -> dict[int, tuple[int, list[str] | None]]:
    """Decide the extent of each record starting at a problem line; ``None`` fields = malformed."""
    base = int(body["idx"][0])
    texts = body["text"]
    undecodable = body["undecodable"]
    n = body.height
    result: dict[int, tuple[int, list[str] | None]] = {}
    covered_to = -1
    for idx in problems["idx"].to_list():
        if idx <= covered_to:
            continue
        k = idx - base
        if undecodable[k]:
            result[idx] = (idx, None)
            continue
        candidate = texts[k]
        found: tuple[int, list[str]] | None = None
        for m in range(k, min(n, k + max_record_lines)):
            if m > k:
                if undecodable[m]:
                    break
                candidate = candidate + "\n" + texts[m]
            fields = _split_record(candidate, separator, quote_char)
            if fields is not None and len(fields) == width:
                found = (m, fields)
                break
        if found is None:
            result[idx] = (idx, None)
        else:
            last = base + found[0]
            result[idx] = (last, found[1])
            covered_to = last
    return result


# --- fast parse -----------------------------------------------------------------------------------


def _parse_fast(
    good: pl.DataFrame,
    columns: list[str],
    separator: str,
    quote_char: str | None,
    whole: str | None,
) -> pl.DataFrame:
    """Parse self-contained, well-formed lines with polars' CSV reader (all Utf8).

    ``whole`` is the file's text after the header when every data line is good (no joining needed).
    """
    if good.height == 0:
        return _empty_rows(columns)
    names = [f"c{i}" for i in range(len(columns))]

    def parse(payload: bytes) -> pl.DataFrame | None:
        try:
            out = pl.read_csv(
                io.BytesIO(payload),
                has_header=False,
                new_columns=names,
                schema={n: pl.Utf8 for n in names},
                separator=separator,
                quote_char=quote_char,
                infer_schema=False,
            )
        except pl.exceptions.PolarsError:
            return None
        return out if out.height == good.height else None

    parsed = parse(whole.encode("utf-8")) if whole is not None else None
    if parsed is None:
        parsed = parse(good.select(pl.col("text").str.join("\n")).item().encode("utf-8") + b"\n")
    if parsed is None:  # never expected (the line grammar is stricter than polars): exact split
        split = [_split_record(t, separator, quote_char) or [] for t in good["text"].to_list()]
        parsed = pl.DataFrame(
            {n: [(f[i] if i < len(f) else None) or None for f in split] for i, n in enumerate(names)},
            schema={n: pl.Utf8 for n in names},
        )
    return parsed.rename(dict(zip(names, columns))).with_columns(
        good["_row"].alias("_row"), good["_line"].alias("_line")
    )


def _rows_schema(columns: list[str] | tuple[str, ...]) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {c: pl.Utf8 for c in columns}
    schema.update({"_row": pl.Int64, "_line": pl.Int64})
    return schema


def _empty_rows(columns: list[str] | tuple[str, ...]) -> pl.DataFrame:
    return pl.DataFrame(schema=_rows_schema(columns))


def _empty_malformed() -> pl.DataFrame:
    return pl.DataFrame(schema={"_row": pl.Int64, "_line": pl.Int64})


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i, raw in enumerate(names):
        name = raw.strip() or f"column_{i + 1}"
        if name in ("_row", "_line"):
            name = f"{name}_source"
        count = seen.get(name.casefold(), 0) + 1
        seen[name.casefold()] = count
        out.append(name if count == 1 else f"{name}_{count}")
    return out


# --- staging helpers shared by adapters -----------------------------------------------------------


def extract_files(path: Path) -> list[Path]:
    """The files an extract at ``path`` consists of: the file itself, or every file of the folder
    in name order (hidden files and the site mapping ``site.toml`` excepted)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name != SITE_FILE)


def reject_frame(
    table: DelimitedTable, file_label: str, reason: str, *, column: str | None = None,
    which: str = "malformed",
) -> pl.DataFrame:
    """Bookkeeping-only frame (kind ``unparsed``) for the malformed records, or for all records.

    ``which="malformed"`` covers ``table.malformed``; ``which="all"`` covers every record of the
    file (an unsupported table: well-formed and malformed records alike).
    """
    numbers = table.malformed.select("_row")
    if which == "all":
        numbers = pl.concat([table.rows.select("_row"), numbers]).sort("_row")
    return numbers.with_columns(
        pl.lit(file_label).alias("_file"),
        pl.lit(reason).alias("_reject"),
        pl.lit(column, pl.Utf8).alias("_reject_column"),
    )
