"""``enclave ingest``: resolve the site mapping, stage with the dialect's adapter, load in one transaction."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from enclave.core.crypto import file_sha256
from enclave.core.errors import BadInputError
from enclave.core.keystore import load_or_create_key
from enclave.core.settings import Settings
from enclave.io.ingest import diagnose
from enclave.io.ingest.adapters import get_adapter
from enclave.io.ingest.loader import load_batch
from enclave.io.ingest.mapping import SiteMapping, resolve_mapping
from enclave.io.ingest.reports import FileReport
from enclave.io.store import open_store


@dataclass(frozen=True, slots=True)
class IngestRun:
    """One run: a report per source file, and a warning per file (or folder) that gave nothing."""

    reports: list[FileReport]
    warnings: list[str]


def ingest_path(settings: Settings, path: Path, site: str, **options) -> list[FileReport]:
    """Ingest one extract (a file or a folder) of one site. Returns one report per source file."""
    return ingest(settings, path, site, **options).reports


def ingest(
    settings: Settings,
    path: Path,
    site: str,
    *,
    mapping_file: Path | None = None,
    dialect: str | None = None,
    progress: bool | None = None,
    redo: bool = False,
) -> IngestRun:
    """Ingest one extract (a file or a folder) of one site, in one transaction. ``redo``: forget
    what earlier runs loaded from these files first (:mod:`enclave.io.ingest.files`)."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"no such file or folder: {path}")
    mapping: SiteMapping = resolve_mapping(path, site, mapping_file=mapping_file, dialect=dialect)
    show = settings.ingest.progress if progress is None else progress
    show = show and sys.stderr.isatty()
    stage = get_adapter(mapping.dialect, background=True)
    steps = _Steps(show, total=3, desc=f"ingest {site}")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    with ThreadPoolExecutor(max_workers=1) as pool:  # hashing overlaps staging (hashlib frees the GIL)
        hashes = pool.submit(lambda: {str(f): file_sha256(f) for f in files})
        batch = stage(path, mapping)  # a background adapter reads on while the loader starts
        steps.advance("reading")
        known = hashes.result()
    file_sha = {f: known.get(f) or file_sha256(Path(f)) for f in batch.read_counts if Path(f).is_file()}
    steps.advance("hashed")
    with open_store(settings) as con:
        key = load_or_create_key(settings.keys_dir)
        reports = load_batch(con, key, mapping, batch, file_sha, redo=redo,
                             max_reject_share=settings.ingest.max_reject_share)
    steps.advance("loaded")
    steps.close()
    return IngestRun(reports, diagnose.warnings(reports, path, mapping))


class _Steps:
    """A small progress bar over the phases of one ingest (stderr, terminals only)."""

    def __init__(self, show: bool, total: int, desc: str):
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False)

    def advance(self, label: str) -> None:
        if self.bar:
            self.bar.set_postfix_str(label)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
