import hmac
import os

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.crypto import hmac_sha256_hex, hmac_sha256_many


@given(key=st.binary(min_size=0, max_size=100), msgs=st.lists(st.binary(max_size=200), max_size=20))
def test_matches_the_standard_library(key, msgs):
    assert hmac_sha256_many(key, msgs) == [hmac.digest(key, m, "sha256") for m in msgs]


def test_different_keys_give_different_digests():
    m = [b"rid:11010519491231002X"]
    assert hmac_sha256_many(os.urandom(32), m) != hmac_sha256_many(os.urandom(32), m)


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
