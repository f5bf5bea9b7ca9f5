"""Research projects: validation, the control-database repository, and the CLI."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest

import enclave.core.model.project
from enclave.core.errors import BadInputError
from enclave.core.model.catalog import parse_catalog
from enclave.core.model.omop import cdm_columns
from enclave.core.model.project import (
    ALL_COLUMNS,
    Project,
    ProjectStatus,
    SharingForm,
    Tier,
    merge_allowed,
    parse_table_spec,
)
from enclave.core.settings import load_settings
from enclave.io.projects import ProjectStore, SqlProjectStore, create_project, validate_project
from tests.conftest import REPO

TODAY = date(2025, 6, 1)
NOW = datetime(2025, 6, 1, 9, 30, tzinfo=UTC)


def _fields(**over):
    base = {
        "id": "diabetes-2025",
        "title": "Type 2 diabetes care across hospitals",
        "purpose": "Describe repeat HbA1c tests at different hospitals within 30 days",
        "principal_investigator": "alice",
        "members": ["bob", "carol"],
        "tier": "desensitized",
        "allowed": {"person": ("*",),
                    "measurement": ("measurement_concept_id", "value_as_number")},
        "sharing_form": "controlled",
        "expires": "2026-05-31",
    }
    base.update(over)
    return base


def _validate(**over) -> Project:
    return validate_project(today=TODAY, created_at=NOW, **_fields(**over))


def test_a_valid_proposal_becomes_a_proposed_project():
    p = _validate()
    assert p.status is ProjectStatus.PROPOSED
    assert p.tier is Tier.DESENSITIZED and p.sharing_form is SharingForm.CONTROLLED
    assert p.expires == date(2026, 5, 31) and p.created_at == NOW
    assert p.allows_all("person") and not p.allows_all("measurement")
    assert p.allowed["measurement"] == ("measurement_concept_id", "value_as_number")


def test_the_principal_investigator_is_always_a_member():
    assert _validate().members == ("alice", "bob", "carol")
    assert _validate(members=["bob", "alice"]).members == ("alice", "bob")
    assert _validate(members=[]).members == ("alice",)


@pytest.mark.parametrize(
    ("over", "fragment"),
    [
        ({"id": "Diabetes"}, "project id 'Diabetes' is not a slug"),
        ({"id": "ab"}, "not a slug"),
        ({"id": "diabetes--2025"}, "not a slug"),
        ({"id": "diabetes-"}, "not a slug"),
        ({"id": "a" * 25}, "not a slug"),
        ({"title": "  "}, "needs a title"),
        ({"purpose": ""}, "needs a purpose"),
        ({"principal_investigator": "Alice Wang"}, "principal investigator 'Alice Wang'"),
        ({"members": ["bob", "Carol!"]}, "'Carol!'"),
        ({"tier": "identified"}, "tier must be one of synthetic, desensitized, not 'identified'"),
        ({"sharing_form": "open"}, "sharing form must be one of public, controlled, enclave"),
        ({"expires": "2025-06-01"}, "expiry date 2025-06-01 is not in the future"),
        ({"expires": "2024-12-31"}, "expiry date 2024-12-31 is not in the future"),
        ({"expires": "31/12/2026"}, "'31/12/2026' is not a date"),
        ({"allowed": {}}, "at least one table"),
        ({"allowed": {"patients": ("*",)}}, "unknown table 'patients'"),
        ({"allowed": {"person": ("year_of_birth", "name")}},
         "unknown column(s) of table 'person': name"),
        ({"allowed": {"person": ()}}, "table 'person' lists no columns"),
    ],
)
def test_refusals_name_what_was_wrong(over, fragment):
    with pytest.raises(BadInputError) as err:
        _validate(**over)
    assert fragment in str(err.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(BadInputError) as err:
        _validate(id="X", expires="2020-01-01", allowed={"persn": ("*",)})
    msg = str(err.value)
    assert "not a slug" in msg and "2020-01-01" in msg and "persn" in msg
    assert msg.count("\n  - ") == 3


def test_expiry_tomorrow_is_accepted():
    assert _validate(expires=TODAY + timedelta(days=1)).expires == date(2025, 6, 2)


def test_permitted_columns_must_be_classified():
    header = "table,column,category,level,role,kind,free_text,rationale\n"
    classes = parse_catalog(
        header + "person,person_id,personal_attributes,4,direct_identifier,id,no,key\n"
    )
    ok = validate_project(today=TODAY, created_at=NOW, classes=classes,
                          **_fields(allowed={"person": ("person_id",)}))
    assert ok.allowed == {"person": ("person_id",)}
    with pytest.raises(BadInputError) as err:
        validate_project(today=TODAY, created_at=NOW, classes=classes,
                         **_fields(allowed={"person": ("person_id", "year_of_birth")}))
    assert "year_of_birth" in str(err.value) and "no classification" in str(err.value)
    with pytest.raises(BadInputError) as err:  # '*' means every column, so every one is checked
        validate_project(today=TODAY, created_at=NOW, classes=classes,
                         **_fields(allowed={"person": ("*",)}))
    assert "gender_concept_id" in str(err.value)


def test_table_specs_parse_and_merge():
    assert parse_table_spec("person") == ("person", (ALL_COLUMNS,))
    assert parse_table_spec("measurement:a, b,a") == ("measurement", ("a", "b"))
    assert parse_table_spec("measurement:a,*") == ("measurement", (ALL_COLUMNS,))
    for bad in ("", ":a", "person:", "person:a,,b"):
        with pytest.raises(BadInputError):
            parse_table_spec(bad)
    assert merge_allowed([("m", ("a", "b")), ("p", ("*",))]) == {"m": ("a", "b"), "p": ("*",)}
    with pytest.raises(BadInputError, match="table 'p' is given twice"):
        merge_allowed([("p", ("*",)), ("m", ("a",)), ("p", ("x",))])


def test_risk_threshold_comes_from_the_release_settings(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "settings.toml").write_text("[release]\nrisk_threshold_controlled = 0.1\n")
    settings = load_settings(home)
    assert SharingForm.CONTROLLED.risk_threshold(settings) == 0.1
    assert SharingForm.PUBLIC.risk_threshold(settings) == settings.release.risk_threshold_public
    release = settings.release
    assert SharingForm.ENCLAVE.risk_threshold(release) == release.risk_threshold_enclave
    assert _validate().risk_threshold(settings) == 0.1


def test_store_round_trip(settings):
    store: ProjectStore = SqlProjectStore(settings)
    assert store.list() == []
    assert not settings.control_path.exists()  # reading creates nothing
    first = create_project(store, today=TODAY, now=NOW, **_fields())
    second = create_project(store, today=TODAY, now=NOW + timedelta(minutes=5), **_fields(
        id="asthma-kids", tier="synthetic", sharing_form="public", members=[],
        allowed={"visit_occurrence": ("visit_start_date", "care_site_id", "visit_concept_id")}))
    assert settings.control_path.exists()
    assert store.get("diabetes-2025") == first
    assert store.get("asthma-kids") == second
    assert store.list() == [second, first]  # by id
    got = store.get("asthma-kids")
    assert got.allowed["visit_occurrence"] == (
        "visit_start_date", "care_site_id", "visit_concept_id")
    assert got.members == ("alice",) and got.created_at.tzinfo is not None
    with pytest.raises(BadInputError, match="already exists"):
        create_project(store, today=TODAY, now=NOW, **_fields())
    with pytest.raises(BadInputError, match="no project 'nope'"):
        store.get("nope")
    assert len(store.list()) == 2


def test_a_refused_proposal_records_nothing(settings):
    store = SqlProjectStore(settings)
    with pytest.raises(BadInputError):
        create_project(store, today=TODAY, now=NOW, **_fields(allowed={"persn": ("*",)}))
    assert store.list() == []


def test_is_expired_counts_the_expiry_day_as_usable():
    p = _validate()
    assert not p.is_expired(p.expires) and p.is_expired(p.expires + timedelta(days=1))


def test_module_doctests():
    assert doctest.testmod(enclave.core.model.project).failed == 0


# --- through the real command line ----------------------------------------------------------

FUTURE = (date.today() + timedelta(days=365)).isoformat()


def _cli(tmp_path, *args):
    home = str(tmp_path / "home")
    return subprocess.run([sys.executable, "-m", "enclave", "--home", home, *args],
                          check=False, capture_output=True, text=True, cwd=REPO)


def _create_args(**over):
    args = {"--id": "diabetes-2025", "--title": "Diabetes care", "--purpose": "Repeat tests",
            "--pi": "alice", "--tier": "desensitized", "--sharing": "controlled",
            "--expires": FUTURE}
    args.update(over)
    out = ["project", "create"]
    for k, v in args.items():
        out += [k, v]
    return out + ["--member", "bob", "--member", "carol", "--table", "person",
                  "--table", "measurement:measurement_concept_id,value_as_number"]


def test_cli_create_list_show(tmp_path):
    res = _cli(tmp_path, "project", "list", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []
    res = _cli(tmp_path, *_create_args(), "--json")
    assert res.returncode == 0, res.stderr
    created = json.loads(res.stdout)
    assert created["id"] == "diabetes-2025" and created["status"] == "proposed"
    assert created["members"] == ["alice", "bob", "carol"]
    assert created["allowed"] == {"person": ["*"],
                                  "measurement": ["measurement_concept_id", "value_as_number"]}
    assert created["expires"] == FUTURE and created["tier"] == "desensitized"
    res = _cli(tmp_path, *_create_args(**{"--id": "asthma-kids", "--tier": "synthetic"}))
    assert res.returncode == 0, res.stderr
    assert "project asthma-kids recorded" in res.stdout

    res = _cli(tmp_path, "project", "list", "--json")
    listed = json.loads(res.stdout)
    assert [p["id"] for p in listed] == ["asthma-kids", "diabetes-2025"]
    assert listed[1] == created
    res = _cli(tmp_path, "project", "list")
    assert res.returncode == 0 and "diabetes-2025" in res.stdout and "asthma-kids" in res.stdout

    res = _cli(tmp_path, "project", "show", "diabetes-2025", "--json")
    assert res.returncode == 0 and json.loads(res.stdout) == created
    res = _cli(tmp_path, "project", "show", "diabetes-2025")
    assert "measurement: measurement_concept_id, value_as_number" in res.stdout
    assert "person: all columns" in res.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--table", "patients"], "unknown table 'patients'"),
        (["--table", "visit_occurrence:visit_start_date,shoe_size"],
         "unknown column(s) of table 'visit_occurrence': shoe_size"),
        (["--table", "person:year_of_birth"], "table 'person' is given twice"),
        (["--expires", "2001-01-01"], "expiry date 2001-01-01 is not in the future"),
        (["--tier", "identified"], "'identified' is not one of 'synthetic', 'desensitized'"),
        (["--sharing", "open"], "'open' is not one of 'public', 'controlled', 'enclave'"),
        (["--id", "Bad_Id"], "project id 'Bad_Id' is not a slug"),
    ],
)
def test_cli_refusals(tmp_path, args, fragment):
    base = _create_args()
    for flag, value in zip(args[::2], args[1::2]):
        if flag == "--table":
            base += [flag, value]
        else:
            base[base.index(flag) + 1] = value
    res = _cli(tmp_path, *base)
    assert res.returncode == 2, res.stdout
    assert fragment in res.stderr
    listed = _cli(tmp_path, "project", "list", "--json")
    assert json.loads(listed.stdout) == []


def test_cli_duplicate_and_unknown_project(tmp_path):
    assert _cli(tmp_path, *_create_args()).returncode == 0
    res = _cli(tmp_path, *_create_args())
    assert res.returncode == 2 and "project 'diabetes-2025' already exists" in res.stderr
    res = _cli(tmp_path, "project", "show", "nope")
    assert res.returncode == 2 and "no project 'nope'" in res.stderr


def test_cli_help_texts():
    res = subprocess.run([sys.executable, "-m", "enclave", "project", "create", "--help"],
                         check=False, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0
    for option in ("--id", "--title", "--purpose", "--pi", "--member", "--tier", "--table",
                   "--sharing", "--expires", "--json"):
        assert option in res.stdout
    assert cdm_columns()  # the model the refusals check against is loaded
