"""FHIR R4 adapter and demo writer: real Synthea fixtures, inline NDJSON, round trip, fuzzing."""

from __future__ import annotations

import base64
import datetime as dt
import json
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.io.demo.writers import Defect, DefectKind, HospitalSpec
from enclave.io.demo.writers import fhir as fhir_writer
from enclave.io.ingest.adapters.fhir import stage
from enclave.io.ingest.mapping import builtin_profile, parse_mapping
from enclave.io.ingest.staging import StagedBatch, column_names, conform
from enclave.logic.codes import icd10, resident_id

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "fixtures" / "fhir-r4"
BOOK = ["_file", "_row", "_reject", "_reject_column"]


def covered(batch: StagedBatch) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for frame in batch.frames.values():
        for file, row in frame.select("_file", "_row").iter_rows():
            out.setdefault(file, set()).add(row)
    return out


def assert_all_counted(batch: StagedBatch) -> None:
    seen = covered(batch)
    for file, count in batch.read_counts.items():
        assert seen.get(file, set()) == set(range(1, count + 1)), file
    assert set(seen) <= set(batch.read_counts)


# -- real fixtures ------------------------------------------------------------------------------


def test_fixture_bundles_stage_and_every_entry_is_counted():
    batch = stage(FIXTURES, builtin_profile("fhir"))
    files = sorted(FIXTURES.glob("*.json"))
    assert len(files) == 12
    types: Counter[str] = Counter()
    for file in files:
        entries = json.loads(file.read_text("utf-8"))["entry"]
        assert batch.read_counts[str(file)] == len(entries)
        types.update(e["resource"]["resourceType"] for e in entries)
    assert_all_counted(batch)
    f = batch.frames
    assert f["person"].height == types["Patient"] == 10
    assert f["visit"].height == types["Encounter"]
    assert f["condition"].height == types["Condition"]
    assert f["procedure"].height == types["Procedure"]
    assert f["care_site"].height == types["Organization"]
    assert f["provider"].height == types["Practitioner"]
    assert f["drug"].height == types["Immunization"] + types["MedicationRequest"]
    stored = {"Patient", "Encounter", "Condition", "Procedure", "Organization", "Practitioner",
              "Immunization", "MedicationRequest", "Observation", "AllergyIntolerance"}
    unsupported = sum(n for t, n in types.items() if t not in stored)
    assert f["unparsed"].height == unsupported
    assert set(f["unparsed"]["_reject"]) == {"unsupported_record"}
    # every Observation (and AllergyIntolerance) lands in measurement or observation (blood pressure
    # gives one per component); these bundles happen to hold no AllergyIntolerance
    obs_rows = pl.concat([f["measurement"].select(BOOK), f["observation"].select(BOOK)])
    assert obs_rows.unique(["_file", "_row"]).height == types["Observation"] + types["AllergyIntolerance"]
    # coding.system decides: SNOMED conditions/procedures, LOINC observations, CVX vaccines
    assert set(f["condition"]["code_system"]) == set(f["procedure"]["code_system"]) == {"SNOMED"}
    assert set(f["measurement"]["code_system"]) == {"LOINC"}
    assert set(f["drug"]["code_system"]) == {"CVX"}


def test_fixture_values_match_the_json():
    file = next(FIXTURES.glob("Bibi254_*.json"))
    bundle = json.loads(file.read_text("utf-8"))
    batch = stage(file, builtin_profile("fhir"))
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    person = batch.frames["person"].row(0, named=True)
    assert person["site_patient_id"] == patient["id"]
    assert person["sex"] == {"female": "F", "male": "M"}[patient["gender"]]
    assert person["birth_date"] == dt.date.fromisoformat(patient["birthDate"])
    visits = batch.frames["visit"]
    assert set(visits["site_patient_id"]) == {patient["id"]}
    classes = {e["resource"]["id"]: e["resource"]["class"]["code"] for e in bundle["entry"]
               if e["resource"]["resourceType"] == "Encounter"}
    expected = {"AMB": "outpatient", "IMP": "inpatient", "EMER": "emergency"}
    for vid, vtype in visits.select("site_visit_id", "visit_type").iter_rows():
        assert vtype == expected[classes[vid]]
    bp = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
              and e["resource"].get("component"))
    rows = batch.frames["measurement"].filter(pl.col("code").is_in(["8480-6", "8462-4"]))
    assert rows.height >= 2
    components = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in bp["component"]}
    first = rows.filter(pl.col("_row") == rows["_row"].min())
    assert dict(first.select("code", "value").iter_rows()) == components
    conditions = batch.frames["condition"]
    assert set(conditions["code_system"]) == {"SNOMED"}
    assert conditions["start_date"].null_count() == 0


# -- inline NDJSON --------------------------------------------------------------------------------

RID = "11010519800506001" + resident_id.check_char("11010519800506001")


def _write(tmp: Path, name: str, lines: list[str]) -> Path:
    path = tmp / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_ndjson_maps_fields_and_rejects_bad_lines(tmp_path):
    patient = {
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": RID}],
        "name": [{"text": "张三"}], "gender": "male", "birthDate": "1980-05-06",
        "deceasedDateTime": "2024-01-02T08:00:00+08:00",
        "telecom": [{"system": "phone", "value": "13800000000"}],
        "address": [{"text": "北京市朝阳区", "district": "110105"}],
    }
    bad_date = dict(patient, id="p2", birthDate="2023-02-30")
    encounter = {"resourceType": "Encounter", "id": "e1", "class": {"code": "EMER"},
                 "subject": {"reference": "Patient/p1"},
                 "period": {"start": "2020-03-01T10:15:00+08:00", "end": "2020-03-01T12:00"}}
    note = {"resourceType": "DocumentReference", "subject": {"reference": "Patient/p1"},
            "date": "2020-03-01T10:15:00+08:00",
            "content": [{"attachment": {"data": base64.b64encode("主诉：头痛".encode()).decode()}}]}
    lines = [json.dumps(patient), json.dumps(bad_date), "{not json", "", json.dumps(encounter),
             json.dumps({"resourceType": "Claim", "id": "x"}), json.dumps([1, 2]), json.dumps(note)]
    path = _write(tmp_path, "mixed.ndjson", lines)
    batch = stage(path, builtin_profile("fhir"))
    assert batch.read_counts[str(path)] == 8
    assert_all_counted(batch)
    person = batch.frames["person"].sort("_row")
    assert person["resident_id"].to_list() == [RID, RID]
    assert person["name"][0] == "张三" and person["sex"][0] == "M"
    assert person["region_code"][0] == "110105"
    assert person["death_date"][0] == dt.date(2024, 1, 2)
    assert person["_reject"].to_list() == [None, "invalid_date"]
    assert person["_reject_column"][1] == "birthDate"
    visit = batch.frames["visit"].row(0, named=True)
    assert visit["site_patient_id"] == "p1" and visit["visit_type"] == "emergency"
    assert visit["start_datetime"] == dt.datetime(2020, 3, 1, 10, 15)
    assert visit["end_datetime"] == dt.datetime(2020, 3, 1, 12, 0)
    unparsed = dict(batch.frames["unparsed"].select("_row", "_reject").iter_rows())
    assert unparsed == {3: "malformed_row", 4: "malformed_row", 6: "unsupported_record", 7: "malformed_row"}
    assert batch.frames["note"]["text"][0] == "主诉：头痛"


# -- code systems and allergies ---------------------------------------------------------------------


def _coded(rtype: str, n: int, codings: list[dict], **extra) -> str:
    field = {"Immunization": "vaccineCode", "MedicationRequest": "medicationCodeableConcept"}.get(rtype, "code")
    patient = "patient" if rtype in ("Immunization", "AllergyIntolerance") else "subject"
    date = {"Condition": "onsetDateTime", "Immunization": "occurrenceDateTime",
            "MedicationRequest": "authoredOn", "Procedure": "performedDateTime"}.get(rtype, "effectiveDateTime")
    resource = {"resourceType": rtype, "id": f"r{n}", patient: {"reference": "Patient/p1"},
                field: {"coding": codings, "text": f"text {n}"}, date: "2020-03-01", **extra}
    return json.dumps(resource)


def test_coding_system_decides_the_code_system(tmp_path):
    snomed = {"system": "http://snomed.info/sct", "code": "44054006"}
    icd10cm = {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"}
    lines = [
        _coded("Condition", 1, [icd10cm]),
        _coded("Condition", 2, [{"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "250.00"}]),
        _coded("Condition", 3, [{"system": "http://hospital.example/dx", "code": "DX1"}]),
        _coded("Condition", 4, [{"code": "DX2"}]),
        # a codeless coding is never chosen; a mappable system beats an earlier unmappable one
        _coded("Condition", 5, [{"system": "http://snomed.info/sct"}, {"system": "http://x.example/y", "code": "Y1"},
                                {"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "250.00"}, icd10cm, snomed]),
        _coded("Condition", 6, [{"system": "urn:oid:2.16.840.1.113883.6.96", "code": "44054006"}]),
        _coded("MedicationRequest", 7, [{"system": "http://hl7.org/fhir/sid/ndc", "code": "0169-4132-12"},
                                        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}]),
        _coded("MedicationRequest", 8, [{"system": "http://hl7.org/fhir/sid/ndc", "code": "0169-4132-12"}]),
        _coded("Immunization", 9, [{"system": "http://hl7.org/fhir/sid/ndc", "code": "49281-0418-10"},
                                   {"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]),
        _coded("Procedure", 10, [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]),
        _coded("Observation", 11, [{"system": "http://loinc.org", "code": "2345-7"}],
               valueQuantity={"value": 5.1, "unit": "mmol/L", "system": "http://unitsofmeasure.org"}),
        _coded("Observation", 12, [{"system": "http://hospital.example/lab", "code": "GLU01"}],
               valueQuantity={"value": 5.1, "unit": "mmol/L"}),
    ]
    path = _write(tmp_path, "coded.ndjson", lines)
    profile = builtin_profile("fhir")
    systems = {**profile.options["code_systems"], "http://hospital.example/lab": "LOCAL"}
    batch = stage(path, replace(profile, options={**profile.options, "code_systems": systems}))
    assert_all_counted(batch)
    staged = pl.concat([batch.frames[k].select("_row", "code_system", "code", "description")
                        for k in ("condition", "drug", "procedure", "measurement")]).sort("_row")
    assert staged.select("code_system", "code").rows() == [
        ("ICD10CM", "E11.9"), ("ICD9CM", "250.00"), ("LOCAL", "DX1"), ("LOCAL", "DX2"),
        ("ICD10CM", "E11.9"), ("SNOMED", "44054006"), ("RxNorm", "860975"), ("NDC", "0169-4132-12"),
        ("CVX", "140"), ("CPT4", "99213"), ("LOINC", "2345-7"), ("LOCAL", "GLU01"),
    ]
    assert staged["description"][0] == "text 1"


def synthea_allergy(n: int, patient_url: str, **extra) -> dict:
    """An AllergyIntolerance as Synthea's FHIR R4 exporter writes it."""
    return {
        "fullUrl": f"urn:uuid:allergy-{n}",
        "resource": {
            "resourceType": "AllergyIntolerance", "id": f"allergy-{n}",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                "code": "confirmed"}]},
            "type": "allergy", "category": ["food"], "criticality": "low",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "300913006",
                                 "display": "Shellfish (substance)"}], "text": "Shellfish (substance)"},
            "patient": {"reference": patient_url},
            "recordedDate": "1990-01-01T00:00:00-05:00",
            **extra,
        },
        "request": {"method": "POST", "url": "AllergyIntolerance"},
    }


def test_allergy_intolerance_is_staged_as_an_observation(tmp_path):
    patient = {"fullUrl": "urn:uuid:pat-1", "resource": {"resourceType": "Patient", "id": "pat-1",
                                                          "gender": "female", "birthDate": "1980-01-01"}}
    encounter = {"fullUrl": "urn:uuid:enc-1", "resource": {
        "resourceType": "Encounter", "id": "enc-1", "class": {"code": "AMB"},
        "subject": {"reference": "urn:uuid:pat-1"}, "period": {"start": "2001-05-06T10:00:00Z"}}}
    penicillin = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7980",
                              "display": "Penicillin G"}]}
    entries = [
        patient, encounter,
        synthea_allergy(1, "urn:uuid:pat-1"),
        # no code: the reaction's substance; onset wins over recordedDate; encounter is optional
        synthea_allergy(2, "urn:uuid:pat-1", code={"text": "penicillin"}, encounter={"reference": "urn:uuid:enc-1"},
                        onsetDateTime="2001-05-06", reaction=[{"substance": penicillin}]),
        synthea_allergy(3, "urn:uuid:pat-1", recordedDate="1990-02-30"),
        synthea_allergy(4, "Patient/pat-1", code={"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                                                "code": "Z88.0"}]}),
    ]
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}), "utf-8")
    batch = stage(path, builtin_profile("fhir"))
    assert_all_counted(batch)
    assert "unparsed" not in batch.frames
    obs = batch.frames["observation"].sort("_row")
    assert obs["_row"].to_list() == [3, 4, 5, 6]
    assert set(obs["site_patient_id"]) == {"pat-1"}
    assert obs["site_visit_id"].to_list() == [None, "enc-1", None, None]
    assert obs.select("code_system", "code").rows() == [
        ("SNOMED", "300913006"), ("RxNorm", "7980"), ("SNOMED", "300913006"), ("ICD10CM", "Z88.0")]
    assert obs["value_text"].to_list()[:2] == ["Shellfish (substance)", "Penicillin G"]
    assert obs["date"].to_list()[:2] == [dt.date(1990, 1, 1), dt.date(2001, 5, 6)]
    assert obs.select("_reject", "_reject_column").row(2) == ("invalid_date", "effectiveDateTime")


def test_a_ten_megabyte_patient_id_stages_quickly(tmp_path):
    big = "9" * 10_000_000
    lines = [json.dumps({"resourceType": "Patient", "id": big, "gender": "male"}),
             json.dumps({"resourceType": "Encounter", "id": "e1", "class": {"code": "AMB"},
                         "subject": {"reference": "Patient/" + big}, "period": {"start": "2020-01-01"}})]
    small = _write(tmp_path, "small.ndjson", [line.replace(big, "p1") for line in lines])
    path = _write(tmp_path, "big.ndjson", lines)
    stage(small, builtin_profile("fhir"))  # warm up
    started = time.perf_counter()
    stage(small, builtin_profile("fhir"))
    baseline = time.perf_counter() - started
    started = time.perf_counter()
    batch = stage(path, builtin_profile("fhir"))
    # linear work is a few tenths of a second; anything quadratic in the field length takes minutes
    assert time.perf_counter() - started - baseline < 3.0
    # staged verbatim: the loader rejects it as value_too_long
    assert batch.frames["person"]["site_patient_id"].str.len_bytes().to_list() == [len(big)]
    assert batch.frames["visit"]["site_patient_id"].str.len_bytes().to_list() == [len(big)]


# -- demo writer round trip -------------------------------------------------------------------------

H1 = HospitalSpec(site_id="h9", name="示例市第九人民医院", dialect="fhir_ndjson", level="三级甲等",
                  region_code="110105")


def _rid(body: str) -> str:
    return body + resident_id.check_char(body)


def demo_frames() -> dict[str, pl.DataFrame]:
    d, t = dt.date, dt.datetime
    person = pl.DataFrame({
        "site_patient_id": ["P1", "P2"], "resident_id": [_rid("11010519800506001"), _rid("11010519900101002")],
        "name": ["张三", "李四"], "sex": ["M", "F"], "birth_date": [d(1980, 5, 6), d(1990, 1, 1)],
        "phone": ["13800000000", None], "address": ["北京市朝阳区某路1号", "北京市海淀区|^~\\&路"],
        "region_code": ["110105", None], "ethnicity": ["01", None], "insurance_no": ["YB001", None],
        "death_date": [None, d(2024, 1, 2)],
    })
    visit = pl.DataFrame({
        "site_visit_id": ["V1", "V2"], "site_patient_id": ["P1", "P2"],
        "visit_type": ["outpatient", "inpatient"], "start_date": [d(2023, 1, 5), d(2023, 2, 1)],
        "start_datetime": [t(2023, 1, 5, 10, 15), None], "end_date": [d(2023, 1, 5), d(2023, 2, 10)],
        "end_datetime": [t(2023, 1, 5, 11, 0), None], "department": ["内科", "心内科"],
        "provider_id": ["DR1", None], "care_site_id": ["CS1", "CS1"], "total_cost": [123.5, 8800.0],
        "paid_by_patient": [23.5, None],
    })
    condition = pl.DataFrame({
        "site_patient_id": ["P1", "P2"], "site_visit_id": ["V1", "V2"], "code_system": ["ICD10CN", "ICD10CN"],
        "code": ["E11.900", "I10.x00x002"], "description": ["2型糖尿病", "高血压"],
        "start_date": [d(2023, 1, 5), d(2023, 2, 1)], "primary": [True, False],
    })
    measurement = pl.DataFrame({
        "site_patient_id": ["P1", "P2"], "site_visit_id": ["V1", "V2"], "code_system": ["LOINC", "LOCAL"],
        "code": ["2345-7", "GLU01"], "description": ["空腹血糖", "总胆固醇"],
        "date": [d(2023, 1, 5), d(2023, 2, 2)], "datetime": [t(2023, 1, 5, 10, 30), None],
        "value": [6.1, 5.2], "unit": ["mmol/L", "mmol/L"], "range_low": [3.9, None], "range_high": [6.1, None],
    })
    return {"person": person, "visit": visit, "condition": condition, "measurement": measurement}


def fhir_frames() -> dict[str, pl.DataFrame]:
    d = dt.date
    frames = demo_frames()
    frames["measurement"] = frames["measurement"].with_columns(pl.Series("cost", [12.0, None]))
    frames["condition"] = frames["condition"].with_columns(pl.Series("end_date", [None, d(2023, 3, 1)]))
    frames["drug"] = pl.DataFrame({
        "site_patient_id": ["P1", "P1"], "site_visit_id": ["V1", None], "code_system": ["RxNorm", "CVX"],
        "code": ["860975", "140"], "description": ["二甲双胍缓释片", "流感疫苗"],
        "start_date": [d(2023, 1, 5), d(2022, 10, 1)], "end_date": [d(2023, 2, 4), None],
        "quantity": [60.0, None], "days_supply": [30, None], "dose_unit": ["片", None],
        "route": ["口服", None], "cost": [21.0, None],
    })
    frames["procedure"] = pl.DataFrame({
        "site_patient_id": ["P2"], "site_visit_id": ["V2"], "code_system": ["ICD9Proc"], "code": ["88.72"],
        "description": ["心脏超声"], "date": [d(2023, 2, 3)], "cost": [300.0],
    })
    frames["observation"] = pl.DataFrame({
        "site_patient_id": ["P1"], "site_visit_id": ["V1"], "code_system": ["LOINC"], "code": ["72166-2"],
        "description": ["吸烟状况"], "date": [d(2023, 1, 5)], "value_text": ["从不吸烟"],
    })
    frames["note"] = pl.DataFrame({
        "site_patient_id": ["P1"], "site_visit_id": ["V1"], "date": [d(2023, 1, 5)], "title": ["门诊病历"],
        "text": ["患者张三，口渴多饮三月。\n既往体健。"],
    })
    frames["care_site"] = pl.DataFrame({"care_site_id": ["CS1"], "name": ["示例市第九人民医院"],
                                        "level": ["三级甲等"], "region_code": ["110105"]})
    frames["provider"] = pl.DataFrame({"provider_id": ["DR1"], "name": ["王医生"], "specialty": ["内分泌科"],
                                       "care_site_id": ["CS1"]})
    return frames


def contract(kind: str, frame: pl.DataFrame) -> pl.DataFrame:
    cols = column_names(kind)
    return conform(kind, frame.drop([c for c in frame.columns if c not in cols + BOOK])).select(cols)


def same_rows(kind: str, staged: pl.DataFrame, given_frame: pl.DataFrame) -> None:
    a = contract(kind, staged)
    b = contract(kind, given_frame)
    key = [c for c in a.columns]
    assert a.sort(key, nulls_last=True).equals(b.sort(key, nulls_last=True)), kind


def test_writer_round_trip_gives_back_the_frames(tmp_path):
    frames = fhir_frames()
    result = fhir_writer.write(tmp_path, H1, {k: conform(k, v) for k, v in frames.items()}, [])
    mapping = parse_mapping(result.site_toml, "site.toml")
    assert mapping.linkage == "resident_id" and mapping.dialect == "fhir"
    assert mapping.options["codes"]["measurement"] == {"GLU01": "LOINC:2093-3"}
    batch = stage(tmp_path, mapping)
    assert_all_counted(batch)
    assert "unparsed" not in batch.frames
    for kind, frame in frames.items():
        assert batch.frames[kind]["_reject"].null_count() == batch.frames[kind].height
        same_rows(kind, batch.frames[kind], frame)
    assert result.planted == {}


def with_extra(frames: dict[str, pl.DataFrame], kind: str, source_row: int, ids: list[dict]) -> int:
    """Append copies of one row with fresh ids; return the index of the first copy."""
    frame = frames[kind]
    start = frame.height
    copies = [frame.slice(source_row, 1).with_columns(**{k: pl.lit(v) for k, v in i.items()}) for i in ids]
    frames[kind] = pl.concat([frame, *copies], how="vertical_relaxed")
    return start


def defect_setup() -> tuple[dict[str, pl.DataFrame], list[Defect]]:
    frames = {k: conform(k, v) for k, v in demo_frames().items()}
    p = with_extra(frames, "person", 0, [{"site_patient_id": f"PX{i}"} for i in range(6)])
    v = with_extra(frames, "visit", 0, [{"site_visit_id": f"VX{i}"} for i in range(3)])
    c = with_extra(frames, "condition", 0, [{"site_visit_id": "V1"} for _ in range(3)])
    m = with_extra(frames, "measurement", 0, [{"value": 7.7}])
    k = DefectKind
    defects = [
        Defect(k.BAD_ID_CHECKSUM, "person", p), Defect(k.IDENTITY_CONFLICT, "person", p + 1),
        Defect(k.IMPOSSIBLE_DATE, "person", p + 2), Defect(k.MISSING_REQUIRED, "person", p + 3),
        Defect(k.DUPLICATE_ROW, "person", p + 4), Defect(k.TRUNCATED_LINE, "person", p + 5),
        Defect(k.DATE_ORDER, "visit", v), Defect(k.UNKNOWN_PATIENT, "visit", v + 1),
        Defect(k.IMPOSSIBLE_DATE, "visit", v + 2),
        Defect(k.UNKNOWN_CODE, "condition", c), Defect(k.DUPLICATE_ROW, "condition", c + 1),
        Defect(k.TRUNCATED_LINE, "condition", c + 2),
        Defect(k.TRUNCATED_LINE, "measurement", m),
    ]
    return frames, defects


def check_planted_defects(batch: StagedBatch, frames: dict[str, pl.DataFrame], files: dict[str, str],
                          *, truncated_condition: bool = True) -> None:
    """Each planted defect shows up as a reject or as a value the loader rejects."""
    person = batch.frames["person"]
    by_id = {r["site_patient_id"]: r for r in person.iter_rows(named=True)}
    original = frames["person"].row(0, named=True)
    assert by_id["PX0"]["resident_id"] != original["resident_id"]
    assert not resident_id.is_valid(by_id["PX0"]["resident_id"])
    assert by_id["PX1"]["sex"] != original["sex"] and by_id["PX1"]["resident_id"] == original["resident_id"]
    assert by_id["PX2"]["_reject"] == "invalid_date"
    assert person.filter(pl.col("site_patient_id").is_null()).height == 1
    assert person.filter(pl.col("site_patient_id") == "PX4").height == 2
    assert "PX5" not in by_id
    visits = {r["site_visit_id"]: r for r in batch.frames["visit"].iter_rows(named=True)}
    assert visits["VX0"]["end_date"] < visits["VX0"]["start_date"]
    assert visits["VX1"]["site_patient_id"] not in set(person["site_patient_id"].drop_nulls())
    assert visits["VX2"]["_reject"] == "invalid_date"
    cond = batch.frames["condition"]
    codes = cond.filter(~icd10.is_valid_clinical(pl.col("code")))
    assert codes.height == 1
    # the original, the duplicated copy twice, and the truncation target unless it was refused
    expected = 3 if truncated_condition else 4
    assert cond.filter((pl.col("code") == "E11.900") & (pl.col("site_visit_id") == "V1")).height == expected
    unparsed = batch.frames["unparsed"]
    assert set(unparsed["_reject"]) == {"malformed_row"}
    assert set(unparsed["_file"]) == set(files.values())


def test_writer_plants_every_defect(tmp_path):
    frames, defects = defect_setup()
    result = fhir_writer.write(tmp_path, H1, frames, defects)
    assert result.planted == {
        "bad_id_checksum": 1, "identity_conflict": 1, "impossible_date": 2, "missing_required": 1,
        "duplicate_row": 2, "truncated_line": 3, "date_order": 1, "unknown_patient": 1, "unknown_code": 1,
    }
    batch = stage(tmp_path, parse_mapping(result.site_toml, "site.toml"))
    assert_all_counted(batch)
    files = {t: str(tmp_path / f"{t}.ndjson") for t in ("Patient", "Condition", "Observation")}
    check_planted_defects(batch, frames, files)
    assert batch.frames["unparsed"].height == 3


# -- fuzzing ---------------------------------------------------------------------------------------

_VALID: list[str] = []


def _valid_text() -> str:
    if not _VALID:
        with tempfile.TemporaryDirectory() as tmp:
            fhir_writer.write(Path(tmp), H1, {k: conform(k, v) for k, v in fhir_frames().items()}, [])
            _VALID.append("".join(p.read_text("utf-8") for p in sorted(Path(tmp).glob("*.ndjson"))))
    return _VALID[0]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceType", "id", "subject", "code", "coding", "system", "value",
                         "reference", "period", "start", "valueQuantity", "birthDate", "gender", "name",
                         "identifier", "extension", "url", "component", "content", "attachment", "data"]),
        inner, max_size=5),
    max_leaves=20,
)
resource_types = st.sampled_from(["Patient", "Encounter", "Condition", "Observation", "MedicationRequest",
                                  "Immunization", "Procedure", "DocumentReference", "Organization",
                                  "Practitioner", "Claim", 7, None])


@st.composite
def corrupted(draw) -> bytes:
    text = _valid_text().encode("utf-8")
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "delete", "insert", "drop_newlines", "random_json"]))
        pos = draw(st.integers(0, max(len(text) - 1, 0)))
        if op == "truncate":
            text = text[:pos]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 40)):]
        elif op == "insert":
            text = text[:pos] + draw(st.binary(min_size=1, max_size=12)) + text[pos:]
        elif op == "drop_newlines":
            text = text.replace(b"\n", b"", draw(st.integers(1, 3)))
        else:
            value = draw(json_values)
            if isinstance(value, dict):
                value["resourceType"] = draw(resource_types)
            text += json.dumps(value).encode() + b"\n"
    return text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=corrupted(), as_bundle=st.booleans())
def test_corrupted_input_never_raises_and_every_record_counts(data, as_bundle):
    with tempfile.TemporaryDirectory() as tmp:
        if as_bundle:
            entries = []
            for line in data.split(b"\n"):
                try:
                    entries.append({"resource": json.loads(line)})
                except ValueError:
                    entries.append(line.decode("utf-8", "replace"))
            path = Path(tmp) / "bundle.json"
            path.write_text(json.dumps({"resourceType": "Bundle", "entry": entries}), encoding="utf-8")
        else:
            path = Path(tmp) / "x.ndjson"
            path.write_bytes(data)
        batch = stage(path, builtin_profile("fhir"))
        assert_all_counted(batch)
