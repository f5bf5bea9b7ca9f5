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


def normalize_expr(col: pl.Expr) -> pl.Expr:
    """Vectorized :func:`normalize_scalar`: the normalized number or null when invalid."""
    s = (
        col.str.replace_all("[\\s-]", "")
        .str.to_uppercase()
        .str.replace_all("０", "0").str.replace_all("１", "1").str.replace_all("２", "2")
        .str.replace_all("３", "3").str.replace_all("４", "4").str.replace_all("５", "5")
        .str.replace_all("６", "6").str.replace_all("７", "7").str.replace_all("８", "8")
        .str.replace_all("９", "9").str.replace_all("Ｘ", "X")
    )
    # legacy 15-digit numbers: insert century, check char computed below
    s = pl.when(s.str.contains(r"^\d{15}$")).then(
        s.str.slice(0, 6) + pl.lit("19") + s.str.slice(6, 9) + pl.lit("?")
    ).otherwise(s)
    well_formed = s.str.contains(r"^\d{17}[0-9X?]$")
    digits = [s.str.slice(i, 1).cast(pl.Int32, strict=False) for i in range(17)]
    total = pl.sum_horizontal([d * w for d, w in zip(digits, WEIGHTS)]) % 11
    expected = pl.lit(list(CHECK_CHARS)).list.get(total, null_on_oob=True)
    given = s.str.slice(17, 1)
    birth = s.str.slice(6, 8).str.to_date("%Y%m%d", strict=False)
    ok = (
        well_formed
        & ((given == expected) | (given == "?"))
        & birth.is_not_null()
        & (birth >= pl.date(1880, 1, 1))
    )
    return pl.when(ok).then(s.str.slice(0, 17) + expected).otherwise(None)


def birth_date_expr(normalized: pl.Expr) -> pl.Expr:
    return normalized.str.slice(6, 8).str.to_date("%Y%m%d", strict=False)


def sex_expr(normalized: pl.Expr) -> pl.Expr:
    """``M`` for an odd sequence digit, ``F`` for an even one."""
    digit = normalized.str.slice(16, 1).cast(pl.Int32, strict=False)
    return pl.when(digit.is_null()).then(None).when(digit % 2 == 1).then(pl.lit("M")).otherwise(pl.lit("F"))


def region_expr(normalized: pl.Expr) -> pl.Expr:
    return normalized.str.slice(0, 6)
