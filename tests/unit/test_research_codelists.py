"""Issue 21: a researcher's own code lists beside a release, and ibis's ``create_table`` under
sqlglot 30.

``ws.codelist(name, codes)`` makes a table ``name`` (one column, ``code``) that ibis expressions
and SQL join to release tables. An output that reads it carries its name and codes in its record;
the airlock's re-check creates it from the record in its sandbox and reproduces the output. The
releases are tiny real DuckDB files written by the test; patients carry pseudonyms that a record
must never hold.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import replace

import pandas as pd
import polars as pl
import pytest

from enclave.core.errors import BadInputError
from enclave.io.airlock.exports import Airlock
from enclave.io.ibis_backend import ReleaseBackend
from enclave.io.outputs.codelists import CodeListError
from enclave.io.outputs.sql import UnsafeQueryError
from enclave.io.projects import SqlProjectStore
from enclave.research import crosstab, export, pivot_table, recheck, workspace
from tests.airlock_support import project
from tests.conftest import researcher_home
from tests.unit.test_research_api import make_release, pid

DIABETES = ["E10", "E11", "E13"]
OTHER = ["I10", "J45"]
N = 240


def conditions() -> pl.DataFrame:
    """Every patient has one or two conditions; patients 0-2 have only E14."""
    rows = []
    for i in range(N):
        if i < 3:
            rows.append((pid(i), "E14"))
            continue
        rows.append((pid(i), (DIABETES + OTHER)[i % 5]))
        if i % 3 == 0:
            rows.append((pid(i), OTHER[i % 2]))
    return pl.DataFrame(rows, schema=["person_id", "condition_source_value"], orient="row")


def persons() -> pl.DataFrame:
    return pl.DataFrame({"person_id": [pid(i) for i in range(N)],
                         "sex": ["FM"[i % 2] for i in range(N)],
                         "region": ["NSEW"[(i // 2) % 4] for i in range(N)]})


@pytest.fixture(autouse=True)
def user_home(tmp_path, monkeypatch):
    # without ENCLAVE_AIRLOCK_URL: the airlock in process
    return researcher_home(tmp_path, monkeypatch, "ENCLAVE_HOME", "ENCLAVE_AIRLOCK_URL")


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    make_release(home, {"person": persons(), "condition_occurrence": conditions(),
                        "cohort": persons().select("person_id", "sex")})
    return home


@pytest.fixture
def ws(home):
    return workspace(home)


# --- ibis create_table (ibis 12.0 + sqlglot 30 emitted a DROP without a name) ----------------


def test_create_table_takes_an_in_memory_frame_and_replaces_and_drops_tables(ws):
    con = ReleaseBackend().connect()  # in memory, writable
    assert con.create_table("codes", pd.DataFrame({"code": DIABETES})).count().execute() == 3
    con.create_table("codes", pl.DataFrame({"code": OTHER}), overwrite=True)
    assert sorted(con.table("codes").code.execute()) == OTHER
    con.drop_table("codes")
    assert "codes" not in con.list_tables()
    # on a release (read-only), a temporary table of one's own still works …
    mine = ws.backend().create_table("mine", pd.DataFrame({"code": DIABETES}), temp=True)
    assert mine.count().execute() == 3
    mine = ws.backend().create_table("mine", pd.DataFrame({"code": OTHER}), temp=True,
                                     overwrite=True)
    assert mine.count().execute() == 2
    # … but no record carries it, so no output may read it: code lists go through ws.codelist
    c = ws.table("condition_occurrence")
    with pytest.raises(UnsafeQueryError, match="only the release's own tables"):
        crosstab(c.filter(c.condition_source_value.isin(mine.code)), "condition_source_value",
                 "condition_source_value")
    with pytest.raises(UnsafeQueryError, match="reads table 'mine', which is not a table of the "
                                               "record's release"):
        crosstab(ws.backend().sql("SELECT * FROM condition_occurrence WHERE "
                                  "condition_source_value IN (SELECT code FROM mine)"),
                 "condition_source_value", "condition_source_value")


# --- ws.codelist ------------------------------------------------------------------------------


def test_a_code_list_is_a_table_to_join_in_ibis_and_in_sql(ws):
    dm = ws.codelist("diabetes", DIABETES + ["E11"])  # a repeated code is kept once
    assert dm.columns == ("code",) and dm.count().execute() == 3
    assert dm.schema()["code"].is_string()
    c, p = ws.table("condition_occurrence"), ws.table("person")
    via_ibis = crosstab(c.filter(c.condition_source_value.isin(dm.code)).join(p, "person_id"),
                        "condition_source_value", "sex", aggfunc="patients")
    via_sql = crosstab(ws.backend().sql(
        "SELECT c.person_id, c.condition_source_value, p.sex FROM condition_occurrence AS c "
        "JOIN diabetes AS d ON c.condition_source_value = d.code "
        "JOIN person AS p ON p.person_id = c.person_id"),
        "condition_source_value", "sex", aggfunc="patients")
    for out in (via_ibis, via_sql):
        assert out.record["codelists"] == [
            {"name": "diabetes", "column": "code", "type": "VARCHAR", "values": DIABETES}]
        assert sorted({c["cell"]["condition_source_value"] for c in out.record["cells"]}) == \
            DIABETES
    assert via_ibis.record["cells"] == via_sql.record["cells"]
    # integer codes make an integer column; an output that reads no code list carries none
    ids = ws.codelist("ids", [3, 4, 5])
    assert ids.schema()["code"].is_integer()
    plain = crosstab(ws.table("person"), "region", "sex")
    assert plain.record["codelists"] == []


def test_an_output_on_a_code_list_is_exported_and_reproduced_by_the_airlock(ws, home):
    """The issue's acceptance: join a code list to a release table, export the output, and the
    airlock's own sandboxed re-check reproduces it from the record."""
    me = getpass.getuser()
    SqlProjectStore(ws.settings).create(replace(project(), members=(me,),
                                                principal_investigator=me))
    dm = ws.codelist("diabetes", DIABETES)
    c, p = ws.table("condition_occurrence"), ws.table("person")
    cases = c.filter(c.condition_source_value.isin(dm.code)).join(p, "person_id")
    out = pivot_table(cases, "region", aggfunc="patients")
    assert out.status == "pass", out.reasons
    record_text = json.dumps(out.record)
    assert not any(pid(i) in record_text for i in range(N))  # no pseudonym in the record

    answer = export(out, justification="Diabetes cases by region")
    assert answer["status"] == "in_review", answer
    assert answer["checks"]["ok"] and answer["checks"]["problems"] == []
    with Airlock(ws.settings) as airlock:
        stored = airlock.describe(answer["id"], getpass.getuser())
    assert stored["record"]["codelists"] == out.record["codelists"]
    # the same re-check, step by step: in the sandbox, every cell as recorded
    res = recheck(out.record, settings=ws.settings)
    assert res["verified"] and res["problems"] == [], res["problems"]
    assert res["sandbox"]["uid"] == 65534 and res["cells"] == out.record["cells"]
    # the record carries its own codes: replacing the kernel's list changes nothing for it
    ws.codelist("diabetes", OTHER)
    assert recheck(out.record, settings=ws.settings)["verified"]
    again = pivot_table(ws.table("condition_occurrence").filter(
        ws.table("condition_occurrence").condition_source_value.isin(dm.code)).join(
        ws.table("person"), "person_id"), "region", aggfunc="patients")
    assert again.record["codelists"][0]["values"] == OTHER
    assert again.record["cells"] != out.record["cells"]


def test_the_local_ledger_recomputes_an_earlier_output_with_its_own_code_list(ws):
    """Two outputs through the same name, whose lists differ by E14 (patients 0-2 only): the
    populations differ by three patients, which the local ledger flags — only if it recomputes
    the earlier output with the codes its record carries, not the name's current codes."""
    def cases(codes):
        dm = ws.codelist("dm", codes)
        c = ws.table("condition_occurrence")
        return c.filter(c.condition_source_value.isin(dm.code)).join(ws.table("person"),
                                                                     "person_id")

    first = crosstab(cases(DIABETES + ["E14"]), "region", "sex", aggfunc="patients")
    assert first.ledger_hits == []
    second = crosstab(cases(DIABETES), "region", "sex", aggfunc="patients")
    assert not any("could not be consulted" in r for r in second.reasons), second.reasons
    assert any(h["earlier_output"] == first.output_id and h["difference"] == 3
               for h in second.ledger_hits), second.ledger_hits
    assert second.status == "review"


@pytest.mark.parametrize(("name", "codes", "message"), [
    ("person", DIABETES, "'person' is the name of a release table"),
    ("measurement", DIABETES, "'measurement' is the name of a release table"),  # not in this one
    ("cohort", DIABETES, "'cohort' is a table of the release"),
    ("Diabetes", DIABETES, "lower-case identifier"),
    ("1dm", DIABETES, "lower-case identifier"),
    ("_dm", DIABETES, "lower-case identifier"),
    ("dm.csv", DIABETES, "lower-case identifier"),
    ("/tmp/codes", DIABETES, "lower-case identifier"),
    ("ibis_pandas_memtable_x", DIABETES, "reserved"),
    ("duckdb_settings", DIABETES, "reserved"),
    ("information_schema", DIABETES, "reserved"),
    ("dm", [], "holds no codes"),
    ("dm", ["E10", 11], "mixes text and integer codes"),
    ("dm", [1.5], "is a float"),
    ("dm", ["E10", None], "code #2 is a missing value"),
    ("dm", [True], "is a boolean"),
    ("dm", "E10", "give the codes as a list"),
    ("dm", "/etc/passwd", "give the codes as a list"),
    ("dm", pd.DataFrame({"code": DIABETES}), "give the codes as a list"),
    ("dm", {"code": DIABETES}, "give the codes as a list"),
    ("dm", ["E10", ""], "code #2 is empty or longer than 64"),
    ("dm", ["E10", "x" * 65], "code #2 is empty or longer than 64"),
    ("dm", ["E1\n0"], "control character"),
    ("dm", [1 << 63], "outside the 64-bit integer range"),
])
def test_names_and_codes_are_checked(ws, name, codes, message):
    with pytest.raises(CodeListError, match=message):
        ws.codelist(name, codes)
    assert isinstance(CodeListError("x"), BadInputError)


def test_a_code_list_is_capped(tmp_path):
    home = tmp_path / "home"
    make_release(home, {"person": persons()})
    (home / "settings.toml").write_text("[research]\ncodelist_max_codes = 4\n")
    ws = workspace(home)
    assert ws.codelist("ok", ["a", "b", "c", "d", "a"]).count().execute() == 4
    with pytest.raises(CodeListError, match=r"holds 5 codes, more than the 4 allowed "
                                            r"\(research.codelist_max_codes\)"):
        ws.codelist("big", ["a", "b", "c", "d", "e"])
    # numpy and pandas scalars are plain codes
    assert ws.codelist("series", pd.Series([10, 20, 20])).count().execute() == 2
