"""Issue 16 (item 3): the daily egress budget through the browser, against a real hub, a real
airlock and real kernels (a free block of ports; root).

The budget is 1 MiB here. A researcher pulls rows out as twelve text files through the contents
API and as kernel output over the websocket (the two routes an attacker used to carry a whole
release out in seconds); past the budget both are refused, the stewards get one ``egress.alert``
audit event, and what reached the client stays under the budget plus one report's slack.
"""

from __future__ import annotations

import os
import time

import pytest

from enclave.core import audit
from tests.integration import hubbed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a real hub with real Unix users needs root"),
]

PORTS = hubbed.port_block()
BUDGET_MB = 1.0
BUDGET = int(BUDGET_MB * (1 << 20))


@pytest.fixture(scope="module")
def bed():
    b = hubbed.make_bed(PORTS, researchers=2, real_airlock=True,
                        hub_settings=f"egress_budget_mb = {BUDGET_MB}\n"
                                     f"iopub_max_message_bytes = {600 << 10}\n"
                                     "upload_max_bytes = 300000")
    for short in ("r0", "r1"):
        assert b.login(short)[0] in (200, 302)
    yield b
    hubbed.teardown(b)


def _alerts(bed, user: str) -> list[dict]:
    con = audit.connect(bed.settings)
    try:
        return [e for e in audit.events(con, f"user:{user}") if e["action"] == "egress.alert"]
    finally:
        con.close()


def _outputs(srv, code: str, timeout: float = 120) -> tuple[int, list[str], str]:
    """Run ``code`` over the kernel websocket as a browser does: bytes of output received, the
    enclave's notices (on stderr) and the printed text."""
    out = srv.run(code, timeout=timeout)
    notices = [t for t in out["stderr"] if "refused by the enclave" in t]
    return out["output_bytes"], notices, out["stdout"]


def test_bulk_reads_through_the_contents_api_stop_at_the_budget(bed):
    name = bed.name("r0")
    srv = bed.server("r0")
    # the kernel writes twelve 250 kB text files of release rows (as the attacker did)
    out = srv.run("""
from enclave.research import workspace
ws = workspace()
rows = ws.table("person").execute().astype(str).to_csv(index=False)
rows = (rows * (1 + 250_000 // max(1, len(rows))))[:250_000]
for i in range(12):
    open(f"part{i}.txt", "w").write(rows)
print("written")""", timeout=120)
    assert out["stdout"].strip() == "written", out
    got, refused = 0, 0
    for i in range(12):
        r = srv.request("GET", f"api/contents/part{i}.txt?content=1&type=file&format=text")
        if r.status_code == 200:
            got += len(r.json()["content"])
        else:
            assert r.status_code == 403 and "egress budget" in r.text, r.text[:200]
            refused += 1
    assert refused >= 7, f"only {refused} of 12 reads refused"
    assert got <= BUDGET + 300_000, got                 # the budget, plus one file's slack
    time.sleep(6)
    alerts = _alerts(bed, name)
    assert len(alerts) == 1 and alerts[0]["actor"] == "airlock", alerts


def test_bulk_kernel_output_stops_at_the_budget(bed):
    name = bed.name("r1")
    srv = bed.server("r1")
    # a single output above the per-message limit is withheld, well within the budget
    _, big, text = _outputs(srv, "print('x' * 700_000)")
    assert "x" * 1000 not in text and any("larger than" in n for n in big), big
    code = ("import time\nfrom enclave.research import workspace\n"
            "rows = workspace().table('person').execute().astype(str).to_csv(index=False)\n"
            "rows = (rows * (1 + 100_000 // max(1, len(rows))))[:100_000]\n"
            "import sys\n"
            "for i in range(40):\n"
            "    print(rows); sys.stdout.flush()\n"
            "    time.sleep(0.05)\n")
    received, notices, _ = _outputs(srv, code)
    assert any("egress budget" in n for n in notices), notices
    assert received <= BUDGET + (600 << 10), received  # the budget, plus one output at most
    time.sleep(6)
    assert len(_alerts(bed, name)) == 1
    # fill the day to within one small output (each print flushed: one message each) ...
    _, notices, _ = _outputs(srv, "import sys, time\nfor i in range(80):\n"
                                  "    print('z' * 20_000); sys.stdout.flush(); time.sleep(0.02)")
    assert any("egress budget" in n for n in notices), notices
    time.sleep(6)  # the refusal's report reaches the airlock
    # ... then the count survives the server: a new server starts from the airlock's total, so an
    # output larger than what is left of the day is refused at once
    bed.hub.stop(name)
    _, notices, text = _outputs(bed.server("r1"), "print('y' * 50_000)")
    assert "y" * 1000 not in text and any("egress budget" in n for n in notices), notices
