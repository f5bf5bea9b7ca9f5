"""ICD-10 codes: the national clinical version 2.0 (国家临床版 2.0) and WHO ICD-10.

Clinical codes extend WHO codes: ``E11.900`` (WHO ``E11.9``), ``I10.x00x002`` (WHO ``I10``, the ``x``
marks "no WHO subcategory"), ``I25.103`` (WHO ``I25.1``). The WHO code is the 3-character category
plus the first character after the dot when it is a digit.
"""

from __future__ import annotations

import polars as pl

#: WHO ICD-10: letter, two digits, optional dot and 1–2 digits (some national extensions use 2).
WHO_PATTERN = r"^[A-Z][0-9]{2}(\.[0-9]{1,2})?$"
#: Clinical version 2.0: WHO category, a dot, then 1–3 characters of digits or "x", optional
#: extension of "x" plus 3 digits.
CLINICAL_PATTERN = r"^[A-Z][0-9]{2}(\.[0-9x]{1,3}(x[0-9]{3})?)?$"


def is_valid_clinical(col: pl.Expr) -> pl.Expr:
    """True where the code is a syntactically valid clinical-version code (upper case letter)."""
    c = col.str.strip_chars()
    head = c.str.slice(0, 1).str.to_uppercase() + c.str.slice(1).str.to_lowercase()
    return head.str.contains(CLINICAL_PATTERN)


def is_valid_who(col: pl.Expr) -> pl.Expr:
    return col.str.strip_chars().str.to_uppercase().str.contains(WHO_PATTERN)


def to_who(col: pl.Expr) -> pl.Expr:
    """WHO ICD-10 code of a clinical (or WHO) code: ``E11.900`` → ``E11.9``, ``I10.x00x002`` → ``I10``."""
    c = col.str.strip_chars().str.to_uppercase()
    category = c.str.slice(0, 3)
    sub = c.str.extract(r"^[A-Z][0-9]{2}\.([0-9])", 1)
    return pl.when(sub.is_not_null()).then(category + pl.lit(".") + sub).otherwise(category)
