"""Adapter for a Synthea CSV export folder (patients.csv, encounters.csv, ... one file per table).

``stage(path, mapping)`` reads every file of the folder (``site.toml`` and hidden files excepted; a
single file may be given instead of a folder). Known files map to staging kinds:

=================  =============  =========================================================
file               kind           notes
=================  =============  =========================================================
patients.csv       person         Id; FIRST+LAST → name; ADDRESS, CITY, STATE → address;
                                  SSN/DRIVERS/PASSPORT are US identifiers with no contract
                                  column and are *not* staged
encounters.csv     visit          ENCOUNTERCLASS → visit_type; cost = TOTAL_CLAIM_COST,
                                  paid_by_patient = TOTAL_CLAIM_COST − PAYER_COVERAGE
conditions.csv     condition      SNOMED unless SYSTEM says otherwise
medications.csv    drug           RxNorm; DISPENSES → quantity, TOTALCOST → cost
immunizations.csv  drug           CVX
observations.csv   measurement    TYPE = numeric; other types → observation (value_text);
                                  LOINC-shaped codes LOINC, other codes LOCAL
procedures.csv     procedure      SNOMED unless SYSTEM says otherwise
allergies.csv      observation    SNOMED unless SYSTEM says otherwise; value_text = DESCRIPTION
organizations.csv  care_site
providers.csv      provider
anything else      unparsed       every record rejected as ``unsupported_record``
=================  =============  =========================================================

Code systems: the system in the table above is only the file's default. Any clinical file with a
``SYSTEM`` column (Synthea 3 writes one in conditions.csv, procedures.csv and allergies.csv) is read
row by row: ``SNOMED-CT`` → SNOMED, ``ICD-10``/``ICD-10-CM`` → ICD10CM (Synthea is a US generator),
``RxNorm``, ``LOINC``, ``CVX``, FHIR system URIs and OMOP spellings as in
:data:`enclave.io.ingest.adapters.code_systems.SYNTHEA_NAMES`; a name it does not know (allergies.csv
writes ``Unknown``) → LOCAL; an empty ``SYSTEM`` → the default.

Unit of counting: one data record (line) of a file. Column names are matched case-insensitively;
a missing optional column stages as null, a missing required one is left to the loader.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from enclave.io.ingest.adapters._delimited import (
    DelimitedTable,
    extract_files,
    read_delimited,
    reject_frame,
)
from enclave.io.ingest.adapters.code_systems import SYNTHEA_NAMES
from enclave.io.ingest.concepts import CODE_PATTERNS
from enclave.io.ingest.mapping import SiteMapping
from enclave.io.ingest.normalize import (
    ISO_DATE,
    clean_text,
    flag_failures,
    parse_date,
    parse_datetime,
    parse_number,
    parse_sex,
)
from enclave.io.ingest.staging import CodeSystem, RejectReason, StagedBatch

#: Synthea timestamps: ``2023-01-27T16:17:47Z`` (UTC); some tables carry plain ISO dates.
SYNTHEA_DATETIME = "%Y-%m-%dT%H:%M:%SZ"
DATE_FORMATS = (ISO_DATE, SYNTHEA_DATETIME)

#: ENCOUNTERCLASS → visit type. snf (nursing facility) and hospice are residential stays;
#: any class not listed (home, virtual ...) is an outpatient contact.
ENCOUNTER_CLASSES: dict[str, str] = {
    "ambulatory": "outpatient",
    "wellness": "outpatient",
    "outpatient": "outpatient",
    "urgentcare": "outpatient",
    "home": "outpatient",
    "virtual": "outpatient",
    "inpatient": "inpatient",
    "snf": "inpatient",
    "hospice": "inpatient",
    "emergency": "emergency",
}

#: working raw column → source column it holds (for ``_reject_column``); files whose columns
#: differ pass their own names to :func:`_finish`.
_RAW_SOURCE = {
    "raw_birth": "BIRTHDATE", "raw_death": "DEATHDATE", "raw_sex": "GENDER",
    "raw_total": "TOTAL_CLAIM_COST", "raw_cover": "PAYER_COVERAGE", "raw_qty": "DISPENSES",
    "raw_value": "VALUE", "raw_start": "START", "raw_stop": "STOP",
}

_DATE = RejectReason.INVALID_DATE
_NUMBER = RejectReason.INVALID_NUMBER


def stage(path: Path, mapping: SiteMapping) -> StagedBatch:
    batch = StagedBatch(site=mapping.site_id)
    for file in extract_files(Path(path)):
        table = read_delimited(file, encoding=mapping.encoding)
        label = str(file)
        batch.read_counts[label] = table.record_count
        handler = _HANDLERS.get(file.name.lower())
        if handler is None:
            batch.add(
                "unparsed",
                reject_frame(table, label, RejectReason.UNSUPPORTED_RECORD, column=file.stem,
                             which="all"),
            )
            continue
        batch.add("unparsed", reject_frame(table, label, RejectReason.MALFORMED_ROW))
        for kind, frame in handler(table):
            batch.add(kind, frame.with_columns(pl.lit(label).alias("_file")))
    return batch


# --- per file -------------------------------------------------------------------------------------


def _base(t: DelimitedTable, **cols: pl.Expr) -> pl.DataFrame:
    """Select raw columns under their contract or ``raw_*`` names, plus ``_row``."""
    return t.rows.select(pl.col("_row"), **{k: v for k, v in cols.items()})


def _finish(
    frame: pl.DataFrame,
    checks: list[tuple[str, str, RejectReason]],
    sources: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Flag parse failures; ``_reject_column`` names the source column, then drop raw columns."""
    flagged = flag_failures(frame, checks)
    names = frame.select([c for c in frame.columns if c.startswith("raw_")]).columns
    known = {**_RAW_SOURCE, **(sources or {})}
    source = [known.get(c, c.removeprefix("raw_")) for c in names]
    return flagged.with_columns(
        pl.col("_reject_column").replace(names, source)
    ).drop(names)


def _patients(t: DelimitedTable):
    names = pl.concat_str([clean_text(t.col("FIRST")), clean_text(t.col("LAST"))],
                          separator=" ", ignore_nulls=True)
    address = pl.concat_str(
        [clean_text(t.col(c)) for c in ("ADDRESS", "CITY", "STATE")], separator=", ",
        ignore_nulls=True,
    )
    frame = _base(
        t,
        site_patient_id=clean_text(t.col("Id")),
        raw_name=names,
        raw_address=address,
        ethnicity=clean_text(t.col("ETHNICITY")),
        raw_birth=t.col("BIRTHDATE"),
        raw_death=t.col("DEATHDATE"),
        raw_sex=t.col("GENDER"),
    ).with_columns(
        pl.when(pl.col("raw_name") != "").then(pl.col("raw_name")).alias("name"),
        pl.when(pl.col("raw_address") != "").then(pl.col("raw_address")).alias("address"),
        parse_date(pl.col("raw_birth"), DATE_FORMATS).alias("birth_date"),
        parse_date(pl.col("raw_death"), DATE_FORMATS).alias("death_date"),
        parse_sex(pl.col("raw_sex"), {"M": "M", "F": "F"}).alias("sex"),
    )
    yield "person", _finish(frame, [
        ("raw_birth", "birth_date", _DATE), ("raw_death", "death_date", _DATE),
        ("raw_sex", "sex", RejectReason.INVALID_SEX),
    ])


def _encounters(t: DelimitedTable):
    cls = clean_text(t.col("ENCOUNTERCLASS")).str.to_lowercase()
    frame = _base(
        t,
        site_visit_id=clean_text(t.col("Id")),
        site_patient_id=clean_text(t.col("PATIENT")),
        visit_type=pl.when(cls.is_not_null()).then(
            cls.replace_strict(ENCOUNTER_CLASSES, default="outpatient", return_dtype=pl.Utf8)
        ),
        care_site_id=clean_text(t.col("ORGANIZATION")),
        provider_id=clean_text(t.col("PROVIDER")),
        raw_start=t.col("START"),
        raw_stop=t.col("STOP"),
        raw_total=t.col("TOTAL_CLAIM_COST"),
        raw_cover=t.col("PAYER_COVERAGE"),
    ).with_columns(
        parse_date(pl.col("raw_start"), DATE_FORMATS).alias("start_date"),
        parse_datetime(pl.col("raw_start"), [SYNTHEA_DATETIME]).alias("start_datetime"),
        parse_date(pl.col("raw_stop"), DATE_FORMATS).alias("end_date"),
        parse_datetime(pl.col("raw_stop"), [SYNTHEA_DATETIME]).alias("end_datetime"),
        parse_number(pl.col("raw_total")).alias("total_cost"),
        parse_number(pl.col("raw_cover")).alias("_cover"),
    ).with_columns((pl.col("total_cost") - pl.col("_cover")).alias("paid_by_patient"))
    yield "visit", _finish(frame, [
        ("raw_start", "start_date", _DATE), ("raw_stop", "end_date", _DATE),
        ("raw_total", "total_cost", _NUMBER), ("raw_cover", "_cover", _NUMBER),
    ]).drop("_cover")


def _system(t: DelimitedTable, default: str | pl.Expr) -> pl.Expr:
    """The row's ``SYSTEM`` as a vocabulary id (unknown names → LOCAL); ``default`` where empty/absent."""
    declared = clean_text(t.col("SYSTEM"))
    named = declared.str.to_uppercase().replace_strict(
        SYNTHEA_NAMES, default=CodeSystem.LOCAL.value, return_dtype=pl.Utf8
    )
    fallback = default if isinstance(default, pl.Expr) else pl.lit(default)
    return pl.when(declared.is_null()).then(fallback).otherwise(named)


def _event(
    t: DelimitedTable, system: str | pl.Expr, start: str, stop: str | None = None,
    **extra: pl.Expr,
):
    """Common columns of condition/drug/procedure-like files (plus ``extra`` raw columns).

    ``system`` is the file's default code system; a ``SYSTEM`` column overrides it row by row.
    """
    cols = dict(
        **extra,
        site_patient_id=clean_text(t.col("PATIENT")),
        site_visit_id=clean_text(t.col("ENCOUNTER")),
        code_system=_system(t, system),
        code=clean_text(t.col("CODE")),
        description=clean_text(t.col("DESCRIPTION")),
        raw_start=t.col(start),
    )
    if stop is not None:
        cols["raw_stop"] = t.col(stop)
    return _base(t, **cols).with_columns(
        parse_date(pl.col("raw_start"), DATE_FORMATS).alias("_start")
    )


def _conditions(t: DelimitedTable):
    frame = _event(t, CodeSystem.SNOMED.value, "START", "STOP").with_columns(
        pl.col("_start").alias("start_date"),
        parse_date(pl.col("raw_stop"), DATE_FORMATS).alias("end_date"),
    ).drop("_start")
    yield "condition", _finish(frame, [("raw_start", "start_date", _DATE),
                                       ("raw_stop", "end_date", _DATE)])


def _medications(t: DelimitedTable):
    frame = _event(
        t, CodeSystem.RXNORM.value, "START", "STOP",
        raw_qty=t.col("DISPENSES"), raw_cost=t.col("TOTALCOST"),
    ).with_columns(
        pl.col("_start").alias("start_date"),
        parse_date(pl.col("raw_stop"), DATE_FORMATS).alias("end_date"),
    ).drop("_start").with_columns(
        parse_number(pl.col("raw_qty")).alias("quantity"),
        parse_number(pl.col("raw_cost")).alias("cost"),
    )
    yield "drug", _finish(frame, [
        ("raw_start", "start_date", _DATE), ("raw_stop", "end_date", _DATE),
        ("raw_qty", "quantity", _NUMBER), ("raw_cost", "cost", _NUMBER),
    ], {"raw_cost": "TOTALCOST"})


def _immunizations(t: DelimitedTable):
    frame = _event(t, CodeSystem.CVX.value, "DATE", raw_cost=t.col("BASE_COST")).with_columns(
        pl.col("_start").alias("start_date"),
    ).drop("_start").with_columns(parse_number(pl.col("raw_cost")).alias("cost"))
    yield "drug", _finish(frame, [("raw_start", "start_date", _DATE),
                                  ("raw_cost", "cost", _NUMBER)],
                          {"raw_start": "DATE", "raw_cost": "BASE_COST"})


def _procedures(t: DelimitedTable):
    frame = _event(t, CodeSystem.SNOMED.value, "START", raw_cost=t.col("BASE_COST")).with_columns(
        pl.col("_start").alias("date"),
    ).drop("_start").with_columns(parse_number(pl.col("raw_cost")).alias("cost"))
    yield "procedure", _finish(frame, [("raw_start", "date", _DATE),
                                       ("raw_cost", "cost", _NUMBER)], {"raw_cost": "BASE_COST"})


#: Synthea writes its own survey scores (QALY, DALY, QOLS ...) under the LOINC system; codes that
#: are not LOINC-shaped are staged as LOCAL codes so they load with a local concept, not a reject.
_LOINC_SHAPE = CODE_PATTERNS[CodeSystem.LOINC]


def _observations(t: DelimitedTable):
    code = clean_text(t.col("CODE"))
    system = pl.when(code.str.contains(_LOINC_SHAPE)).then(pl.lit(CodeSystem.LOINC.value)).otherwise(
        pl.lit(CodeSystem.LOCAL.value)
    )
    frame = _event(
        t, system, "DATE",
        raw_value=t.col("VALUE"), unit=clean_text(t.col("UNITS")),
        _type=clean_text(t.col("TYPE")).str.to_lowercase(),
    ).with_columns(pl.col("_start").alias("date")).drop("_start")
    numeric = frame.filter(pl.col("_type").fill_null("") == "numeric").with_columns(
        parse_number(pl.col("raw_value")).alias("value")
    )
    yield "measurement", _finish(numeric, [("raw_start", "date", _DATE),
                                           ("raw_value", "value", _NUMBER)],
                                 {"raw_start": "DATE"}).drop("_type")
    other = frame.filter(pl.col("_type").fill_null("") != "numeric").with_columns(
        clean_text(pl.col("raw_value")).alias("value_text")
    )
    yield "observation", _finish(other, [("raw_start", "date", _DATE)],
                                 {"raw_start": "DATE"}).drop("_type")


def _allergies(t: DelimitedTable):
    frame = _event(t, CodeSystem.SNOMED.value, "START").with_columns(
        pl.col("_start").alias("date"), pl.col("description").alias("value_text")
    ).drop("_start")
    yield "observation", _finish(frame, [("raw_start", "date", _DATE)])


def _organizations(t: DelimitedTable):
    yield "care_site", _base(t, care_site_id=clean_text(t.col("Id")), name=clean_text(t.col("NAME")))


def _providers(t: DelimitedTable):
    yield "provider", _base(
        t,
        provider_id=clean_text(t.col("Id")),
        name=clean_text(t.col("NAME")),
        specialty=clean_text(t.col("SPECIALITY")),
        care_site_id=clean_text(t.col("ORGANIZATION")),
    )


_HANDLERS = {
    "patients.csv": _patients,
    "encounters.csv": _encounters,
    "conditions.csv": _conditions,
    "medications.csv": _medications,
    "immunizations.csv": _immunizations,
    "observations.csv": _observations,
    "procedures.csv": _procedures,
    "allergies.csv": _allergies,
    "organizations.csv": _organizations,
    "providers.csv": _providers,
}
