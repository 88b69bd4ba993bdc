"""Revenue event accuracy on ``erpgw.mon.kpi`` against the whole stack: the revenue platform
rejects a seeded share of lines (the simulator's runtime ``revenue`` faults); the gateway's KPI
must agree with the platform's own records and breach its SLA target."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from contracts import Subjects
from gateway.stack import Stack

from .test_monitoring import Watcher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOML = """
[sla]
kpi_interval_s = 0.5
revenue_event_accuracy = 0.999
"""


async def test_revenue_event_accuracy_matches_the_platforms_records(tmp_path: Path) -> None:
    s = Subjects()
    kpi = f"{s.prefix}.mon.kpi"
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=64, gateway_toml=TOML)
    await stack.start()
    w = Watcher()
    nc = await nats.connect(stack.url, **stack.nats_options())
    try:
        await nc.subscribe(s.mon_wildcard, cb=w.on)
        await nc.flush()
        await stack.set_faults({"revenue": {"item_reject_rate": 0.05}})
        await stack.bill_run(120)
        assert (await stack.wait_drained(120, stall_timeout=45)).drained  # the ERP half
        rev = await stack.wait_revenue(stall_timeout=45)
        assert rev.drained
        audit = rev.audit
        assert audit["rejected_lines"] > 0 and audit["duplicate_lines"] == 0
        expected = rev.expected_lines
        uploaded = audit["lines"]  # what the platform holds: every line exactly once
        assert uploaded < expected
        k = await w.wait(kpi, lambda d: (d["revenue_lines"] or {}).get("uploaded") == uploaded
                         and sum(d["revenue_lines"].values()) == expected, timeout=30)
        # a refused line takes its whole invoice to the DLQ: those lines all count against it
        assert k["revenue_lines"]["rejected"] == expected - uploaded
        assert k["revenue_lines"]["in_doubt"] == 0
        assert k["revenue_event_accuracy"] == round(uploaded / expected, 6)
        check = k["sla"]["checks"]["revenue_event_accuracy"]
        assert check["target"] == 0.999 and check["breached"] is True
        started = await w.wait(s.mon_event("sla"),
                               lambda e: e["sla"] == "revenue_event_accuracy")
        assert started["event"] == "started"
    finally:
        await nc.close()
        await stack.close()
