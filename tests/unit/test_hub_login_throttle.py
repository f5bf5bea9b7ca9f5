"""The hub's login throttle: failures per user name and per address, lockouts, pending attempts.

The throttle is plain state and a clock; the clock is a number the test moves. The real hub with
real PAM users is attacked in tests/security/test_hub_login.py.
"""

from __future__ import annotations

from types import SimpleNamespace

from tornado.httputil import HTTPHeaders

from enclave.core.settings import HubSettings
from enclave.io.hub.auth import LoginThrottle, client_address


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def throttle(**kw) -> tuple[LoginThrottle, Clock]:
    clock = Clock()
    hub = HubSettings(**{"login_max_failures_user": 3, "login_max_failures_address": 5,
                         "login_window_s": 60, "login_lockout_s": 30, **kw})
    return LoginThrottle(hub, clock=clock), clock


def fail(t: LoginThrottle, user: str, address: str = "10.0.0.1") -> list | tuple:
    refused = t.refusal(user, address)
    return refused if refused else t.done(user, address, ok=False)


def test_a_user_is_locked_after_n_failures_and_the_lockout_reported_once():
    t, clock = throttle()
    assert fail(t, "ann") == [] and fail(t, "ann") == []
    assert fail(t, "ann") == [("user", "ann")]            # the third failure locks
    for _ in range(65):                                   # ... and everything after it is refused
        assert t.refusal("ann", "10.0.0.1") == ("user", "ann")
    clock.t += 29
    assert t.refusal("ann", "10.0.0.2") == ("user", "ann")  # another address: still locked
    clock.t += 2
    assert t.refusal("ann", "10.0.0.1") is None           # the lockout is over
    t.done("ann", "10.0.0.1", ok=True)


def test_failures_outside_the_window_do_not_count_and_success_resets_the_user():
    t, clock = throttle()
    fail(t, "bob"), fail(t, "bob")
    clock.t += 61
    assert fail(t, "bob") == []                           # the first two have left the window
    fail(t, "bob")
    assert t.refusal("bob", "10.0.0.1") is None
    t.done("bob", "10.0.0.1", ok=True)                    # the right password
    assert fail(t, "bob") == [] and fail(t, "bob") == []


def test_parallel_attempts_count_while_they_wait_for_pam():
    t, _ = throttle()
    let_through = [t.refusal("cat", "10.0.0.1") for _ in range(68)]
    assert let_through.count(None) == 3                   # the limit, not 68
    assert all(r == ("user", "cat") for r in let_through if r)
    locked = [t.done("cat", "10.0.0.1", ok=False) for _ in range(3)]
    assert locked == [[], [], [("user", "cat")]]
    assert t.refusal("cat", "10.0.0.1") == ("user", "cat")


def test_an_address_is_locked_whatever_names_it_tries():
    t, clock = throttle()
    for i in range(4):
        assert fail(t, f"name{i}") == []
    assert fail(t, "name4") == [("address", "10.0.0.1")]
    assert t.refusal("dan", "10.0.0.1") == ("address", "10.0.0.1")   # a real user, same address
    assert t.refusal("dan", "10.0.0.9") is None                       # elsewhere: fine
    t.done("dan", "10.0.0.9", ok=True)
    clock.t += 31
    assert t.refusal("dan", "10.0.0.1") is None


def test_memory_is_bounded_however_many_names_are_tried():
    t, clock = throttle()
    t.MAX_KEYS = 1_000
    fail(t, "ann"), fail(t, "ann"), fail(t, "ann")        # ann is locked out
    for i in range(5_000):
        fail(t, f"n{i}", f"10.1.{i // 4}.{i % 4}")
    assert len(t.keys) <= 1_000
    assert t.refusal("ann", "10.0.0.1") == ("user", "ann")  # a lockout is never forgotten
    clock.t += 61
    fail(t, "late", "10.9.9.9")
    assert len(t.keys) <= 1_000


def _handler(peer: str, headers: dict) -> SimpleNamespace:
    request = SimpleNamespace(remote_ip=headers.get("X-Real-Ip", peer),
                              headers=HTTPHeaders(headers),
                              connection=SimpleNamespace(context=SimpleNamespace(
                                  _orig_remote_ip=peer)))
    return SimpleNamespace(request=request)


def test_the_client_address_is_the_one_the_proxy_saw():
    # through the local proxy: the last X-Forwarded-For entry (the proxy's); X-Real-Ip is ignored
    h = _handler("127.0.0.1", {"X-Forwarded-For": "6.6.6.6, 10.0.0.7", "X-Real-Ip": "1.2.3.4"})
    assert client_address(h) == "10.0.0.7"
    # a direct connection from elsewhere: its own address, whatever it claims
    assert client_address(_handler("10.0.0.8", {"X-Forwarded-For": "1.2.3.4"})) == "10.0.0.8"
    assert client_address(_handler("127.0.0.1", {})) == "127.0.0.1"
    assert client_address(None) == "?"
