import hmac
import os

from hypothesis import given
from hypothesis import strategies as st

from enclave.crypto import hmac_sha256_many


@given(key=st.binary(min_size=0, max_size=100), msgs=st.lists(st.binary(max_size=200), max_size=20))
def test_matches_the_standard_library(key, msgs):
    assert hmac_sha256_many(key, msgs) == [hmac.digest(key, m, "sha256") for m in msgs]


def test_different_keys_give_different_digests():
    m = [b"rid:11010519491231002X"]
    assert hmac_sha256_many(os.urandom(32), m) != hmac_sha256_many(os.urandom(32), m)
