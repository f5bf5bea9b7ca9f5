"""HL7 v2 adapter and demo writer: the real hl7 package samples, inline messages, round trip, fuzzing."""

from __future__ import annotations

import datetime as dt
import re
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.io.demo.writers import HospitalSpec
from enclave.io.demo.writers import hl7 as hl7_writer
from enclave.io.ingest.adapters.hl7v2 import stage
from enclave.io.ingest.mapping import builtin_profile, parse_mapping
from enclave.io.ingest.staging import conform
from tests.unit.test_fhir_adapter import (
    RID,
    assert_all_counted,
    check_planted_defects,
    defect_setup,
    demo_frames,
    same_rows,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "fixtures" / "hl7v2"
H2 = HospitalSpec(site_id="h8", name="示例县人民医院", dialect="hl7v2", level="二级甲等", region_code="110105")


def _segments(path: Path) -> list[str]:
    return [s for s in re.split(r"\r\n|\r|\n", path.read_text("utf-8")) if s.strip()]


def test_every_fixture_stages_and_every_message_is_counted():
    profile = builtin_profile("hl7v2")
    assert profile.options["resident_id_types"] == ["NNCHN"]
    batch = stage(FIXTURES, profile)
    files = sorted(FIXTURES.glob("*.hl7"))
    assert len(files) == 8
    for file in files:
        segs = _segments(file)
        msh = sum(s.startswith("MSH") for s in segs)
        # a run of segments outside any message counts as one (malformed) record
        stray = 1 if msh == 0 and any(s[:3] not in ("FHS", "BHS", "BTS", "FTS") for s in segs) else 0
        assert batch.read_counts[str(file)] == msh + stray, file.name
    assert_all_counted(batch)
    bad = batch.frames["unparsed"]
    assert sorted(Path(f).name for f in bad["_file"]) == ["sample_bad_batch.hl7", "sample_bad_file.hl7"]
    assert set(bad["_reject"]) == {"malformed_row"}


def test_fixture_values_match_the_segments():
    batch = stage(FIXTURES, builtin_profile("hl7v2"))
    person = batch.frames["person"]
    # the PIDs of sample_bad_* stand outside any message (those files have no MSH)
    pids = [s for f in sorted(FIXTURES.glob("*.hl7"))
            if not f.name.startswith("sample_bad") for s in _segments(f) if s.startswith("PID")]
    assert person.height == len(pids)
    first = pids[0].split("|")
    batch_rows = person.filter(pl.col("_file").str.ends_with("sample_batch.hl7"))
    assert batch_rows["site_patient_id"].to_list() == [first[3].split("^")[0]]
    # PID-7 "10131113" is before 1880 → invalid_date
    assert batch_rows["_reject"].to_list() == ["invalid_date"]
    lab = FIXTURES / "sample_hl7.hl7"
    obx = [s.split("|") for s in _segments(lab) if s.startswith("OBX")]
    staged = pl.concat([batch.frames["measurement"].select("_file", "code", "unit", "value_text"),
                        batch.frames["observation"].select("_file", "code", "unit", "value_text")])
    staged = staged.filter(pl.col("_file") == str(lab))
    assert staged.height == len(obx) == 2
    assert sorted(staged["code"]) == sorted(o[3].split("^")[0] for o in obx)
    m = batch.frames["measurement"].row(0, named=True)
    assert (m["value"], m["unit"], m["range_low"], m["range_high"]) == (182.0, "mg/dl", 70.0, 105.0)
    assert m["code_system"] == "LOCAL"
    assert m["date"] == dt.date(2002, 2, 15)  # from OBR-7
    visits = batch.frames["visit"]
    assert set(visits["visit_type"]) == {"outpatient"}


def test_inline_messages_escapes_unsupported_and_broken(tmp_path):
    msgs = [
        "MSH|^~\\&|HIS|H1|ENCLAVE|E|20230105||ADT^A04|1|P|2.5",
        f"PID|1||P1^^^H1^MR~{RID}^^^CHN^NNCHN||张三||19800506|M|||北京市\\F\\朝阳区^^^^^^H^^110105||13800000000",
        hl7_writer.segment("PV1", {1: "1", 2: "E", 3: "急诊科^^^CS1", 7: "DR1", 19: "V1",
                                   44: "20230105101500", 45: "20230104", 47: "99.5"}),
        "DG1|1||E11.900^2型糖尿病^I10CN||20230105|F|||||||||1",
        "DG1|2||I10^高血压^I10||2023023|F",
        "MSH|^~\\&|HIS|H1|ENCLAVE|E|20230105||ADT^A31|2|P|2.5",
        "PID|1||P1^^^H1^MR",
        "MSH#^~\\&#HIS#H1#E#E#20230105##ORU^R01#3#P#2.5",
        "PID#1##P1^^^H1^MR",
        "OBX#1#NM#2345-7^血糖^LN##abc#mmol/L#3.9-6.1###F###20230105",
        "OBX#2#ST#XB^血象^L##正常",
        "MSH|^",
        "MSH|^~\\&|HIS|H1|ENCLAVE|E|20230105||ADT^A04|5|P|2.5",
        "EVN|A04",
    ]
    path = tmp_path / "m.hl7"
    path.write_bytes(("\r\n".join(msgs) + "\r\n").encode("utf-8"))
    batch = stage(path, builtin_profile("hl7v2"))
    assert batch.read_counts[str(path)] == 5
    assert_all_counted(batch)
    p = batch.frames["person"].row(0, named=True)
    assert (p["site_patient_id"], p["resident_id"], p["name"], p["sex"]) == ("P1", RID, "张三", "M")
    assert p["address"] == "北京市|朝阳区" and p["region_code"] == "110105"
    v = batch.frames["visit"].row(0, named=True)
    assert (v["site_visit_id"], v["visit_type"], v["department"], v["care_site_id"]) == ("V1", "emergency", "急诊科", "CS1")
    assert v["start_datetime"] == dt.datetime(2023, 1, 5, 10, 15) and v["end_date"] == dt.date(2023, 1, 4)
    assert v["total_cost"] == 99.5
    c = batch.frames["condition"].sort("code")
    assert c["code_system"].to_list() == ["ICD10CN", "ICD10"]
    assert c["primary"].to_list() == [True, None]
    assert c["_reject"].to_list() == [None, "invalid_date"]
    m = batch.frames["measurement"].row(0, named=True)
    assert (m["site_patient_id"], m["code_system"], m["_reject"], m["_reject_column"]) == ("P1", "LOINC", "invalid_number", "OBX-5")
    o = batch.frames["observation"].row(0, named=True)
    assert (o["code_system"], o["value_text"]) == ("LOCAL", "正常")
    rejects = dict(batch.frames["unparsed"].select("_row", "_reject").iter_rows())
    assert rejects == {2: "unsupported_record", 4: "malformed_row", 5: "missing_required"}


def test_coding_system_names_and_alternate_identifiers(tmp_path):
    msgs = [
        "MSH|^~\\&|LIS|H1|ENCLAVE|E|20230105||ORU^R01|1|P|2.5",
        "PID|1||P1^^^H1^MR",
        "OBR|1|||CBC|||20230105",
        # the test code only as the alternate identifier (OBX-3.4 with its system in OBX-3.6)
        "OBX|1|NM|^^^2345-7^Glucose^LN||5.1|mmol/L",
        "OBX|2|NM|^Glucose^^GLU01^^99LAB||5.1|mmol/L",
        # a local code with a LOINC alternate: the code the enclave can map wins
        "OBX|3|NM|GLU01^Glucose^L^2345-7^Glucose^LN||5.1|mmol/L",
        "OBX|4|NM|2345-7^Glucose^LN^GLU01^Glucose^L||5.1|mmol/L",
        "OBX|5|ST|1234^Note^99zzz||text",
        "OBX|6|ST|44054006^Diabetes^SNM||text",
        "OBX|7|ST|^^^^^||text",
        "MSH|^~\\&|HIS|H1|ENCLAVE|E|20230105||ADT^A08|2|P|2.5",
        "PID|1||P1^^^H1^MR",
        "PV1|1|O|||||||||||||||||V1|||||||||||||||||||||||||20230105",
        "DG1|1||E11.9^Type 2 diabetes^I10C||20230105",
        "DG1|2||E11.9^Type 2 diabetes^I10||20230105",
        "DG1|3||44054006^Diabetes^SCT||20230105",
        "DG1|4||^^^E11.9^Type 2 diabetes^I10C||20230105",
        "DG1|5||X99^Something^HOSPDX||20230105",
        "DG1|6||X98^Something||20230105",
        "PR1|1||99213^Office visit^C4||20230105",
    ]
    path = tmp_path / "c.hl7"
    path.write_bytes(("\r".join(msgs) + "\r").encode("utf-8"))
    batch = stage(path, builtin_profile("hl7v2"))
    assert_all_counted(batch)
    obx = pl.concat([batch.frames["measurement"].select("code_system", "code", "description"),
                     batch.frames["observation"].select("code_system", "code", "description")])
    assert obx.rows() == [
        ("LOINC", "2345-7", "Glucose"), ("LOCAL", "GLU01", "Glucose"), ("LOINC", "2345-7", "Glucose"),
        ("LOINC", "2345-7", "Glucose"), ("LOCAL", "1234", "Note"), ("SNOMED", "44054006", "Diabetes"),
        (None, None, None),
    ]
    assert batch.frames["measurement"]["_reject"].null_count() == 4
    dx = batch.frames["condition"].sort("code")
    assert batch.frames["condition"].select("code_system", "code").rows() == [
        ("ICD10CM", "E11.9"), ("ICD10", "E11.9"), ("SNOMED", "44054006"), ("ICD10CM", "E11.9"),
        ("LOCAL", "X99"), ("LOCAL", "X98"),
    ]
    assert dx.height == 6
    assert batch.frames["procedure"].select("code_system", "code").rows() == [("CPT4", "99213")]
    # a site's default for diagnoses without a coding system
    profile = builtin_profile("hl7v2")
    batch = stage(path, replace(profile, options={**profile.options, "diagnosis_default_system": "ICD10CN"}))
    assert batch.frames["condition"]["code_system"].to_list()[-1] == "ICD10CN"


def test_a_ten_megabyte_patient_identifier_stages_quickly(tmp_path):
    big = "9" * 10_000_000
    msgs = ["MSH|^~\\&|HIS|H1|ENCLAVE|E|20230105||ADT^A04|1|P|2.5",
            f"PID|1||{big}^^^H1^MR||Doe^John||19800506|M",
            "PV1|1|O|||||||||||||||||V1|||||||||||||||||||||||||20230105"]
    small = tmp_path / "small.hl7"
    small.write_bytes("\r".join(msgs).replace(big, "P1").encode("utf-8"))
    path = tmp_path / "big.hl7"
    path.write_bytes("\r".join(msgs).encode("utf-8"))
    stage(small, builtin_profile("hl7v2"))  # warm up
    started = time.perf_counter()
    stage(small, builtin_profile("hl7v2"))
    baseline = time.perf_counter() - started
    started = time.perf_counter()
    batch = stage(path, builtin_profile("hl7v2"))
    # linear work is a few tenths of a second; anything quadratic in the field length takes minutes
    assert time.perf_counter() - started - baseline < 3.0
    # staged verbatim: the loader rejects it as value_too_long
    assert batch.frames["person"]["site_patient_id"].str.len_bytes().to_list() == [len(big)]
    assert batch.frames["visit"]["site_patient_id"].str.len_bytes().to_list() == [len(big)]


def test_writer_round_trip_gives_back_the_frames(tmp_path):
    frames = demo_frames()
    result = hl7_writer.write(tmp_path, H2, {k: conform(k, v) for k, v in frames.items()}, [])
    mapping = parse_mapping(result.site_toml, "site.toml")
    assert mapping.linkage == "resident_id" and mapping.options["resident_id_types"] == ["NNCHN"]
    batch = stage(tmp_path, mapping)
    assert_all_counted(batch)
    assert "unparsed" not in batch.frames
    for kind, frame in frames.items():
        assert batch.frames[kind]["_reject"].null_count() == batch.frames[kind].height
        same_rows(kind, batch.frames[kind], frame)
    assert result.planted == {}


def test_writer_plants_every_defect(tmp_path):
    frames, defects = defect_setup()
    result = hl7_writer.write(tmp_path, H2, frames, defects)
    assert result.planted == {
        "bad_id_checksum": 1, "identity_conflict": 1, "impossible_date": 2, "missing_required": 1,
        "duplicate_row": 2, "truncated_line": 2, "date_order": 1, "unknown_patient": 1, "unknown_code": 1,
    }
    batch = stage(tmp_path, parse_mapping(result.site_toml, "site.toml"))
    assert_all_counted(batch)
    files = {"adt": str(tmp_path / "adt.hl7"), "oru": str(tmp_path / "oru.hl7")}
    check_planted_defects(batch, frames, files, truncated_condition=False)
    # adt.hl7 carries one truncated message (the person's; the condition's was refused)
    assert batch.frames["unparsed"].height == 2


# -- fuzzing ---------------------------------------------------------------------------------------

_VALID: list[bytes] = []


def _valid() -> bytes:
    if not _VALID:
        with tempfile.TemporaryDirectory() as tmp:
            hl7_writer.write(Path(tmp), H2, {k: conform(k, v) for k, v in demo_frames().items()}, [])
            data = b"".join(p.read_bytes() for p in sorted(Path(tmp).glob("*.hl7")))
        _VALID.append(data + (FIXTURES / "sample_hl7.hl7").read_bytes())
    return _VALID[0]


@st.composite
def corrupted(draw) -> bytes:
    data = _valid()
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["truncate", "delete", "insert", "drop_sep", "swap_sep"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            data = data[:pos]
        elif op == "delete":
            data = data[:pos] + data[pos + draw(st.integers(1, 30)):]
        elif op == "insert":
            junk = draw(st.binary(max_size=10) | st.sampled_from([b"MSH", b"MSH|", b"\r", b"|", b"^", b"\\", b"BHS|"]))
            data = data[:pos] + junk + data[pos:]
        elif op == "drop_sep":
            data = data.replace(draw(st.sampled_from([b"\r", b"|", b"^"])), b"", draw(st.integers(1, 5)))
        else:
            data = data.replace(b"|", draw(st.sampled_from([b"#", b"a", b"^", b" "])), draw(st.integers(1, 3)))
    return data


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=corrupted(), encoding=st.sampled_from(["utf-8", "gb18030"]))
def test_corrupted_input_never_raises_and_every_message_counts(data, encoding):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.hl7"
        path.write_bytes(data)
        mapping = builtin_profile("hl7v2")
        from dataclasses import replace

        batch = stage(path, replace(mapping, encoding=encoding))
        assert_all_counted(batch)
