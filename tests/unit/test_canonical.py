"""One canonical JSON for every stored hash: each call site's known value, pinned.

The values were computed by the code before the hashing was gathered into
:mod:`enclave.core.canonical` (commit e5e7c70); a change of any of them breaks every stored hash of its
kind (output records, export records, disclosure and release policies, the audit chain).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from enclave.core.audit import event_hash
from enclave.core.canonical import canonical_json, canonical_sha256, manifest_bytes
from enclave.io.airlock.exports import record_sha256
from enclave.io.outputs.cells import cell_key
from enclave.io.outputs.record import record_hash
from enclave.io.release.policy import LDiversityRule, ReleasePolicy, TClosenessRule
from enclave.logic.disclosure.policy import PRESETS, policy_hash

RECORD = {"kind": "table", "title": "Âge × région", "cells": [{"a": 1, "b": 2.5, "c": None}],
          "when": dt.date(2024, 1, 2), "record_sha256": "ignored",
          "nested": {"z": 1, "a": [True, False]}}
DETAIL = {"files": {"x": 1}, "é": dt.date(2020, 1, 1)}


def test_output_record_hash_is_pinned():
    assert record_hash(RECORD) == "cd99d35fe68622cf1f416561929b9d3c3de07d3ca12658f53d650f044d9b9a15"


def test_export_record_hash_is_pinned():
    assert record_sha256(RECORD) == "bf2294f8f765c8ecab9bbab2ff31ca93449f00a2992dd8e0b882517d59837df6"


def test_cell_key_is_compact_and_keeps_unicode():
    assert cell_key({"region": "北京", "year": dt.date(2020, 1, 1), "n": 3}) == \
        '{"n":3,"region":"北京","year":"2020-01-01"}'


@pytest.mark.parametrize(("name", "digest"), [
    ("acro", "a773d51a4c5961ce1dc0fec889840ca28b2361d32bbd632aed897b2fd88d455b"),
    ("opensafely", "4237e7c33dcbf4f9223e646bafe007dbbad9407c0d83ae722eb553be3e2bae04"),
    ("opensafely-midpoint6", "e952dac1b5689cb4e5a31dea902b6f9ed1d1bd9b7e9593365ab2089614afcaf7"),
    ("abs", "aa488998d469be82a889990540953c2eea82b0b3a84c14e361bcd614129aaae5"),
    ("strict", "daf414378145f51c89abaebf272f9d65aa251e068078e7d2f1330199f7c85d01"),
])
def test_disclosure_policy_hashes_are_pinned(name, digest):
    assert policy_hash(PRESETS[name]) == digest


def test_release_policy_hash_is_pinned_with_spaced_separators():
    policy = ReleasePolicy(sharing_form="semi-public", risk_threshold=0.05, k=20,
                           max_suppression=0.02, l_diversity=LDiversityRule(3),
                           t_closeness=TClosenessRule(0.2), notes=("é",))
    assert policy.sha256 == "d8a06e4270ee0bf2c043e774c093f5c6656517a6348eb94c44cf0e0f3010d4f2"
    assert policy.sha256 == canonical_sha256(policy.as_dict(), spaced=True)
    assert policy.sha256 != canonical_sha256(policy.as_dict())


def test_audit_detail_text_and_chain_hash_are_pinned():
    body = canonical_json(DETAIL, spaced=True)
    assert body == '{"files": {"x": 1}, "é": "2020-01-01"}'
    assert event_hash(7, "2026-01-01T00:00:00.000000+00:00", "ana", "release.build", "release:p/v1",
                      body, "0" * 64) == \
        "48e34c88c2a9251ab6e1dc3d5ed17352ff64f20af36e7c2c9e7fc761263c0396"


def test_canonical_json_ignores_key_order_and_round_trips():
    a = {"b": [1, {"y": "ü", "x": None}], "a": 1.5}
    b = {"a": 1.5, "b": [1, {"x": None, "y": "ü"}]}
    assert canonical_json(a) == canonical_json(b) == '{"a":1.5,"b":[1,{"x":null,"y":"ü"}]}'
    assert json.loads(canonical_json(a)) == a
    assert canonical_sha256(a) == canonical_sha256(b)


def test_manifest_bytes_are_sorted_indented_utf8():
    data = manifest_bytes({"z": 1, "name": "région"})
    assert data == '{\n  "name": "région",\n  "z": 1\n}'.encode()
