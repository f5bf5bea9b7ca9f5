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


class EnclaveAuthenticator(PAMAuthenticator):
    group_prefix = Unicode("enp-", config=True, help="Prefix of project groups synced to the hub.")

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
