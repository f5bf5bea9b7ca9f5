"""A submitted file may hold only its output's published cells, each at its own key: every output
kind of the researcher API passes as rendered (also reordered, cut down to some columns, or with
numbers written differently), and any value that is altered, moved, swapped or filled back in
where the re-run suppressed it is caught, without the messages quoting a field."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest

from enclave.core.settings import load_settings
from enclave.io.airlock.checks import CheckOutcome
from enclave.io.airlock.filecheck import NO_RESULT, unproduced_fields
from enclave.io.airlock.workflow import CheckStatus
from enclave.io.outputs.layout import result_keys
from enclave.research import (
    crosstab,
    histogram,
    logit,
    ols,
    pivot_table,
    recheck,
    survival,
    workspace,
)
from tests.airlock_support import REQUESTER, make_airlock, record
from tests.unit.test_research_api import make_release

#: rows per bin of ``score`` (bins of 10 on [0, 100]): the first three are suppressed
SCORE_COUNTS = [1, 7, 0, 40, 45, 50, 38, 44, 41, 30]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Every kind of output on a small real release, with the airlock's re-run of each."""
    root = tmp_path_factory.mktemp("filecheck")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(root))
        home = root / "home"
        rng = np.random.default_rng(11)
        n = 400
        x = rng.normal(0, 1, n)
        age = rng.integers(20, 90, n)
        df = pl.DataFrame({
            "person_id": [f"pz{i:04d}q" for i in range(n)], "age": age, "x": x,
            "y": 2.0 + 0.5 * x + 0.03 * age + rng.normal(0, 1, n),
            "z": (rng.random(n) < 1 / (1 + np.exp(1 - 0.8 * x))).astype(int),
            "sex": rng.choice(["F", "M"], n), "grp": ["tiny"] * 3 + ["big"] * (n - 3),
            "days": np.ceil(rng.exponential(200, n)).astype(int),
            "event": (rng.random(n) < 0.7).astype(int)})
        scores = [b * 10 + 5 for b, c in enumerate(SCORE_COUNTS) for _ in range(c)]
        sc = pl.DataFrame({"person_id": [f"pz{i:04d}q" for i in range(len(scores))],
                           "score": scores})
        make_release(home, {"cohort": df, "scores": sc})
        ws = workspace(home)
        t = ws.table("cohort")
        made = {"crosstab": crosstab(t, "sex", "z"), "suppressed": crosstab(t, "grp", "sex"),
                "pivot": pivot_table(t, "sex", "y", "mean"), "histogram": histogram(t, "age", 5),
                "ols": ols("y ~ x + age", t), "logit": logit("z ~ x", t),
                "survival": survival(t, "days", "event", "sex"),
                "pivot2": pivot_table(t, ["sex", "z"], "y", ["mean", "count"]),
                "small_bins": histogram(ws.table("scores"), "score", list(range(0, 101, 10)))}
        settings = load_settings(home)
        yield {k: (o.files(), recheck(o.record, settings=settings)) for k, o in made.items()}


KINDS = ["crosstab", "suppressed", "pivot", "histogram", "ols", "logit", "survival", "pivot2",
         "small_bins"]


def check(outputs, kind: str, text: str) -> list[str]:
    """The file check of ``text`` as the file of output ``kind``."""
    files, rerun = outputs[kind]
    return unproduced_fields({next(iter(files)): text.encode()}, rerun["result_csv"],
                             rerun["result_keys"])


def rendered(outputs, kind: str) -> tuple[list[str], list[list[str]]]:
    files, _ = outputs[kind]
    head, *rows = next(iter(files.values())).decode().splitlines()
    return head.split(","), [r.split(",") for r in rows]


def csv_text(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(",".join(r) for r in [head, *rows]) + "\n"


def quotes_nothing(problems: list[str]) -> bool:
    """Every number in the problems (past the file name, leaving out the result's column names
    in parentheses) is a row or column number."""
    text = re.sub(r"\([^)]*\)", "", " ".join(p.split(": ", 1)[1] for p in problems))
    return all(re.search(rf"(row|column) {n}\b", text)
               for n in re.findall(r"(?<![\w.])\d+(?:\.\d+)?", text))


@pytest.mark.parametrize("kind", KINDS)
def test_rendered_files_of_every_kind_are_backed_by_the_rerun(outputs, kind):
    files, rerun = outputs[kind]
    assert rerun["verified"], rerun["problems"]
    assert unproduced_fields(files, rerun["result_csv"], rerun["result_keys"]) == []


def test_the_result_keys_come_from_the_kind():
    assert result_keys({"kind": "crosstab", "groups": ["sex", "z"]}) == ["sex"]
    assert result_keys({"kind": "pivot_table", "groups": ["sex", "z"]}) == ["sex", "z"]
    assert result_keys({"kind": "histogram"}) == ["bin"]
    assert result_keys({"kind": "logit"}) == result_keys({"kind": "ols"}) == ["term"]
    assert result_keys({"kind": "survival", "group": "sex"}) == ["sex", "time"]
    assert result_keys({"kind": "survival", "group": None}) == ["time"]


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "suppressed"])  # that one has none
def test_an_altered_number_is_caught(outputs, kind):
    head, rows = rendered(outputs, kind)
    keys = outputs[kind][1]["result_keys"]

    def numeric(f: str) -> bool:
        try:
            float(f)
        except ValueError:
            return False
        return True

    r, i = next((r, j) for r in range(len(rows)) for j, f in enumerate(rows[r])
                if head[j] not in keys and numeric(f))
    rows[r][i] = str(float(rows[r][i]) + 1)
    problems = check(outputs, kind, csv_text(head, rows))
    assert problems and f"row {r + 2} column {i + 1} ({head[i]})" in problems[0]
    assert quotes_nothing(problems)


def test_a_suppressed_value_filled_back_in_is_caught(outputs):
    _, rerun = outputs["suppressed"]
    assert [c for c in rerun["cells"] if c["outcome"] == "fail"], "the 3-patient group"
    head, rows = rendered(outputs, "suppressed")
    tiny = next(r for r in rows if r[0] == "tiny")
    assert tiny[1:] == ["withheld", "withheld"]  # suppressed cells say so
    tiny[1] = "3"
    problems = check(outputs, "suppressed", csv_text(head, rows))
    assert len(problems) == 1 and "suppressed (must be empty or withheld)" in problems[0]


def test_a_withheld_value_may_be_left_empty_but_not_written_elsewhere(outputs):
    """A file may leave a withheld value empty (as files made before the word did); the word
    itself where the re-run published a number is a value other than the re-run's."""
    head, rows = rendered(outputs, "suppressed")
    tiny = next(r for r in rows if r[0] == "tiny")
    tiny[1:] = ["", ""]
    assert check(outputs, "suppressed", csv_text(head, rows)) == []
    head, rows = rendered(outputs, "crosstab")
    rows[0][1] = "withheld"  # a published count
    problems = check(outputs, "crosstab", csv_text(head, rows))
    assert len(problems) == 1 and "other than the re-run's" in problems[0]


def test_a_suppressed_histogram_count_refilled_with_its_true_value_is_refused(outputs):
    head, rows = rendered(outputs, "small_bins")
    assert [r[3] for r in rows[:3]] == ["withheld"] * 3
    for r, true in zip(rows[:3], SCORE_COUNTS[:3], strict=True):
        r[3] = str(true)  # 1, 7, 0: each is also a published bin number
    problems = check(outputs, "small_bins", csv_text(head, rows))
    name = next(iter(outputs["small_bins"][0]))
    where = ", ".join(f"row {r} column 4 (count)" for r in (2, 3, 4))
    said = "a value where the re-run's result is suppressed (must be empty or withheld)"
    assert problems == [f"{name}: {said}, at {where}"]


def test_a_value_equal_to_another_key_in_a_suppressed_cell_is_refused(outputs):
    head, rows = rendered(outputs, "small_bins")
    rows[0][3] = "7"  # bin 7 is published; count 7 is not, at bin 0
    problems = check(outputs, "small_bins", csv_text(head, rows))
    assert len(problems) == 1 and "row 2 column 4 (count)" in problems[0]
    rows[0][3], rows[4][3] = "", "9"  # a published bin number as bin 4's count
    assert "row 6 column 4 (count)" in check(outputs, "small_bins", csv_text(head, rows))[0]


def test_a_value_moved_to_another_rows_key_is_refused(outputs):
    _, rows = rendered(outputs, "small_bins")
    moved = [["4", rows[3][3]]]  # bin 3's count, written at bin 4
    problems = check(outputs, "small_bins", csv_text(["bin", "count"], moved))
    assert len(problems) == 1 and "row 2 column 2 (count)" in problems[0]
    assert "other than the re-run's" in problems[0]


def test_a_value_swapped_between_two_rows_is_refused(outputs):
    head, rows = rendered(outputs, "small_bins")
    rows[3][3], rows[4][3] = rows[4][3], rows[3][3]
    problems = check(outputs, "small_bins", csv_text(head, rows))
    assert "row 5 column 4 (count), row 6 column 4 (count)" in problems[0]
    head, rows = rendered(outputs, "crosstab")
    rows[0][1], rows[1][1] = rows[1][1], rows[0][1]
    assert check(outputs, "crosstab", csv_text(head, rows))


def test_an_extra_column_is_refused(outputs):
    head, rows = rendered(outputs, "small_bins")
    problems = check(outputs, "small_bins", csv_text(head + ["note"], [r + ["ok"] for r in rows]))
    name = next(iter(outputs["small_bins"][0]))
    assert problems == [f"{name}: header column 5 is not a column of the re-run's result"]
    twice = check(outputs, "small_bins", csv_text(head + ["count"], [r + [r[3]] for r in rows]))
    assert "header column 5 (count) appears more than once" in twice[0]


def test_dropping_the_key_column_while_keeping_a_value_is_refused(outputs):
    head, rows = rendered(outputs, "small_bins")
    problems = check(outputs, "small_bins", csv_text(head[1:], [r[1:] for r in rows]))
    assert len(problems) == 1 and "lacks the key column(s) bin" in problems[0]
    head, rows = rendered(outputs, "survival")  # keys sex and time
    problems = check(outputs, "survival", csv_text(["time", "survival"],
                                                   [[r[1], r[4]] for r in rows]))
    assert "lacks the key column(s) sex" in problems[0]


def test_reordered_rows_and_columns_and_a_subset_with_the_key_pass(outputs):
    head, rows = rendered(outputs, "small_bins")
    assert check(outputs, "small_bins", csv_text(head, rows[::-1])) == []
    assert check(outputs, "small_bins", csv_text(["count", "bin"],
                                                 [[r[3], r[0]] for r in rows[3:6]])) == []
    assert check(outputs, "small_bins", csv_text(["bin"], [[r[0]] for r in rows])) == []
    head, rows = rendered(outputs, "survival")
    assert check(outputs, "survival", csv_text(["survival", "time", "sex"],
                                               [[r[4], r[1], r[0]] for r in rows[::-1]])) == []


def test_numbers_written_with_other_formatting_pass(outputs):
    head, rows = rendered(outputs, "small_bins")
    for r in rows[3:]:
        r[0], r[1], r[2], r[3] = f"{r[0]}.0", r[1].removesuffix(".0"), f"{float(r[2]):e}", \
            f"{r[3]}.0"
    assert check(outputs, "small_bins", csv_text(head, rows)) == []
    head, rows = rendered(outputs, "ols")
    rows = [[r[0], *(f"{float(f):.12g}" for f in r[1:])] for r in rows]
    assert check(outputs, "ols", csv_text(head, rows)) == []
    assert check(outputs, "ols", "\ufeff" + csv_text(head, rows)) == []  # saved with a BOM


def test_digits_smuggled_into_a_count_or_past_the_tolerance_are_refused(outputs):
    head, rows = rendered(outputs, "small_bins")
    rows[3][3] = f"{rows[3][3]}.0000001"   # a count is an integer: exactly that integer
    assert check(outputs, "small_bins", csv_text(head, rows))
    head, rows = rendered(outputs, "pivot")
    rows[0][1] = repr(float(rows[0][1]) * (1 + 1e-7))
    assert check(outputs, "pivot", csv_text(head, rows))


def test_unknown_and_repeated_keys_and_ragged_rows_are_refused(outputs):
    head, rows = rendered(outputs, "small_bins")
    problems = check(outputs, "small_bins", csv_text(head, [*rows, rows[5], ["10", "", "", ""],
                                                            ["3", "", ""]]))
    assert [p.split(": ", 1)[1] for p in problems] == [
        "not as many fields as the header, at row 14",
        "a key (bin) that is not a row of the re-run's result, at row 13",
        "a key (bin) that an earlier row of the file already used, at row 12"]
    assert check(outputs, "small_bins", csv_text(["bin"], [["3"], ["3"]]))  # key-only, twice
    huge = csv_text(head, [["1e99999999999999999999", "", "", "1e-99999999999999999999"]])
    assert "not a row of the re-run's result, at row 2" in check(outputs, "small_bins", huge)[0]


def test_smuggled_text_and_other_files_are_caught(outputs):
    files, rerun = outputs["crosstab"]
    name, data = next(iter(files.items()))
    extra = data + b"Zhang San,110101199003077777,1\n"
    problems = unproduced_fields({name: extra}, rerun["result_csv"], rerun["result_keys"])
    assert problems and not any("Zhang" in p or "1101" in p for p in problems)
    assert quotes_nothing(problems)
    header = unproduced_fields({name: b"sex,Zhang San\nF,\n"}, rerun["result_csv"],
                               rerun["result_keys"])
    assert header == [f"{name}: header column 2 is not a column of the re-run's result"]
    keys = rerun["result_keys"]
    assert unproduced_fields({"notes.txt": b"hello"}, rerun["result_csv"], keys) == [
        "notes.txt: only CSV files can be compared with the re-run"]
    assert unproduced_fields({"x.csv": b"\xff\xfe"}, rerun["result_csv"], keys) == [
        "x.csv: not a readable UTF-8 CSV file"]
    assert unproduced_fields({"x.csv": b""}, rerun["result_csv"], keys) == [
        "x.csv: no header row"]


def test_without_the_reruns_result_the_files_fail_closed(outputs, tmp_path):
    files, rerun = outputs["crosstab"]
    assert unproduced_fields(files, None, None) == [NO_RESULT]
    assert unproduced_fields(files, rerun["result_csv"], None) != []
    a = make_airlock(load_settings(tmp_path / "home"))
    a.checks = lambda rec, s: CheckOutcome(ok=True, status=CheckStatus.PASS,
                                           detail={"cells": rerun["cells"], "reasons": []})
    rid = a.submit(REQUESTER, record("pass"), files, "paper")["id"]
    seen = a.describe(rid, REQUESTER)
    assert seen["status"] == "rejected" and NO_RESULT in seen["checks"]["problems"]
