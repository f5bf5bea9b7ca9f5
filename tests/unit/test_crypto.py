import hmac
import os

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.core.crypto import hmac_sha256_hex, hmac_sha256_u64


@settings(deadline=None, max_examples=60)
@given(key=st.binary(min_size=0, max_size=100),
       msgs=st.lists(st.one_of(st.none(), st.text(max_size=60)), max_size=20))
def test_the_first_eight_bytes_match_the_standard_library(key, msgs):
    """What pseudonyms, date shifts and ledger tokens draw from: the digest's first 8 bytes,
    big-endian, every value of 64 bits (the top bit included)."""
    got = hmac_sha256_u64(key, pl.Series("m", msgs, dtype=pl.Utf8))
    assert got.dtype == pl.UInt64
    assert got.to_list() == [
        None if m is None else int.from_bytes(hmac.digest(key, m.encode(), "sha256")[:8], "big")
        for m in msgs]


def test_different_keys_give_different_digests():
    m = pl.Series("m", ["rid:11010519491231002X"])
    assert hmac_sha256_hex(os.urandom(32), m)[0] != hmac_sha256_hex(os.urandom(32), m)[0]


@settings(deadline=None, max_examples=60)
@given(key=st.binary(min_size=0, max_size=100),
       msgs=st.lists(st.one_of(st.none(), st.text(max_size=60)), max_size=20))
def test_the_column_hmac_matches_the_standard_library(key, msgs):
    """DuckDB's sha256 in the RFC 2104 construction: any key length (pads with zero bytes, keys
    longer than a block), any text (UTF-8, NUL characters), nulls stay null, order kept."""
    got = hmac_sha256_hex(key, pl.Series("m", msgs, dtype=pl.Utf8)).to_list()
    assert got == [None if m is None else hmac.digest(key, m.encode(), "sha256").hex()
                   for m in msgs]
    assert hmac_sha256_hex(key, pl.Series("m", msgs, dtype=pl.Utf8), 32).to_list() == [
        None if g is None else g[:32] for g in got]


def _key_in_child(args) -> bytes:
    from enclave.core.keystore import load_or_create_key

    keys_dir, name = args
    return load_or_create_key(keys_dir, name)


def test_processes_creating_one_key_at_once_all_get_the_whole_same_key(tmp_path):
    """Never an empty or half-written key: every process reads the one key that won."""
    import multiprocessing

    from enclave.core.keystore import KEY_BYTES

    for round_ in range(5):
        with multiprocessing.get_context("fork").Pool(6) as pool:
            keys = pool.map(_key_in_child, [(tmp_path / "keys", f"k{round_}.key")] * 12)
        assert {len(k) for k in keys} == {KEY_BYTES} and len(set(keys)) == 1
        assert (tmp_path / "keys" / f"k{round_}.key").read_bytes() == keys[0]
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [f"k{i}.key" for i in range(5)]
