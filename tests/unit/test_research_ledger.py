"""The differencing ledger (issue 5): pure logic on sets, the DuckDB join, and the API end to end."""

from __future__ import annotations

import random

import duckdb
import polars as pl
import pytest

from enclave.research import crosstab, ledger_add, ledger_check, pivot_table, workspace
from enclave.outputs.evaluation import POPULATION
from enclave.outputs.ledger import LedgerStore, find_hits, pairs_from_sets
from tests.unit.test_research_api import make_release, pid


@pytest.fixture(autouse=True)
def user_home(tmp_path, monkeypatch):
    h = tmp_path / "user"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    return h


def test_nested_sets_differing_by_fewer_than_the_threshold_are_hits():
    a = {f"p{i}" for i in range(30)}
    old = {("o1", POPULATION): a, ("o2", POPULATION): {f"p{i}" for i in range(15)},
           ("o3", POPULATION): {f"q{i}" for i in range(29)}}
    new = {POPULATION: a - {"p7"}}
    hits = find_hits(pairs_from_sets(new, old), threshold=10)
    assert [(h.kind, h.earlier_output, h.difference) for h in hits] == [
        ("nested populations", "o1", 1)]  # o2 differs by 14, o3 is disjoint
    assert "earlier output o1" in hits[0].message and "1 patient" in hits[0].message
    # a difference of exactly the threshold is allowed; identical sets are no hit
    assert find_hits(pairs_from_sets({POPULATION: a - set(sorted(a)[:10])},
                                     {("o1", POPULATION): a}), 10) == []
    assert find_hits(pairs_from_sets({POPULATION: set(a)}, {("o1", POPULATION): a}), 10) == []
    # overlapping but not nested: subtracting counts isolates nobody
    b = (a - {"p1"}) | {"x"}
    assert find_hits(pairs_from_sets({POPULATION: b}, {("o1", POPULATION): a}), 10) == []


def test_the_sql_join_finds_the_same_pairs_as_sets(tmp_path):
    rnd = random.Random(3)
    people = [f"p{i}" for i in range(60)]
    store = LedgerStore(tmp_path / "ledger.duckdb")
    old: dict = {}
    for o in range(4):
        cells = {POPULATION: set(rnd.sample(people, 40))}
        for c in range(3):
            cells[f'{{"c":{c}}}'] = set(rnd.sample(sorted(cells[POPULATION]), 12))
        members = pl.DataFrame([(k, p) for k, ps in cells.items() for p in ps],
                               schema=["cell_key", "person_id"], orient="row")
        assert store.add("desensitized/alpha", f"o{o}", "crosstab", f"2026-01-0{o + 1}", "alpha/v1",
                         ["c"], members)
        old.update({(f"o{o}", k): v for k, v in cells.items()})
    assert not store.add("desensitized/alpha", "o0", "crosstab", "x", "alpha/v1", [], members)
    # planted: the population of o1 less one patient, a cell of o2 less two
    new = {POPULATION: set(sorted(old[("o1", POPULATION)])[1:]),
           '{"c":0}': set(sorted(old[("o2", '{"c":1}')])[2:]),
           '{"c":1}': set(people[:11])}
    members = pl.DataFrame([(k, p) for k, ps in new.items() for p in ps],
                           schema=["cell_key", "person_id"], orient="row")
    got = store.pairs("desensitized/alpha", "new", members, 10)
    # the store compares only cells whose sizes differ by 1..9 and whose hash-bucket sketches
    # allow nesting; it finds exactly the hits the plain set computation finds
    want = find_hits(pairs_from_sets(new, old), 10)
    assert [(h.earlier_output, h.new_cell, h.earlier_cell, h.difference) for h in want] == [
        ("o1", POPULATION, POPULATION, 1), ("o2", '{"c":0}', '{"c":1}', 2)]
    assert find_hits(got, 10) == want
    assert got.height < pairs_from_sets(new, old).height  # most pairs never reach the join
    # another scope (other project or tier) is never compared
    assert store.pairs("synthetic/alpha", "new", members, 10).height == 0


@pytest.fixture
def ws(tmp_path):
    rows = []
    for i in range(60):
        rows.append((pid(i), ["N", "S", "E"][i % 3], "F" if i % 2 else "M"))
    # region W: 12 patients, only 2 of them F
    rows += [(pid(100 + i), "W", "F" if i < 2 else "M") for i in range(12)]
    person = pl.DataFrame(rows, schema=["person_id", "region", "sex"], orient="row")
    make_release(tmp_path / "home", {"person": person})
    return workspace(tmp_path / "home")


def test_two_crosstabs_whose_populations_differ_by_one_patient_are_flagged(ws, user_home):
    t = ws.table("person")
    first = crosstab(t, "region", "sex")
    assert first.ledger_hits == []
    second = crosstab(t.filter(t.person_id != pid(7)), "region", "sex")
    nested = [h for h in second.ledger_hits if h["kind"] == "nested populations"]
    assert nested and nested[0]["earlier_output"] == first.output_id
    assert nested[0]["difference"] == 1
    assert second.status in ("review", "fail")
    assert any(first.output_id in r for r in second.reasons)
    # a cohort 20 patients smaller is not a differencing risk
    third = crosstab(t.filter(t.region != "N"), "region", "sex")
    assert not [h for h in third.ledger_hits if h["kind"] == "nested populations"]
    # the local ledger is the user's own file; its pseudonyms never reach a record
    path = user_home / ".enclave" / "ledger.duckdb"
    con = duckdb.connect(str(path), read_only=True)
    try:
        n = con.execute("SELECT count(DISTINCT output_id) FROM members").fetchall()[0][0]
    finally:
        con.close()
    assert n == 3
    # (the researcher's own filter names the pseudonym in the SQL; nothing else does)
    assert pid(7) not in str({k: v for k, v in second.record.items() if k != "sql"})


def test_a_margin_minus_a_cell_is_flagged(ws):
    """Region W has 12 patients, 2 of them F. Within one crosstab, secondary suppression hides
    (W, F) and its complement; but a count of W (12) and, later, a count of W among men (10)
    subtract to the 2 women: the second output is flagged, naming the first."""
    t = ws.table("person")
    cells = crosstab(t, "region", "sex", aggfunc="patients")
    wf = next(c for c in cells.record["cells"] if c["cell"] == {"region": "W", "sex": "F"})
    assert wf["outcome"] == "fail"
    margins = pivot_table(t, "region", aggfunc="patients")
    men = pivot_table(t.filter(t.sex == "M"), "region", aggfunc="patients")
    w_men = next(c for c in men.record["cells"] if c["cell"] == {"region": "W"})
    assert w_men["outcome"] == "pass" and w_men["value"] == 10
    diff = [h for h in men.ledger_hits if h["kind"] == "cell difference"]
    assert any(h["earlier_output"] == margins.output_id and h["difference"] == 2 and
               h["new_cell"] == h["earlier_cell"] == '{"region":"W"}' for h in diff), diff
    assert men.status == "review"


def test_airlock_api_recomputes_members_from_the_record(ws, tmp_path):
    """``ledger_check`` / ``ledger_add`` take records only (no pseudonyms in them)."""
    t = ws.table("person")
    r1 = crosstab(t, "region", "sex").record
    r2 = crosstab(t.filter(t.person_id != pid(3)), "region", "sex").record
    path = tmp_path / "airlock" / "alpha.duckdb"
    assert ledger_check(path, r1, settings=ws.settings) == []
    assert ledger_add(path, r1, settings=ws.settings) is True
    assert ledger_add(path, r1, settings=ws.settings) is False  # idempotent
    hits = ledger_check(path, r2, settings=ws.settings)
    assert any(h["kind"] == "nested populations" and h["earlier_output"] == r1["output_id"]
               for h in hits)
    assert all(pid(i) not in str(h) for h in hits for i in range(200) if i != 3)
