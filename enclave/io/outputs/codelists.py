"""Researchers' code lists (security-critical): small tables of codes an output may join.

A code list is a name and a list of codes, all text or all integers, that a researcher types in a
notebook (``ws.codelist("diabetes", ["E10", "E11"])``) and joins to release tables. It becomes a
table of one column, ``code``: a temporary table on the kernel's connection, and in the airlock's
sandbox a table created **from the output's record** before the record's SQL runs. A record carries
every code list its SQL reads as data, ``{"name", "column", "type", "values"}``;
:func:`from_record` refuses anything else (another field, a file, a type or a column of its own),
so a code list is never read from a file or from anywhere but the record.

A code list can never stand in for a release table. Its name is a lower-case identifier that is
not the name of an OMOP CDM or vocabulary table (a release table of this project or of any other),
not a name of DuckDB's catalog families or of the enclave's own temporary tables, and
(:func:`create`, on the connection the SQL runs on) not a table of the release itself: DuckDB reads
a temporary table before a release table of the same name. The SQL check
(:func:`enclave.io.outputs.sql.check_output_query`) accepts exactly the record's code lists beside
the release's tables, and never as the source of the patient column.

Codes are not patient-level data; like everything in a record they are still never logged, and
the messages here name a code list and a position, never a code.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import duckdb
from sqlglot import exp

from enclave.core.errors import BadInputError
from enclave.core.model.omop import CDM_TABLES, VOCABULARY_TABLES
from enclave.io.outputs.sql import (
    FORBIDDEN_SCHEMAS,
    _cte_names,
    _forbidden,
    parse_query,
    release_schema,
)

CODE_COLUMN = "code"
#: a code list's column type (as recorded and as created) → the Python type of its codes
TYPES: dict[str, type] = {"VARCHAR": str, "BIGINT": int}
#: the fields of a code list in a record, and nothing else
FIELDS = ("name", "column", "type", "values")
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
#: names of release tables, of any project: a code list never takes one
RESERVED = frozenset(CDM_TABLES) | frozenset(VOCABULARY_TABLES)
#: the kernel's own temporary tables (ibis's in-memory tables, the enclave's evaluation tables)
RESERVED_PREFIXES = ("ibis_", "enclave_")
BIGINT_RANGE = (-(1 << 63), (1 << 63) - 1)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class CodeListError(BadInputError):
    """A code list (in a notebook or in a record) is not a valid name and list of codes."""


@dataclass(frozen=True, slots=True)
class CodeListLimits:
    """``research.codelist_max_codes`` and ``research.codelist_max_code_chars``."""

    max_codes: int
    max_code_chars: int

    @classmethod
    def from_settings(cls, settings) -> CodeListLimits:
        r = settings.research
        return cls(max_codes=r.codelist_max_codes, max_code_chars=r.codelist_max_code_chars)

    def as_dict(self) -> dict:
        return {"max_codes": self.max_codes, "max_code_chars": self.max_code_chars}


@dataclass(frozen=True, slots=True)
class CodeList:
    """A checked code list: its name, its column type (a key of :data:`TYPES`) and its codes
    (unique, in the order given)."""

    name: str
    type: str
    values: tuple

    @classmethod
    def of(cls, name: object, codes: object, limits: CodeListLimits) -> CodeList:
        """A code list from a notebook: ``codes`` is a list (or any sequence, a pandas or polars
        Series) of text codes or of integer codes; repeated codes are kept once."""
        check_name(name)
        if hasattr(codes, "columns") or isinstance(codes, (str, bytes, Mapping)) or \
                not isinstance(codes, Iterable):
            raise CodeListError(
                f"code list '{name}': give the codes as a list of text or of integers (one "
                "column, 'code'), e.g. ws.codelist('diabetes', ['E10', 'E11']); for a column "
                "of a data frame, pass df['code'].tolist()")
        values: list = []
        for i, c in enumerate(codes):
            values.append(_plain(name, i, c))
        kinds = {type(v) for v in values}
        if len(kinds) > 1:
            raise CodeListError(f"code list '{name}' mixes text and integer codes: make them all "
                                "text (e.g. [str(c) for c in codes]) or all integers")
        kind = next((k for k, t in TYPES.items() if kinds == {t}), "VARCHAR")
        return _checked(str(name), kind, list(dict.fromkeys(values)), limits, "")

    def as_record(self) -> dict:
        """What an output's record holds of it (``record["codelists"]``)."""
        return {"name": self.name, "column": CODE_COLUMN, "type": self.type,
                "values": list(self.values)}

    @property
    def schema(self) -> dict[str, str]:
        return {CODE_COLUMN: self.type}


def _plain(name: object, i: int, c: object) -> str | int:
    """A notebook's code as plain ``str`` or ``int`` (numpy scalars included)."""
    if isinstance(c, str):
        return str(c)
    if isinstance(c, bool) or c is None or (isinstance(c, float) and math.isnan(c)):
        what = "a missing value" if c is None or isinstance(c, float) else "a boolean"
        raise CodeListError(f"code list '{name}': code #{i + 1} is {what}; codes are text or "
                            "integers")
    try:
        return operator.index(c)  # int, numpy integers
    except TypeError:
        raise CodeListError(f"code list '{name}': code #{i + 1} is a {type(c).__name__}; codes "
                            "are text or integers (cast floats: int(c) or str(c))") from None


def check_name(name: object, release_tables: Iterable[str] = ()) -> str:
    """``name`` when it may name a code list; :class:`CodeListError` saying why not."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        shown = repr(name)[:40] if isinstance(name, str) else type(name).__name__
        raise CodeListError(f"a code list's name must be a lower-case identifier (a letter, then "
                            f"letters, digits or _; at most 63), not {shown}")
    if name in RESERVED:
        raise CodeListError(f"'{name}' is the name of a release table (OMOP CDM or vocabulary, "
                            f"of any project); a code list may not take it: choose another, e.g. "
                            f"'{name}_codes'")
    if name.startswith(RESERVED_PREFIXES) or _forbidden(name) or name in FORBIDDEN_SCHEMAS:
        raise CodeListError(f"'{name}' is reserved (DuckDB's catalog, the enclave's own tables); "
                            "choose another name for the code list")
    if name in {t.lower() for t in release_tables}:
        raise CodeListError(f"'{name}' is a table of the release; a code list may not stand in "
                            "for it: choose another name")
    return name


def _checked(name: str, kind: str, values: list, limits: CodeListLimits, where: str) -> CodeList:
    """The checks a code list passes whichever way it came (notebook or record)."""
    label = f"{where}code list '{name}'"
    if not values:
        raise CodeListError(f"{label} holds no codes")
    if len(values) > limits.max_codes:
        raise CodeListError(f"{label} holds {len(values):,} codes, more than the "
                            f"{limits.max_codes:,} allowed (research.codelist_max_codes)")
    want = TYPES[kind]
    for i, v in enumerate(values):
        if type(v) is not want:
            what = "text" if want is str else "an integer"
            raise CodeListError(f"{label}: code #{i + 1} is not {what}, as its type {kind} says")
        if want is str and not 1 <= len(v) <= limits.max_code_chars:
            raise CodeListError(f"{label}: code #{i + 1} is empty or longer than "
                                f"{limits.max_code_chars} characters "
                                "(research.codelist_max_code_chars)")
        if want is str and CONTROL.search(v):
            raise CodeListError(f"{label}: code #{i + 1} holds a control character")
        if want is int and not BIGINT_RANGE[0] <= v <= BIGINT_RANGE[1]:
            raise CodeListError(f"{label}: code #{i + 1} is outside the 64-bit integer range")
    if len(set(values)) != len(values):
        raise CodeListError(f"{label} repeats codes; each code is listed once")
    return CodeList(name, kind, tuple(values))


def from_record(raw: object, limits: CodeListLimits) -> tuple[CodeList, ...]:
    """The code lists of a record's ``codelists`` field (absent or null: none), each exactly
    ``{"name", "column": "code", "type": "VARCHAR" | "BIGINT", "values": [codes]}``; anything
    else is a :class:`CodeListError` that names the problem."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise CodeListError("the record's code lists are not a list of code lists")
    out: list[CodeList] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise CodeListError(f"the record's code list #{i + 1} is not a JSON object")
        extra = sorted(repr(k)[:40] for k in entry if k not in FIELDS)
        if extra:
            raise CodeListError(f"the record's code list #{i + 1} has field(s) {', '.join(extra)}; "
                                "a code list is its name, column, type and values only (never "
                                "a file or another source)")
        missing = [k for k in FIELDS if k not in entry]
        if missing:
            raise CodeListError(f"the record's code list #{i + 1} lacks {', '.join(missing)}")
        try:
            name = check_name(entry["name"])
        except CodeListError as exc:
            raise CodeListError(f"the record's code list #{i + 1}: {exc}") from None
        if entry["column"] != CODE_COLUMN:
            raise CodeListError(f"the record's code list '{name}' declares a column other than "
                                f"'{CODE_COLUMN}'")
        if not isinstance(entry["type"], str) or entry["type"] not in TYPES:
            raise CodeListError(f"the record's code list '{name}' declares a type other than "
                                f"{' or '.join(TYPES)}")
        if not isinstance(entry["values"], list):
            raise CodeListError(f"the record's code list '{name}': its values are not a list of "
                                "codes")
        if name in {c.name for c in out}:
            raise CodeListError(f"the record declares the code list '{name}' twice")
        out.append(_checked(name, entry["type"], entry["values"], limits, "the record's "))
    return tuple(out)


def create(con: duckdb.DuckDBPyConnection, codelists: Sequence[CodeList]) -> None:
    """Make each code list a temporary table of ``con`` (replacing one of the same name), once
    its name is checked against the release's own tables on that connection."""
    tables = release_schema(con)
    for cl in codelists:
        check_name(cl.name, tables)
    for cl in codelists:
        sqltype = {"VARCHAR": "VARCHAR", "BIGINT": "BIGINT"}[cl.type]
        try:
            con.execute(f'CREATE OR REPLACE TEMP TABLE "{cl.name}" ("{CODE_COLUMN}" {sqltype} '
                        "NOT NULL)")
            con.execute(f'INSERT INTO "{cl.name}" SELECT unnest($1::{sqltype}[])',
                        [list(cl.values)])
        except duckdb.Error as exc:  # its message may quote a code: the kind only
            raise CodeListError(f"the code list '{cl.name}' could not be created "
                                f"({type(exc).__name__})") from None


def referenced(sql: str, codelists: Iterable[CodeList]) -> tuple[CodeList, ...]:
    """Those of ``codelists`` that ``sql`` reads as a table (what an output's record carries)."""
    tree = parse_query(sql)
    ctes = _cte_names(tree)
    names = {t.this.name.lower() for t in tree.find_all(exp.Table)
             if isinstance(t.this, exp.Identifier)} - ctes
    return tuple(sorted((c for c in codelists if c.name in names), key=lambda c: c.name))
