"""Issue 17: suppressed counts smuggled back into an exported file, through the real airlock.

A researcher makes a histogram with the research API on a real release; its three smallest bins
are suppressed (empty in the rendered CSV). They know (or compute) the true counts — 1, 7 and 0 —
and write them into the empty fields before asking for the export. Each of those numbers is also
a published bin number, so a check that accepts any published number anywhere lets them through.
The real :class:`~enclave.io.airlock.exports.Airlock`, with its real sandboxed re-run
(:func:`~enclave.io.airlock.checks.run_checks`), must compare the file by position: the request is
rejected by the system, the problem names the file, rows and column, no true count is quoted in
anything the airlock stored or the requester sees, and nothing reaches the outbox. The honest file
of the same output passes the file check.
"""

from __future__ import annotations

import csv
import io
import json
import re

import duckdb
import polars as pl
import pytest

from enclave.core.audit import events
from enclave.core.settings import load_settings
from enclave.io.airlock import store
from enclave.io.airlock.exports import Airlock
from enclave.io.airlock.outbox import outbox_dir
from enclave.research import histogram, workspace
from tests.airlock_support import REQUESTER, MemoryProjects, project
from tests.unit.test_research_api import make_release

pytestmark = pytest.mark.usefixtures("user_home")

#: rows per bin of ``score`` (bins of 10 on [0, 100]); the first three are below the threshold
COUNTS = [1, 7, 0, 40, 45, 50, 38, 44, 41, 30]
EDGES = list(range(0, 101, 10))


@pytest.fixture(scope="module")
def enclave(tmp_path_factory):
    """A home with project alpha's release, the researcher's histogram and the real airlock."""
    home = tmp_path_factory.mktemp("attack-filecheck") / "home"
    scores = [b * 10 + 5 for b, c in enumerate(COUNTS) for _ in range(c)]
    release = make_release(home, {"scores": pl.DataFrame({
        "person_id": [f"pz{i:04d}q" for i in range(len(scores))], "score": scores})})
    out = histogram(workspace(home).table("scores"), "score", EDGES)
    settings = load_settings(home)
    with Airlock(settings, projects=MemoryProjects(project())) as airlock:
        yield {"settings": settings, "airlock": airlock, "output": out, "release": release}


def true_counts(release) -> list[int]:
    """What the attacker knows: the rows per bin, counted on the release itself."""
    con = duckdb.connect(str(release / "release.duckdb"), read_only=True)
    try:
        per_bin = dict(con.execute("SELECT CAST(floor(score / 10) AS INTEGER), count(*) "
                                   "FROM scores GROUP BY 1").fetchall())
    finally:
        con.close()
    return [per_bin.get(b, 0) for b in range(len(EDGES) - 1)]


def refilled(data: bytes, counts: list[int]) -> tuple[bytes, list[int]]:
    """The file with every withheld count set to its true value, and the rows it filled."""
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    at = rows[0].index("count")
    filled = []
    for r, row in enumerate(rows[1:], 2):
        if row[at] in ("", "withheld"):
            row[at] = str(counts[int(row[0])])
            filled.append(r)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode(), filled


def quotes_nothing(problems: list[str]) -> bool:
    """Every number in the problems (past the file name, leaving out column names in
    parentheses) is a row or column number."""
    text = re.sub(r"\([^)]*\)", "", " ".join(p.split(": ", 1)[-1] for p in problems))
    return all(re.search(rf"(row|column) {n}\b", text)
               for n in re.findall(r"(?<![\w.])\d+(?:\.\d+)?", text))


def test_refilled_suppressed_counts_are_rejected_and_nothing_leaves(enclave):
    airlock, settings, out = enclave["airlock"], enclave["settings"], enclave["output"]
    counts = true_counts(enclave["release"])
    assert counts == COUNTS
    (name, honest), = out.files().items()
    attacked, filled = refilled(honest, counts)
    assert filled == [2, 3, 4] and attacked != honest
    suppressed = [counts[r - 2] for r in filled]
    assert set(suppressed) <= set(range(len(EDGES) - 1))  # each is also a published bin number

    rid = airlock.submit(REQUESTER, out.record, {name: attacked}, "Figure 2 of the paper")["id"]

    seen = airlock.describe(rid, REQUESTER)
    assert seen["status"] == "rejected"
    problems = seen["checks"]["problems"]
    assert f"{name}: a value where the re-run's result is suppressed (must be empty or " \
           "withheld), at row 2 " \
           "column 4 (count), row 3 column 4 (count), row 4 column 4 (count)" in problems
    assert seen["checks"]["detail"] == {}  # no recomputed cell goes back to a refused request
    stored = store.get_request(airlock.con, rid)
    trail = [e["detail"].get("problems") or [] for e in events(airlock.con, f"request:{rid}")]
    for said in (problems, [seen["decision_reason"]], stored["checks"]["problems"],
                 [stored["decision_reason"]], *trail):
        assert quotes_nothing(said), said
    # what the airlock keeps is the re-run's own result, with the suppressed counts withheld
    assert stored["checks"]["detail"]["result_csv"].encode() == honest
    assert all(c["value"] is None for c in stored["checks"]["detail"]["cells"]
               if c["outcome"] == "fail")
    smuggled = set(attacked.decode().splitlines()) - set(honest.decode().splitlines())
    assert len(smuggled) == len(filled)
    for text in (json.dumps(seen), json.dumps(stored["checks"]), stored["decision_reason"]):
        assert not any(line in text for line in smuggled)
    assert not (outbox_dir(settings) / rid).exists()
    assert not outbox_dir(settings).exists() or not any(outbox_dir(settings).iterdir())


def test_the_honest_file_of_the_same_output_passes_the_file_check(enclave):
    airlock, out = enclave["airlock"], enclave["output"]
    rid = airlock.submit(REQUESTER, out.record, out.files(), "Figure 2 of the paper")["id"]
    seen = airlock.describe(rid, REQUESTER)
    assert seen["status"] == "in_review", seen["checks"]["problems"]
    assert seen["checks"]["ok"] and seen["checks"]["problems"] == []
    assert not (outbox_dir(enclave["settings"]) / rid).exists()  # stewards decide first
