"""Only airlock admins see the enclave's status page (projects, members, expiry, requests by
state): every other role, a stranger and a forged identity are refused, and the refusal carries
nothing of the page. Against the real ``enclave airlock serve`` (standalone token mode)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from enclave.io.airlock.server import USER_COOKIE
from tests.airlock_support import (
    ADMIN,
    MEMBER,
    OUTSIDER,
    POLICYMAKER,
    REQUESTER,
    STEWARD_MEMBER,
    STEWARDS,
    Service,
    make_enclave,
    token_of,
)

#: what the status page shows that no one else may learn from it: its table of projects (with
#: their number of members) and alpha's expiry
SECRETS = ('id="projects"', "2099-12-31")


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    root = tmp_path_factory.mktemp("status")
    tokens = make_enclave(root / "home")
    service = Service(root / "home", tokens).start()
    yield service
    service.stop()


def _get(svc, path: str, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(svc.url + path, headers=headers)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=60) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_the_admin_sees_the_status_page(svc):
    code, body = _get(svc, "status", {"Authorization": f"token {token_of(ADMIN)}"})
    assert code == 200 and "alpha" in body and all(s in body for s in SECRETS)


@pytest.mark.parametrize("user", [REQUESTER, MEMBER, STEWARDS[0], STEWARD_MEMBER, POLICYMAKER,
                                  OUTSIDER])
def test_every_other_role_is_refused_and_learns_nothing(svc, user):
    code, body = _get(svc, "status", {"Authorization": f"token {token_of(user)}"})
    assert code == 403
    assert not any(s in body for s in SECRETS)


@pytest.mark.parametrize("headers", [
    {},                                                              # nobody signed in
    {"Authorization": "token tok-root-wrong"},                       # a guessed token
    {"Authorization": f"token {token_of(STEWARDS[0])}", "X-Forwarded-User": ADMIN},
    {"Authorization": f"token {token_of(STEWARDS[0])}", "X-Remote-User": ADMIN},
    {"Cookie": f"{USER_COOKIE}={ADMIN}"},                            # an unsigned cookie
    {"Cookie": f"{USER_COOKIE}=2|1:0|10:1700000000|13:airlock_user|8:cm9vdA==|0000"},
])
def test_a_forged_identity_is_not_an_admin(svc, headers):
    code, body = _get(svc, "status", headers)
    assert code in (302, 403)  # no identity: to the sign-in page; a steward: refused
    assert not any(s in body for s in SECRETS)


@pytest.mark.parametrize("path", ["status/", "status?user=root", "status?as=root", "STATUS",
                                  "./status", "%73tatus", "requests/../status"])
def test_another_spelling_of_the_path_does_not_get_around_it(svc, path):
    code, body = _get(svc, path, {"Authorization": f"token {token_of(STEWARDS[0])}"})
    assert code in (301, 302, 400, 403, 404)
    assert not any(s in body for s in SECRETS)
