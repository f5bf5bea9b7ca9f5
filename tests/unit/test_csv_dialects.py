"""Round trip of the three Chinese delimited dialects: demo writer → ingest adapter.

For each dialect: the staged rows equal the clean frames (real rows, plus the duplicated lines and
the extra rows whose defects the loader catches), each adapter-level defect comes back as a
``_reject`` (invalid_date, malformed_row), and the loader-level defects are staged with the data
that will trigger them. Hypothesis corrupts data lines and checks that nothing crashes and every
line is staged (as data or as an unparsed reject).
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.core.errors import ConfigurationError
from enclave.io.demo.generate import generate, load_writer
from enclave.io.demo.population import build_population
from enclave.io.demo.writers import DefectKind, csv_chinese, csv_pinyin, frontsheet
from enclave.io.ingest.adapters import get_adapter
from enclave.io.ingest.mapping import SITE_FILE, load_mapping_file
from enclave.io.ingest.staging import column_names
from enclave.logic.codes import icd10, resident_id

WRITERS = {"csv_gb18030": csv_pinyin.write, "csv_zh": csv_chinese.write, "frontsheet": frontsheet.write}
COMPARED = ("person", "visit", "condition", "drug", "measurement", "procedure", "note", "care_site",
            "provider")


@pytest.fixture(scope="module")
def pop():
    return build_population(400, 3, seed=5)


def _write_and_stage(pop, index: int, root: Path):
    spec = pop.hospitals[index]
    site_dir = root / spec.site_id
    result = WRITERS[spec.dialect](site_dir, spec, pop.frames[spec.site_id], pop.defects[spec.site_id])
    (site_dir / SITE_FILE).write_text(result.site_toml, encoding="utf-8")
    mapping = load_mapping_file(site_dir / SITE_FILE)
    return spec, result, mapping, get_adapter(mapping.dialect)(site_dir, mapping)


def _rows(frame: pl.DataFrame, kind: str) -> Counter:
    return Counter(frame.select(column_names(kind)).iter_rows())


@pytest.fixture(scope="module", params=[0, 1, 2], ids=["csv_gb18030", "csv_zh", "frontsheet"])
def staged(request, pop, tmp_path_factory):
    return (pop, *_write_and_stage(pop, request.param, tmp_path_factory.mktemp("site")))


def test_round_trip_matches_clean_frames(staged):
    pop, spec, result, _mapping, batch = staged
    frames, defects = pop.frames[spec.site_id], pop.defects[spec.site_id]
    assert result.planted == {str(k): sum(d.kind == k for d in defects) if k != DefectKind.TRUNCATED_LINE
                              else 3 for k in DefectKind}
    for kind in COMPARED:
        extra = {d.row for d in defects if d.frame_kind == kind and d.kind != DefectKind.DUPLICATE_ROW}
        dup = [d.row for d in defects if d.frame_kind == kind and d.kind == DefectKind.DUPLICATE_ROW]
        clean = frames[kind].with_row_index("i")
        expected = _rows(clean.filter(~pl.col("i").is_in(sorted(extra))), kind)
        expected.update(_rows(clean.filter(pl.col("i").is_in(dup)), kind))
        got = batch.frames[kind].filter(pl.col("_reject").is_null())
        got_rows = _rows(got, kind)
        missing = expected - got_rows
        assert not missing, f"{kind}: {sum(missing.values())} clean rows not staged"
        # what is left over are exactly the extra rows carrying loader-level defects
        loader_level = sum(1 for d in defects if d.frame_kind == kind and d.row in extra
                           and d.kind not in (DefectKind.IMPOSSIBLE_DATE, DefectKind.TRUNCATED_LINE))
        assert sum((got_rows - expected).values()) == loader_level, kind


def test_adapter_rejects_planted_defects(staged):
    pop, spec, _result, _mapping, batch = staged
    frames, defects = pop.frames[spec.site_id], pop.defects[spec.site_id]
    visits = batch.frames["visit"]
    bad_dates = visits.filter(pl.col("_reject") == "invalid_date")
    planted_ids = {frames["visit"]["site_visit_id"][d.row] for d in defects
                   if d.kind == DefectKind.IMPOSSIBLE_DATE}
    assert set(bad_dates["site_visit_id"]) == planted_ids and bad_dates["_reject_column"].is_not_null().all()
    unparsed = batch.frames["unparsed"]
    assert (unparsed["_reject"] == "malformed_row").all() and unparsed.height == 3
    for file, row in unparsed.select("_file", "_row").iter_rows():
        assert row == batch.read_counts[file]  # the last line of its file
    other = [k for k in batch.frames if k not in ("unparsed",)]
    assert all(batch.frames[k].filter(pl.col("_reject").is_not_null()).height == 0
               for k in other if k != "visit")


def test_loader_level_defects_are_staged_verbatim(staged):
    pop, spec, _result, _mapping, batch = staged
    frames, defects = pop.frames[spec.site_id], pop.defects[spec.site_id]
    persons = batch.frames["person"].with_columns(
        resident_id.normalize_expr(pl.col("resident_id")).alias("norm"))
    by_mrn = {r["site_patient_id"]: r for r in persons.iter_rows(named=True)}
    visits = {r["site_visit_id"]: r for r in batch.frames["visit"].iter_rows(named=True)}
    known = set(persons["site_patient_id"])
    for d in defects:
        row = frames[d.frame_kind].row(d.row, named=True)
        if d.kind == DefectKind.BAD_ID_CHECKSUM:
            staged_row = by_mrn[row["site_patient_id"]]
            assert staged_row["norm"] is None and len(staged_row["resident_id"]) == 18
        elif d.kind == DefectKind.IDENTITY_CONFLICT:
            staged_row = by_mrn[row["site_patient_id"]]
            assert staged_row["norm"] is not None
            id_sex = pl.select(resident_id.sex_expr(pl.lit(staged_row["norm"]))).item()
            assert staged_row["sex"] != row["sex"] and staged_row["sex"] != id_sex
        elif d.kind == DefectKind.DATE_ORDER:
            v = visits[row["site_visit_id"]]
            assert v["end_date"] < v["start_date"]
        elif d.kind == DefectKind.MISSING_REQUIRED:
            assert visits[row["site_visit_id"]]["site_patient_id"] is None
        elif d.kind == DefectKind.UNKNOWN_PATIENT:
            assert visits[row["site_visit_id"]]["site_patient_id"] not in known
    cond = batch.frames["condition"]
    invalid = cond.filter(~icd10.is_valid_clinical(pl.col("code")))
    assert invalid.height == sum(d.kind == DefectKind.UNKNOWN_CODE for d in defects)
    n_ids = persons.filter(pl.col("norm").is_null()).height
    assert n_ids == sum(d.kind == DefectKind.BAD_ID_CHECKSUM for d in defects)


def test_read_counts_cover_every_line(staged):
    _pop, _spec, _result, _mapping, batch = staged
    rows = _rows_by_file(batch)
    for file, count in batch.read_counts.items():
        lines = Path(file).read_bytes().split(b"\n")
        physical = len(lines) - 1 - (lines[-1] == b"")
        assert count == physical and rows.get(file, set()) == set(range(1, count + 1)), file


def _rows_by_file(batch) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for frame in batch.frames.values():
        for file, row in frame.select("_file", "_row").unique().iter_rows():
            out.setdefault(file, set()).add(row)
    return out


def test_generate_writes_truth(tmp_path):
    truth = generate(tmp_path, 300, 3, seed=2, progress=False)
    assert (tmp_path / "truth.json").exists() and (tmp_path / truth["identifiers"]).exists()
    for site in ("h1", "h2", "h3"):
        assert (tmp_path / site / SITE_FILE).exists()
        planted = truth["defects"][site]
        assert truth["expected_merged_duplicates"][site] == planted["duplicate_row"]
        assert truth["expected_rejects"][site]["malformed_row"] == planted["truncated_line"]
        assert sum(truth["expected_rejects"][site].values()) == sum(planted.values()) - planted["duplicate_row"]


def test_unknown_writer_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="no demo writer for dialect 'dicom'"):
        load_writer("dicom")


def test_generate_all_five_dialects(tmp_path):
    """With five hospitals every writer of WRITERS runs (FHIR and HL7 come from their own modules)."""
    truth = generate(tmp_path, 300, 5, seed=4, progress=False)
    assert sorted(truth["defects"]) == ["h1", "h2", "h3", "h4", "h5"]
    for site, info in truth["sites"].items():
        mapping = load_mapping_file(tmp_path / site / SITE_FILE)
        assert mapping.site_id == site and info["dialect"]
        assert truth["expected_merged_duplicates"][site] == truth["defects"][site].get("duplicate_row", 0)


# ------------------------------------------------------------------------------ hypothesis
CORRUPTIONS = st.lists(
    st.tuples(st.sampled_from(["delete", "comma", "quote", "bytes", "cut", "nul", "cr"]),
              st.integers(0, 10_000), st.integers(0, 10_000)),
    min_size=1, max_size=8)


def _corrupt(data: bytes, ops, seed: int) -> bytes:
    lines = data.split(b"\n")
    rng = random.Random(seed)
    for op, a, b in ops:
        i = 1 + a % max(1, len(lines) - 2)  # data lines only (the header stays intact)
        line = lines[i]
        pos = b % (len(line) + 1)
        if op == "delete":
            line = line[:pos] + line[pos + 1 + rng.randint(0, 5):]
        elif op == "comma":
            line = line[:pos] + b"," + line[pos:]
        elif op == "quote":
            line = line[:pos] + b'"' + line[pos:]
        elif op == "bytes":
            line = line[:pos] + rng.choice([b"\xff", b"\x81", b"\xfe\x30", b"\xc3"]) + line[pos:]
        elif op == "cut":
            line = line[:pos]
        elif op == "nul":
            line = line[:pos] + b"\x00" + line[pos:]
        else:
            line = line[:pos] + b"\r" + line[pos:]
        lines[i] = line
    return b"\n".join(lines)


@pytest.fixture(scope="module")
def small_sites(pop, tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    out = {}
    for index in (0, 1, 2):
        spec, _result, _mapping, _batch = _write_and_stage(pop, index, root)
        out[spec.dialect] = root / spec.site_id
    return out


@pytest.mark.parametrize("dialect,file", [("csv_gb18030", "jiuzhen.csv"), ("csv_gb18030", "huanzhe.csv"),
                                          ("csv_zh", "检验结果.csv"), ("frontsheet", "病案首页.csv")])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=CORRUPTIONS, seed=st.integers(0, 1000))
def test_corrupted_lines_are_never_lost(small_sites, tmp_path_factory, dialect, file, ops, seed):
    source = small_sites[dialect]
    target = tmp_path_factory.mktemp("corrupt")
    (target / SITE_FILE).write_bytes((source / SITE_FILE).read_bytes())
    data = _corrupt((source / file).read_bytes()[:6000], ops, seed)
    (target / file).write_bytes(data)
    mapping = load_mapping_file(target / SITE_FILE)
    batch = get_adapter(mapping.dialect)(target, mapping)
    lines = data.split(b"\n")
    physical = len(lines) - 1 - (lines[-1] == b"")
    key = str(target / file)
    assert batch.read_counts[key] == physical
    assert _rows_by_file(batch).get(key, set()) == set(range(1, physical + 1))


def test_a_background_read_gives_the_same_batch_once_complete(staged, tmp_path):
    """``background=True`` returns at once with every kind pending; waiting for a kind gives that
    kind's frame, and the complete batch equals the one read in the foreground."""
    _pop, spec, _result, mapping, batch = staged
    site_dir = tmp_path / spec.site_id
    shutil.copytree(Path(mapping.source).parent, site_dir)
    mapping = load_mapping_file(site_dir / SITE_FILE)
    later = get_adapter(mapping.dialect, background=True)(site_dir, mapping)
    if mapping.dialect != "csv":  # only the csv dialect reads in the background
        assert not later.pending
        return
    assert set(later.pending) == set(batch.frames) - {"unparsed"} and not later.frames
    assert sorted(later.read_counts) == sorted(str(site_dir / Path(f).name) for f in batch.read_counts)
    assert later.ready("visit").height == batch.frames["visit"].height
    later.complete()
    assert not later.pending and set(later.frames) == set(batch.frames)
    def same(f: pl.DataFrame, kind: str) -> pl.DataFrame:  # malformed lines: in the order kinds finished
        f = f.with_columns(pl.col("_file").str.replace(".*/", ""))
        return f.sort("_file", "_row", maintain_order=True) if kind == "unparsed" else f

    for kind, frame in batch.frames.items():
        assert same(later.frames[kind], kind).equals(same(frame, kind)), kind
    assert sorted(later.read_counts.values()) == sorted(batch.read_counts.values())
