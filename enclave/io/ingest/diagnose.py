"""Why an ingest loaded nothing: one warning per file (or folder) that gave no rows, naming the
likely cause — the encoding, the dialect, the file patterns — never the file's contents.

A file counts as *empty-handed* when it loaded no row and was neither ingested before nor a twin
of another file of the run, and some of its rows were rejected or it held no record at all. A
file whose rows were all merged as duplicates of the store is not: nothing was wrong with it; nor,
when other files of the run loaded, is a file whose rows were all rejected by design
(:data:`BY_DESIGN`: a table the enclave does not store, an empty table's repeated header) or a
text file with no record (an export's header-only table); a 0-byte or binary file always is.
"""

from __future__ import annotations

from pathlib import Path

from enclave.io.ingest.mapping import SiteMapping
from enclave.io.ingest.reports import FileReport

#: bytes of a file read to judge its encoding
SAMPLE = 1 << 16
#: reject reasons that mean the rows were not understood at all (layout, not content)
LAYOUT_REASONS = ("malformed_row", "missing_required", "unsupported_record", "invalid_date",
                  "invalid_number")


#: rejects that mean "not stored here, on purpose": a file of only these is no problem when the
#: rest of the run loaded (an OMOP export's era and vocabulary tables, an empty table's header)
BY_DESIGN = ("unsupported_record", "repeated_header")


def empty_handed(reports: list[FileReport]) -> list[FileReport]:
    """The files that loaded nothing for no good reason (see the module's docstring)."""
    fresh = [r for r in reports if r.loaded == 0 and not r.already_ingested and r.duplicate_of is None
             and (r.rejected_total > 0 or r.read == 0)]
    if any(r.loaded for r in reports):
        fresh = [r for r in fresh if set(r.rejected) - set(BY_DESIGN) or (r.read == 0 and _blank(r))]
    return fresh


def _blank(r: FileReport) -> bool:
    """A 0-byte or binary file (a header-only table of an export is neither)."""
    file = Path(r.file)
    if not file.is_file():
        return False
    return file.stat().st_size == 0 or _binary(file.read_bytes()[:SAMPLE])


def _binary(head: bytes) -> bool:
    return b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff"))


def warnings(reports: list[FileReport], path: Path, mapping: SiteMapping) -> list[str]:
    """One line per empty-handed file, or one for the whole run when it read no file."""
    path = Path(path)
    if not reports or all(r.read == 0 and not _blank(r) for r in reports):
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        if not files:
            return [f"{path}: the folder holds no file"]
        return [(f"{path}: none of its {len(files)} files matched what the {mapping.dialect} "
                "dialect reads (file names, extensions, layout): check --dialect or the mapping's "
                "patterns")]
    return [f"{r.file}: {_cause(r, mapping)}" for r in empty_handed(reports)]


def _cause(r: FileReport, mapping: SiteMapping) -> str:
    file = Path(r.file)
    head = file.read_bytes()[:SAMPLE] if file.is_file() else b""
    if file.is_file() and file.stat().st_size == 0:
        return "the file is empty (0 bytes)"
    if _binary(head):
        return "the file is binary, not text"
    if r.read == 0:
        return f"no record found in it (is it a {mapping.dialect} file?)"
    what = f"all {r.read} records rejected ({_top(r)})"
    encoding = mapping.encoding.lower().replace("_", "-")
    if not _decodes(head, encoding):
        return f"{what}: it is not valid {mapping.encoding} text — check the site's encoding"
    if encoding not in ("utf-8", "utf8") and not head.isascii() and _decodes(head, "utf-8"):
        return (f"{what}: it looks like UTF-8 while the site's encoding is {mapping.encoding} — "
                "check the encoding")
    if encoding in ("utf-8", "utf8") and not head.isascii() and _decodes(head, "gb18030") \
            and not _decodes(head, "utf-8"):
        return f"{what}: it looks like GB18030 while the site's encoding is UTF-8"
    top = max(r.rejected, key=r.rejected.get)
    if top in LAYOUT_REASONS:
        return (f"{what}: its layout does not match the {mapping.dialect} dialect (delimiter, "
                "columns, date format) — check --dialect or the mapping")
    return f"{what}: check the values the reasons name (enclave store stats lists rejects)"


def _top(r: FileReport) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(r.rejected.items(), key=lambda kv: -kv[1])[:3])


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        return exc.start >= len(data) - 4  # a character cut at the end of the sample
    except LookupError:
        return True
    return True
