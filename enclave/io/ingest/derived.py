"""Tables the ingest derives from the loaded ones, as ibis expressions (DuckDB or Spark).

After parsing, mapping and loading, some OMOP tables are not in any extract but follow from the
others. Written as ibis expressions over the engine's tables, they run unchanged on the embedded
DuckDB store (the loader compiles them on its own connection) and on Spark
(``[engine] backend = "pyspark"``; see docs/scale-out.md); ``tests/spec/test_ingest_engines.py``
holds the two engines to the same rows.

* :func:`observation_periods` — one observation period per person, from the earliest to the latest
  date of any of their events (the OMOP convention for EHR data without enrolment spans).
"""

from __future__ import annotations

from collections.abc import Mapping

import ibis
import ibis.expr.types as ir

#: every (table, date column) whose dates place a person under observation
EVENT_DATES = (
    ("visit_occurrence", "visit_start_date"),
    ("visit_occurrence", "visit_end_date"),
    ("condition_occurrence", "condition_start_date"),
    ("drug_exposure", "drug_exposure_start_date"),
    ("measurement", "measurement_date"),
    ("procedure_occurrence", "procedure_date"),
    ("observation", "observation_date"),
)


def observation_periods(tables: Mapping[str, ir.Table],
                        persons: ir.Table | None = None) -> ir.Table:
    """``person_id``, ``observation_period_start_date``, ``observation_period_end_date``: the
    first and last event date of each person (events without a date are ignored; a person without
    any dated event has no period). ``persons`` (a table with ``person_id``) limits the work to
    those persons, e.g. the ones a batch touched."""
    parts = [tables[t].select(person_id=tables[t].person_id, d=tables[t][c].cast("date"))
             for t, c in EVENT_DATES]
    events = ibis.union(*parts, distinct=False)
    events = events.filter(events.d.notnull())
    if persons is not None:
        events = events.semi_join(persons, "person_id")
    return events.group_by("person_id").aggregate(
        observation_period_start_date=events.d.min(),
        observation_period_end_date=events.d.max(),
    )
