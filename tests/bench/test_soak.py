"""``erpgw bench kill-soak`` (fault F1) at a small scale: three SIGKILLs of the gateway during a
short bill run, each followed by a restart, and the simulator's verdict on correctness. The
full soak (30 kills in 10 minutes at 200/s) is ``make soak``."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]  # hang guards


def test_three_kills_lose_and_double_nothing() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "kill-soak", "--kills", "3",
         "--duration", "6", "--rate", "100", "--seed", "3", "--json", "--quiet"],
        capture_output=True, text=True, timeout=450, check=False)
    # Exit 1 also when only the restart-to-ready bound was missed: that is the soak's speed
    # verdict (a bench figure), not what this test checks; anything else must exit 0.
    assert r.returncode in (0, 1), r.stderr[-2000:] + r.stdout[-2000:]
    doc = msgspec.json.decode(r.stdout)
    assert doc["ok"] is True, r.stdout[-2000:]
    assert r.returncode == 0 or doc["restart_ok"] is False
    assert doc["kills_done"] == 3 and doc["gateway_starts"] == 4
    a = doc["audit"]
    assert a["issued"] == 600 and a["drained"] is True
    assert a["lost"] == 0 and a["duplicates"] == 0 and a["unexpected"] == 0
    assert a["sum_ok"] is True and a["dlq_exact"] is True
    # How fast a restart is ready is the soak's figure, not a test's bound: it is measured.
    assert 0 < doc["restart_to_ready_s"]["max_s"] < float("inf")
