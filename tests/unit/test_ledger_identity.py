"""Identity maps for the airlock's cross-project ledger: the same store patient has the same
ledger token in every project's release, and a map that does not cover an output fails closed."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from enclave.core.settings import load_settings
from enclave.io.release.identity import identity_map_path, to_tokens, write_identity_map
from enclave.io.release.keys import pseudonyms


def members_of(release_ids: list[int]) -> pl.DataFrame:
    """(cell_key, person_id, rows) as the sandbox computes them from a release's person_id."""
    con = duckdb.connect()
    con.register("_r", pl.DataFrame({"person_id": release_ids}).to_arrow())
    out = pl.from_arrow(con.sql("SELECT '*' AS cell_key, hash(person_id) AS "
                                "person_id, 1::BIGINT AS rows FROM _r").to_arrow_table())
    con.close()
    return out


def test_the_same_patient_has_one_token_across_projects(tmp_path):
    settings = load_settings(tmp_path / "home")
    store_ids = pl.Series("id", [11, 12, 13, 14], dtype=pl.Int64)
    maps = {}
    for project, key in (("alpha", b"a" * 32), ("beta", b"b" * 32)):
        m = pseudonyms(key, "person", store_ids)
        path = write_identity_map(settings, f"{project}/v1", m)
        assert path == identity_map_path(settings, f"{project}/v1")
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        maps[project] = (m, path)
    a_pseudo = maps["alpha"][0].sort("id")["pseudo"].to_list()
    b_pseudo = maps["beta"][0].sort("id")["pseudo"].to_list()
    assert set(a_pseudo).isdisjoint(b_pseudo)  # the releases cannot be joined ...
    ta = to_tokens(members_of(a_pseudo), maps["alpha"][1])
    tb = to_tokens(members_of(b_pseudo), maps["beta"][1])
    assert ta["person_id"].to_list() == tb["person_id"].to_list()  # ... the ledger can
    assert ta.columns == ["cell_key", "person_id", "rows"]
    # the tokens are not the store ids, nor the release hashes
    assert not set(ta["person_id"].to_list()) & {11, 12, 13, 14}
    assert not set(ta["person_id"].to_list()) & set(members_of(a_pseudo)["person_id"].to_list())


def test_a_map_that_does_not_cover_the_output_fails_closed(tmp_path):
    settings = load_settings(tmp_path / "home")
    m = pseudonyms(b"k" * 32, "person", pl.Series("id", [1, 2], dtype=pl.Int64))
    path = write_identity_map(settings, "alpha/v1", m)
    with pytest.raises(LookupError, match="does not cover"):
        to_tokens(members_of([*m["pseudo"].to_list(), 999]), path)
    with pytest.raises(LookupError, match="no identity map"):
        to_tokens(members_of([1]), path.with_name("v9.parquet"))
    # only desensitized release names have a map
    assert identity_map_path(settings, "synthetic/alpha/v1") is None
    assert identity_map_path(settings, "../alpha/v1") is None
