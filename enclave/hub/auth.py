"""Login: PAM against the host's Unix users, allowed only in the enclave's role groups.

Why a subclass: JupyterHub's PAM authenticator checks ``allowed_groups`` at login but does not hand
the groups to the hub, and hub roles (who reaches the airlock, who the dashboards) are granted by
hub group. This authenticator returns the user's enclave groups with ``manage_groups``, so the hub's
groups follow the Unix groups at every login and nobody keeps a role the host took away.
"""

from __future__ import annotations

import grp
import os
import pwd

from jupyterhub.auth import PAMAuthenticator
from traitlets import Unicode

from enclave import audit
from enclave.settings import load_settings


class EnclaveAuthenticator(PAMAuthenticator):
    group_prefix = Unicode("enp-", config=True, help="Prefix of project groups synced to the hub.")
    enclave_home = Unicode("", config=True, help="The enclave's home, whose audit trail records "
                                                 "every login and refused login.")

    def _enclave_groups(self, username: str) -> list[str]:
        pw = pwd.getpwnam(username)
        names = {grp.getgrgid(g).gr_name for g in os.getgrouplist(username, pw.pw_gid)}
        return sorted(n for n in names if n in self.allowed_groups or n.startswith(self.group_prefix))

    async def authenticate(self, handler, data):
        username = await super().authenticate(handler, data)
        if username is None:
            return None
        name = username["name"] if isinstance(username, dict) else username
        return {"name": name, "groups": self._enclave_groups(name)}

    async def get_authenticated_user(self, handler, data):
        """Every login attempt goes to the audit trail — allowed, or refused (wrong password, no
        enclave group) — naming the user name tried, never the password. Fails closed: a login
        whose event cannot be written is refused."""
        result = await super().get_authenticated_user(handler, data)
        tried = self.normalize_username(str((data or {}).get("username", ""))[:64])
        name = result["name"] if result else tried
        try:
            audit.record_event(load_settings(self.enclave_home or None), actor=name or "?",
                               action="hub.login" if result else "hub.login_refused",
                               subject=f"user:{name or '?'}",
                               detail={"groups": result.get("groups", [])} if result else {})
        except Exception:  # any failure to audit refuses the login
            self.log.exception("audit trail unavailable: login of %s refused", name)
            return None
        return result
