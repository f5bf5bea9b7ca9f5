"""Issue 21: researcher code lists abused, in the kernel and in the airlock's re-check.

A code list is data the record carries (name, column ``code``, type, codes) and the sandbox
creates before it runs the record's SQL. The attacker (a member of project alpha) makes an honest
output on a code list, then rewrites its record — and re-hashes it with the public function — to
make a code list stand in for a release table (of another project, or of their own release, to
feed it invented rows), to read a table no code list declares, to smuggle a file path in where
codes go, or to take patients from a code list. Each attack is refused with a reason that names
it, and nothing is read: the record refusals come before the sandbox starts (no sandbox identity
in the answer), the others before the SQL runs (no cells, no result), and no byte of a file the
attack names appears in the answer. One forged record also goes through the real airlock.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest

from enclave.core.errors import BadInputError
from enclave.core.settings import load_settings
from enclave.io.airlock.exports import Airlock
from enclave.io.airlock.outbox import outbox_dir
from enclave.io.outputs.recheck import recheck
from enclave.research import crosstab, record_hash, workspace
from tests.airlock_support import REQUESTER, MemoryProjects, project
from tests.unit.test_research_api import make_release, pid

pytestmark = pytest.mark.usefixtures("user_home")

N = 120
SECRET = "zq-secret-file-content-7781"


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """Project alpha (person, condition_occurrence, and a non-OMOP table ``cohort``) and
    project beta (person, measurement) under one home; alpha's honest output on a code list."""
    root = tmp_path_factory.mktemp("attack-codelists")
    home = root / "home"
    people = pl.DataFrame({"person_id": [pid(i) for i in range(N)],
                           "sex": ["FM"[i % 2] for i in range(N)]})
    make_release(home, {"person": people, "cohort": people, "condition_occurrence": pl.DataFrame({
        "person_id": [pid(i) for i in range(N)],
        "condition_source_value": [["E10", "E11", "I10"][i % 3] for i in range(N)]})})
    make_release(home, {"person": people.with_columns(
        person_id=pl.col("person_id").str.replace("pz", "pb")), "measurement": pl.DataFrame({
            "person_id": [pid(i).replace("pz", "pb") for i in range(N)],
            "value": [float(i) for i in range(N)]})}, project="beta")
    # a short path (a code is at most 64 characters): the attacks below hand it over as a code
    secret = Path(tempfile.mkdtemp(prefix="cl-", dir="/tmp")) / "codes.csv"
    secret.write_text(f"code\n{SECRET}\n")
    ws = workspace(home, project="alpha")
    dm = ws.codelist("diabetes", ["E10", "E11"])
    c = ws.table("condition_occurrence")
    honest = crosstab(c.filter(c.condition_source_value.isin(dm.code)).join(
        ws.table("person"), "person_id"), "condition_source_value", "sex")
    yield {"ws": ws, "settings": load_settings(home), "honest": honest, "secret": secret}
    shutil.rmtree(secret.parent, ignore_errors=True)


def forged(bed, *, sql: str | None = None, codelists=None, **fields) -> dict:
    rec = copy.deepcopy(bed["honest"].record)
    if sql is not None:
        rec["sql"] = sql
    if codelists is not None:
        rec["codelists"] = codelists
    rec.update(fields)
    rec["record_sha256"] = record_hash(rec)  # the public function: the hash is no protection
    return rec


def entry(**changes) -> dict:
    return {"name": "diabetes", "column": "code", "type": "VARCHAR",
            "values": ["E10", "E11"]} | changes


def refused(bed, rec: dict, *needles: str, ran: bool = False) -> dict:
    """The re-check refused ``rec`` naming the problem; nothing was computed or read."""
    res = recheck(rec, bed["settings"])
    assert res["verified"] is False and res["status"] == "fail", res
    text = " ".join(res["problems"])
    assert all(n.lower() in text.lower() for n in needles), text
    assert res["cells"] == [] and "result_csv" not in res
    if not ran:
        assert "sandbox" not in res, "the sandbox started for a record refused at the door"
    blob = json.dumps(res, default=str)
    assert SECRET not in blob and "root:x:0:0" not in blob
    assert not any(pid(i) in blob for i in range(N))
    return res


def test_the_honest_output_reproduces(bed):
    res = recheck(bed["honest"].record, bed["settings"])
    assert res["verified"], res["problems"]


# --- a code list standing in for a release table -------------------------------------------------

def test_a_code_list_named_like_another_projects_release_table(bed):
    ws = bed["ws"]
    with pytest.raises(BadInputError, match="'measurement' is the name of a release table"):
        ws.codelist("measurement", ["1"])
    # the record forged to declare it, and read it (beta's table; not in alpha's release)
    refused(bed, forged(bed, sql="SELECT person_id, sex AS condition_source_value, sex FROM "
                                 "person WHERE person_id IN (SELECT code FROM measurement)",
                        codelists=[entry(name="measurement")]),
            "the record's code list #1", "'measurement' is the name of a release table")


def test_a_code_list_named_like_a_table_of_its_own_release(bed):
    """``cohort`` is no OMOP name, so only the release itself can tell: the sandbox refuses to
    let invented rows stand in for it (a temporary table would be read before the release's)."""
    with pytest.raises(BadInputError, match="'cohort' is a table of the release"):
        bed["ws"].codelist("cohort", ["x"])
    res = refused(bed, forged(bed, sql="SELECT person_id, sex AS condition_source_value, sex "
                                       "FROM cohort", codelists=[entry(name="cohort")]),
                  "'cohort' is a table of the release", ran=True)
    assert res["sandbox"]["uid"] == 65534  # refused inside, before the SQL ran


def test_sql_that_reads_a_table_no_code_list_declares(bed):
    # another project's table, named in the SQL only
    refused(bed, forged(bed, sql="SELECT m.person_id, 'x' AS condition_source_value, 'F' AS sex "
                                 "FROM measurement AS m"),
            "reads table 'measurement', which is not a table of the record's release", ran=True)
    # a second code list the record does not declare
    refused(bed, forged(bed, sql=bed["honest"].record["sql"].replace('"diabetes"', '"asthma"')),
            "reads table 'asthma'", "nor one of the record's code lists", ran=True)
    # a declared code list read under a schema (the catalog of temporary tables)
    refused(bed, forged(bed, sql=bed["honest"].record["sql"].replace(
        'FROM "diabetes"', 'FROM temp.main."diabetes"')), "with a catalog or schema")


def test_patients_never_come_from_a_code_list(bed):
    ws = bed["ws"]
    ids = ws.codelist("ids", [pid(i) for i in range(30)])
    with pytest.raises(BadInputError, match="not from a release table"):
        crosstab(ids.mutate(person_id=ids.code, sex=ids.code), "sex", "sex")
    refused(bed, forged(bed, sql="SELECT d.code AS person_id, p.sex AS condition_source_value, "
                                 "p.sex FROM diabetes AS d, person AS p"),
            "not from a release table", ran=True)


# --- a file path smuggled in where a code list goes ----------------------------------------------

@pytest.mark.parametrize(("name", "lists", "needle"), [
    ("extra_path_field", lambda s: [entry(path=str(s))], "has field(s) 'path'"),
    ("source_field", lambda s: [entry(source=f"read_csv('{s}')")], "has field(s) 'source'"),
    ("values_are_a_path", lambda s: [entry(values=str(s))], "values are not a list"),
    ("name_is_a_path", lambda s: [entry(name=str(s))], "lower-case identifier"),
    ("name_is_a_file", lambda s: [entry(name="codes.csv")], "lower-case identifier"),
    ("name_is_a_table_function", lambda s: [entry(name=f"read_csv('{s}')")],
     "lower-case identifier"),
    ("type_is_sql", lambda s: [entry(type=f"VARCHAR); ATTACH '{s}' AS x; --")],
     "declares a type other than VARCHAR or BIGINT"),
    ("column_is_sql", lambda s: [entry(column=f"code FROM read_text('{s}') --")],
     "declares a column other than 'code'"),
    ("values_are_objects", lambda s: [entry(values=[{"file": str(s)}])], "code #1 is not text"),
    ("not_a_list", lambda s: {"diabetes": str(s)}, "not a list of code lists"),
    ("twice", lambda s: [entry(), entry()], "declares the code list 'diabetes' twice"),
    ("repeated_codes", lambda s: [entry(values=["E10", "E10"])], "repeats codes"),
    ("type_mismatch", lambda s: [entry(type="BIGINT")], "code #1 is not an integer"),
    ("booleans", lambda s: [entry(type="BIGINT", values=[True])], "code #1 is not an integer"),
])
def test_a_code_list_record_that_smuggles_a_file(bed, name, lists, needle):
    refused(bed, forged(bed, codelists=lists(bed["secret"])), needle)


def test_a_code_list_over_the_cap_is_refused(bed, tmp_path):
    from dataclasses import replace

    small = replace(bed["settings"], research=replace(bed["settings"].research,
                                                      codelist_max_codes=1))
    res = recheck(bed["honest"].record, small)
    assert not res["verified"] and "sandbox" not in res
    assert "holds 2 codes, more than the 1 allowed (research.codelist_max_codes)" in \
        res["problems"][0]


def test_a_code_list_path_is_text_never_a_file(bed):
    """A path given as a code is a code: the table holds the text, not the file's content."""
    ws = bed["ws"]
    paths = ws.codelist("paths", [str(bed["secret"]), "/etc/passwd"])
    assert sorted(paths.code.execute()) == sorted([str(bed["secret"]), "/etc/passwd"])


def test_the_real_airlock_rejects_a_forged_code_list_and_nothing_leaves(bed):
    settings = bed["settings"]
    rec = forged(bed, codelists=[entry(path=str(bed["secret"]))])
    with Airlock(settings, projects=MemoryProjects(project())) as airlock:
        rid = airlock.submit(REQUESTER, rec, bed["honest"].files(), "an attack")["id"]
        seen = airlock.describe(rid, REQUESTER)
    assert seen["status"] == "rejected" and seen["checks"]["ok"] is False
    assert any("has field(s) 'path'" in p for p in seen["checks"]["problems"])
    assert seen["checks"]["detail"] == {}
    assert SECRET not in json.dumps(seen, default=str)
    assert not outbox_dir(settings).exists() or not any(outbox_dir(settings).iterdir())
