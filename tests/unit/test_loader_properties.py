"""Property test: whatever the adapters hand over, the loader neither crashes nor loses a row."""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from enclave.core.keystore import load_or_create_key
from enclave.core.settings import load_settings
from enclave.io.ingest.loader import load_batch
from enclave.io.ingest.mapping import SiteMapping
from enclave.io.ingest.staging import StagedBatch
from enclave.io.store import open_store, store_stats
from enclave.logic.codes.resident_id import check_char


def _rid(n: int) -> str:
    body = f"110105{1950 + n % 60}0101{n % 1000:03d}"
    return body + check_char(body)


ids = st.sampled_from(["A", "B", "C", "D", None])
maybe_date = st.one_of(st.none(), st.dates(dt.date(1900, 1, 1), dt.date(2030, 1, 1)))
resident = st.one_of(st.none(), st.integers(0, 5).map(_rid), st.text(max_size=20))
codes = st.sampled_from(["E11.900", "I10.x00x002", "E11.9OO", "??", "", None, "J18.900", "2345-7", "GLU"])
systems = st.sampled_from(["ICD10CN", "ICD10", "LOINC", "LOCAL", "BOGUS", None])

person = st.fixed_dictionaries({
    "site_patient_id": ids, "resident_id": resident, "sex": st.sampled_from(["M", "F", "U", None]),
    "birth_date": maybe_date, "_reject": st.sampled_from([None, None, None, "invalid_date"]),
})
visit = st.fixed_dictionaries({
    "site_visit_id": st.sampled_from(["V1", "V2", "V3", None]), "site_patient_id": ids,
    "visit_type": st.sampled_from(["outpatient", "inpatient", "spa", None]),
    "start_date": maybe_date, "end_date": maybe_date,
})
condition = st.fixed_dictionaries({
    "site_patient_id": ids, "site_visit_id": st.sampled_from(["V1", "V2", "V9", None]),
    "code_system": systems, "code": codes, "start_date": maybe_date,
})
measurement = st.fixed_dictionaries({
    "site_patient_id": ids, "code_system": systems, "code": codes, "date": maybe_date,
    "value": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    "unit": st.sampled_from(["mg/dL", "mmol/L", "furlong", None]),
})


def _frame(records: list[dict], start: int) -> pl.DataFrame:
    return pl.DataFrame(records).with_columns(
        pl.int_range(start, start + len(records)).alias("_row"), pl.lit("f.csv").alias("_file")
    )


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    persons=st.lists(person, max_size=6), visits=st.lists(visit, max_size=6),
    conditions=st.lists(condition, max_size=6), measurements=st.lists(measurement, max_size=6),
    linkage=st.sampled_from(["resident_id", "site_patient_id"]),
)
def test_loader_accounts_for_every_row(tmp_path_factory, persons, visits, conditions, measurements, linkage):
    settings = load_settings(tmp_path_factory.mktemp("home"))
    batch = StagedBatch(site="h1")
    n = 1
    for kind, records in (("person", persons), ("visit", visits), ("condition", conditions),
                          ("measurement", measurements)):
        if records:
            batch.add(kind, _frame(records, n))
            n += len(records)
    batch.read_counts["f.csv"] = n - 1
    mapping = SiteMapping(site_id="h1", dialect="csv", linkage=linkage,
                          options={"codes": {"measurement": {"GLU": "LOINC:2345-7"}}})
    with open_store(settings) as con:
        key = load_or_create_key(settings.keys_dir)
        reports = load_batch(con, key, mapping, batch, {"f.csv": "sha"})
        stats = store_stats(con)
    total = n - 1
    if total == 0:
        return
    (r,) = reports
    assert r.read == total == r.loaded + r.rejected_total + r.merged_duplicates
    assert stats["tables"]["etl_reject"] == r.rejected_total
    assert stats["tables"]["etl_lineage"] == r.loaded
