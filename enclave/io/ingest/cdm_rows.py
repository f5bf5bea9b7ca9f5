"""OMOP CDM rows of checked, mapped events, as ibis expressions (DuckDB or Spark).

The last of the ingest's transforms (:mod:`enclave.io.ingest.transforms`): the rows still pending
after the checks, each with its id ``_id`` (the loader numbers them in batch order from the
table's next id: the store's sequences are its own), projected onto the CDM table of their kind,
with their cost rows and lineage (CDM row → source file and row). The loader inserts
each expression's rows with one ``INSERT … SELECT`` on the store's connection, so event rows never
leave the engine; ``tests/spec/test_ingest_engines.py`` holds DuckDB and Spark to the same rows.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

EHR = 32817  # Type Concept: EHR
PRIMARY_DIAGNOSIS = 32902  # Condition status: primary diagnosis
YUAN = 44818620  # Currency: Chinese yuan

#: kind → (CDM table, id column; None where the person is the key)
TARGETS: dict[str, tuple[str, str | None]] = {
    "condition": ("condition_occurrence", "condition_occurrence_id"),
    "drug": ("drug_exposure", "drug_exposure_id"),
    "measurement": ("measurement", "measurement_id"),
    "procedure": ("procedure_occurrence", "procedure_occurrence_id"),
    "observation": ("observation", "observation_id"),
    "note": ("note", "note_id"),
    "death": ("death", None),
}
#: kinds whose rows may carry a cost → the cost's domain
COST_DOMAINS = {"drug": "Drug", "measurement": "Measurement", "procedure": "Procedure"}


def _i64(value: int) -> ir.IntegerValue:
    return ibis.literal(value, "int64")


def _text(col: ir.StringValue, length: int) -> ir.StringValue:
    return col.substr(0, length)


def _projection(kind: str, t: ir.Table) -> dict[str, ir.Value]:
    ehr, none = _i64(EHR), ibis.null("int64")
    if kind == "condition":
        return dict(
            condition_concept_id=t.target_concept_id, condition_start_date=t.start_date,
            condition_end_date=t.end_date, condition_type_concept_id=ehr,
            condition_status_concept_id=ibis.ifelse(t.primary.fill_null(False),
                                                    _i64(PRIMARY_DIAGNOSIS), none),
            visit_occurrence_id=t.visit_occurrence_id, condition_source_value=t.code,
            condition_source_concept_id=t.source_concept_id)
    if kind == "drug":
        return dict(
            drug_concept_id=t.target_concept_id, drug_exposure_start_date=t.start_date,
            drug_exposure_end_date=t.end_date.coalesce(t.start_date),
            drug_type_concept_id=ehr, quantity=t.quantity, days_supply=t.days_supply,
            route_source_value=_text(t.route, 50), visit_occurrence_id=t.visit_occurrence_id,
            drug_source_value=t.code, drug_source_concept_id=t.source_concept_id,
            dose_unit_source_value=_text(t.dose_unit, 50))
    if kind == "measurement":
        return dict(
            measurement_concept_id=t.target_concept_id, measurement_date=t.date,
            measurement_datetime=t.datetime, measurement_type_concept_id=ehr,
            value_as_number=t.value_converted, unit_concept_id=t.unit_concept_id,
            range_low=t.range_low, range_high=t.range_high,
            visit_occurrence_id=t.visit_occurrence_id, measurement_source_value=t.code,
            measurement_source_concept_id=t.source_concept_id,
            # the value and unit as the source gave them, before conversion
            unit_source_value=_text(t.unit, 50),
            value_source_value=_text(t.value_text.coalesce(t.value.cast("string")), 50))
    if kind == "procedure":
        return dict(
            procedure_concept_id=t.target_concept_id, procedure_date=t.date,
            procedure_type_concept_id=ehr, visit_occurrence_id=t.visit_occurrence_id,
            procedure_source_value=t.code, procedure_source_concept_id=t.source_concept_id)
    if kind == "observation":
        return dict(
            observation_concept_id=t.target_concept_id, observation_date=t.date,
            observation_type_concept_id=ehr, value_as_number=t.value,
            value_as_string=_text(t.value_text, 60), visit_occurrence_id=t.visit_occurrence_id,
            observation_source_value=t.code, observation_source_concept_id=t.source_concept_id,
            unit_source_value=_text(t.unit, 50))
    if kind == "note":
        zero = _i64(0)
        return dict(
            note_date=t.date, note_type_concept_id=ehr, note_class_concept_id=zero,
            note_title=_text(t.title, 250), note_text=t.text, encoding_concept_id=zero,
            language_concept_id=zero, visit_occurrence_id=t.visit_occurrence_id)
    if kind == "death":
        return dict(death_date=t.date, death_type_concept_id=ehr,
                    cause_source_value=_text(t.cause_code, 50))
    raise ValueError(f"no CDM table for the kind {kind!r}")


def event_rows(kind: str, t: ir.Table) -> ir.Table:
    """The CDM rows of ``t`` (pending rows with their ``_id``) for the table of ``kind``."""
    _, id_col = TARGETS[kind]
    ids = {id_col: t._id} if id_col else {}
    return t.select(**ids, person_id=t.person_id, **_projection(kind, t))


def cost_rows(kind: str, t: ir.Table) -> ir.Table:
    """Cost rows of the events of ``t`` (pending rows with ``_id``) that carry a cost, each
    with its ``_cost_id`` (numbered by the loader like ``_id``)."""
    c = t.filter(t.cost.notnull())
    return c.select(
        cost_id=c._cost_id, cost_event_id=c._id,
        cost_domain_id=ibis.literal(COST_DOMAINS[kind]), cost_type_concept_id=_i64(EHR),
        currency_concept_id=_i64(YUAN), total_cost=c.cost.cast("float64"),
        paid_by_patient=ibis.null("float64"))


def lineage_rows(kind: str, t: ir.Table) -> ir.Table:
    """``etl_lineage`` rows of ``t`` (pending rows with ``_id``): CDM row → file and row."""
    table, id_col = TARGETS[kind]
    return t.select(table_name=ibis.literal(table),
                    row_id=(t._id if id_col else t.person_id).cast("int64"),
                    file_id=t._fid.cast("int64"), source_row=t._row.cast("int64"))
