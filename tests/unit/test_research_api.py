"""The researcher API (issue 5) on tiny real releases written by the test.

Each test writes a release folder (``release.duckdb`` + ``manifest.json`` with its SHA-256) under a
temporary enclave home and works through ``workspace(...)`` / ``ws.table(...)`` like a notebook.
Patients carry string pseudonyms so a test can assert that none of them reaches a record.
"""

from __future__ import annotations

import getpass
import json
import os
import tempfile
from pathlib import Path

import duckdb
import ibis
import numpy as np
import polars as pl
import pytest

from enclave.core.crypto import file_sha256
from enclave.core.errors import BadInputError, EnclaveError, PermissionDeniedError
from enclave.core.publish import write_manifest
from enclave.logic.disclosure import round_significant
from enclave.research import (
    crosstab,
    custom,
    export,
    histogram,
    logit,
    ols,
    pivot_table,
    survival,
    workspace,
)
from enclave.research.exports import write_bundle
from tests.conftest import researcher_home


def parse_table(text: str) -> pl.DataFrame:
    """A small table written as text: a header line, then rows; ``|`` separates columns, an
    empty field is null; integers and floats are recognized."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    head = [h.strip() for h in lines[0].split("|")]
    cols: dict[str, list] = {h: [] for h in head}
    for ln in lines[1:]:
        for h, v in zip(head, ln.split("|")):
            cols[h].append(v.strip() or None)

    def typed(vals: list):
        for cast in (int, float):
            try:
                return [None if v is None else cast(v) for v in vals]
            except ValueError:
                continue
        return vals

    return pl.DataFrame({h: typed(v) for h, v in cols.items()}, strict=False)


def make_release(home: Path, tables: dict[str, pl.DataFrame], project: str = "alpha",
                 tier: str = "desensitized", version: int = 1) -> Path:
    """A published release folder as the release builder lays it out (0440 files; a ``person``
    table of every patient the other tables name, unless one is given)."""
    d = home / "releases" / tier / project / f"v{version}"
    d.mkdir(parents=True)
    con = duckdb.connect(str(d / "release.duckdb"))
    for name, df in tables.items():
        con.register("_df", df.to_arrow())
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _df").fetchall()
        con.unregister("_df")
    if "person" not in tables:
        parts = [f"SELECT CAST(person_id AS VARCHAR) AS person_id FROM {n}"
                 for n, df in tables.items() if "person_id" in df.columns]
        con.execute("CREATE TABLE person AS " + (" UNION ".join(parts) if parts else
                    "SELECT NULL::VARCHAR AS person_id WHERE false")).fetchall()
    con.close()
    os.chmod(d / "release.duckdb", 0o440)
    name = f"{project}/v{version}" if tier == "desensitized" else f"{tier}/{project}/v{version}"
    write_manifest(d / "manifest.json", {
        "release": name, "project": project, "tier": tier, "version": version,
        "files": {"release.duckdb": {"sha256": file_sha256(d / "release.duckdb"),
                                     "bytes": (d / "release.duckdb").stat().st_size}}})
    return d


def pid(i: int) -> str:
    return f"pz{i:04d}q"  # a pseudonym that cannot occur by chance in a record


@pytest.fixture(autouse=True)
def user_home(tmp_path, monkeypatch) -> Path:
    """The researcher's own home (exports and the local ledger go under ~/.enclave)."""
    return researcher_home(tmp_path, monkeypatch, "ENCLAVE_HOME")


# --- workspace -----------------------------------------------------------------------------


def test_workspace_prefers_desensitized_and_lets_the_user_pick(tmp_path, monkeypatch):
    home = tmp_path / "home"
    t = parse_table("person_id | x\n a1 | 1")
    make_release(home, {"person": t}, tier="desensitized")
    make_release(home, {"person": t}, tier="desensitized", version=2)
    make_release(home, {"person": t}, tier="synthetic")
    ws = workspace(home)
    assert ws.projects == ["alpha"]
    assert ws.current().name == "alpha/v2"  # newest, desensitized
    assert ws.table("person").count().execute() == 1
    ws2 = workspace(home, project="alpha", release="synthetic/alpha/v1")
    assert ws2.current().tier == "synthetic"
    with pytest.raises(BadInputError, match=r"no readable release 'beta/v1' \(available: "
                                            r"alpha/v1, alpha/v2, synthetic/alpha/v1\)"):
        workspace(home, release="beta/v1")
    with pytest.raises(BadInputError, match="projects: alpha"):
        workspace(home, project="beta")
    with pytest.raises(BadInputError, match=r"has no table 'visit' \(tables: person\)"):
        ws.table("visit")
    monkeypatch.setenv("ENCLAVE_HOME", str(home))
    assert workspace().current().name == "alpha/v2"  # home from $ENCLAVE_HOME


def test_workspace_tables_are_read_only(tmp_path):
    home = tmp_path / "home"
    make_release(home, {"person": parse_table("person_id | x\n a1 | 1")})
    con = workspace(home).backend()
    with pytest.raises(duckdb.Error):
        con.con.execute("CREATE TABLE evil AS SELECT 1").fetchall()


def test_opening_a_release_is_recorded_in_the_audit_trail(tmp_path):
    from enclave.core import audit
    from enclave.core.settings import load_settings

    home = tmp_path / "home"
    make_release(home, {"person": parse_table("person_id | x\n a1 | 1")})
    ws = workspace(home)
    ws.table("person")
    ws.table("person")  # once per release and workspace, not per table
    con = audit.connect(load_settings(home))
    reads = [e for e in audit.events(con) if e["action"] == "release.read"]
    assert [(e["actor"], e["subject"]) for e in reads] == [(getpass.getuser(), "release:alpha/v1")]
    assert audit.verify_connection(con).ok


def test_workspace_without_releases_and_with_several_projects(tmp_path):
    home = tmp_path / "home"
    (home / "releases").mkdir(parents=True)
    with pytest.raises(PermissionDeniedError, match="no release"):
        workspace(home).table("person")
    t = parse_table("person_id | x\n a1 | 1")
    make_release(home, {"person": t}, project="alpha")
    make_release(home, {"person": t}, project="beta")
    with pytest.raises(BadInputError, match=r"several projects are available \(alpha, beta\)"):
        workspace(home).table("person")


def test_os_permissions_decide_which_tier_a_user_gets():
    """As an unprivileged user (a forked child that drops to nobody), a desensitized release
    that is not group-readable by the user is invisible: the workspace falls back to the twin."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another user")
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        home = base / "home"
        t = parse_table("person_id | x\n a1 | 1")
        for d in (make_release(home, {"person": t}, tier="desensitized"),
                  make_release(home, {"person": t}, tier="synthetic")):
            for p in [d, d.parent, d.parent.parent, d.parent.parent.parent, home]:
                os.chmod(p, 0o755)
        syn = home / "releases" / "synthetic" / "alpha" / "v1"
        for f in syn.iterdir():
            os.chmod(f, 0o444)  # the twin: readable by every researcher
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                os.close(r)
                os.setgid(65534)
                os.setuid(65534)
                from enclave.core.settings import Settings
                from enclave.research.workspaces import readable_releases

                names = [x.name for x in readable_releases(Settings(home=home))]
                os.write(w, json.dumps(names).encode())
            finally:
                os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 4096):
            data += chunk
        os.waitpid(child, 0)
        assert json.loads(data) == ["synthetic/alpha/v1"]
        assert [x.name for x in workspace(home).releases] == ["alpha/v1", "synthetic/alpha/v1"]
    finally:
        import shutil

        shutil.rmtree(base)


def test_outputs_need_a_patient_column_and_workspace_tables(tmp_path):
    home = tmp_path / "home"
    make_release(home, {"care_site": parse_table("care_site_id | name\n 1 | A\n 2 | B")})
    t = workspace(home).table("care_site")
    with pytest.raises(BadInputError, match="no patient column 'person_id'.*care_site_id, name"):
        crosstab(t, "name", "care_site_id")
    with pytest.raises(BadInputError, match="take tables from a workspace"):
        crosstab(ibis.memtable({"person_id": [1], "a": [1], "b": [2]}), "a", "b")
    with pytest.raises(BadInputError, match="no column"):
        crosstab(t, "name", "nope", patient="care_site_id")


# --- the weaknesses named in the issue, through the API --------------------------------------


@pytest.fixture
def ws(tmp_path):
    """One release with the small tables the acceptance tests use."""
    rng = np.random.default_rng(5)
    # mean: group a has 10 rows from 10 patients, only 3 with a value; group b 12 full rows
    mean_t = pl.DataFrame({
        "person_id": [pid(i) for i in range(22)],
        "grp": ["a"] * 10 + ["b"] * 12,
        "x": [1.0, 2.0, 3.0] + [None] * 7 + list(rng.normal(5, 1, 12)),
    })
    # max: group a's largest value belongs to one patient
    max_t = pl.DataFrame({"person_id": [pid(i) for i in range(12)], "grp": ["a"] * 12,
                          "x": [float(v) for v in range(1, 12)] + [100.0]})
    # class disclosure: every patient of region N has E11
    dx = pl.DataFrame({
        "person_id": [pid(i) for i in range(32)],
        "region": ["N"] * 12 + ["S"] * 20,
        "diagnosis": ["E11"] * 12 + ["E11"] * 10 + ["I10"] * 10,
    })
    # rows vs patients: cell (a, F) has 12 rows from 3 patients
    visits = []
    for i in range(3):
        visits += [(pid(100 + i), "a", "F")] * 4
    n = 200
    for g, s in [("a", "M"), ("a", "X"), ("b", "F"), ("b", "M"), ("b", "X"), ("c", "F"),
                 ("c", "M"), ("c", "X")]:
        visits += [(pid(n + i), g, s) for i in range(15)]
        n += 15
    visit = pl.DataFrame(visits, schema=["person_id", "grp", "sex"], orient="row")
    make_release(tmp_path / "home", {"means": mean_t, "maxes": max_t, "dx": dx, "visit": visit})
    return workspace(tmp_path / "home")


def _cell(out, **key) -> dict:
    hits = [c for c in out.record["cells"] if all(c["cell"].get(k) == v for k, v in key.items())]
    assert len(hits) == 1, (key, out.record["cells"])
    return hits[0]


def test_mean_of_three_values_in_a_ten_row_cell_fails(ws):
    out = pivot_table(ws.table("means"), "grp", "x", "mean")
    a, b = _cell(out, grp="a"), _cell(out, grp="b")
    assert a["outcome"] == "fail" and a["value"] is None
    assert any("non-missing values from 3 patients (10 rows); at least 10" in r
               for r in a["reasons"])
    assert b["outcome"] == "pass" and b["value"] == round_significant(
        ws.table("means").filter(lambda t: t.grp == "b").x.mean().execute(), 6)
    assert out.status == "fail"
    assert out.result.filter(pl.col("grp") == "a")["mean"].item() is None


def test_a_group_where_everyone_shares_a_diagnosis_is_flagged(ws):
    out = crosstab(ws.table("dx"), "region", "diagnosis")
    n = _cell(out, region="N", diagnosis="E11")
    # flagged; here even suppressed: the empty (N, I10) cell fails the zeros rule and (N, E11)
    # is its complement in row N
    assert n["outcome"] in ("review", "fail")
    assert any("class disclosure" in r for r in n["reasons"])
    assert not any("class disclosure" in r for r in _cell(out, region="S", diagnosis="E11")
                   ["reasons"])
    # through pivot_table with the diagnosis as the sensitive column
    out2 = pivot_table(ws.table("dx"), "region", aggfunc="patients", sensitive="diagnosis")
    assert _cell(out2, region="N")["outcome"] == "review"
    assert _cell(out2, region="S")["outcome"] == "pass"
    assert out2.status == "review"


def test_a_maximum_contributed_by_one_patient_fails(ws):
    out = pivot_table(ws.table("maxes"), "grp", "x", ["max", "mean", "count"])
    mx = next(c for c in out.record["cells"] if c["statistic"] == "max")
    assert mx["outcome"] == "fail"
    assert any("maximum is held by 1 patient(s)" in r for r in mx["reasons"])
    cnt = next(c for c in out.record["cells"] if c["statistic"] == "count")
    assert cnt["outcome"] == "pass" and cnt["value"] == 12
    assert out.result["max"].item() is None and out.result["count"].item() == 12


def test_a_cell_of_twelve_rows_from_three_patients_fails(ws):
    out = crosstab(ws.table("visit"), "grp", "sex")
    af = _cell(out, grp="a", sex="F")
    assert af["outcome"] == "fail" and af["value"] is None
    assert any("cell has 3 patients; at least 10" in r for r in af["reasons"])
    assert _cell(out, grp="c", sex="M")["value"] == 15
    # the suppressed cell cannot be recovered from a published row: a complement is suppressed
    assert sum(c["outcome"] == "fail" for c in out.record["cells"]) >= 2
    assert out.result.filter(pl.col("grp") == "a")["F"].item() is None
    # counting patients instead of rows gives the same verdict
    outp = crosstab(ws.table("visit"), "grp", "sex", aggfunc="patients")
    assert _cell(outp, grp="a", sex="F")["outcome"] == "fail"


# --- the record ----------------------------------------------------------------------------


def test_record_holds_sql_hashes_and_no_pseudonyms(ws):
    t = ws.table("visit")
    expr = t.filter(t.sex == "M")
    out = crosstab(expr, "grp", "sex")
    rec = out.record
    assert rec["sql"] == ibis.to_sql(expr.select("person_id", "grp", "sex"), dialect="duckdb")
    ref = ws.current()
    assert rec["release"] == "alpha/v1" and rec["release_sha256"] == ref.release_sha256
    assert len(rec["policy_sha256"]) == 64 and rec["policy"]["name"] == "acro"
    assert rec["policy_settings"]["preset"] == "acro"
    from enclave.research import record_hash

    assert rec["record_sha256"] == record_hash(rec)
    blob = json.dumps(rec)
    assert "pz0" not in blob  # no patient pseudonym left the kernel's ledger
    assert out.status in ("pass", "review", "fail") and "<table" in out._repr_html_()
    assert out.to_pandas().shape[0] == out.result.height


def test_export_writes_the_request_bundle_before_submitting(ws, user_home):
    """The bundle is written first; then the airlock decides (here it refuses: this tiny home
    has no project registry, so the current user is no member of project alpha)."""
    out = crosstab(ws.table("visit"), "grp", "sex")
    with pytest.raises(BadInputError, match="justification"):
        export(out, justification="  ")
    try:
        answer = export(out, justification="Table 2 of the paper")
    except EnclaveError as exc:  # the airlock's own verdict on this home
        assert "member" in str(exc) or "project" in str(exc)
        answer = None
    bundle = user_home / ".enclave" / "exports" / out.output_id
    if answer is not None:
        assert Path(answer["bundle"]) == bundle and answer["status"]
    assert json.loads((bundle / "record.json").read_text()) == out.record
    files = list((bundle / "files").iterdir())
    assert len(files) == 1 and files[0].read_bytes() == next(iter(out.files().values()))
    assert pl.read_csv(files[0]).height == out.result.height
    assert (bundle / "justification.txt").read_text() == "Table 2 of the paper"
    assert oct(bundle.stat().st_mode & 0o777) == "0o700"


def test_custom_outputs_always_need_review(ws, tmp_path, user_home):
    f = tmp_path / "figure.png"
    f.write_bytes(b"\x89PNG fake")
    out = custom(f, ws=ws)
    assert out.status == "review" and out.record["spec"]["bytes"] == 9
    bundle = write_bundle(out, "figure 1", ws.settings)
    assert (bundle / "files" / "figure.png").read_bytes() == b"\x89PNG fake"
    assert bundle == user_home / ".enclave" / "exports" / out.output_id


# --- histogram, models, survival -------------------------------------------------------------


@pytest.fixture
def cohort(tmp_path):
    rng = np.random.default_rng(11)
    n = 400
    age = rng.integers(20, 90, n)
    x = rng.normal(0, 1, n)
    y = 2.0 + 0.5 * x + 0.03 * age + rng.normal(0, 1, n)
    z = (rng.random(n) < 1 / (1 + np.exp(-(-1 + 0.8 * x)))).astype(int)
    dur = np.ceil(rng.exponential(200, n)).astype(int)
    event = (rng.random(n) < 0.7).astype(int)
    df = pl.DataFrame({"person_id": [pid(i) for i in range(n)], "age": age, "x": x, "y": y,
                       "z": z, "sex": rng.choice(["F", "M"], n), "days": dur, "event": event})
    make_release(tmp_path / "home", {"cohort": df})
    return workspace(tmp_path / "home"), df


def test_histogram_bins_are_cells_and_edges_are_not_extremes(cohort):
    ws, df = cohort
    out = histogram(ws.table("cohort"), "age", bins=7)
    edges = out.record["spec"]["edges"]
    assert edges[0] < df["age"].min() and edges[-1] > df["age"].max()
    counts = out.result["count"].to_list()
    assert sum(c for c in counts if c is not None) <= n_rows(df)
    assert len(out.record["cells"]) == 7
    fixed = histogram(ws.table("cohort"), "age", bins=[0, 10, 50, 100])
    first = _cell(fixed, bin=0)
    assert first["outcome"] == "fail" and "empty" in first["reasons"][0]  # zeros rule
    assert _cell(fixed, bin=1)["value"] == int(((df["age"] >= 10) & (df["age"] < 50)).sum())


def n_rows(df: pl.DataFrame) -> int:
    return df.height


def test_ols_and_logit_match_statsmodels_and_check_the_sample(cohort):
    import statsmodels.formula.api as smf

    ws, df = cohort
    t = ws.table("cohort")
    out = ols("y ~ x + age + C(sex)", t)
    ref = smf.ols("y ~ x + age + C(sex)", df.to_pandas()).fit()
    got = dict(zip(out.result["term"], out.result["coef"]))
    for name, coef in ref.params.items():  # published to the policy's 6 significant digits
        assert got[name] == round_significant(coef, 6)
    assert out.status == "pass" and "396 residual degrees of freedom" in out.reasons[0]
    lg = logit("z ~ x", t)
    assert lg.status == "pass"
    assert dict(zip(lg.result["term"], lg.result["coef"]))["x"] == pytest.approx(
        smf.logit("z ~ x", df.to_pandas()).fit(disp=0).params["x"], rel=1e-5)
    small = ols("y ~ x + age", t.limit(12))  # 12 patients, 3 parameters: 9 residual dof
    assert small.status == "fail"
    assert any("9 residual degrees of freedom" in r for r in small.reasons)
    assert small.result["coef"].null_count() == small.result.height


def test_survival_is_coarsened_until_every_step_passes(cohort):
    ws, df = cohort
    out = survival(ws.table("cohort"), "days", "event", group="sex")
    w = out.record["spec"]["interval"]
    assert w in (1, 7, 14, 30, 60, 90, 180, 365, 730)
    assert out.status == "pass", out.reasons
    for c in out.record["cells"]:
        assert c["extra"]["at_risk"] >= 10
        assert c["extra"]["events"] == 0 or c["extra"]["events"] >= 10
        assert c["cell"]["time"] % w == 0
    # first step of group F by hand: times rounded up to the interval
    f = df.filter(pl.col("sex") == "F")
    coarse = (np.maximum(np.ceil(f["days"].to_numpy() / w), 1) * w)
    d1 = int(((coarse == w) & (f["event"].to_numpy() == 1)).sum())
    first = _cell(out, sex="F", time=float(w))
    assert first["value"] == round_significant(1 - d1 / f.height, 6)
    fine = survival(ws.table("cohort"), "days", "event", interval=1)
    assert fine.status == "fail"  # daily steps have a few events each
    with pytest.raises(BadInputError, match="one row per patient"):
        survival(ws.table("cohort").union(ws.table("cohort").limit(3)), "days", "event")


# --- what a notebook shows: withheld values, missing labels, band order (issue 19) ----------


@pytest.fixture
def banded(tmp_path):
    """Patients in 5-year age bands (text labels, as a release's generalization writes them),
    with a small oldest band and some patients whose band is unknown (null)."""
    bands = ["0-4", "5-9", "10-14", "15-19", "80-84", "85+"]
    rows, n = [], 0
    for band in bands:
        size = 3 if band == "85+" else 24
        for i in range(size):
            rows.append((pid(n), band, "FM"[i % 2], float(n % 7)))
            n += 1
    for i in range(24):
        rows.append((pid(n), None, "FM"[i % 2], 1.0))
        n += 1
    t = pl.DataFrame(rows, schema=["person_id", "age_band", "sex", "x"], orient="row")
    make_release(tmp_path / "home", {"people": t})
    return workspace(tmp_path / "home")


def test_age_bands_sort_by_their_lower_bound_not_as_text(banded):
    out = crosstab(banded.table("people"), "age_band", "sex", aggfunc="patients")
    assert out.result["age_band"].to_list() == ["0-4", "5-9", "10-14", "15-19", "80-84", "85+",
                                                None]
    piv = pivot_table(banded.table("people"), "age_band", "x", ["patients", "mean"])
    assert piv.result["age_band"].to_list() == out.result["age_band"].to_list()
    # the bands as columns of a crosstab, too
    across = crosstab(banded.table("people"), "sex", "age_band", aggfunc="patients")
    assert across.result.columns == ["sex", "0-4", "5-9", "10-14", "15-19", "80-84", "85+",
                                     "null"]
    assert across.table().columns[-1] == "(missing)"  # the column of the unknown band


def test_level_order_puts_numbers_first_then_text_then_missing():
    from enclave.io.outputs.tables import level_key

    labels = ["80+", "<40", "unknown", None, "60-79", "40-59", "2019", "5-9"]
    assert sorted(labels, key=level_key) == ["5-9", "<40", "40-59", "60-79", "80+", "2019",
                                             "unknown", None]


def test_withheld_values_read_withheld_and_missing_labels_read_missing(banded):
    out = crosstab(banded.table("people"), "age_band", "sex", aggfunc="patients")
    shown = out.table()
    old = shown.filter(pl.col("age_band") == "85+")
    assert old.row(0)[1:] == ("withheld", "withheld")  # 3 patients: suppressed
    assert shown["age_band"].to_list()[-1] == "(missing)"  # a null label is missing data
    unknown = out.result.filter(pl.col("age_band").is_null())
    assert unknown["F"].item() == 12  # published: the null is the label, not the value
    html = out._repr_html_()
    assert "withheld" in html and "(missing)" in html and ">null<" not in html
    assert ">None<" not in html and "NaN" not in html
    # the result keeps its nulls for computing with
    assert out.result.filter(pl.col("age_band") == "85+")["F"].item() is None


def test_the_exported_csv_says_withheld_and_leaves_missing_labels_empty(banded, tmp_path):
    from enclave.core.settings import load_settings
    from enclave.research import recheck

    out = crosstab(banded.table("people"), "age_band", "sex", aggfunc="patients")
    (data,) = out.files().values()
    lines = data.decode().splitlines()
    assert lines[0] == "age_band,F,M"
    assert "85+,withheld,withheld" in lines and lines[-1] == ",12,12"
    assert pl.read_csv(data, schema_overrides={"F": pl.String})["F"].null_count() == 0
    # the airlock's re-run renders its own result table the same way, so the file compares
    again = recheck(out.record, settings=load_settings(tmp_path / "home"))
    assert again["verified"], again["problems"]
    from enclave.io.airlock.filecheck import unproduced_fields

    assert unproduced_fields(out.files(), again["result_csv"], again["result_keys"]) == []


def test_a_failed_model_shows_every_value_withheld(cohort):
    ws, _ = cohort
    small = ols("y ~ x + age", ws.table("cohort").limit(12))
    assert small.status == "fail"
    shown = small.table()
    assert set(shown.drop("term").unique().rows()) == {("withheld",) * 5}
    assert b"withheld" in next(iter(small.files().values()))


def test_a_value_that_does_not_exist_is_not_withheld():
    """A null the checks did not withhold (e.g. the mean of an empty cell where empty cells may
    be shown) is no value, shown as a dash and written empty."""
    from enclave.io.outputs.layout import display_frame, publishable_csv, withheld_positions

    result = pl.DataFrame({"g": ["a", "b", None], "mean": [1.5, None, None]})
    cells = [{"cell": {"g": "a"}, "statistic": "mean", "value": 1.5, "outcome": "pass"},
             {"cell": {"g": "b"}, "statistic": "mean", "value": None, "outcome": "pass"},
             {"cell": {"g": None}, "statistic": "mean", "value": None, "outcome": "fail"}]
    spec = {"kind": "pivot_table", "groups": ["g"]}
    assert withheld_positions(result, cells, spec) == {"mean": {2}}
    assert display_frame(result, cells, spec).rows() == [("a", "1.5"), ("b", "–"),
                                                         ("(missing)", "withheld")]
    assert publishable_csv(result, cells, spec) == "g,mean\na,1.5\nb,\n,withheld\n"


# --- export requests as a notebook shows them (issue 19) -------------------------------------


def test_an_export_request_is_a_dict_with_a_link_and_its_state(monkeypatch):
    from enclave.research import ExportRequest

    answer = {"request_id": "r-0123456789ab", "id": "r-0123456789ab", "status": "in_review",
              "checks": {"ok": True, "status": "pass", "problems": []}, "bundle": "/x"}
    req = ExportRequest(answer)
    assert req["request_id"] == "r-0123456789ab" and req["status"] == "in_review"
    assert json.loads(json.dumps(req)) == answer  # what submitted.json and summaries keep
    assert req.status == "in_review" and req.check_status == "pass"
    monkeypatch.delenv("JUPYTERHUB_BASE_URL", raising=False)
    assert req.url == "/services/airlock/requests/r-0123456789ab"
    monkeypatch.setenv("JUPYTERHUB_BASE_URL", "/hub-prefix/")
    assert req.url == "/hub-prefix/services/airlock/requests/r-0123456789ab"
    html = req._repr_html_()
    assert 'href="/hub-prefix/services/airlock/requests/r-0123456789ab"' in html
    assert "in review" in html and "pass" in html and "refresh()" in html
    assert repr(req) == ("<ExportRequest r-0123456789ab status=in_review checks=pass "
                         "/hub-prefix/services/airlock/requests/r-0123456789ab>")
    assert len(repr(req)) < 120 and "record" not in html
    rejected = ExportRequest({"request_id": "r-1", "status": "rejected", "decision_reason":
                              "the files differ", "checks": {"status": "fail", "problems": [
                                  "x.csv: a value other than the re-run's"]}})
    assert "the files differ" in rejected._repr_html_()
    assert "a value other than the re-run" in rejected._repr_html_()


def test_my_requests_shows_a_table_with_links():
    from enclave.research import ExportRequests

    rows = ExportRequests([{"id": "r-1", "project": "alpha", "kind": "crosstab",
                            "status": "released", "created_at": "2026-01-02T03:04:05+00:00",
                            "updated_at": "2026-01-03T03:04:05+00:00",
                            "url": "/services/airlock/requests/r-1"}])
    html = rows._repr_html_()
    assert "<table" in html and 'href="/services/airlock/requests/r-1"' in html
    assert "alpha" in html and "crosstab" in html and "released" in html
    assert "r-1" in repr(rows) and "no export requests" in ExportRequests()._repr_html_()


def test_a_trail_that_cannot_record_a_read_says_so_in_one_plain_line(tmp_path, capsys,
                                                                     monkeypatch):
    """Reading goes on; the researcher reads one line on stdout (a notebook shows stderr in red);
    the warning still reaches the program's own log handlers."""
    import logging

    from enclave.io.airlock import client

    home = tmp_path / "home"
    make_release(home, {"person": parse_table("person_id | x\n a1 | 1")})
    # an airlock URL with a token, where nothing listens: the trail cannot be reached
    monkeypatch.setenv("ENCLAVE_AIRLOCK_URL", "http://127.0.0.1:9/services/airlock")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t" * 32)
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    keep = Keep()
    client.log.addHandler(keep)
    try:
        ws = workspace(home)
        assert ws.table("person").count().execute() == 1
    finally:
        client.log.removeHandler(keep)
    out, err = capsys.readouterr()
    lines = [ln for ln in out.splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("note: the audit trail did not record")
    assert "release:alpha/v1" in lines[0] and "admin" in lines[0]
    assert err == ""
    assert seen and "not recorded" in seen[0]


# --- published precision (issue 19, item 5) ----------------------------------------------------


def test_statistics_are_published_to_the_policys_significant_digits(cohort, tmp_path):
    from enclave.core.settings import load_settings
    from enclave.research import recheck

    ws, df = cohort
    out = pivot_table(ws.table("cohort"), "sex", "y", ["count", "mean", "std", "q75"])
    exact = df.group_by("sex").agg(pl.col("y").mean()).sort("sex")["y"].to_list()
    assert out.result["mean"].to_list() == [round_significant(v, 6) for v in exact]
    assert all(len(f"{v:.15g}".lstrip("-0.").replace(".", "")) <= 6
               for c in ("mean", "std", "q75") for v in out.result[c])
    assert out.result.schema["count"] == pl.Int64  # counts stay whole numbers
    for c in out.record["cells"]:
        if isinstance(c["value"], float):
            assert c["value"] == round_significant(c["value"], 6)
    model = ols("y ~ x", ws.table("cohort"))
    for c in model.record["cells"]:
        assert all(v == round_significant(v, 6) for v in [c["value"], *c["extra"].values()])
    assert model.result.row(1)[1:] == (model.record["cells"][1]["value"],
                                       *model.record["cells"][1]["extra"].values())
    # the airlock's re-run rounds the same way: the record and the files are reproduced
    settings = load_settings(tmp_path / "home")
    for o in (out, model):
        again = recheck(o.record, settings=settings)
        assert again["verified"], again["problems"]
        assert again["result_csv"] == next(iter(o.files().values())).decode()


def test_the_significant_digits_are_a_setting_and_part_of_the_policy(cohort, tmp_path):
    from enclave.core.settings import load_settings
    from enclave.logic.disclosure import ACRO, policy_hash
    from enclave.research import recheck

    _, df = cohort
    (tmp_path / "home" / "settings.toml").write_text("[disclosure]\nsignificant_digits = 3\n")
    three = workspace(tmp_path / "home")
    out = pivot_table(three.table("cohort"), "sex", "y", "mean")
    exact = df.group_by("sex").agg(pl.col("y").mean()).sort("sex")["y"].to_list()
    assert out.result["mean"].to_list() == [round_significant(v, 3) for v in exact]
    assert out.record["policy"]["significant_digits"] == 3
    assert recheck(out.record, settings=load_settings(tmp_path / "home"))["verified"]
    # a record made under another precision is another policy: the airlock refuses it
    (tmp_path / "home" / "settings.toml").write_text("[disclosure]\nsignificant_digits = 0\n")
    again = recheck(out.record, settings=load_settings(tmp_path / "home"))
    assert not again["verified"] and "another policy" in again["problems"][0]
    unrounded = pivot_table(workspace(tmp_path / "home").table("cohort"), "sex", "y", "mean")
    assert unrounded.result["mean"].to_list() == pytest.approx(exact, rel=1e-12)
    from dataclasses import replace

    assert policy_hash(replace(ACRO, significant_digits=4)) != policy_hash(ACRO)
