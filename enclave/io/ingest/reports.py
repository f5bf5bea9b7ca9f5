"""What one ingest run did with each source file: :class:`FileReport` and how it is counted.

Invariant, checked for every file: ``read == loaded + rejected + merged_duplicates``. A file the
store already holds (``already_ingested``) or that repeats an earlier file of the same run
(``duplicate_of``) has all its records counted as merged duplicates. ``warnings`` counts loaded
rows by :class:`enclave.io.ingest.staging.LoadWarning`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from enclave.io.ingest.files import FilePlan

#: one row per staged record: file id, row, kind and what became of it
OUTCOME_SCHEMA = {"_fid": pl.Int32, "_row": pl.Int64, "kind": pl.Utf8, "_reject": pl.Utf8,
                  "_reject_column": pl.Utf8, "_dup": pl.Boolean, "_warning": pl.Utf8,
                  "_warning_column": pl.Utf8}


@dataclass(slots=True)
class FileReport:
    """Counts for one source file. Invariant: read == loaded + rejected + merged_duplicates."""

    file: str
    site: str
    dialect: str
    source_records: int = 0
    read: int = 0
    loaded: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    merged_duplicates: int = 0
    already_ingested: bool = False
    duplicate_of: str | None = None  #: an earlier file of the same run with the same bytes
    retried: bool = False  #: an earlier run loaded nothing from it; its record was replaced
    redone: bool = False  #: forgotten by --redo and loaded afresh
    warnings: dict[str, int] = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "site": self.site,
            "dialect": self.dialect,
            "source_records": self.source_records,
            "read": self.read,
            "loaded": self.loaded,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": self.rejected_total,
            "merged_duplicates": self.merged_duplicates,
            "already_ingested": self.already_ingested,
            "duplicate_of": self.duplicate_of,
            "retried": self.retried,
            "redone": self.redone,
            "warnings": dict(sorted(self.warnings.items())),
        }


def file_reports(outcomes: pl.DataFrame, file_ids: dict[str, int], plan: FilePlan,
                 skipped: dict[str, int], read_counts: dict[str, int], files: list[str], *,
                 site: str, dialect: str) -> list[FileReport]:
    """One report per file (``files`` in order, then any other file the outcomes name)."""
    reports: dict[str, FileReport] = {}
    for f in files:
        reports[f] = FileReport(file=f, site=site, dialect=dialect,
                                source_records=read_counts.get(f, 0),
                                already_ingested=f in plan.known, duplicate_of=plan.twins.get(f),
                                retried=f in plan.retried, redone=f in plan.redone)
    names = {i: f for f, i in file_ids.items()}
    live = pl.col("_reject").is_null() & ~pl.col("_dup")
    summary = outcomes.group_by("_fid").agg(
        pl.len().alias("read"),
        live.sum().alias("loaded"),
        (pl.col("_reject").is_null() & pl.col("_dup")).sum().alias("dups"),
    )
    for fid, read, loaded, dups in summary.iter_rows():
        f = names[fid]
        r = reports.setdefault(f, FileReport(file=f, site=site, dialect=dialect))
        r.read, r.loaded, r.merged_duplicates = read, loaded, dups
    rejects = outcomes.filter(pl.col("_reject").is_not_null())
    for fid, reason, n in rejects.group_by("_fid", "_reject").len().iter_rows():
        reports[names[fid]].rejected[reason] = n
    warned = outcomes.filter(live & pl.col("_warning").is_not_null())
    for fid, warning, n in warned.group_by("_fid", "_warning").len().iter_rows():
        reports[names[fid]].warnings[warning] = n
    for f, n in skipped.items():
        r = reports[f]
        r.read += n
        r.merged_duplicates += n
    for r in reports.values():
        if r.read != r.loaded + r.rejected_total + r.merged_duplicates:
            raise RuntimeError(f"the counts of {r.file} do not balance: read {r.read}, loaded "
                               f"{r.loaded}, rejected {r.rejected_total}, merged {r.merged_duplicates}")
    return list(reports.values())
