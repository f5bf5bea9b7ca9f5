"""What each role finds at the hub's root: where it lands, its home page, a researcher's welcome.

* :func:`landing_url` — the hub's ``default_url`` for a signed-in user: researchers → their lab
  (which opens ``Welcome.ipynb``), stewards → the airlock, which shows its admins the enclave's
  status and other stewards the requests waiting for their vote, policymakers → the dashboards; someone signed out → the login page (back to the root after).
* :func:`home_for` — the hub home page's text and links for a user's role (the ``enclave``
  template variable of ``templates/home.html``). Only researchers see a "start" button: no other
  role has a notebook server, and JupyterHub's own home page offered one that failed with 500.
* :func:`write_welcome` — ``~/Welcome.ipynb`` of a researcher (tiers, the checked API, the export
  workflow, their requests), written by the hub (root) before each spawn and owned by the user.
"""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

from enclave.core.settings import Settings

WELCOME = "Welcome.ipynb"
ROLES = ("researcher", "steward", "policymaker")


def role_of(settings: Settings, groups: set[str]) -> str | None:
    """The enclave role of a hub user in ``groups`` (researcher first: one person, one place)."""
    h = settings.hub
    for role, group in (("researcher", h.researchers_group), ("steward", h.stewards_group),
                        ("policymaker", h.policymakers_group)):
        if group in groups:
            return role
    return None


def landing_url(settings: Settings, groups: set[str] | None) -> str:
    """Where the hub's root sends a user; ``groups`` None: signed out ("" = JupyterHub's login,
    which comes back to the root)."""
    if groups is None:
        return ""
    return {"researcher": "/hub/spawn",
            "steward": "/services/airlock/",  # the queue; the status page for admins
            "policymaker": "/services/dashboards/"}.get(role_of(settings, groups) or "",
                                                         "/hub/home")


def _link(id_: str, href: str, label: str, help_: str) -> dict:
    return {"id": id_, "href": href, "label": label, "help": help_}


def home_for(settings: Settings, groups: set[str]) -> dict:
    """The home page of a user in ``groups``: role, title, intro and links."""
    role = role_of(settings, groups)
    if role == "researcher":
        return {"role": role, "title": "Your research lab",
                "intro": "Analyse your project's releases in JupyterLab (no network, no "
                         "downloads). Every output is checked for disclosure as you make it; "
                         "what must leave goes through the airlock to the data stewards.",
                "links": [
                    _link("link-welcome", f"/hub/user-redirect/lab/tree/{WELCOME}",
                          "Welcome notebook", "tiers, the checked API and how to export"),
                    _link("link-examples", "/hub/user-redirect/lab/tree/examples",
                          "Example notebooks", "Table 1, prevalence, a logit, a survival curve"),
                    _link("link-requests", "/services/airlock/requests", "My export requests",
                          "their state and the stewards' decisions")]}
    if role == "steward":
        return {"role": role, "title": "Data steward",
                "intro": "Review what researchers ask to take out of the enclave: the airlock "
                         "re-runs every output and shows its evidence; two stewards decide.",
                "links": [
                    _link("link-queue", "/services/airlock/requests?queue=1&needs_my_vote=1",
                          "Requests waiting for my vote", "the review queue"),
                    _link("link-all", "/services/airlock/requests?queue=1", "All requests",
                          "every state, with filters")]}
    if role == "policymaker":
        return {"role": role, "title": "Health indicators",
                "intro": "Indicators pooled across the hospitals, by region, hospital level and "
                         "year. Cells with too few people are withheld.",
                "links": [_link("link-dashboards", "/services/dashboards/", "Dashboards",
                                "overview, prevalence, visits, readmission, repeat tests, "
                                "costs, medicines")]}
    return {"role": "none", "title": "No enclave role",
            "intro": "Your account has no role in this enclave: ask an administrator "
                     "(enclave user add).", "links": []}


def _md(*lines: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": "\n".join(lines)}


def welcome_notebook(settings: Settings) -> dict:
    from enclave.logic.disclosure import policy_from_settings

    policy = policy_from_settings(settings.disclosure)
    cells = [
        _md("# Welcome to the research enclave",
            "",
            "You work here on pseudonymised hospital records harmonised to OMOP CDM 5.4. "
            "Nothing leaves this lab except through the **airlock**: there is no network, "
            "no download and no copy-out."),
        _md("## Two tiers of data",
            "",
            "* **synthetic** — the *synthetic twin* of your project's release: the same tables "
            "and columns, no real patient. Develop and debug here.",
            "* **desensitized** — the project's release: real records, generalised and "
            "pseudonymised for your project only. Run the final analysis here.",
            "",
            "```python",
            "from enclave.research import workspace",
            'ws = workspace(tier="synthetic")   # later: tier="desensitized"',
            "ws.tables()",
            "```"),
        _md("## The checked API",
            "",
            "`crosstab`, `pivot_table`, `histogram`, `ols`, `logit`, `survival` and `custom` "
            "take an ibis table and return an **output** that is checked as it is made:",
            "",
            f"* a cell needs at least **{policy.min_patients} distinct patients** "
            f"(policy `{policy.name}`); smaller cells are **withheld** together with enough "
            "others that totals cannot give them away;",
            "* each output shows its status — **pass**, **review** (a steward must look) or "
            "**fail** — and the reasons;",
            "* outputs are compared with your earlier ones (the differencing ledger), so two "
            "passing tables cannot be subtracted to reveal a withheld cell."),
        _md("## Exporting a result",
            "",
            "```python",
            'request = export(output, justification="Table 1 of the paper")',
            "request            # its state and a link to its page",
            "```",
            "",
            "The airlock re-runs the output's recorded query on the release in its own process, "
            "checks the project's ledger and asks the stewards (two for anything that needs "
            "review). Once released, download the files from the request's page. "
            "`my_requests()` lists your requests and their state; the hub's home page links "
            "to them too."),
        _md("## Where to start",
            "",
            "The `examples/` folder has four worked notebooks: Table 1, diabetes prevalence, a "
            "readmission logit and a survival curve. Open one and run it on the synthetic twin."),
    ]
    return {"cells": cells, "metadata": {"kernelspec": {
        "name": "enclave", "display_name": "Python 3 (enclave, no network)",
        "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def write_welcome(settings: Settings, name: str) -> Path | None:
    """``~/Welcome.ipynb`` of user ``name`` (0600, theirs), unless one is there (their edits are
    kept); returns its path, or None when the user has no home folder."""
    pw = pwd.getpwnam(name)
    return write_welcome_into(settings, Path(pw.pw_dir), pw.pw_uid, pw.pw_gid)


def write_welcome_into(settings: Settings, home: Path, uid: int, gid: int) -> Path | None:
    """The notebook into ``home`` for owner ``uid``:``gid``. The hub runs this as root in a
    folder its owner controls, so nothing at the path is trusted: the file is created only if
    nothing is there (``O_EXCL``), never through a link (``O_NOFOLLOW``), and handed over by its
    open descriptor (``fchown``) — a file or link the owner puts at the path meanwhile is never
    written or chowned."""
    if not home.is_dir():
        return None
    target = home / WELCOME
    text = json.dumps(welcome_notebook(settings), ensure_ascii=False, indent=1) + "\n"
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # theirs, a file or a link: kept, never followed
        return target
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchown(fd, uid, gid)
        f.write(text)
    return target
