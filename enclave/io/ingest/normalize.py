"""Vectorized normalizers shared by all adapters (pure polars expressions, no I/O).

Each ``parse_*`` helper returns an expression for the normalized value; a value that is present in
the source but cannot be normalized becomes null, and :func:`flag_failures` turns "present in the
source but null after parsing" into a ``_reject`` reason naming the column. Adapters therefore keep
the raw column until they have flagged failures, then drop it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import polars as pl

from enclave.io.ingest.staging import RejectReason

#: Date formats of the dialects we know. D8 and DT15 are the WS 363 (Chinese health data element)
#: formats: ``20230105`` and ``20230105T143000``.
D8 = "%Y%m%d"
DT15 = "%Y%m%dT%H%M%S"
ISO_DATE = "%Y-%m-%d"
CHINESE_DATE = "%Y年%m月%d日"

#: GB/T 2261.1 sex codes, plus the Chinese words and the usual letters.
GB2261_SEX: dict[str, str] = {
    "0": "U",  # 未知的性别
    "1": "M",
    "2": "F",
    "9": "U",  # 未说明的性别
    "男": "M",
    "女": "F",
    "未知": "U",
    "M": "M",
    "F": "F",
    "U": "U",
    "MALE": "M",
    "FEMALE": "F",
    "UNKNOWN": "U",
    "O": "U",
}

EARLIEST_DATE = dt.date(1880, 1, 1)


def _clean(values: pl.Series) -> pl.Series:
    s = values.cast(pl.Utf8).str.strip_chars()
    return s.replace("", None)


def clean_text(col: pl.Expr) -> pl.Expr:
    """Strip whitespace; empty strings become null (evaluated once on the materialized column)."""
    return col.map_batches(_clean, return_dtype=pl.Utf8, is_elementwise=True)


def parse_date(col: pl.Expr, formats: Iterable[str], *, latest: dt.date | None = None) -> pl.Expr:
    """First format that parses wins; impossible dates (Feb 30, before 1880, after ``latest``) → null.

    Chinese dates (``2023年1月5日``, with or without zero padding) are accepted with
    ``CHINESE_DATE``. Datetime formats are accepted too and truncated to the date. Evaluated on the
    materialized column (``map_batches``) so that no sub-expression is computed twice.
    """
    formats = tuple(formats)
    upper = latest or dt.date.today()

    def parse(values: pl.Series) -> pl.Series:
        s = values.cast(pl.Utf8).str.strip_chars()
        out = None
        for fmt in formats:
            if fmt == CHINESE_DATE:
                fmt = "%Y年%-m月%-d日"
            if "%H" in fmt:
                cand = s.str.to_datetime(fmt, strict=False, time_unit="us").dt.date()
            else:
                cand = s.str.to_date(fmt, strict=False, exact=True)
            out = cand if out is None else out.fill_null(cand)
            if out.null_count() == 0:
                break
        if out is None:
            return pl.Series(values.name, [None] * values.len(), dtype=pl.Date)
        ok = out.is_between(EARLIEST_DATE, upper).fill_null(False)
        return out.set(~ok, None) if not ok.all() else out

    return col.map_batches(parse, return_dtype=pl.Date, is_elementwise=True)


def parse_datetime(col: pl.Expr, formats: Iterable[str]) -> pl.Expr:
    formats = tuple(formats)

    def parse(values: pl.Series) -> pl.Series:
        s = values.cast(pl.Utf8).str.strip_chars()
        out = None
        for fmt in formats:
            cand = s.str.to_datetime(fmt, strict=False, time_unit="us")
            out = cand if out is None else out.fill_null(cand)
        return out if out is not None else pl.Series(values.name, [None] * values.len(), dtype=pl.Datetime("us"))

    return col.map_batches(parse, return_dtype=pl.Datetime("us"), is_elementwise=True)


def parse_sex(col: pl.Expr, codes: Mapping[str, str] | None = None) -> pl.Expr:
    """Map a sex code to M/F/U with the site's code table (default: GB/T 2261.1 + common words)."""
    table = {k.upper(): v for k, v in (codes or GB2261_SEX).items()}

    def parse(values: pl.Series) -> pl.Series:
        return _clean(values).str.to_uppercase().replace_strict(
            list(table), list(table.values()), default=None, return_dtype=pl.Utf8)

    return col.map_batches(parse, return_dtype=pl.Utf8, is_elementwise=True)


def parse_number(col: pl.Expr) -> pl.Expr:
    """Decimal numbers; thousands separators (, and ，) tolerated."""

    def parse(values: pl.Series) -> pl.Series:
        values = values.cast(pl.Utf8)
        # most values are plain numbers: cast them as they are, then strip and de-comma only the
        # few that did not parse (a plain number is unchanged by both, so the result is the same)
        out = values.cast(pl.Float64, strict=False)
        retry = (out.is_null() & values.is_not_null()).arg_true()
        if retry.len() == 0:
            return out
        s = _clean(values.gather(retry))
        if s.str.contains("[,，]").any():
            s = s.str.replace_all("[,，]", "")
        return out.scatter(retry, s.cast(pl.Float64, strict=False))

    return col.map_batches(parse, return_dtype=pl.Float64, is_elementwise=True)


def flag_failures(
    frame: pl.DataFrame,
    checks: Iterable[tuple[str, str, RejectReason]],
) -> pl.DataFrame:
    """Set ``_reject``/``_reject_column`` where a raw column had a value but its parsed column is null.

    ``checks`` holds ``(raw_column, parsed_column, reason)``. The first failing check of a row wins;
    rows that already carry a reject keep it.

    A failure needs a null parsed value beside a non-null raw one: those rows (usually none or a
    handful) are found with cheap null masks, and only they are judged (raw text stripped, reasons
    chosen) and written back.
    """
    if "_reject" not in frame.columns:
        frame = frame.with_columns(
            pl.lit(None, pl.Utf8).alias("_reject"), pl.lit(None, pl.Utf8).alias("_reject_column")
        )
    checks = list(checks)
    if not checks:
        return frame
    # a column is named only beside a reason
    frame = frame.with_columns(
        pl.col("_reject").cast(pl.Utf8),
        pl.when(pl.col("_reject").is_not_null()).then(pl.col("_reject_column").cast(pl.Utf8))
        .alias("_reject_column"),
    )
    suspect = pl.any_horizontal(
        [pl.col(parsed).is_null() & pl.col(raw).is_not_null() for raw, parsed, _ in checks]
    )
    rows = frame.select(pl.arg_where(suspect)).to_series()
    if rows.len() == 0:
        return frame
    sub = frame[rows]
    # one boolean column per check, then flat coalesces (a nested chain that re-reads the
    # previous reason grows exponentially with the number of checks)
    failed = [
        clean_text(pl.col(raw)).is_not_null() & pl.col(parsed).is_null() for raw, parsed, _ in checks
    ]
    reject = pl.col("_reject")
    reason = pl.coalesce(
        reject, *[pl.when(f).then(pl.lit(str(why))) for f, (_, _, why) in zip(failed, checks)]
    )
    column = pl.when(reject.is_not_null()).then(pl.col("_reject_column")).otherwise(
        pl.coalesce(*[pl.when(f).then(pl.lit(raw)) for f, (raw, _, _) in zip(failed, checks)])
    )
    judged = sub.select(reason.alias("_reject"), column.alias("_reject_column"))
    return frame.with_columns(
        frame["_reject"].scatter(rows, judged["_reject"]),
        frame["_reject_column"].scatter(rows, judged["_reject_column"]),
    )
