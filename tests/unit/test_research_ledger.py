"""The differencing ledger (issue 5): pure logic on sets, the DuckDB join, and the API end to end."""

from __future__ import annotations

import random

import duckdb
import polars as pl
import pytest

from enclave.io.outputs.cells import POPULATION
from enclave.io.outputs.ledger import LedgerStore, find_hits, pairs_from_sets
from enclave.research import crosstab, ledger_add, ledger_check, pivot_table, workspace
from tests.conftest import researcher_home
from tests.unit.test_research_api import make_release, pid


@pytest.fixture(autouse=True)
def user_home(tmp_path, monkeypatch):
    return researcher_home(tmp_path, monkeypatch)


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
    # the local ledger is the user's own file: profiles and recipes of all three outputs, no
    # patient set (those are recomputed when a pair survives the profiles)
    path = user_home / ".enclave" / "ledger.duckdb"
    from enclave.io.outputs.ledger import release

    release()  # the kernel keeps its ledger attached for a few seconds after a burst
    con = duckdb.connect(str(path), read_only=True)
    try:
        n = con.execute("SELECT count(DISTINCT output_id) FROM cells").fetchall()[0][0]
        stored = con.execute("SELECT count(*) FROM members").fetchall()[0][0]
    finally:
        con.close()
    assert (n, stored) == (3, 0)
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


def test_the_profile_where_the_data_are_equals_the_profile_of_the_exact_sets(ws):
    """The kernel's profile (one aggregation in the release) and the airlock's (from the
    fetched member sets) are the same numbers, rows included."""
    from enclave.io.outputs.membership import members_profile, normalize_members

    t = ws.table("person")
    out = crosstab(t, "region", "sex")
    con = ws.backend().con
    from enclave.io.outputs.evaluation import evaluate
    from enclave.logic.disclosure import ACRO

    ev = evaluate(con, out.record["sql"], out.record["spec"], ACRO)
    fast = ev.membership.profile().sort("cell_key")
    mem = duckdb.connect()
    normalize_members(mem, ev.members(), "_m")
    exact = members_profile(mem, "_m").sort("cell_key")
    assert fast.equals(exact)
    assert fast.filter(pl.col("cell_key") == POPULATION)["rows"][0] == 72
    # unpublished cells (W, F: 2 patients) are not profiled; the population is
    assert '{"region":"W","sex":"F"}' not in fast["cell_key"].to_list()


def test_row_multisets_nested_by_a_few_rows_are_hits(tmp_path):
    """Same patients, one row fewer: no patient difference, a row difference of 1."""
    store = LedgerStore(tmp_path / "ledger.duckdb")
    people = [f"p{i}" for i in range(30)]
    old = pl.DataFrame({"cell_key": [POPULATION] * 30, "person_id": people,
                        "rows": [3] * 30})
    assert store.add("s", "o1", "histogram", "t1", "a/v1", ["bin"], old)
    new = old.with_columns(pl.when(pl.col("person_id") == "p4").then(2).otherwise(3)
                           .alias("rows"))
    hits = find_hits(store.pairs("s", "n1", new, 10), 10)
    assert [(h.kind, h.unit, h.difference, h.earlier_output) for h in hits] == [
        ("row difference", "rows", 1, "o1")]
    assert "1 row(s)" in hits[0].message
    # one row fewer of one patient and one more of another: not nested, no hit
    moved = new.with_columns(pl.when(pl.col("person_id") == "p5").then(4).otherwise("rows")
                             .alias("rows"))
    assert find_hits(store.pairs("s", "n2", moved, 10), 10) == []
    # outputs that publish no row counts are compared on patients only
    no_rows = old.drop("rows")
    assert find_hits(store.pairs("s", "n3", no_rows, 10), 10) == []


def test_an_old_ledger_file_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE outputs (output_id VARCHAR PRIMARY KEY, scope VARCHAR, kind VARCHAR,"
                " created_at VARCHAR, release VARCHAR, groups VARCHAR)").fetchall()
    con.execute("CREATE TABLE cells (output_id VARCHAR, cell_key VARCHAR, patients BIGINT, "
                "sketch INTEGER[])").fetchall()
    con.execute("CREATE TABLE members (output_id VARCHAR, cell_key VARCHAR, person UBIGINT)"
                ).fetchall()
    con.close()
    members = pl.DataFrame({"cell_key": [POPULATION] * 20, "person_id": [f"p{i}" for i in range(20)]})
    # an output recorded by the old code: its cell has a sketch and no partial sums
    store = LedgerStore(tmp_path / "new.duckdb")
    store.add("s", "o0", "crosstab", "t", "a/v1", [], members)
    con = duckdb.connect(str(path))
    con.execute(f"ATTACH '{tmp_path / 'new.duckdb'}' AS n").fetchall()
    con.execute("INSERT INTO outputs SELECT output_id, scope, kind, created_at, release, groups "
                "FROM n.outputs").fetchall()
    con.execute("INSERT INTO cells SELECT output_id, cell_key, patients, sketch FROM n.cells"
                ).fetchall()
    con.execute("INSERT INTO members SELECT output_id, cell_key, person FROM n.members").fetchall()
    con.close()
    store = LedgerStore(path)
    assert [h.earlier_output for h in find_hits(store.pairs("s", "x", members.head(18), 10), 10)
            ] == ["o0"]
    assert store.add("s", "o1", "crosstab", "t", "a/v1", [], members, project="alpha")
    hits = find_hits(store.pairs("s", "o2", members.head(19), 10), 10)
    assert [h.difference for h in hits] == [1, 1]
    assert store.outputs("s")["project"].to_list() == [None, "alpha"]


def test_the_requester_sees_no_other_project_in_a_hit():
    from enclave.io.airlock.exports import requester_checks
    from enclave.io.airlock.workflow import RequestStatus
    from enclave.io.outputs.ledger import Hit

    theirs = Hit("nested populations", "o-alpha-1", POPULATION, POPULATION, 1,
                 earlier_project="alpha").as_dict()
    own = Hit("cell difference", "o-beta-1", '{"sex":"F"}', '{"sex":"F"}', 2,
              earlier_project="beta").as_dict()
    seen = requester_checks({"ok": True, "status": "pass", "problems": [], "rechecked": True,
                             "ledger_hits": [theirs, own], "detail": {}},
                            RequestStatus.IN_REVIEW, "beta")
    redacted, kept = seen["ledger_hits"]
    assert "alpha" not in str(redacted) and "o-alpha-1" not in str(redacted)
    assert redacted["kind"] == "differencing" and "stewards" in redacted["message"]
    assert kept == own  # an earlier output of the requester's own project is named


def test_survival_curves_whose_at_risk_counts_differ_by_a_few_patients_are_hits(tmp_path):
    """Intervals of 30 and 31 days: at day 60 (resp. 62) the patients at risk differ by those
    whose follow-up ended in (30, 31] days — here 3 patients."""
    from enclave.research import survival

    days = [5 + (i * 7) % 200 for i in range(150)] + [31, 31, 31]
    person = pl.DataFrame({"person_id": [pid(i) for i in range(len(days))], "days": days,
                           "event": [False] * len(days)})  # no events: every step passes
    person = person.filter(~pl.col("days").is_between(30.5, 31.5) | (pl.col("person_id") >= pid(150)))
    make_release(tmp_path / "home", {"person": person})
    t = workspace(tmp_path / "home").table("person")
    first = survival(t, "days", "event", interval=30)
    second = survival(t, "days", "event", interval=31)
    hits = [h for h in second.ledger_hits if h["earlier_output"] == first.output_id
            and h["kind"] == "cell difference"]
    assert any(h["difference"] == 3 and '"time":62.0' in h["new_cell"] and
               '"time":60.0' in h["earlier_cell"] for h in hits), second.ledger_hits
