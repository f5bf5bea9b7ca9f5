"""Chinese resident identity card numbers (GB 11643-1999), vectorized with polars.

18 characters: 6-digit GB/T 2260 region code, 8-digit birth date (YYYYMMDD), 3-digit sequence
(odd = male, even = female), 1 check character (ISO 7064 MOD 11-2; ``X`` stands for 10).
Legacy 15-digit numbers (YYMMDD, no check character) are upgraded by inserting ``19`` and computing
the check character.

Nothing here prints or logs a number.
"""

from __future__ import annotations

import polars as pl

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"  # index = weighted sum mod 11

_FULLWIDTH = str.maketrans("０１２３４５６７８９Ｘｘ", "0123456789XX")


def check_char(first17: str) -> str:
    total = sum(int(c) * w for c, w in zip(first17, WEIGHTS, strict=True))
    return CHECK_CHARS[total % 11]


def is_valid(number: str) -> bool:
    """Scalar check of a normalized 18-character number (format, birth date, checksum)."""
    n = normalize_scalar(number)
    return n is not None


def normalize_scalar(raw: str | None) -> str | None:
    """Normalized 18-character number, or ``None`` if it is not a valid resident ID."""
    if raw is None:
        return None
    s = raw.translate(_FULLWIDTH).strip().replace(" ", "").replace("-", "").upper()
    if len(s) == 15 and s.isdigit():
        body = s[:6] + "19" + s[6:]
        s = body + check_char(body)
    if len(s) != 18 or not s[:17].isdigit() or s[17] not in "0123456789X":
        return None
    import datetime as _dt

    try:
        _dt.date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return None
    if int(s[6:10]) < 1880:
        return None
    return s if check_char(s[:17]) == s[17] else None


_FW_FROM = list("０１２３４５６７８９Ｘｘ")
_FW_TO = list("0123456789XX")


def normalize_expr(col: pl.Expr) -> pl.Expr:
    """Vectorized :func:`normalize_scalar`: the normalized number or null when invalid."""
    s = col.str.replace_many(_FW_FROM, _FW_TO).str.replace_all(r"[\s-]", "").str.to_uppercase()
    # legacy 15-digit numbers: insert the century; their check character is computed below
    legacy = s.str.contains(r"^\d{15}$")
    s = pl.when(legacy).then(s.str.slice(0, 6) + pl.lit("19") + s.str.slice(6, 9) + pl.lit("?")).otherwise(s)
    well_formed = s.str.contains(r"^\d{17}[0-9X?]$")
    # weighted digit sum over the first 17 characters, via the UTF-8 bytes (digits are 0x30..0x39)
    digits = s.str.slice(0, 17).str.encode("hex")
    total = pl.lit(0, pl.Int64)
    for i, w in enumerate(WEIGHTS):
        d = digits.str.slice(2 * i + 1, 1).str.to_integer(base=16, strict=False)
        total = total + d * w
    expected = (total % 11).replace_strict(list(range(11)), list(CHECK_CHARS), default=None,
                                           return_dtype=pl.Utf8)
    given = s.str.slice(17, 1)
    birth = s.str.slice(6, 8).str.to_date("%Y%m%d", strict=False)
    ok = well_formed & ((given == expected) | (given == "?")) & (birth >= pl.date(1880, 1, 1))
    return pl.when(ok.fill_null(False)).then(s.str.slice(0, 17) + expected).otherwise(None)


def normalize_column(frame: pl.DataFrame, source: str, target: str) -> pl.DataFrame:
    """Add ``target``: :func:`normalize_expr` of ``source``, computed in stages (much faster on
    large frames than the single expression, whose sub-expressions polars would recompute)."""
    tmp = f"__{target}_s"
    frame = frame.with_columns(
        pl.col(source).str.replace_many(_FW_FROM, _FW_TO).str.replace_all(r"[\s-]", "")
        .str.to_uppercase().alias(tmp)
    )
    s = pl.col(tmp)
    frame = frame.with_columns(
        pl.when(s.str.contains(r"^\d{15}$"))
        .then(s.str.slice(0, 6) + pl.lit("19") + s.str.slice(6, 9) + pl.lit("?"))
        .otherwise(s).alias(tmp)
    )
    # the first 17 characters as one integer (17 digits fit an Int64), its digits by arithmetic:
    # one string parse per number instead of 17 (only well-formed numbers use the result)
    frame = frame.with_columns(s.str.slice(0, 17).cast(pl.Int64, strict=False).alias(tmp + "n"))
    n = pl.col(tmp + "n")
    total = pl.sum_horizontal([(n // 10 ** (16 - i)) % 10 * w for i, w in enumerate(WEIGHTS)])
    frame = frame.with_columns(
        (total % 11).replace_strict(list(range(11)), list(CHECK_CHARS), default=None,
                                    return_dtype=pl.Utf8).alias(tmp + "e")
    )
    e = pl.col(tmp + "e")
    given = s.str.slice(17, 1)
    birth = s.str.slice(6, 8).str.to_date("%Y%m%d", strict=False)
    ok = s.str.contains(r"^\d{17}[0-9X?]$") & ((given == e) | (given == "?")) & (birth >= pl.date(1880, 1, 1))
    return frame.with_columns(
        pl.when(ok.fill_null(False)).then(s.str.slice(0, 17) + e).otherwise(None).alias(target)
    ).drop(tmp, tmp + "n", tmp + "e")


def birth_date_expr(normalized: pl.Expr) -> pl.Expr:
    return normalized.str.slice(6, 8).str.to_date("%Y%m%d", strict=False)


def sex_expr(normalized: pl.Expr) -> pl.Expr:
    """``M`` for an odd sequence digit, ``F`` for an even one."""
    digit = normalized.str.slice(16, 1).cast(pl.Int32, strict=False)
    return pl.when(digit.is_null()).then(None).when(digit % 2 == 1).then(pl.lit("M")).otherwise(pl.lit("F"))


def region_expr(normalized: pl.Expr) -> pl.Expr:
    return normalized.str.slice(0, 6)
