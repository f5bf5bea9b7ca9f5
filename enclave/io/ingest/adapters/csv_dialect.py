"""Declarative adapter for delimited hospital extracts (dialect ``csv``), driven by the site.toml.

Options (besides ``[site]``; every key optional unless marked)::

    [csv]                                   # defaults for every file
    delimiter = ","                         # one character
    quote = "\\""                           # quote character ("" = none)
    date_formats = ["%Y%m%d"]               # strptime patterns for Date columns, first match wins;
                                            # "%Y年%m月%d日" also reads 2023年1月5日 (no padding);
                                            # datetime patterns are accepted too (truncated to dates)
    datetime_formats = ["%Y%m%dT%H%M%S"]    # for Datetime columns
    sex_codes = { "1" = "M", "2" = "F" }    # source code → M/F/U (default: GB/T 2261.1 + 男/女)
    true_values = ["1"]                     # for Boolean columns (e.g. condition.primary)
    false_values = ["0"]

    [files.<kind>]                          # one table per staging kind (person, visit, ...)
    pattern = "huanzhe*.csv"                # (required) glob inside the extract folder
    date_formats = [...]                    # any [csv] key may be overridden per file
    [files.<kind>.columns]                  # (required) contract column = source header
    site_patient_id = "binglihao"           # one header may feed several columns (date + datetime)
    [files.<kind>.constants]                # contract column = value for every row
    code_system = "LOINC"
    [files.<kind>.values.<column>]          # source value → contract value (others pass unchanged)
    "3" = "inpatient"

    [codes.<kind>]                          # read by the loader, not here: local code → standard
    GLU = "LOINC:2345-7"                    # "SYSTEM:code" (see enclave.io.ingest.concepts)

Reading: the file is decoded in Python with the site's encoding (DuckDB cannot read GB18030), in
chunks split at line breaks, and split into physical lines by polars. One line is one record; a
line whose field count differs from the header (truncated, extra separators), with an unbalanced
quote, or with undecodable bytes is staged as ``unparsed``/``malformed_row`` under its data-line
number. Lines without quotes are split natively (``str.split_exact``); the rare lines with quotes go
through Python's ``csv`` module. Every column stays Utf8 until it is parsed by
``enclave.io.ingest.normalize``; unparseable dates, sex codes and numbers become ``invalid_date``,
``invalid_sex`` and ``invalid_number`` rejects naming the source header. Text values are stripped
(blank → null) and otherwise verbatim.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from enclave.core.errors import BadInputError, ConfigurationError
from enclave.io.ingest import normalize as nz
from enclave.io.ingest.mapping import SiteMapping
from enclave.io.ingest.staging import KINDS, LOAD_ORDER, RejectReason, StagedBatch, kind_schema

SRC = "__src__"  # prefix of raw source columns while a frame is being mapped
ROW = "_row"
CHUNK_BYTES = 128 * 1024 * 1024
DEFAULTS: dict[str, Any] = {
    "delimiter": ",", "quote": '"', "date_formats": [nz.D8, nz.ISO_DATE, nz.CHINESE_DATE],
    "datetime_formats": [nz.DT15, "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"], "sex_codes": None,
    "true_values": ["1", "true", "是", "Y"], "false_values": ["0", "false", "否", "N"],
}


@dataclass(frozen=True, slots=True)
class Table:
    """One delimited file read as text: ``data`` has ``_row`` + one ``__src__<header>`` column per
    header; ``bad_rows`` are the data-line numbers of malformed lines; ``count`` all data lines."""

    header: list[str]
    data: pl.DataFrame
    bad_rows: list[int]
    count: int


def stage(path: Path, mapping: SiteMapping, *, background: bool = False) -> StagedBatch:
    """Read the site's files, two at a time and in the loader's order (:data:`LOAD_ORDER`); iconv
    runs in its own process and polars releases the GIL, so the two reads overlap. ``background``:
    return at once, every kind pending (:meth:`StagedBatch.ready` waits for one), so that loading
    the patients overlaps reading the events; otherwise return the complete batch."""
    files = mapping.options.get("files")
    if not isinstance(files, dict) or not files:
        raise ConfigurationError(f"{mapping.source}: the csv dialect needs [files.<kind>] tables")
    jobs = [(file, kind, spec) for kind, spec in files.items()
            for file in find_files(path, kind, spec, mapping.source)]
    rank = {kind: i for i, kind in enumerate(LOAD_ORDER)}
    batch = StagedBatch(site=mapping.site_id)
    for file, _, _ in jobs:  # every file known now, in the mapping's order
        batch.read_counts.setdefault(str(file), 0)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stage")
    started = {i: pool.submit(read_file, *jobs[i], mapping)
               for i in sorted(range(len(jobs)), key=lambda i: rank.get(jobs[i][1], len(rank)))}
    pool.shutdown(wait=False)  # the submitted reads run on; nothing more is submitted

    def fill(kind: str) -> None:
        for i, (file, k, _) in enumerate(jobs):
            if k == kind:
                frame, table = started[i].result()
                add_with_file(batch, kind, frame, file)
                add_unparsed(batch, file, table.bad_rows)
                batch.read_counts[str(file)] += table.count

    for kind in dict.fromkeys(kind for _, kind, _ in jobs):
        batch.pending[kind] = lambda kind=kind: fill(kind)
    if not background:
        batch.complete()
    return batch


def find_files(path: Path, kind: str, spec: dict, source: str) -> list[Path]:
    if kind not in KINDS or kind == "unparsed":
        raise ConfigurationError(f"{source}: [files.{kind}] is not a staging kind")
    pattern = spec.get("pattern")
    if not pattern:
        raise ConfigurationError(f"{source}: [files.{kind}] needs 'pattern'")
    if path.is_file():
        return [path] if path.match(pattern) else []
    return sorted(p for p in path.glob(pattern) if p.is_file())


def options(mapping: SiteMapping, spec: dict) -> dict[str, Any]:
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in (mapping.options.get("csv") or {}).items()})
    merged.update({k: v for k, v in spec.items() if k in DEFAULTS})
    return merged


def read_file(file: Path, kind: str, spec: dict, mapping: SiteMapping) -> tuple[pl.DataFrame, Table]:
    """Read one file and map it to the contract (no shared state: safe to run in a thread)."""
    opts = options(mapping, spec)
    table = read_table(file, mapping.encoding, opts["delimiter"], opts["quote"])
    columns = spec.get("columns") or {}
    missing = sorted({h for h in columns.values() if h not in table.header})
    if missing:
        raise BadInputError(f"{file}: header lacks the mapped columns {missing} (see {mapping.source})")
    frame = to_contract(kind, table.data, columns, spec.get("constants") or {},
                        spec.get("values") or {}, opts)
    return frame, table


def stage_file(batch: StagedBatch, file: Path, kind: str, spec: dict, mapping: SiteMapping) -> None:
    frame, table = read_file(file, kind, spec, mapping)
    add_with_file(batch, kind, frame, file)
    add_unparsed(batch, file, table.bad_rows)
    batch.read_counts[str(file)] = batch.read_counts.get(str(file), 0) + table.count


def add_with_file(batch: StagedBatch, kind: str, frame: pl.DataFrame, file: Path) -> None:
    batch.add(kind, frame.with_columns(pl.lit(str(file)).alias("_file")))


def add_unparsed(batch: StagedBatch, file: Path, rows: list[int]) -> None:
    if rows:
        batch.add("unparsed", pl.DataFrame({
            "_file": [str(file)] * len(rows), "_row": rows,
            "_reject": [str(RejectReason.MALFORMED_ROW)] * len(rows)}))


# ------------------------------------------------------------------------------------- reading
def read_table(file: Path, encoding: str, delimiter: str = ",", quote: str = '"') -> Table:
    """Decode and split a delimited file; never raises on bad content (only on I/O errors)."""
    if len(delimiter) != 1 or len(quote) > 1:
        raise ConfigurationError(f"{file}: delimiter must be one character and quote at most one")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read {file}: {exc.strerror}") from None
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8") and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data:
        return Table([], pl.DataFrame({ROW: pl.Series([], dtype=pl.Int64)}), [], 0)
    first = data.find(b"\n")
    head_bytes = data if first < 0 else data[:first]
    header_line = head_bytes.decode(encoding, errors="replace").removesuffix("\r")
    header = _split_python(header_line, delimiter, quote) or [header_line]
    clean = transcode(file, data, encoding)
    if clean is not None:
        fast = _read_fast(clean, header, delimiter, quote)
        if fast is not None:
            return fast
        data, first = clean, clean.find(b"\n")
    parts, bad_rows, count = [], [], 0
    start = len(data) if first < 0 else first + 1
    for text, lines, undecodable in _decode_chunks(data, encoding, start, clean is not None):
        frame, bad = _parse_chunk(text, lines, undecodable, header, delimiter, quote, count)
        parts.append(frame)
        bad_rows.extend(bad)
        count += lines.len()
    names = [SRC + h for h in header]
    data_frame = pl.concat(parts) if parts else pl.DataFrame(
        {ROW: pl.Series([], dtype=pl.Int64), **{c: pl.Series([], dtype=pl.Utf8) for c in names}})
    return Table(header, data_frame, sorted(bad_rows), count)


def transcode(file: Path, data: bytes, encoding: str) -> bytes | None:
    """The file as UTF-8, or ``None`` when it does not decode cleanly (the chunked path then finds
    the damaged lines). Non-UTF-8 encodings go through ``iconv`` reading the file itself (C, about
    twice Python's codec speed, in its own process); without iconv, Python's codec."""
    enc = encoding.lower().replace("_", "-")
    if enc in ("utf-8", "utf8"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return data
    if shutil.which("iconv"):
        proc = subprocess.run(["iconv", "-f", encoding.upper(), "-t", "UTF-8", str(file)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if proc.returncode != 0:
            return None
        out = proc.stdout
        return out[3:] if out.startswith(b"\xef\xbb\xbf") else out
    try:
        return data.decode(encoding).encode("utf-8")
    except UnicodeDecodeError:
        return None


def _read_fast(utf8: bytes, header: list[str], delimiter: str, quote: str) -> Table | None:
    """One polars parse of the whole file when every line provably has the header's field count;
    else ``None`` (the chunked path then finds the ragged lines).

    The proof is cheap: no quote character anywhere (so every delimiter separates fields) and the
    file's delimiter count equals (lines × (fields − 1)); polars refuses lines with too many fields,
    so none has too few either. A file cut off in its last line (an interrupted extract: no final
    line break, too few or too many fields there) is proved the same way without that line, which
    is then its one malformed row.
    """
    if b"\r" in utf8 or b"\x00" in utf8 or (quote and quote.encode() in utf8):
        return None
    sep, want = delimiter.encode(), len(header) - 1
    physical = utf8.count(b"\n") + (0 if utf8.endswith(b"\n") else 1)
    lines = physical - 1
    if lines <= 0:
        return None
    bad_rows, total = [], utf8.count(sep)
    if total != physical * want:
        if utf8.endswith(b"\n"):
            return None
        last = utf8[utf8.rfind(b"\n") + 1:].count(sep)
        if last == want or total - last != (physical - 1) * want:
            return None
        bad_rows = [lines]
    names = [SRC + h for h in header]
    try:  # n_rows stops before a malformed last line (no copy of the text without it)
        parsed = pl.read_csv(utf8, has_header=False, skip_rows=1, separator=delimiter,
                             quote_char=None, schema={c: pl.Utf8 for c in names},
                             n_rows=lines - len(bad_rows), raise_if_empty=False)
    except pl.exceptions.PolarsError:
        return None
    if parsed.height != lines - len(bad_rows):
        return None
    parsed = parsed.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
    return Table(header, parsed.select(ROW, *names), bad_rows, lines)


def _parse_chunk(text: bytes, lines: pl.Series, undecodable: pl.Series, header: list[str],
                 delimiter: str, quote: str, offset: int) -> tuple[pl.DataFrame, list[int]]:
    """Parse one chunk of data lines; returns (good rows, malformed row numbers)."""
    n = len(header)
    names = [SRC + h for h in header]
    body = pl.DataFrame({"line": lines, "bad": undecodable}).with_row_index(ROW, offset=offset + 1)
    body = body.with_columns(pl.col(ROW).cast(pl.Int64))
    has_quote = pl.col("line").str.contains(quote, literal=True) if quote else pl.lit(False)
    body = body.with_columns(has_quote.alias("q"),
                             pl.col("line").str.count_matches(delimiter, literal=True).alias("k"))
    quoted = body.filter(pl.col("q") & ~pl.col("bad"))
    ok_quoted: dict[int, list[str]] = {}
    bad_rows = body.filter(pl.col("bad"))[ROW].to_list()
    bad_rows += body.filter(~pl.col("q") & ~pl.col("bad") & (pl.col("k") != n - 1))[ROW].to_list()
    for r, line in zip(quoted[ROW].to_list(), quoted["line"].to_list()):
        fields = _split_python(line, delimiter, quote)
        if fields is None or len(fields) != n:
            bad_rows.append(r)
        else:
            ok_quoted[r] = fields
    good = ~pl.col(ROW).is_in(bad_rows)
    # fast path: polars parses the whole chunk when records and lines are sure to align
    if body.height and b"\r" not in text and b"\x00" not in text and len(ok_quoted) == quoted.height:
        try:
            parsed = pl.read_csv(text, has_header=False, separator=delimiter,
                                 quote_char=quote or None, schema={c: pl.Utf8 for c in names},
                                 truncate_ragged_lines=True, raise_if_empty=False)
        except pl.exceptions.PolarsError:  # e.g. a malformed first line: take the careful path
            parsed = None
        if parsed is not None and parsed.height == body.height:
            parsed = parsed.with_columns(body[ROW])
            return parsed.filter(good).select(ROW, *names), bad_rows
    plain = body.filter(good & ~pl.col("q"))
    if n == 1:
        frame = plain.select(ROW, pl.col("line").alias(names[0]))
    else:
        frame = plain.select(ROW, pl.col("line").str.split_exact(delimiter, n - 1)
                             .struct.rename_fields(names).alias("s")).unnest("s")
    if ok_quoted:
        extra = pl.DataFrame(list(ok_quoted.values()), schema={c: pl.Utf8 for c in names}, orient="row")
        extra = extra.with_columns(pl.Series(ROW, list(ok_quoted), dtype=pl.Int64)).select(ROW, *names)
        frame = pl.concat([frame, extra]).sort(ROW)
    return frame, bad_rows


def _split_python(line: str, delimiter: str, quote: str) -> list[str] | None:
    try:
        rows = list(csv.reader([line], delimiter=delimiter, quotechar=quote or None,
                               quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE, strict=True))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


def _decode_chunks(data: bytes, encoding: str, start: int, clean: bool):
    """Yield (UTF-8 bytes, physical lines, undecodable flags) per chunk of about CHUNK_BYTES from
    ``start``, split at line breaks (GB18030 and UTF-8 never use byte 0x0A inside a character).
    A final line break ends the last record; it starts no new one. A file that transcodes cleanly
    is handed in ``clean`` (already UTF-8); otherwise each chunk is decoded in Python and its
    damaged lines flagged."""
    ends_with_break = data.endswith(b"\n")
    size = len(data) - 1 if ends_with_break else len(data)
    while start < size or (start == size and ends_with_break):
        end = data.find(b"\n", start + CHUNK_BYTES) if size - start > CHUNK_BYTES else -1
        stop = size if end < 0 or end >= size else end
        chunk = data[start:stop]
        start = stop + 1
        if clean:
            raw, damaged = chunk, False
        else:
            try:
                text, damaged = chunk.decode(encoding), False
            except UnicodeDecodeError:
                text, damaged = chunk.decode(encoding, errors="replace"), True
            raw = text.encode("utf-8")
        lines = _split_lines(raw)
        bad = (lines.str.contains("\ufffd", literal=True) if damaged
               else pl.repeat(False, lines.len(), eager=True, dtype=pl.Boolean))
        yield raw, lines, bad


def _split_lines(raw: bytes) -> pl.Series:
    expected = raw.count(b"\n") + 1
    if b"\x00" not in raw and b"\r" not in raw and raw:
        frame = pl.read_csv(raw, has_header=False, separator="\x00", quote_char=None,
                            infer_schema=False, new_columns=["line"])
        series = frame["line"].fill_null("")
        if series.len() == expected - 1 and raw.endswith(b"\n"):
            series = series.extend(pl.Series([""]))
        if series.len() == expected:
            return series.alias("line")
    text = raw.decode("utf-8")
    return pl.Series("line", [s.removesuffix("\r") for s in text.split("\n")], dtype=pl.Utf8)


# ------------------------------------------------------------------------------------- mapping
def to_contract(kind: str, raw: pl.DataFrame, columns: dict[str, str], constants: dict[str, Any],
                values: dict[str, dict[str, str]], opts: dict[str, Any]) -> pl.DataFrame:
    """Map raw text columns (``__src__<header>``) to the contract's typed columns and flag
    unparseable values. Returns contract columns + ``_row``/``_reject``/``_reject_column``."""
    schema = kind_schema(kind)
    exprs, checks = [], []
    for column, header in columns.items():
        if column not in schema or column.startswith("_"):
            raise ConfigurationError(f"'{column}' is not a column of the staging kind '{kind}'")
        src = pl.col(SRC + header)
        t = schema[column]
        if column in values:
            table = {str(k): str(v) for k, v in values[column].items()}
            src = nz.clean_text(src).replace(list(table), list(table.values()))
        if column == "sex":
            e, why = nz.parse_sex(src, opts.get("sex_codes")), RejectReason.INVALID_SEX
        elif t == pl.Date:
            e, why = nz.parse_date(src, opts["date_formats"]), RejectReason.INVALID_DATE
        elif isinstance(t, pl.Datetime):
            e, why = nz.parse_datetime(src, opts["datetime_formats"]), RejectReason.INVALID_DATE
        elif t == pl.Float64:
            e, why = nz.parse_number(src), RejectReason.INVALID_NUMBER
        elif t == pl.Int64:
            e, why = nz.parse_number(src).round(0).cast(pl.Int64, strict=False), RejectReason.INVALID_NUMBER
        elif t == pl.Boolean:
            e, why = _parse_bool(src, opts), None
        else:
            e, why = nz.clean_text(src), None
        exprs.append(e.alias(column))
        if why is not None:
            checks.append((SRC + header, column, why))
    for column, value in constants.items():
        if column not in schema or column.startswith("_"):
            raise ConfigurationError(f"constant '{column}' is not a column of the staging kind '{kind}'")
        if column in columns:
            raise ConfigurationError(f"'{column}' of kind '{kind}' is both a column and a constant")
        exprs.append(pl.lit(value).cast(schema[column]).alias(column))
    frame = raw.with_columns(exprs)
    frame = nz.flag_failures(frame, checks)
    frame = frame.with_columns(pl.col("_reject_column").str.strip_prefix(SRC))
    keep = [c for c in frame.columns if not c.startswith(SRC)]
    return frame.select(keep)


def _parse_bool(col: pl.Expr, opts: dict[str, Any]) -> pl.Expr:
    s = nz.clean_text(col).str.to_lowercase()
    true = [str(v).lower() for v in opts["true_values"]]
    false = [str(v).lower() for v in opts["false_values"]]
    return pl.when(s.is_in(true)).then(True).when(s.is_in(false)).then(False).otherwise(None)
