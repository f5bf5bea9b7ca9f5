"""Adapter for an OMOP CDM (5.3/5.4) CSV export: one ``TABLE_NAME.csv`` per table, in a folder.

File names are matched case-insensitively by table name, column names case-insensitively. Tables
that map to staging kinds:

PERSON → person, VISIT_OCCURRENCE → visit, CONDITION_OCCURRENCE → condition, DRUG_EXPOSURE → drug,
MEASUREMENT → measurement, OBSERVATION → observation, PROCEDURE_OCCURRENCE → procedure,
DEATH → death, NOTE → note, CARE_SITE → care_site, PROVIDER → provider, CONCEPT → concept.

Every other file (derived tables such as eras and OBSERVATION_PERIOD, which the loader rebuilds;
vocabulary tables other than CONCEPT; tables the enclave does not store) has each record staged as
``unparsed`` with ``_reject = unsupported_record`` and ``_reject_column`` = the table name.

Codes: the verbatim ``*_source_value`` is the code; its system is the vocabulary of the row's
``*_source_concept_id`` when the export's CONCEPT.csv lists it (any vocabulary: ICD10CM, NDC,
SNOMED ...), else the table's default (condition/procedure/death SNOMED, drug RxNorm, measurement
LOINC, observation LOINC when the code looks like one, else SNOMED). ``*_concept_id`` and
``*_source_concept_id`` are kept as ``concept_id`` and ``source_concept_id`` (0 means none). Dates
may be ISO (``2019-01-05``), ``YYYYMMDD`` or ISO datetimes.

An export tool that writes an empty table as its header plus one data row holding the column
names (DuckDB's ``COPY`` does) yields one rejected row for that table, counted like any other.

Unit of counting: one data record (line) of a file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import polars as pl

from enclave.core.model.omop import table_columns
from enclave.io.ingest.adapters._delimited import (
    DelimitedTable,
    extract_files,
    read_delimited,
    reject_frame,
)
from enclave.io.ingest.mapping import SiteMapping
from enclave.io.ingest.normalize import (
    D8,
    ISO_DATE,
    clean_text,
    flag_failures,
    parse_date,
    parse_datetime,
    parse_number,
    parse_sex,
)
from enclave.io.ingest.staging import CodeSystem, RejectReason, StagedBatch

DATE_FORMATS = (ISO_DATE, D8, "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")
DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d")

#: visit_concept_id → visit type (262 = emergency room and inpatient visit); others → outpatient.
VISIT_CONCEPTS: dict[str, str] = {
    "9201": "inpatient",
    "262": "inpatient",
    "9203": "emergency",
    "9202": "outpatient",
}

#: gender_concept_id → sex (8551 = unknown, 0 = no matching concept).
GENDER_CONCEPTS: dict[str, str] = {"8507": "M", "8532": "F", "8551": "U", "0": "U"}

#: vocabulary_ids that name no code system (the row's own default applies instead)
NO_CODE_SYSTEM = ("None", "Metadata", "Type Concept", "Domain", "Vocabulary", "Concept Class",
                  "Relationship", "Visit", "Gender", "Race", "Ethnicity")

_LOINC_SHAPE = r"^\d{1,7}-\d$"
_FAR_FUTURE = dt.date(9999, 12, 31)  # concept validity ends (2099-12-31) are legitimate

_DATE = RejectReason.INVALID_DATE
_NUMBER = RejectReason.INVALID_NUMBER


def stage(path: Path, mapping: SiteMapping) -> StagedBatch:
    tables = {f: read_delimited(f, encoding=mapping.encoding) for f in extract_files(Path(path))}
    vocab = _source_vocabulary(
        next((t for f, t in tables.items() if _table_name(f) == "CONCEPT"), None)
    )
    batch = StagedBatch(site=mapping.site_id)
    for file, table in tables.items():
        label = str(file)
        name = _table_name(file)
        batch.read_counts[label] = table.record_count
        handler = _HANDLERS.get(name)
        if handler is None:
            batch.add("unparsed", reject_frame(table, label, RejectReason.UNSUPPORTED_RECORD,
                                               column=name, which="all"))
            continue
        batch.add("unparsed", reject_frame(table, label, RejectReason.MALFORMED_ROW))
        table, headers = _without_header_rows(table, name)
        if headers.height:
            batch.add("unparsed", headers.with_columns(
                pl.lit(label).alias("_file"), pl.lit(str(RejectReason.REPEATED_HEADER)).alias("_reject"),
                pl.lit(None, pl.Utf8).alias("_reject_column")))
        kind, frame = handler(table, vocab)
        batch.add(kind, frame.with_columns(pl.lit(label).alias("_file")))
    return batch


def _without_header_rows(table: DelimitedTable, name: str) -> tuple[DelimitedTable, pl.DataFrame]:
    """``table`` without the data rows that hold the CDM table's column names, and their
    ``_row`` numbers (an exporter's way of writing an empty table)."""
    names = {c.name.casefold() for c in table_columns(name.lower())}
    values = [c for c, t in table.rows.schema.items() if t == pl.Utf8 and not c.startswith("_")]
    if not names or not values:
        return table, table.rows.select("_row").clear()
    is_header = pl.all_horizontal(
        pl.col(c).str.strip_chars().str.to_lowercase().is_in(list(names)).fill_null(False) for c in values)
    headers = table.rows.filter(is_header)
    if headers.height == 0:
        return table, headers.select("_row")
    return replace(table, rows=table.rows.filter(~is_header)), headers.select("_row")


def _table_name(file: Path) -> str:
    return file.name.rsplit(".", 1)[0].upper() if "." in file.name else file.name.upper()


def _source_vocabulary(concepts: DelimitedTable | None) -> pl.DataFrame:
    """concept_id (Utf8) → code system, for the vocabularies we stage codes of."""
    if concepts is None or concepts.find("concept_id") is None:
        return pl.DataFrame(schema={"_cid": pl.Utf8, "_vocab_system": pl.Utf8})
    return (
        concepts.rows.select(
            clean_text(concepts.col("concept_id")).alias("_cid"),
            pl.when(~clean_text(concepts.col("vocabulary_id")).is_in(NO_CODE_SYSTEM))
            .then(clean_text(concepts.col("vocabulary_id"))).alias("_vocab_system"),
        )
        .drop_nulls()
        .unique("_cid", keep="first")
    )


# --- shared pieces --------------------------------------------------------------------------------


def _int(col: pl.Expr) -> pl.Expr:
    return parse_number(col).pipe(
        lambda x: pl.when(x == x.round(0)).then(x).otherwise(None).cast(pl.Int64, strict=False)
    )


def _finish(frame: pl.DataFrame, checks: list[tuple[str, str, RejectReason]]) -> pl.DataFrame:
    flagged = flag_failures(frame, checks)
    return flagged.drop([c for c in flagged.columns if c.startswith("raw_")])


def _coded(
    t: DelimitedTable, vocab: pl.DataFrame, prefix: str, default: pl.Expr, **cols: pl.Expr
) -> pl.DataFrame:
    """Rows with code (``<prefix>_source_value``), code_system, concept_id and ``cols``."""
    frame = t.rows.select(
        pl.col("_row"),
        clean_text(t.col("person_id")).alias("site_patient_id"),
        clean_text(t.col(f"{prefix}_source_value")).alias("code"),
        clean_text(t.col(f"{prefix}_source_concept_id")).alias("_cid"),
        t.col(f"{prefix}_concept_id").alias("raw_concept"),
        **cols,
    )
    return (
        frame.join(vocab, on="_cid", how="left", maintain_order="left")
        .with_columns(
            pl.coalesce(pl.col("_vocab_system"), default).alias("code_system"),
            _int(pl.col("raw_concept")).alias("concept_id"),
            _int(pl.col("_cid")).alias("source_concept_id"),
        )
        .drop("_cid", "_vocab_system")
    )


def _visit_id(t: DelimitedTable) -> pl.Expr:
    return clean_text(t.col("visit_occurrence_id"))


# --- per table ------------------------------------------------------------------------------------


def _person(t: DelimitedTable, vocab: pl.DataFrame):
    ymd = pl.concat_str([
        clean_text(t.col("year_of_birth")),
        clean_text(t.col("month_of_birth")).str.zfill(2),
        clean_text(t.col("day_of_birth")).str.zfill(2),
    ], separator="-")
    frame = t.rows.select(
        pl.col("_row"),
        clean_text(t.col("person_id")).alias("site_patient_id"),
        clean_text(t.col("ethnicity_source_value")).alias("ethnicity"),
        t.col("gender_source_value").alias("raw_gender_source"),
        t.col("gender_concept_id").alias("raw_gender_concept"),
        t.col("birth_datetime").alias("raw_birth_datetime"),
        ymd.alias("raw_birth_ymd"),
    ).with_columns(
        pl.coalesce(
            parse_sex(pl.col("raw_gender_source")),
            clean_text(pl.col("raw_gender_concept")).replace_strict(
                GENDER_CONCEPTS, default=None, return_dtype=pl.Utf8
            ),
        ).alias("sex"),
        pl.coalesce(
            parse_date(pl.col("raw_birth_datetime"), DATE_FORMATS),
            parse_date(pl.col("raw_birth_ymd"), [ISO_DATE]),
        ).alias("birth_date"),
    )
    checks = [
        ("raw_gender_source", "sex", RejectReason.INVALID_SEX),
        ("raw_gender_concept", "sex", RejectReason.INVALID_SEX),
        ("raw_birth_datetime", "birth_date", _DATE),
        ("raw_birth_ymd", "birth_date", _DATE),
    ]
    return "person", _rename_reject_columns(_finish(frame, checks), {
        "raw_gender_source": t.find("gender_source_value"),
        "raw_gender_concept": t.find("gender_concept_id"),
        "raw_birth_datetime": t.find("birth_datetime"),
        "raw_birth_ymd": t.find("year_of_birth"),
    })


def _rename_reject_columns(frame: pl.DataFrame, names: dict[str, str | None]) -> pl.DataFrame:
    """Report the source column name (not our working name) in ``_reject_column``."""
    mapping = {k: v for k, v in names.items() if v}
    if not mapping:
        return frame
    return frame.with_columns(
        pl.col("_reject_column").replace(list(mapping), list(mapping.values()))
    )


def _with_dates(frame: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    return frame.with_columns(
        [parse_date(pl.col(f"raw_{n}"), DATE_FORMATS).alias(n) for n in names]
    )


def _reject_names(t: DelimitedTable, pairs: dict[str, str]) -> dict[str, str | None]:
    return {f"raw_{k}": t.find(v) for k, v in pairs.items()}


def _dated(
    kind: str,
    t: DelimitedTable,
    frame: pl.DataFrame,
    dates: dict[str, str],
    numbers: dict[str, str] | None = None,
) -> tuple[str, pl.DataFrame]:
    """Parse ``dates``/``numbers`` (contract column → source column; ``raw_<contract>`` columns are
    in ``frame``) and flag failures under the source column's name."""
    frame = _with_dates(frame, list(dates))
    checks = [(f"raw_{n}", n, _DATE) for n in dates]
    names = _reject_names(t, dates)
    for target, source in (numbers or {}).items():
        frame = frame.with_columns(parse_number(pl.col(f"raw_{target}")).alias(target))
        checks.append((f"raw_{target}", target, _NUMBER))
        names[f"raw_{target}"] = t.find(source)
    if "raw_concept" in frame.columns:  # added by _coded
        checks.append(("raw_concept", "concept_id", _NUMBER))
        names["raw_concept"] = t.find(f"{kind_prefix(kind)}_concept_id")
    if "raw_days_supply" in frame.columns:
        checks.append(("raw_days_supply", "days_supply", _NUMBER))
        names["raw_days_supply"] = t.find("days_supply")
    return kind, _rename_reject_columns(_finish(frame, checks), names)


def kind_prefix(kind: str) -> str:
    """The OMOP column prefix of a coded kind (``drug`` → ``drug``, ``measurement`` → ...)."""
    return {"condition": "condition", "drug": "drug", "procedure": "procedure"}.get(kind, kind)


def _visit(t: DelimitedTable, vocab: pl.DataFrame):
    concept = clean_text(t.col("visit_concept_id"))
    frame = t.rows.select(
        pl.col("_row"),
        _visit_id(t).alias("site_visit_id"),
        clean_text(t.col("person_id")).alias("site_patient_id"),
        pl.when(concept.is_not_null()).then(
            concept.replace_strict(VISIT_CONCEPTS, default="outpatient", return_dtype=pl.Utf8)
        ).alias("visit_type"),
        clean_text(t.col("provider_id")).alias("provider_id"),
        clean_text(t.col("care_site_id")).alias("care_site_id"),
        t.col("visit_start_date").alias("raw_start_date"),
        t.col("visit_end_date").alias("raw_end_date"),
        parse_datetime(t.col("visit_start_datetime"), DATETIME_FORMATS).alias("start_datetime"),
        parse_datetime(t.col("visit_end_datetime"), DATETIME_FORMATS).alias("end_datetime"),
    )
    return _dated("visit", t, frame, {"start_date": "visit_start_date",
                                      "end_date": "visit_end_date"})


def _condition(t: DelimitedTable, vocab: pl.DataFrame):
    frame = _coded(t, vocab, "condition", pl.lit(CodeSystem.SNOMED.value),
                   site_visit_id=_visit_id(t),
                   raw_start_date=t.col("condition_start_date"),
                   raw_end_date=t.col("condition_end_date"))
    return _dated("condition", t, frame, {"start_date": "condition_start_date",
                                          "end_date": "condition_end_date"})


def _drug(t: DelimitedTable, vocab: pl.DataFrame):
    frame = _coded(t, vocab, "drug", pl.lit(CodeSystem.RXNORM.value),
                   site_visit_id=_visit_id(t),
                   route=clean_text(t.col("route_source_value")),
                   dose_unit=clean_text(t.col("dose_unit_source_value")),
                   raw_start_date=t.col("drug_exposure_start_date"),
                   raw_end_date=t.col("drug_exposure_end_date"),
                   raw_quantity=t.col("quantity"),
                   raw_days=t.col("days_supply"))
    frame = frame.with_columns(_int(pl.col("raw_days")).alias("days_supply"))
    return _dated("drug", t, frame.rename({"raw_days": "raw_days_supply"}),
                  {"start_date": "drug_exposure_start_date", "end_date": "drug_exposure_end_date"},
                  {"quantity": "quantity"})


def _measurement(t: DelimitedTable, vocab: pl.DataFrame):
    frame = _coded(t, vocab, "measurement", pl.lit(CodeSystem.LOINC.value),
                   site_visit_id=_visit_id(t),
                   unit=clean_text(t.col("unit_source_value")),
                   datetime=parse_datetime(t.col("measurement_datetime"), DATETIME_FORMATS),
                   raw_date=t.col("measurement_date"),
                   raw_value=t.col("value_as_number"),
                   raw_range_low=t.col("range_low"),
                   raw_range_high=t.col("range_high"),
                   _value_source=clean_text(t.col("value_source_value")))
    kind, out = _dated("measurement", t, frame, {"date": "measurement_date"},
                       {"value": "value_as_number", "range_low": "range_low",
                        "range_high": "range_high"})
    # a value given only as text (value_as_number empty) is kept as value_text
    out = out.with_columns(
        pl.when(pl.col("value").is_null()).then(pl.col("_value_source")).alias("value_text")
    ).drop("_value_source")
    return kind, out


def _observation(t: DelimitedTable, vocab: pl.DataFrame):
    code = clean_text(t.col("observation_source_value"))
    default = pl.when(code.str.contains(_LOINC_SHAPE)).then(pl.lit(CodeSystem.LOINC.value)) \
        .otherwise(pl.lit(CodeSystem.SNOMED.value))
    frame = _coded(t, vocab, "observation", pl.lit(None, pl.Utf8),
                   _default_system=default,
                   site_visit_id=_visit_id(t),
                   unit=clean_text(t.col("unit_source_value")),
                   value_text=clean_text(t.col("value_as_string")),
                   raw_date=t.col("observation_date"),
                   raw_value=t.col("value_as_number"))
    frame = frame.with_columns(
        pl.coalesce(pl.col("code_system"), pl.col("_default_system")).alias("code_system")
    ).drop("_default_system")
    return _dated("observation", t, frame, {"date": "observation_date"},
                  {"value": "value_as_number"})


def _procedure(t: DelimitedTable, vocab: pl.DataFrame):
    frame = _coded(t, vocab, "procedure", pl.lit(CodeSystem.SNOMED.value),
                   site_visit_id=_visit_id(t), raw_date=t.col("procedure_date"))
    return _dated("procedure", t, frame, {"date": "procedure_date"})


def _death(t: DelimitedTable, vocab: pl.DataFrame):
    frame = t.rows.select(
        pl.col("_row"),
        clean_text(t.col("person_id")).alias("site_patient_id"),
        clean_text(t.col("cause_source_value")).alias("cause_code"),
        clean_text(t.col("cause_source_concept_id")).alias("_cid"),
        t.col("death_date").alias("raw_date"),
    ).join(vocab, on="_cid", how="left", maintain_order="left").with_columns(
        pl.when(pl.col("cause_code").is_not_null())
        .then(pl.coalesce(pl.col("_vocab_system"), pl.lit(CodeSystem.SNOMED.value)))
        .alias("cause_code_system")
    ).drop("_cid", "_vocab_system")
    return _dated("death", t, frame, {"date": "death_date"})


def _note(t: DelimitedTable, vocab: pl.DataFrame):
    frame = t.rows.select(
        pl.col("_row"),
        clean_text(t.col("person_id")).alias("site_patient_id"),
        _visit_id(t).alias("site_visit_id"),
        clean_text(t.col("note_title")).alias("title"),
        t.col("note_text").alias("text"),
        t.col("note_date").alias("raw_date"),
    )
    return _dated("note", t, frame, {"date": "note_date"})


def _care_site(t: DelimitedTable, vocab: pl.DataFrame):
    return "care_site", t.rows.select(
        pl.col("_row"),
        clean_text(t.col("care_site_id")).alias("care_site_id"),
        clean_text(t.col("care_site_name")).alias("name"),
    )


def _provider(t: DelimitedTable, vocab: pl.DataFrame):
    return "provider", t.rows.select(
        pl.col("_row"),
        clean_text(t.col("provider_id")).alias("provider_id"),
        clean_text(t.col("provider_name")).alias("name"),
        clean_text(t.col("specialty_source_value")).alias("specialty"),
        clean_text(t.col("care_site_id")).alias("care_site_id"),
    )


def _concept(t: DelimitedTable, vocab: pl.DataFrame):
    text_cols = ("concept_name", "domain_id", "vocabulary_id", "concept_class_id",
                 "standard_concept", "concept_code", "invalid_reason")
    frame = t.rows.select(
        pl.col("_row"),
        t.col("concept_id").alias("raw_concept_id"),
        *[clean_text(t.col(c)).alias(c) for c in text_cols],
        t.col("valid_start_date").alias("raw_valid_start_date"),
        t.col("valid_end_date").alias("raw_valid_end_date"),
    ).with_columns(
        _int(pl.col("raw_concept_id")).alias("concept_id"),
        parse_date(pl.col("raw_valid_start_date"), DATE_FORMATS, latest=_FAR_FUTURE)
        .alias("valid_start_date"),
        parse_date(pl.col("raw_valid_end_date"), DATE_FORMATS, latest=_FAR_FUTURE)
        .alias("valid_end_date"),
    )
    checks = [("raw_concept_id", "concept_id", _NUMBER),
              ("raw_valid_start_date", "valid_start_date", _DATE),
              ("raw_valid_end_date", "valid_end_date", _DATE)]
    names = {f"raw_{c}": t.find(c) for c in ("concept_id", "valid_start_date", "valid_end_date")}
    return "concept", _rename_reject_columns(_finish(frame, checks), names)


_HANDLERS = {
    "PERSON": _person,
    "VISIT_OCCURRENCE": _visit,
    "CONDITION_OCCURRENCE": _condition,
    "DRUG_EXPOSURE": _drug,
    "MEASUREMENT": _measurement,
    "OBSERVATION": _observation,
    "PROCEDURE_OCCURRENCE": _procedure,
    "DEATH": _death,
    "NOTE": _note,
    "CARE_SITE": _care_site,
    "PROVIDER": _provider,
    "CONCEPT": _concept,
}
