"""Network egress of researchers, denied by nftables per Unix uid (second line behind the kernel's
empty network namespace).

The set of uids follows the researchers group: :func:`refresh` rebuilds it whenever the table is
installed and membership may have changed — ``enclave user add|grant|disable|remove``, ``enclave
hub sync``, the hub's access watch, and before every notebook server starts (the hub's pre-spawn
hook) — so a researcher added at any time is covered before their first process runs.

Kernels already run without a network (:mod:`enclave.io.hub.kernel`); this rule covers every other
process a researcher runs, the notebook server included: the only connections their uids may open
are to the hub API and the airlock on 127.0.0.1 (answers to the proxy's connections pass as
established traffic). Everything else is rejected. One nftables table (``hub.egress_table``,
``inet enclave_egress``), rebuilt atomically on every apply (``nft -f`` replaces it in one
transaction).
"""

from __future__ import annotations

import grp
import pwd
import shutil
import subprocess

from enclave.core.errors import ConfigurationError
from enclave.core.settings import Settings


def researcher_uids(settings: Settings) -> list[int]:
    try:
        group = grp.getgrnam(settings.hub.researchers_group)
    except KeyError:
        return []
    members = set(group.gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == group.gr_gid}
    return sorted(pwd.getpwnam(m).pw_uid for m in members)


def ruleset(settings: Settings, uids: list[int]) -> str:
    h = settings.hub
    elements = f"elements = {{ {', '.join(map(str, uids))} }}" if uids else ""
    table = h.egress_table
    return f"""table inet {table}
delete table inet {table}
table inet {table} {{
  set researchers {{ type uid; {elements} }}
  chain out {{
    type filter hook output priority 0; policy accept;
    ct state established,related accept
    meta skuid @researchers ip daddr 127.0.0.1 tcp dport {{ {h.hub_port}, {h.airlock_port} }} accept
    meta skuid @researchers counter reject
  }}
}}
"""


def _nft(script: str) -> None:
    nft = shutil.which("nft")
    if not nft:
        raise ConfigurationError("nft (nftables) is not installed: apt-get install nftables")
    proc = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigurationError(f"nftables refused the enclave rules: {proc.stderr.strip()[-400:]}")


def apply_egress(settings: Settings) -> str:
    uids = researcher_uids(settings)
    _nft(ruleset(settings, uids))
    _applied[settings.hub.egress_table] = uids
    return (f"egress denied for {len(uids)} researcher uid(s) "
            f"(nftables table inet {settings.hub.egress_table})")


def installed(settings: Settings) -> bool:
    nft = shutil.which("nft")
    if not nft:
        return False
    proc = subprocess.run([nft, "list", "table", "inet", settings.hub.egress_table],
                          capture_output=True, text=True)
    return proc.returncode == 0


_applied: dict[str, list[int]] = {}  # table -> the uids this process last wrote into it


def refresh(settings: Settings) -> str | None:
    """Rebuild the rule with the current researchers, if it is installed and they changed since
    this process last wrote it (else nothing)."""
    if not installed(settings):
        return None
    uids = researcher_uids(settings)
    if _applied.get(settings.hub.egress_table) == uids:
        return None
    return apply_egress(settings)


def remove_egress(settings: Settings) -> None:
    table = settings.hub.egress_table
    _nft(f"table inet {table}\ndelete table inet {table}\n")
