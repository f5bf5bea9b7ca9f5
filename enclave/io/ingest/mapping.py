"""Site mapping files: one declarative TOML file per hospital describing its dialect.

Common keys (every dialect)::

    [site]
    id = "h1"                    # site id; must match --site
    name = "示例市第一人民医院"
    dialect = "csv"              # an adapter name from enclave.io.ingest.adapters.ADAPTERS
    encoding = "gb18030"         # text encoding of the extract (decoded in Python, handed on as UTF-8)
    linkage = "resident_id"      # "resident_id" (link persons across sites by GB 11643 number)
                                 # or "site_patient_id" (site-local persons, e.g. Synthea/FHIR samples)
    level = "三级甲等"            # hospital level (optional)
    region_code = "110105"       # GB/T 2260 code of the hospital (optional)

Everything else in the file belongs to the dialect's adapter and is handed to it unchanged as
``SiteMapping.options`` (each adapter documents its keys).

Built-in profiles for standard formats live in ``enclave/io/ingest/profiles/<dialect>.toml`` and are used
with ``enclave ingest PATH --site S --dialect synthea|fhir|hl7v2|omop``.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from enclave.core.errors import ConfigurationError

LINKAGE_MODES = ("resident_id", "site_patient_id")
SITE_FILE = "site.toml"
SITE_KEYS = frozenset({"id", "name", "dialect", "encoding", "linkage", "level", "region_code"})


@dataclass(frozen=True, slots=True)
class SiteMapping:
    site_id: str
    dialect: str
    encoding: str = "utf-8"
    linkage: str = "site_patient_id"
    name: str | None = None
    level: str | None = None
    region_code: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    source: str = "<built-in>"  # where the mapping came from (a path or a profile name)
    sha256: str = ""

    def with_site(self, site_id: str) -> SiteMapping:
        from dataclasses import replace

        return replace(self, site_id=site_id)


def parse_mapping(text: str, source: str) -> SiteMapping:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML ({exc})") from None
    site = data.pop("site", None)
    if not isinstance(site, dict):
        raise ConfigurationError(f"{source}: missing the [site] table")
    unknown = set(site) - SITE_KEYS
    if unknown:
        raise ConfigurationError(
            f"{source}: unknown key(s) in [site]: {', '.join(sorted(unknown))} (known: "
            f"{', '.join(sorted(SITE_KEYS))}); dialect options belong in their own tables, "
            "or before the [site] table"
        )
    for key in ("id", "dialect"):
        if not site.get(key):
            raise ConfigurationError(f"{source}: [site] needs '{key}'")
    linkage = site.get("linkage", "site_patient_id")
    if linkage not in LINKAGE_MODES:
        raise ConfigurationError(
            f"{source}: [site] linkage must be one of {', '.join(LINKAGE_MODES)}"
        )
    encoding = site.get("encoding", "utf-8")
    try:
        "".encode(encoding)
    except LookupError:
        raise ConfigurationError(f"{source}: unknown encoding '{encoding}'") from None
    return SiteMapping(
        site_id=str(site["id"]),
        dialect=str(site["dialect"]),
        encoding=encoding,
        linkage=linkage,
        name=site.get("name"),
        level=site.get("level"),
        region_code=site.get("region_code"),
        options=data,
        source=source,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def load_mapping_file(path: Path) -> SiteMapping:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read mapping file {path}: {exc.strerror}") from None
    return parse_mapping(text, str(path))


def builtin_profile(dialect: str) -> SiteMapping:
    """The built-in mapping for a standard format (synthea, fhir, hl7v2, omop)."""
    pkg = resources.files("enclave.io.ingest").joinpath("profiles")
    file = pkg.joinpath(f"{dialect}.toml")
    if not file.is_file():
        known = sorted(p.name.removesuffix(".toml") for p in pkg.iterdir() if p.name.endswith(".toml"))
        raise ConfigurationError(f"no built-in profile '{dialect}' (known: {', '.join(known)})")
    return parse_mapping(file.read_text(encoding="utf-8"), f"profile:{dialect}")


def resolve_mapping(
    path: Path, site: str, *, mapping_file: Path | None = None, dialect: str | None = None
) -> SiteMapping:
    """Find the mapping for an ingest: --mapping, else --dialect profile, else PATH/site.toml."""
    if mapping_file is not None:
        mapping = load_mapping_file(mapping_file)
    elif dialect is not None:
        mapping = builtin_profile(dialect).with_site(site)
    else:
        candidate = (path if path.is_dir() else path.parent) / SITE_FILE
        if not candidate.exists():
            raise ConfigurationError(
                f"no mapping for site '{site}': pass --mapping FILE or --dialect NAME, "
                f"or put a {SITE_FILE} next to the extract"
            )
        mapping = load_mapping_file(candidate)
    if mapping.site_id != site:
        raise ConfigurationError(
            f"mapping {mapping.source} is for site '{mapping.site_id}', not '{site}'"
        )
    return mapping
