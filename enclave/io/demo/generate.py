"""Entry point of the demo data: build a population and write every hospital's extract.

``generate(out_dir, patients, hospitals, seed)`` writes ``out_dir/<site>/`` (the extract files and
its ``site.toml``) for each hospital with the writer of its dialect (``WRITERS``, imported lazily),
then ``out_dir/truth.json`` (counts the end-to-end tests check; planted defects as the writers
report them) and ``out_dir/identifiers.json`` (every generated direct identifier, for scrubber
tests; referenced from truth.json, never printed).
"""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path

from enclave.core.errors import ConfigurationError
from enclave.io.demo.population import build_population
from enclave.io.demo.writers import EXPECTED_REASON, WRITERS, DefectKind
from enclave.io.ingest.mapping import SITE_FILE

TRUTH_FILE = "truth.json"
IDENTIFIERS_FILE = "identifiers.json"
LINKS_FILE = "links.csv"  # ground truth of linkage: site_id, site_patient_id, person


def load_writer(dialect: str):
    try:
        target = WRITERS[dialect]
    except KeyError:
        raise ConfigurationError(f"no demo writer for dialect '{dialect}'") from None
    module, func = target.split(":")
    try:
        return getattr(import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"the demo writer for dialect '{dialect}' ({target}) is not available: {exc}; "
            "use fewer hospitals or install that writer"
        ) from None


def generate(out_dir: Path, patients: int, hospitals: int, seed: int, progress: bool = True) -> dict:
    """Write the demo extracts and truth; returns the truth dict."""
    population = build_population(patients, hospitals, seed)
    writers = {h.dialect: load_writer(h.dialect) for h in population.hospitals}  # fail early
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    defects: dict[str, dict[str, int]] = {}
    rejects: dict[str, dict[str, int]] = {}
    merged: dict[str, int] = {}
    specs = population.hospitals
    if progress:
        from tqdm import tqdm

        specs = tqdm(specs, desc="writing hospitals", unit="hospital")
    for spec in specs:
        site_dir = out_dir / spec.site_id
        result = writers[spec.dialect](site_dir, spec, population.frames[spec.site_id],
                                       population.defects[spec.site_id])
        (site_dir / SITE_FILE).write_text(result.site_toml, encoding="utf-8")
        planted = {k: int(v) for k, v in result.planted.items() if v}
        defects[spec.site_id] = planted
        reasons: dict[str, int] = {}
        for kind, n in planted.items():
            if kind == DefectKind.DUPLICATE_ROW:
                continue
            reason = EXPECTED_REASON[DefectKind(kind)]
            reasons[reason] = reasons.get(reason, 0) + n
        rejects[spec.site_id] = reasons
        merged[spec.site_id] = planted.get(str(DefectKind.DUPLICATE_ROW), 0)
    truth = dict(population.truth)
    truth.update({"defects": defects, "expected_rejects": rejects,
                  "expected_merged_duplicates": merged, "identifiers": IDENTIFIERS_FILE,
                  "sites": {h.site_id: {"dialect": h.dialect, "name": h.name, "level": h.level,
                                        "region_code": h.region_code, "glucose_unit": h.glucose_unit}
                            for h in population.hospitals}})
    population.links.write_csv(out_dir / LINKS_FILE)
    truth["links"] = LINKS_FILE
    (out_dir / IDENTIFIERS_FILE).write_text(
        json.dumps(population.identifiers, ensure_ascii=False), encoding="utf-8")
    (out_dir / TRUTH_FILE).write_text(json.dumps(truth, ensure_ascii=False, indent=1), encoding="utf-8")
    return truth
