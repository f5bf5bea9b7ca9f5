"""``enclave up``: the whole enclave on demo data (today: generate and ingest the demo hospitals)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from enclave.core.errors import ConfigurationError
from enclave.core.settings import Settings
from enclave.io.demo.generate import generate
from enclave.io.ingest.pipeline import ingest_path
from enclave.io.store import ensure_restricted_zone, open_store, store_stats


def bring_up(settings: Settings, *, patients: int, hospitals: int, seed: int,
             echo: Callable[[str], None] = print) -> dict:
    ensure_restricted_zone(settings)
    # demo extracts carry identifiers: they live in the restricted zone like any hospital extract
    extracts = settings.restricted_dir / "demo-extracts"
    truth_file = extracts / "truth.json"
    if truth_file.exists():
        truth = json.loads(truth_file.read_text(encoding="utf-8"))
        if (truth.get("patients"), truth.get("hospitals"), truth.get("seed")) != (patients, hospitals, seed):
            raise ConfigurationError(
                f"{extracts} holds demo data of another size or seed (patients "
                f"{truth.get('patients')}, hospitals {truth.get('hospitals')}, seed {truth.get('seed')}); "
                "use another --home, the same options, or remove that folder")
        echo(f"demo extracts already in {extracts}")
    else:
        echo(f"generating {hospitals} demo hospitals with {patients} persons ...")
        truth = generate(extracts, patients=patients, hospitals=hospitals, seed=seed,
                         progress=sys.stderr.isatty())
    files = 0
    for site_dir in sorted(p for p in extracts.iterdir() if p.is_dir()):
        reports = ingest_path(settings, site_dir, site_dir.name)
        files += len(reports)
        if all(r.already_ingested for r in reports):
            echo(f"{site_dir.name}: already ingested")
            continue
        loaded = sum(r.loaded for r in reports)
        rejected = sum(r.rejected_total for r in reports)
        echo(f"ingested {site_dir.name}: {loaded} loaded, {rejected} quarantined")
    with open_store(settings, read_only=True) as con:
        stats = store_stats(con)
    return {
        "home": str(settings.home),
        "persons": stats["persons"],
        "persons_expected": truth.get("persons"),
        "files": files,
        "rejects_by_reason": stats["rejects_by_reason"],
    }
