"""The generated part of ``docs/airlock.md``: state diagrams and tables, from the code's tables.

Regenerate with ``python -m enclave.io.airlock.docs docs/airlock.md`` (a test fails when it is stale).
"""

from __future__ import annotations

import sys
from pathlib import Path

from enclave.core.model.project import PROJECT_ACTORS, PROJECT_OWNERS, PROJECT_TRANSITIONS
from enclave.io.airlock.workflow import FINAL, OWNERS, RequestStatus, mermaid, transition_table

BEGIN = "<!-- BEGIN GENERATED (python -m enclave.io.airlock.docs docs/airlock.md) -->"
END = "<!-- END GENERATED -->"


def project_mermaid() -> str:
    lines = ["stateDiagram-v2", "    [*] --> proposed: create"]
    for (src, action), dst in PROJECT_TRANSITIONS.items():
        if src != dst:
            lines.append(f"    {src.value} --> {dst.value}: {action.value} "
                         f"({PROJECT_ACTORS[action]})")
    lines.append("    closed --> [*]")
    return "\n".join(lines)


def generated() -> str:
    owners = ["| state | owner | final |", "|---|---|---|"]
    owners += [f"| {s.value} | {OWNERS[s].value} | {'yes' if s in FINAL else ''} |"
               for s in RequestStatus]
    members = sorted({a.value for (s, a), d in PROJECT_TRANSITIONS.items() if s == d})
    owned = ", ".join(f"{s.value}: {o}" for s, o in PROJECT_OWNERS.items())
    return "\n".join([
        BEGIN, "", "### Export requests", "", "```mermaid", mermaid(), "```", "",
        owners[0], *owners[1:], "", transition_table(), "",
        "### Projects", "", "```mermaid", project_mermaid(), "```", "",
        (f"Owners: {owned}. Membership actions ({', '.join(members)}) keep the status and are "
         "taken by stewards."), "", END,
    ])


def render(text: str) -> str:
    """``text`` with its generated section replaced by the current one."""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + generated() + tail


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
