"""Where each role lands and what its hub home page offers (enclave/io/hub/welcome.py)."""

from __future__ import annotations

import json

from enclave.io.hub import welcome


def _groups(settings, role):
    h = settings.hub
    return {{"researcher": h.researchers_group, "steward": h.stewards_group,
             "policymaker": h.policymakers_group}[role], "other"}


def test_each_role_lands_on_its_own_page_and_a_signed_out_visitor_on_the_login(settings):
    assert welcome.landing_url(settings, None) == ""  # JupyterHub's login, back to the root
    assert welcome.landing_url(settings, _groups(settings, "researcher")) == "/hub/spawn"
    assert welcome.landing_url(settings, _groups(settings, "steward")) == "/services/airlock/"
    assert welcome.landing_url(settings, _groups(settings, "policymaker")) == \
        "/services/dashboards/"
    assert welcome.landing_url(settings, {"nobody"}) == "/hub/home"


def test_only_a_researcher_home_offers_the_lab(settings):
    for role in ("researcher", "steward", "policymaker"):
        home = welcome.home_for(settings, _groups(settings, role))
        assert home["role"] == role and home["links"]
        hrefs = " ".join(link["href"] for link in home["links"])
        assert ("user-redirect/lab" in hrefs) == (role == "researcher")
    assert welcome.home_for(settings, set())["role"] == "none"


def test_the_welcome_notebook_explains_tiers_the_checked_api_and_export(settings):
    nb = welcome.welcome_notebook(settings)
    text = "\n".join(c["source"] for c in nb["cells"])
    for words in ("synthetic", "desensitized", "crosstab", "withheld", "export(",
                  "my_requests()", "examples/"):
        assert words in text, words
    assert nb["metadata"]["kernelspec"]["name"] == "enclave"
    json.dumps(nb)  # a valid notebook document
