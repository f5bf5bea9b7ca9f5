"""The relayer's rewrite (tests/tools/relayer.py): every way the code names a moved module."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "relayer", Path(__file__).resolve().parents[1] / "tools" / "relayer.py")
relayer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(relayer)


def test_dotted_names_paths_and_path_parts_are_rewritten():
    text = "\n".join([  # noqa: FLY002 - one line per case
        "from enclave.disclosure.check import check_cells",
        "import enclave.engine as eng",
        'CHILD = "enclave.outputs.child"',
        'c.authenticator_class = "enclave.hub.auth.EnclaveAuthenticator"',
        "see `enclave/hub/config.py` and enclave/ingest/",
        'p = REPO / "enclave" / "hub" / "config.py"',
        "python -m enclave.envlock sync",
    ])
    assert relayer.rewrite(text).splitlines() == [
        "from enclave.logic.disclosure.check import check_cells",
        "import enclave.io.engine as eng",
        'CHILD = "enclave.io.outputs.child"',
        'c.authenticator_class = "enclave.io.hub.auth.EnclaveAuthenticator"',
        "see `enclave/io/hub/config.py` and enclave/io/ingest/",
        'p = REPO / "enclave" / "io" / "hub" / "config.py"',
        "python -m enclave.io.envlock sync",
    ]


def test_longest_name_wins_and_from_imports_split():
    assert relayer.new_name("enclave.release.manifest.MANIFEST") == "enclave.core.manifest.MANIFEST"
    assert relayer.new_name("enclave.release.build") == "enclave.io.release.build"
    assert relayer.new_name("enclave.research.api") == "enclave.research.api"
    assert relayer.new_name("enclave.research.ibis_backend") == "enclave.io.ibis_backend"
    assert relayer.rewrite("    from enclave import audit, db as d\n") == (
        "    from enclave.core import audit\n    from enclave.io import db as d\n")
    assert relayer.rewrite("from enclave.release import build, manifest\n") == (
        "from enclave.io.release import build\nfrom enclave.core import manifest\n")


def test_the_rewrite_is_idempotent_and_leaves_other_names():
    text = ("from enclave.core.settings import Settings\nimport enclave.research\n"
            "/opt/enclave/hub stays; enclave.engineering stays; my.enclave.hub stays\n")
    assert relayer.rewrite(text) == text
    once = relayer.rewrite("from enclave import db\nenclave.hub.serve\n")
    assert relayer.rewrite(once) == once
