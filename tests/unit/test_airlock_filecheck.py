"""The submitted files may publish only what the airlock's re-run published: every output kind of
the researcher API passes as rendered, and any altered or added value is caught."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from enclave.airlock.filecheck import unproduced_fields
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
from enclave.settings import load_settings
from tests.unit.test_research_api import make_release


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
        make_release(home, {"cohort": df})
        t = workspace(home).table("cohort")
        made = {"crosstab": crosstab(t, "sex", "z"), "suppressed": crosstab(t, "grp", "sex"),
                "pivot": pivot_table(t, "sex", "y", "mean"), "histogram": histogram(t, "age", 5),
                "ols": ols("y ~ x + age", t), "logit": logit("z ~ x", t),
                "survival": survival(t, "days", "event", "sex")}
        settings = load_settings(home)
        yield {k: (o.files(), recheck(o.record, settings=settings)) for k, o in made.items()}


KINDS = ["crosstab", "suppressed", "pivot", "histogram", "ols", "logit", "survival"]


@pytest.mark.parametrize("kind", KINDS)
def test_rendered_files_of_every_kind_are_backed_by_the_rerun(outputs, kind):
    files, rerun = outputs[kind]
    assert rerun["verified"], rerun["problems"]
    assert unproduced_fields(files, rerun["cells"]) == []


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "suppressed"])  # that one has none
def test_an_altered_number_is_caught(outputs, kind):
    files, rerun = outputs[kind]
    name, data = next(iter(files.items()))
    head, *rows = data.decode().splitlines()

    def numeric(f: str) -> bool:
        try:
            float(f)
        except ValueError:
            return False
        return True

    r, i = next((r, j) for r in range(len(rows)) for j, f in enumerate(rows[r].split(","))
                if j > 0 and numeric(f))
    fields = rows[r].split(",")
    fields[i] = str(float(fields[i]) + 1)
    rows[r] = ",".join(fields)
    problems = unproduced_fields({name: "\n".join([head, *rows]).encode()}, rerun["cells"])
    assert problems and f"row {r + 2} column {i + 1}" in problems[0]


def test_a_suppressed_value_filled_back_in_is_caught(outputs):
    files, rerun = outputs["suppressed"]
    failed = [c for c in rerun["cells"] if c["outcome"] == "fail"]
    assert failed, "the 3-patient group must be suppressed"
    name, data = next(iter(files.items()))
    text = data.decode()
    assert ",," in text or text.rstrip().endswith(",")  # suppressed cells are empty
    filled = text.replace(",,", ",3,", 1) if ",," in text else text.rstrip() + "3\n"
    assert unproduced_fields({name: filled.encode()}, rerun["cells"])


def test_smuggled_text_and_other_files_are_caught(outputs):
    files, rerun = outputs["crosstab"]
    name, data = next(iter(files.items()))
    extra = data + b"Zhang San,110101199003077777,1\n"
    problems = unproduced_fields({name: extra}, rerun["cells"])
    assert problems and "Zhang" not in problems[0] and "1101" not in problems[0]
    assert unproduced_fields({"notes.txt": b"hello"}, rerun["cells"]) == [
        "notes.txt: only CSV files can be compared with the re-run"]
    assert unproduced_fields({"x.csv": b"\xff\xfe"}, rerun["cells"]) == [
        "x.csv: not a readable UTF-8 CSV file"]
