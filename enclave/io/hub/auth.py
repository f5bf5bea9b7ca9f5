"""Login: PAM against the host's Unix users, allowed only in the enclave's role groups, throttled.

Why a subclass: JupyterHub's PAM authenticator checks ``allowed_groups`` at login but does not hand
the groups to the hub, and hub roles (who reaches the airlock, who the dashboards) are granted by
hub group. This authenticator returns the user's enclave groups with ``manage_groups``, so the hub's
groups follow the Unix groups at every login and nobody keeps a role the host took away.

Throttling (:class:`LoginThrottle`): ``hub.login_max_failures_user`` failed logins of one user name,
or ``hub.login_max_failures_address`` from one client address, within ``hub.login_window_s`` lock
that name or address out for ``hub.login_lockout_s``: its attempts are then refused without asking
PAM, and each lockout is audited once (``hub.login_locked``). Attempts still waiting for PAM count
against the limit, so parallel guesses get no more tries than sequential ones. The state lives in
the hub process's memory: a hub restart forgets it (acceptable: a restart takes longer than the
lockout, and an attacker cannot cause one). The client address is the connection's, or, for a
connection from the local proxy, the last ``X-Forwarded-For`` entry (the one the proxy added; the
client-settable ``X-Real-Ip`` is ignored). A lockout also stops the rightful user for its duration:
that is the price of having one.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import time
from collections import deque
from dataclasses import dataclass, field

from jupyterhub.auth import PAMAuthenticator
from traitlets import Unicode

from enclave.core import audit
from enclave.core.settings import HubSettings, load_settings


@dataclass
class _Key:
    failures: deque = field(default_factory=deque)  #: monotonic times of recent failures
    pending: int = 0                                #: attempts waiting for PAM
    locked_until: float = 0.0


class LoginThrottle:
    """Failures per user name and per client address; who is locked out, and until when."""

    def __init__(self, hub: HubSettings, clock=time.monotonic):
        self.limits = {"user": hub.login_max_failures_user,
                       "address": hub.login_max_failures_address}
        self.window, self.lockout, self.clock = hub.login_window_s, hub.login_lockout_s, clock
        self.keys: dict[tuple[str, str], _Key] = {}

    #: most names and addresses remembered; beyond, the oldest idle ones are forgotten
    MAX_KEYS = 20_000

    def _key(self, kind: str, value: str) -> _Key:
        key = self.keys.get((kind, value))
        if key is None:
            if len(self.keys) >= self.MAX_KEYS:
                self._forget_old()
            key = self.keys[(kind, value)] = _Key()
        now = self.clock()
        while key.failures and key.failures[0] <= now - self.window:
            key.failures.popleft()
        return key

    def _forget_old(self) -> None:
        """Drop idle keys (nothing pending, not locked), expired first, then the oldest, down to
        half the cap: amortized constant time however many names an attacker sprays."""
        now = self.clock()
        idle = [k for k, v in self.keys.items() if not v.pending and v.locked_until <= now]
        expired = [k for k in idle if not self.keys[k].failures
                   or self.keys[k].failures[-1] <= now - self.window]
        for k in expired:
            del self.keys[k]
        for k in idle:
            if len(self.keys) <= self.MAX_KEYS // 2:
                break
            self.keys.pop(k, None)

    def refusal(self, user: str, address: str) -> tuple[str, str] | None:
        """(kind, value) of the lock or full limit refusing this attempt; None: it may go to PAM
        (and is then counted as pending until :meth:`done`)."""
        now = self.clock()
        pairs = (("user", user), ("address", address))
        for kind, value in pairs:
            key = self._key(kind, value)
            if key.locked_until > now or len(key.failures) + key.pending >= self.limits[kind]:
                return kind, value
        for kind, value in pairs:
            self._key(kind, value).pending += 1
        return None

    def done(self, user: str, address: str, ok: bool) -> list[tuple[str, str]]:
        """Record the outcome of an attempt :meth:`refusal` let through; returns the (kind, value)
        pairs this failure locked out (each lockout is reported once, when it starts)."""
        now, locked = self.clock(), []
        for kind, value in (("user", user), ("address", address)):
            key = self._key(kind, value)
            key.pending = max(0, key.pending - 1)
            if ok:
                if kind == "user":
                    key.failures.clear()
                continue
            key.failures.append(now)
            if len(key.failures) >= self.limits[kind] and key.locked_until <= now:
                key.locked_until = now + self.lockout
                key.failures.clear()
                locked.append((kind, value))
        return locked


def client_address(handler) -> str:
    """The address a login came from (see the module docstring)."""
    if handler is None:
        return "?"
    request = handler.request
    context = getattr(request.connection, "context", None)
    peer = getattr(context, "_orig_remote_ip", None) or request.remote_ip or "?"
    forwarded = request.headers.get("X-Forwarded-For", "")
    try:
        local = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        local = False
    if local and forwarded:
        return forwarded.split(",")[-1].strip()[:64] or peer
    return peer


class EnclaveAuthenticator(PAMAuthenticator):
    group_prefix = Unicode("enp-", config=True, help="Prefix of project groups synced to the hub.")
    enclave_home = Unicode("", config=True, help="The enclave's home, whose audit trail records "
                                                 "every login and refused login.")

    def _enclave_groups(self, username: str) -> list[str]:
        pw = pwd.getpwnam(username)
        names = {grp.getgrgid(g).gr_name for g in os.getgrouplist(username, pw.pw_gid)}
        return sorted(n for n in names if n in self.allowed_groups or n.startswith(self.group_prefix))

    @property
    def throttle(self) -> LoginThrottle:
        if not hasattr(self, "_throttle"):
            self._throttle = LoginThrottle(load_settings(self.enclave_home or None).hub)
        return self._throttle

    async def authenticate(self, handler, data):
        username = await super().authenticate(handler, data)
        if username is None:
            return None
        name = username["name"] if isinstance(username, dict) else username
        return {"name": name, "groups": self._enclave_groups(name)}

    async def get_authenticated_user(self, handler, data):
        """Every login attempt that reaches PAM goes to the audit trail — allowed, or refused
        (wrong password, no enclave group) — naming the user name tried, never the password; so
        does every lockout, once. Attempts refused by a lockout are not asked of PAM and not
        audited one by one (the hub log names them). Fails closed: a login whose event cannot be
        written is refused."""
        tried = self.normalize_username(str((data or {}).get("username", ""))[:64])
        address = client_address(handler)
        refused = self.throttle.refusal(tried, address)
        if refused:
            self.log.warning("login of %r from %s refused: %s %s is locked out", tried, address,
                             *refused)
            return None
        result = None
        try:
            result = await super().get_authenticated_user(handler, data)
        finally:
            locked = self.throttle.done(tried, address, ok=bool(result))
        name = result["name"] if result else tried
        try:
            settings = load_settings(self.enclave_home or None)
            audit.record_event(settings, actor=name or "?",
                               action="hub.login" if result else "hub.login_refused",
                               subject=f"user:{name or '?'}",
                               detail={"groups": result.get("groups", [])} if result else {})
            for kind, value in locked:
                limit = self.throttle.limits[kind]
                audit.record_event(
                    settings, actor=name or "?", action="hub.login_locked",
                    subject=f"user:{value}" if kind == "user" else f"address:{value}",
                    detail={"kind": kind, "failures": limit, "window_s": self.throttle.window,
                            "lockout_s": self.throttle.lockout})
        except Exception:  # any failure to audit refuses the login
            self.log.exception("audit trail unavailable: login of %s refused", name)
            return None
        return result
