"""Issue 15: the airlock's trust boundary, attacked from a real kernel (a free block of ports; root).

A real enclave with the real airlock service behind a real hub, researchers of two projects
(``r0`` on alpha, ``r1`` on beta). ``r1`` runs every attack in their own kernel, as a notebook
would: they make an honest output on beta's release with the research API, rewrite its record
(release, SQL, patient column), recompute the record hash with the public function and submit it
to the airlock through the kernel's relay. Each test then asserts that the attack was refused with
a reason that names the construct **and** that nothing crossed: no marker file, no byte of what the
SQL tried to read in anything the airlock stored or answered, no change to the projects, roles or
ledger, no cells handed back.
"""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
import subprocess
from pathlib import Path

import pytest

from enclave.core.audit import airlock_dir
from enclave.io.airlock.checks import ledger_path, store_ledger_path
from enclave.io.airlock.exports import Airlock
from enclave.io.hub import serve
from tests.integration import hubbed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a real hub with real Unix users needs root"),
]

PORTS = hubbed.port_block()
#: what stays put whatever a researcher submits (requests and their audit events may be added)
CONTROL_TABLES = ("project", "project_member", "role")

# --- the attacks, as the kernel runs them -------------------------------------------------------

KERNEL = r'''
import copy, json, os
from enclave.research import workspace, pivot_table, record_hash
from enclave.io.airlock.client import submit_export

ws = workspace(project=BETA)
honest = pivot_table(ws.table("person"), "sex", aggfunc="patients")
FILES = honest.files()

def forged(**changes):
    rec = copy.deepcopy(honest.record)
    rec["output_id"] = os.urandom(8).hex()
    for k, v in changes.items():
        rec[k] = v
    rec["record_sha256"] = record_hash(rec)   # the public function: the hash is no protection
    return rec

def sql(text, **changes):
    return forged(sql=text, **changes)

def submit(rec):
    try:
        return submit_export(rec, FILES, "an attack, in the attack suite")
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}

attacks = ATTACKS
out = {"honest": submit(honest.record), "honest_status": honest.status}
for name, (kind, arg, extra) in attacks.items():
    if kind == "sql":
        rec = sql(arg, **extra)
    elif kind == "fields":
        rec = forged(**arg)
    elif kind == "raw":
        rec = copy.deepcopy(honest.record); rec.update(arg)    # not re-hashed
        rec["output_id"] = os.urandom(8).hex()
    out[name] = submit(rec)
print("RESULT " + json.dumps(out, default=str))
'''


def attacks(bed) -> dict:
    """name -> (kind, argument, extra fields). Paths the attacks aim at live in the bed."""
    s = bed.settings
    alpha = bed.projects["alpha"]
    alpha_db = bed.release("alpha")
    marker = f"/tmp/{bed.prefix}-marker"
    air = airlock_dir(s)
    q = "SELECT person_id, sex FROM person"
    return {
        # forged release name / another project's release / hash mismatch
        "release_other_project": ("fields", {"release": f"{alpha}/v1"}, {}),
        "release_path_escape": ("fields", {"release": f"../{alpha}/v1"}, {}),
        "release_absolute_path": ("fields", {"release": str(alpha_db.parent)}, {}),
        "release_and_project_other": ("fields", {"release": f"{alpha}/v1", "project": alpha}, {}),
        "release_hash_mismatch": ("fields", {"release_sha256": "0" * 64}, {}),
        "manifest_hash_mismatch": ("fields", {"manifest_sha256": "f" * 64}, {}),
        "record_not_rehashed": ("raw", {"sql": q + " WHERE sex = 'F'"}, {}),
        # more than one statement
        "multi_statement_copy": ("sql", f"{q}; COPY person TO '{marker}-multi.csv'", {}),
        "multi_statement_attach": ("sql", f"{q}; ATTACH '{alpha_db}' AS a; SELECT 1", {}),
        # each forbidden construct
        "copy": ("sql", f"COPY person TO '{marker}-copy.csv'", {}),
        "copy_into_airlock": ("sql", f"COPY person TO '{air}/{bed.prefix}-planted.csv'", {}),
        "attach": ("sql", f"ATTACH '{alpha_db}' AS a", {}),
        "pragma": ("sql", "PRAGMA database_list", {}),
        "set": ("sql", "SET enable_external_access = true", {}),
        "install": ("sql", "INSTALL httpfs", {}),
        "load": ("sql", "LOAD httpfs", {}),
        "call": ("sql", "CALL pragma_database_list()", {}),
        "export": ("sql", f"EXPORT DATABASE '{marker}-export'", {}),
        "catalog_databases": ("sql", "SELECT person_id, database_name AS sex FROM person, "
                                     "duckdb_databases()", {}),
        "catalog_settings": ("sql", "SELECT person_id, current_setting('temp_directory') AS sex "
                                    "FROM person", {}),
        "information_schema": ("sql", "SELECT person_id, sex FROM person WHERE sex IN "
                                      "(SELECT table_name FROM information_schema.tables)", {}),
        "other_database_table": ("sql", "SELECT person_id, sex FROM a.main.person", {}),
        # file-reading table functions and file paths
        "read_other_release": ("sql", f"SELECT person_id, sex FROM read_parquet('{alpha_db}')",
                               {}),
        "read_text_outbox": ("sql", f"SELECT content AS person_id, filename AS sex FROM "
                                    f"read_text('{air}/**')", {}),
        "glob_releases": ("sql", f"SELECT file AS person_id, file AS sex FROM "
                                 f"glob('{s.releases_dir}/*/*/*')", {}),
        "read_csv_passwd": ("sql", "SELECT * FROM read_csv('/etc/passwd')", {}),
        "file_as_table": ("sql", f"SELECT * FROM '{alpha_db}'", {}),
        "scalar_file_read": ("sql", "SELECT person_id, sex FROM person WHERE sex = "
                                    "(SELECT content FROM read_text('/etc/hostname'))", {}),
        # /proc
        "proc_environ": ("sql", "SELECT content AS person_id, content AS sex FROM "
                                "read_text('/proc/self/environ')", {}),
        "proc_as_table": ("sql", "SELECT * FROM '/proc/self/environ'", {}),
        # forged patient columns
        "patient_concat": ("sql", "SELECT person_id || '#' || i AS person_id, sex FROM person, "
                                  "(SELECT unnest([1,2,3,4,5,6,7,8,9,10]) AS i)", {}),
        "patient_arithmetic": ("sql", "SELECT hash(person_id) + 1 AS person_id, sex FROM person",
                               {}),
        "patient_union_rewritten": ("sql", " UNION ALL ".join(
            f"SELECT person_id || '#{i}' AS person_id, sex FROM person" for i in range(10)), {}),
        "patient_constant": ("sql", "SELECT 'same patient' AS person_id, sex FROM person", {}),
        "patient_other_column": ("sql", "SELECT sex AS person_id, sex FROM person", {}),
        "patient_case": ("sql", "SELECT CASE WHEN sex = 'F' THEN person_id ELSE person_id END "
                                "AS person_id, sex FROM person", {}),
        # the spec is not trusted either (statsmodels runs formula terms as Python)
        "formula_code": ("fields", {"kind": "ols", "spec": {
            "kind": "ols", "patient": "person_id",
            "formula": f"sex ~ I(__import__('os').system('touch {marker}-formula'))"}}, {}),
        "tables_of_beta_only": ("sql", "SELECT person_id, sex FROM person_alpha", {}),
    }


@pytest.fixture(scope="module")
def bed():
    b = hubbed.make_bed(PORTS, researchers=2, stewards=1, real_airlock=True)
    if Path("/usr/sbin/nft").exists():  # as 'enclave up' serves: researchers' egress denied
        from enclave.io.hub import egress

        try:
            egress.apply_egress(b.settings)
        except BaseException:
            hubbed.teardown(b)
            raise
    yield b
    hubbed.teardown(b)


def control_snapshot(bed) -> dict:
    con = sqlite3.connect(f"file:{bed.settings.control_path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: sorted(map(repr, con.execute(f'SELECT * FROM "{n}"').fetchall()))
                for n in names if n.startswith(CONTROL_TABLES)}
    finally:
        con.close()


def airlock_files(bed) -> set[str]:
    """The airlock's folder, less what a submission legitimately adds (its request folder, the
    ledger of the honest output, the database's journal files)."""
    root = airlock_dir(bed.settings)
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.relative_to(root).parts[0] not in ("requests", "ledger")
            and not p.name.endswith(("-wal", "-shm", "-journal"))}


def ledger_outputs(bed, project: str) -> set[str]:
    import duckdb

    found = set()
    for path in (ledger_path(bed.settings, project), store_ledger_path(bed.settings)):
        if not path.exists():
            continue
        con = duckdb.connect(str(path), read_only=True)
        try:
            found |= {r[0] for r in con.execute(
                "SELECT output_id FROM outputs WHERE coalesce(project, ?) = ?",
                [project, project]).fetchall()}
        finally:
            con.close()
    return found


@pytest.fixture(scope="module")
def run(bed):
    """Every attack, submitted from r1's (beta's) kernel; with the state before and after."""
    status, _ = bed.login("r1")  # a real login: the hub learns the user's groups (airlock access)
    assert status in (200, 302), status
    before = {"control": control_snapshot(bed), "files": airlock_files(bed)}
    table = attacks(bed)
    code = KERNEL.replace("BETA", repr(bed.projects["beta"])).replace(
        "ATTACKS", repr(table))
    out = bed.server("r1").run(code, timeout=900)
    assert out["error"] is None, out
    line = next(ln for ln in out["stdout"].splitlines() if ln.startswith("RESULT "))
    results = json.loads(line.removeprefix("RESULT "))
    after = {"control": control_snapshot(bed), "files": airlock_files(bed)}
    return {"results": results, "before": before, "after": after, "table": table,
            "secrets": secrets_of(bed)}


def stored(bed, answer: dict) -> dict:
    """The request as the airlock stored it (a steward's full view, read as root)."""
    with Airlock(bed.settings) as a:
        return a.describe(answer["request_id"], bed.name("steward"))


def secrets_of(bed) -> list[str]:
    """What must never appear in anything the airlock answered or stored: the patients of the
    other project's release, file contents and tokens the attacks aimed at."""
    import duckdb

    con = duckdb.connect(str(bed.release("alpha")), read_only=True)
    try:
        alpha_patients = [r[0] for r in con.execute("SELECT person_id FROM person").fetchall()]
    finally:
        con.close()
    out = ["root:x:0:0", "JUPYTERHUB_API_TOKEN", "SQLite format", *alpha_patients]
    token = bed.settings.home / "hub" / "ops_token"
    if token.exists():
        out.append(token.read_text().strip())
    return [str(x) for x in out if x]


def assert_refused(bed, run, name: str, *needles: str) -> dict:
    """The attack was refused with a reason naming the construct, and nothing crossed."""
    answer = run["results"][name]
    marker = f"/tmp/{bed.prefix}-marker"
    if "error" in answer:  # refused at the door (e.g. not a member): nothing was recorded
        text = answer["error"]
        assert any(n.lower() in text.lower() for n in needles), (name, text)
    else:
        assert answer["status"] == "rejected", (name, answer["status"], answer["checks"])
        assert answer["checks"]["ok"] is False
        assert answer["checks"]["detail"] == {}, "the requester saw check details"
        text = " ".join(answer["checks"]["problems"]) + " " + (answer["decision_reason"] or "")
        assert any(n.lower() in text.lower() for n in needles), (name, text)
        full = stored(bed, answer)
        assert not full["checks"]["detail"].get("cells"), f"{name}: cells were computed"
        assert answer["record"]["output_id"] not in ledger_outputs(bed, bed.projects["beta"])
        blob = (json.dumps(answer) + json.dumps(full["checks"])).replace(
            json.dumps(answer["record"]), "")
        leaked = [x for x in run["secrets"] if x in blob]
        assert not leaked, f"{name}: {len(leaked)} secret(s) in the answer or the stored checks"
    for suffix in ("-multi.csv", "-copy.csv", "-export", "-formula"):
        assert not Path(marker + suffix).exists(), f"{name} wrote {marker}{suffix}"
    assert not list(airlock_dir(bed.settings).rglob(f"{bed.prefix}-planted*"))
    assert run["after"]["control"] == run["before"]["control"], "the control database changed"
    assert run["after"]["files"] == run["before"]["files"], "files appeared in the airlock"
    return answer


# --- legitimate outputs still pass -------------------------------------------------------------

def test_an_honest_output_is_reproduced_in_the_sandbox(bed, run):
    answer = run["results"]["honest"]
    assert answer["status"] == "in_review" and answer["checks"]["ok"], answer
    assert answer["checks"]["detail"] == {}, "no recomputed cells before approval"
    full = stored(bed, answer)
    sandbox = full["checks"]["detail"]["sandbox"]
    # its own identity in its own namespaces: uid/gid 65534, a fresh PID namespace, cwd /tmp
    assert sandbox["uid"] == 65534 and sandbox["gid"] == 65534 and sandbox["pid"] < 10
    assert sandbox["cwd"] == "/tmp"
    assert set(sandbox["groups"]) <= {65534}, "no project group is visible in the sandbox"
    assert answer["record"]["output_id"] in ledger_outputs(bed, bed.projects["beta"])


# --- one test per attack class -----------------------------------------------------------------

def test_forged_release_name(bed, run):
    for name in ("release_other_project", "release_path_escape", "release_absolute_path"):
        assert_refused(bed, run, name, "not a release of its own project",
                       "is not '<project>/vN'")


def test_another_projects_release(bed, run):
    assert_refused(bed, run, "release_and_project_other", "not a member", "(403)")


def test_hash_mismatch(bed, run):
    assert_refused(bed, run, "release_hash_mismatch", "database hash does not match")
    assert_refused(bed, run, "manifest_hash_mismatch", "manifest does not match")
    assert_refused(bed, run, "record_not_rehashed", "record was altered")


def test_multi_statement_sql(bed, run):
    for name in ("multi_statement_copy", "multi_statement_attach"):
        assert_refused(bed, run, name, "statements; exactly one SELECT")


@pytest.mark.parametrize("name,construct", [
    ("copy", "COPY"), ("copy_into_airlock", "COPY"), ("attach", "ATTACH"),
    ("pragma", "PRAGMA"), ("set", "SET"), ("install", "INSTALL"), ("load", "LOAD"),
    ("call", "CALL"), ("export", "EXPORT"),
    ("catalog_databases", "duckdb_databases"), ("catalog_settings", "current_setting"),
    ("information_schema", "information_schema"), ("other_database_table", "catalog or schema"),
])
def test_forbidden_construct(bed, run, name, construct):
    assert_refused(bed, run, name, construct)


def test_file_reading_table_functions(bed, run):
    for name, fn in (("read_other_release", "read_parquet"), ("read_text_outbox", "read_text"),
                     ("glob_releases", "glob"), ("read_csv_passwd", "read_csv"),
                     ("file_as_table", "file path"), ("scalar_file_read", "read_text")):
        assert_refused(bed, run, name, fn)


def test_proc_reads(bed, run):
    assert_refused(bed, run, "proc_environ", "read_text")
    assert_refused(bed, run, "proc_as_table", "file path")


@pytest.mark.parametrize("name", ["patient_concat", "patient_arithmetic",
                                  "patient_union_rewritten", "patient_constant",
                                  "patient_other_column", "patient_case"])
def test_forged_patient_column(bed, run, name):
    assert_refused(bed, run, name, "patient column", "table function")


def test_model_formula_code(bed, run):
    assert_refused(bed, run, "formula_code", "model formula")


def test_a_table_outside_the_release(bed, run):
    assert_refused(bed, run, "tables_of_beta_only", "not a table of the record's release")


def test_details_of_a_refused_request(bed, run):
    """Whatever the state, the requester gets no recomputed cells before approval; a steward
    (not the requester) sees the evidence."""
    rid = run["results"]["honest"]["request_id"]
    again = bed.server("r1").run(f"""
import json, os, urllib.request
req = urllib.request.Request(os.environ["ENCLAVE_AIRLOCK_URL"] + "/api/requests/{rid}",
    headers={{"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]}})
print(json.dumps(json.load(urllib.request.urlopen(req, timeout=30))["checks"]))""")
    seen = json.loads(again["stdout"].strip().splitlines()[-1])
    assert seen["detail"] == {} and seen["ok"]
    for name in ("proc_environ", "patient_union_rewritten", "release_hash_mismatch"):
        assert run["results"][name]["checks"]["detail"] == {}


def test_the_sandbox_reaches_only_its_release(bed):
    """The re-run's sandbox, started exactly as the airlock starts it and with the airlock
    service's own uid, gid and groups: its identity, and everything else out of reach."""
    from enclave.io.outputs.sandbox import SandboxLimits, command

    pid = serve._load_run(bed.settings)["pid"]
    service = next(p for p in serve.descendants(pid)
                   if b"airlock serve" in Path(f"/proc/{p}/cmdline").read_bytes().replace(
                       b"\0", b" "))
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{service}/status").read_text().splitlines() if ":" in line)
    uid, gid = int(status["Uid"].split()[0]), int(status["Gid"].split()[0])
    groups = [int(g) for g in status["Groups"].split()]
    s = bed.settings
    inside = {"other_release": str(bed.release("alpha")), "airlock": str(airlock_dir(s)),
              "restricted": str(s.restricted_dir), "home": str(s.home),
              "control": str(s.control_path)}
    probe = f"""
import json, os, socket
out = {{"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}}
for k, p in {inside!r}.items():
    out[k] = os.path.exists(p)
out["own_release"] = len(open("/release/release.duckdb", "rb").read(16))
out["write_release"] = []
for target in ("/release/release.duckdb", "/release/planted", "/planted", "/usr/planted"):
    try:
        open(target, "ab").close(); out["write_release"].append(target)
    except OSError:
        pass
open("/tmp/{bed.prefix}-inside", "w").write("x")
try:
    socket.create_connection(("127.0.0.1", {s.hub.port}), timeout=3); out["net"] = True
except OSError:
    out["net"] = False
out["interfaces"] = sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else []
print(json.dumps(out))
"""
    runner = f"""
import subprocess, sys
from enclave.io.outputs.sandbox import SandboxLimits, command
from enclave.core.settings import load_settings
s = load_settings({str(s.home)!r})
cmd = command({str(bed.release("beta"))!r}, s, SandboxLimits.from_settings(s),
              argv=[sys.executable, "-I", "-c", {probe!r}])
p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
print(p.stdout, p.stderr[-500:])
"""
    from enclave.io.hub.config import service_python

    proc = subprocess.run([service_python(s), "-I", "-c", runner], capture_output=True, text=True,
                          user=uid, group=gid, extra_groups=groups, cwd="/", timeout=120)
    got = json.loads(proc.stdout.strip().splitlines()[0])
    assert uid == pwd.getpwnam(s.hub.airlock_user).pw_uid and groups, "the real service identity"
    assert got["uid"] == got["gid"] == 65534 and set(got["groups"]) <= {65534}, got
    assert got["own_release"] == 16 and got["write_release"] == [], got
    assert not any(got[k] for k in inside), got   # none of these paths exists in the sandbox
    assert got["net"] is False and got["interfaces"] in ([], ["lo"]), got
    assert not Path(f"/tmp/{bed.prefix}-inside").exists(), "the sandbox's /tmp is private"
    assert SandboxLimits.from_settings(s).memory_mb > 0 and "--die-with-parent" in command(
        bed.release("beta"), s, SandboxLimits.from_settings(s))
