"""Monitoring of a gateway process under trouble, watched only from NATS: an actor that keeps
crashing (supervisor events, totals that survive its restarts), an ERP outage (failure
recovery time, an SLA breach that starts and ends), ``erpgw monitor --once`` against the live
stack, and an escalation whose events still reach subscribers as the gateway exits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest

from contracts import Subjects
from gateway.stack import Stack

from .test_monitoring import Watcher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# The ERP poster's fault hook raises once an incarnation has handled 25 postings, so a batch
# must stay below 25 (a batch of 25 or more would make every incarnation raise on it, and its
# postings would end as dead letters instead of making progress).
TOML = """
[erp]
batch = 10
[supervisor]
intensity = 50
[sla]
kpi_interval_s = 1
failure_recovery_s = 0.3
[erp_breaker]
consecutive_failures = 2
open_for = 0.5
open_for_cap = 1.0
"""


def monitor_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "monitor", "--nats-url", stack.url,
                           "--data-dir", str(stack.data_dir), "--wait", "15", *args],
                          capture_output=True, text=True, timeout=60, check=False)


async def test_monitoring_a_gateway_in_trouble(tmp_path: Path) -> None:
    s = Subjects()
    sup, kpi = s.mon_event("supervisor"), f"{s.prefix}.mon.kpi"
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=61, gateway_toml=TOML,
                  gateway_env={"GW_FAULT": "erp.raise_every:25"})
    await stack.start()
    w = Watcher()
    nc = await nats.connect(stack.url, **stack.nats_options())
    try:
        await nc.subscribe(s.mon_wildcard, cb=w.on)
        await nc.flush()

        # -- the ERP poster raises every 25 messages: restarts, seen as events and counts ---
        await stack.bill_run(60)
        failed = await w.wait(sup, lambda e: e["event"] == "failed", timeout=30)
        assert failed["child"] == "erp-journal" and failed["supervisor"] == "gateway"
        assert failed["error"]  # the supervisor's one-line description of the failure
        restarting = await w.wait(sup, lambda e: e["event"] == "restarting")
        assert restarting["child"] == "erp-journal" and restarting["restarts"] >= 0
        await w.wait(sup, lambda e: e["event"] == "started" and e["child"] == "erp-journal")
        drained = await stack.wait_drained(60, stall_timeout=30)
        assert drained.drained and drained.audit["posted"] == 60
        # totals survive the poster's restarts exactly: nothing missed, nothing counted twice
        m = await w.wait(s.metrics, lambda d: d["postings"]["created"] == 60)
        restarts = m["supervisor"]["children"]["erp-journal"]["restarts"]
        assert restarts >= 1 and m["supervisor"]["restarts"] >= restarts
        lane = m["lanes"]["billing"]
        assert lane["in"] == 60 and lane["consumers"]["invoice-router"]["processed"] == 60
        m = await w.wait(s.metrics, lambda d: d["lanes"]["billing"]["out"] == 60)
        assert m["lanes"]["billing"]["consumers"]["erp-journal"]["processed"] == 60

        # -- an ERP outage: breaker opens, recovery is timed, the SLA breach starts/ends ----
        await stack.set_faults({"erp": {"error_rate": 1.0, "status": 503}})
        await stack.bill_run(5)
        opened = await w.wait(s.mon_event("breaker"), lambda e: e["target"] == "open",
                              timeout=30)
        assert opened["kind"] == "breaker" and opened["source"] == "closed"
        assert opened["breaker"] == "erp.journal_bulk" and opened["at"] > 1e9
        k = await w.wait(kpi, lambda d: (d["failure_recovery"]["ongoing_s"] or 0) > 0.3)
        assert k["sla"]["checks"]["failure_recovery_s"]["breached"] is True
        assert "failure_recovery_s" in k["sla"]["breached"]
        started = await w.wait(s.mon_event("sla"), lambda e: e["sla"] == "failure_recovery_s")
        assert started["event"] == "started" and started["target"] == 0.3
        m = await w.wait(s.metrics, lambda d: d["breakers"]["erp.journal_bulk"]["trips"] >= 1)
        await anyio.sleep(1.0)
        await stack.set_faults({})
        await w.wait(s.mon_event("breaker"), lambda e: e["target"] == "closed", timeout=30)
        k = await w.wait(kpi, lambda d: d["failure_recovery"]["incidents"] == 1, timeout=30)
        rec = k["failure_recovery"]
        assert rec["last_s"] > 1.0 and rec["max_s"] == rec["last_s"] == rec["mean_s"]
        assert rec["ongoing_s"] is None and rec["over_target"] == 1
        ended = await w.wait(s.mon_event("sla"), lambda e: e["sla"] == "failure_recovery_s"
                             and e["event"] == "ended")
        assert ended["duration_s"] > 0
        await w.wait(s.metrics, lambda d: d["postings"]["created"] == 65, timeout=30)

        # -- erpgw monitor, as a script and as a person would run it --------------------------
        r = monitor_cli(stack, "--once", "--json")
        assert r.returncode == 0, r.stderr
        doc: dict[str, Any] = msgspec.json.decode(r.stdout)
        assert doc["instance"] == m["instance"] and doc["instances"] == [m["instance"]]
        assert doc["metrics"]["lanes"]["billing"]["in"] == 65
        assert doc["metrics"]["postings"]["created"] == 65
        assert doc["kpi"]["failure_recovery"]["incidents"] == 1
        assert doc["metrics"]["breakers"]["erp.journal_bulk"]["state"] == "closed"
        r = monitor_cli(stack, "--once")
        assert r.returncode == 0, r.stderr
        for text in ("erpgw monitor", "billing", "erp-journal", "erp.journal_bulk", "SLA",
                     "dead letters", "latency p99"):
            assert text in r.stdout, text

        # -- an escalation: the gateway exits, and its last events are still published ------
        await stack.stop_gateway()
        stack.gateway_env = {"GW_FAULT": "erp.fail_start"}
        stack.gateway_toml = "[supervisor]\nintensity = 2\nperiod_s = 30\n"
        with pytest.raises(Exception, match="exited with code 1"):
            await stack.start_gateway()
        esc = await w.wait(sup, lambda e: e["event"] == "escalated")
        assert esc["child"] == "erp-journal" and "fails at start" in esc["error"]
    finally:
        await nc.close()
        await stack.close()


def test_monitor_without_a_gateway_says_so(tmp_path: Path) -> None:
    from gateway.broker import free_port
    from gateway.identities import ensure_seeds

    ensure_seeds(tmp_path / "identities", ["monitor"])
    url = f"nats://127.0.0.1:{free_port()}"
    r = subprocess.run([sys.executable, "-m", "gateway", "monitor", "--once", "--json",
                        "--nats-url", url, "--data-dir", str(tmp_path), "--wait", "2"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "broker.unavailable" in r.stderr
    # Without the monitor identity's seed, the missing credential is named.
    r = subprocess.run([sys.executable, "-m", "gateway", "monitor", "--once", "--json",
                        "--nats-url", url, "--data-dir", str(tmp_path / "none"), "--wait", "2"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "broker.identity_missing" in r.stderr and "monitor.nk" in r.stderr
