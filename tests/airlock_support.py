"""Test support for the airlock: an in-memory project store, an explicit check adapter (the unit
tests of the workflow take the check outcome as input), and an Airlock factory."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from enclave.core.audit import now
from enclave.core.errors import BadInputError
from enclave.core.model.project import Project, ProjectStatus, SharingForm, Tier
from enclave.io.airlock.checks import CheckOutcome
from enclave.io.airlock.exports import Airlock
from enclave.io.airlock.roles import add_role
from enclave.io.airlock.workflow import Actor, CheckStatus, Role

STEWARDS = ("sam", "sue", "tom")
REQUESTER = "alice"
MEMBER = "bob"
POLICYMAKER = "pat"
ADMIN = "root"
OUTSIDER = "nora"
STEWARD_MEMBER = "stella"  # a steward who is also a member of the project


class MemoryProjects:
    """A ProjectStore in memory (the SQL store is tested in test_projects / test_airlock_projects)."""

    def __init__(self, *projects: Project):
        self.projects = {p.id: p for p in projects}

    def list(self) -> list[Project]:
        return sorted(self.projects.values(), key=lambda p: p.id)

    def get(self, project_id: str) -> Project:
        if project_id not in self.projects:
            raise BadInputError(f"no project '{project_id}'")
        return self.projects[project_id]

    def update(self, project: Project, *, con=None) -> Project:
        self.projects[project.id] = project
        return project

    def set_status(self, project_id: str, status: ProjectStatus) -> None:
        self.projects[project_id] = replace(self.projects[project_id], status=status)


def project(pid: str = "alpha", status: ProjectStatus = ProjectStatus.ACTIVE,
            expires: dt.date = dt.date(2099, 12, 31)) -> Project:
    return Project(id=pid, title="t", purpose="p", principal_investigator=REQUESTER,
                   members=(REQUESTER, MEMBER, STEWARD_MEMBER), tier=Tier.DESENSITIZED,
                   allowed={"person": ("*",)}, sharing_form=SharingForm.ENCLAVE, expires=expires,
                   created_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), status=status)


def declared_checks(record: dict, settings) -> CheckOutcome:
    """The explicit check adapter of the unit tests: the outcome is part of the test's input
    (``record["test_outcome"]``), never invented by the airlock."""
    o = record["test_outcome"]
    return CheckOutcome(ok=o["ok"], status=CheckStatus(o["status"]),
                        ledger_hits=tuple({"overlap": i} for i in range(o.get("hits", 0))))


def record(status: str = "pass", ok: bool = True, hits: int = 0, pid: str = "alpha") -> dict:
    return {"project": pid, "kind": "crosstab", "sql": "SELECT 1", "status": status,
            "test_outcome": {"ok": ok, "status": status, "hits": hits}}


def make_airlock(settings, projects: MemoryProjects | None = None, **kw) -> Airlock:
    a = Airlock(settings, projects=projects or MemoryProjects(project()), checks=declared_checks,
                ledger_add=lambda r, o, s: False, **kw)
    root = Actor(ADMIN, frozenset({Role.ADMIN}))
    for s in (*STEWARDS, STEWARD_MEMBER):
        add_role(a.con, root, s, "steward", now())
    add_role(a.con, root, POLICYMAKER, "policymaker", now())
    return a


FILES = {"result.csv": b"sex,count\nF,120\nM,115\n"}


# --- a real enclave home and the real service, for the integration tests -------------------------

import json as _json
import os as _os
import signal as _signal
import socket as _socket
import subprocess as _subprocess
import sys as _sys
import time as _time
import urllib.error as _uerr
import urllib.request as _ureq
from pathlib import Path as _Path

from tests.conftest import free_port

REPO = _Path(__file__).resolve().parents[1]
USERS = (REQUESTER, MEMBER, STEWARD_MEMBER, *STEWARDS, POLICYMAKER, ADMIN, OUTSIDER)


def token_of(user: str) -> str:
    return f"tok-{user}-0123456789abcdef"


def cli(home, *args, check: bool = True, env: dict | None = None):
    res = _subprocess.run([_sys.executable, "-m", "enclave", "--home", str(home), *args],
                          capture_output=True, text=True, cwd=REPO, check=False, timeout=300,
                          env=env)
    if check:
        assert res.returncode == 0, res.stderr[-2000:]
    return res


def make_tiny_release(home, project_id: str = "alpha"):
    """A published desensitized release (as the builder lays it out) with tables ``visit``
    (cells (grp, sex) of 20 patients each, and one small cell (c, F) of 3 patients) and
    ``person``."""
    import duckdb
    import polars as pl

    from enclave.core.crypto import file_sha256
    from enclave.core.publish import write_manifest

    rows = [(f"pz{i:04d}q", "ab"[i % 2], "FM"[(i // 2) % 2]) for i in range(80)]
    rows += [(f"pz{900 + i:04d}q", "c", "F") for i in range(3)]
    rows += [(f"pz{950 + i:04d}q", "c", "M") for i in range(20)]
    d = _Path(home) / "releases" / "desensitized" / project_id / "v1"
    d.mkdir(parents=True)
    con = duckdb.connect(str(d / "release.duckdb"))
    con.register("_df", pl.DataFrame(rows, schema=["person_id", "grp", "sex"],
                                     orient="row").to_arrow())
    con.execute("CREATE TABLE visit AS SELECT * FROM _df").fetchall()
    con.execute("CREATE TABLE person AS SELECT DISTINCT person_id FROM visit").fetchall()
    con.close()
    _os.chmod(d / "release.duckdb", 0o440)
    write_manifest(d / "manifest.json", {
        "release": f"{project_id}/v1", "project": project_id, "tier": "desensitized",
        "version": 1, "files": {"release.duckdb": {"sha256": file_sha256(d / "release.duckdb"),
                                                   "bytes": (d / "release.duckdb").stat().st_size}}})
    return d


def make_enclave(home, settings_toml: str = ""):
    """A home with an active project ``alpha`` (alice PI, bob, stella), stewards sam/sue/tom and
    stella, policymaker pat, the tiny release, and a token table; returns the token file."""
    home = _Path(home)
    home.mkdir(parents=True, exist_ok=True)
    if settings_toml:
        (home / "settings.toml").write_text(settings_toml)
    cli(home, "project", "create", "--id", "alpha", "--title", "T", "--purpose", "P", "--pi",
        REQUESTER, "--member", MEMBER, "--member", STEWARD_MEMBER, "--tier", "desensitized",
        "--sharing", "enclave", "--expires", "2099-12-31", "--table", "person")
    for user in (*STEWARDS, STEWARD_MEMBER):
        cli(home, "airlock", "role", "add", user, "steward")
    cli(home, "airlock", "role", "add", POLICYMAKER, "policymaker")
    cli(home, "project", "approve", "alpha", "--as", STEWARDS[0])
    cli(home, "project", "activate", "alpha")
    make_tiny_release(home)
    tokens = home.parent / f"{home.name}-tokens.json"
    tokens.write_text(_json.dumps({token_of(u): u for u in USERS}))
    _os.chmod(tokens, 0o600)
    return tokens


def make_output(home, small_cell: bool = False, drop: int = 0) -> dict:
    """A real output record made with the researcher API on the tiny release (as a kernel would),
    with its rendered files. ``small_cell``: include group c, whose (c, F) cell has 3 patients;
    ``drop``: leave out that many patients (a nested population, for the differencing ledger)."""
    from enclave.research import crosstab, workspace

    ws = workspace(home, project="alpha")
    t = ws.table("visit")
    if not small_cell:
        t = t.filter(t.grp != "c")
    if drop:
        t = t.filter(~t.person_id.isin([f"pz{i:04d}q" for i in range(drop)]))
    out = crosstab(t, "grp", "sex")
    return {"record": out.record, "files": out.files(), "status": out.status}


class Service:
    """``enclave airlock serve`` in its own process, standalone token mode."""

    def __init__(self, home, tokens, env: dict | None = None):
        self.home, self.tokens, self.port = _Path(home), tokens, free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.extra_env = env or {}
        self.proc = None

    def start(self) -> Service:
        env = {**_os.environ, **self.extra_env}
        env.pop("JUPYTERHUB_API_TOKEN", None)
        self.log = open(self.home.parent / f"airlock-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = _subprocess.Popen(
            [_sys.executable, "-m", "enclave", "--home", str(self.home), "airlock", "serve",
             "--port", str(self.port), "--tokens", str(self.tokens)],
            cwd=REPO, env=env, stdout=self.log, stderr=_subprocess.STDOUT)
        deadline = _time.monotonic() + 60
        while _time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"airlock service exited with {self.proc.returncode}")
            try:
                with _socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                _time.sleep(0.1)
        raise RuntimeError("airlock service did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            _os.kill(self.proc.pid, _signal.SIGKILL)
        if self.proc:
            self.proc.wait(timeout=30)
        self.log.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except _subprocess.TimeoutExpired:
                self.kill()
                return
        self.log.close()

    def call(self, user: str, method: str, path: str, body: dict | None = None,
             timeout: float = 300) -> tuple[int, dict | bytes]:
        data = None if body is None else _json.dumps(body).encode()
        req = _ureq.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"token {token_of(user)}", "Content-Type": "application/json"})
        try:
            with _ureq.urlopen(req, timeout=timeout) as resp:
                raw, code, ctype = resp.read(), resp.status, resp.headers.get("Content-Type", "")
        except _uerr.HTTPError as exc:
            raw, code, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        return code, (_json.loads(raw) if "json" in ctype else raw)

    def submit(self, user: str, output: dict, justification: str = "Table 1 of the paper"):
        import base64

        return self.call(user, "POST", "api/requests", {
            "record": output["record"], "justification": justification,
            "files": {n: base64.b64encode(d).decode() for n, d in output["files"].items()}})


def consistency_problems(settings) -> list[str]:
    """Request rows, votes, the audit trail and the outbox must tell one story."""
    from enclave.core.audit import connect, events, verify_connection
    from enclave.io.airlock import store as _store
    from enclave.io.airlock.outbox import outbox_dir

    con = connect(settings)
    problems = []
    try:
        v = verify_connection(con)
        if not v.ok:
            problems.append(f"audit: {v.problem}")
        for req in _store.list_requests(con):
            trail = [e for e in events(con, f"request:{req['id']}") if "to" in e["detail"]]
            if not trail or trail[-1]["detail"]["to"] != req["status"].value:
                problems.append(f"{req['id']}: status {req['status'].value}, audit says "
                                f"{trail[-1]['detail']['to'] if trail else 'nothing'}")
            n_votes = len(_store.votes(con, req["id"]))
            n_events = sum(e["action"] == "request.vote" for e in trail)
            if n_votes != n_events:
                problems.append(f"{req['id']}: {n_votes} votes but {n_events} vote events")
            released = (outbox_dir(settings) / req["id"]).exists()
            if req["status"].value == "released" and not released:
                problems.append(f"{req['id']}: released without an outbox folder")
            if released and req["status"].value not in ("released", "approved"):
                problems.append(f"{req['id']}: outbox folder while {req['status'].value}")
    finally:
        con.close()
    return problems
