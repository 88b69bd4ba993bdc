"""F23, out-of-order amendments, as separate processes (broker, simulator, gateway): a bill run
in which some invoices get a version 2 (``invoice.updated``), some of those delivered before
their version 1. Judged by the simulator's ground truth: every latest version posted once, no
version applied after a newer one (ORDER_OK), receivables holding each invoice's latest total
once (every superseded posting reversed), and F22 (duplicate webhooks) still harmless."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from gateway.stack import Stack
from sim._billing import plan_amendment

from .conftest import actor_stats

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SEED = 11
INVOICES = 240
AMEND, REORDER = 0.4, 0.5


async def gateway_stats(stack: Stack, child: str) -> dict[str, Any]:
    return await actor_stats(stack.admin_url, child)


async def test_amendments_out_of_order_post_every_latest_version_once(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=SEED)
    await stack.start()
    try:
        # F22 at the same time: the billing platform sends some events several times.
        await stack.set_faults({"billing": {"duplicate_rate": 0.2, "duplicate_max": 3}})
        await stack.bill_run(INVOICES, rate=200, amend_rate=AMEND, reorder_amendments=REORDER)
        result = await stack.wait_drained(INVOICES, stall_timeout=45)
        a = result.audit  # counted at rest: every consumer idle, the counts stable
        plans = [plan_amendment(SEED, i, AMEND, REORDER) for i in range(1, INVOICES + 1)]
        amended = sum(amend for amend, _ in plans)
        early = sum(first for _, first in plans)
        assert result.drained and result.lost == 0 and result.dead_letters == []
        assert (a["issued"], a["accepted"], a["posted"]) == (INVOICES, INVOICES, INVOICES)
        assert a["amended"] == amended > early > 0
        # LOST 0, DUP 0, nothing unexpected; ORDER_OK over every amended invoice
        assert (a["unposted_count"], a["duplicates"], a["unexpected"]) == (0, 0, 0)
        assert a["order_violations"] == 0 and a["order_checked"] >= amended
        # a version 1 posted before its version 2 arrived is superseded, and reversed once
        assert 0 < a["superseded"] == a["reversals"] <= amended - early
        assert a["postings"] == (a["posted"] + a["duplicates"] + a["unexpected"]
                                 + a["superseded"] + a["reversals"])
        # SUM_OK: the latest versions' postings, and the books net of reversals
        assert a["amount_posted_latest"] == a["amount_issued"]
        assert a["amount_posted"] == a["amount_issued"]
        assert a["faults"]["billing"]["deliveries"]["duplicate"]["sent"] > 0
        # every version 1 that came after its version 2 was skipped by the gateway, not posted
        erp = await gateway_stats(stack, "erp-journal")
        assert erp["stale"] + erp["superseded"] >= early
        assert erp["reversals"] == a["reversals"]
    finally:
        await stack.close()


async def test_amendments_survive_a_sigkill_mid_run(tmp_path: Path) -> None:
    """The applied versions are committed with the postings: a kill between the ERP's answer
    and the ledger's commit re-sends the same reversal and version (answered replayed)."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=SEED + 1)
    await stack.start()
    try:
        total = 600
        await stack.bill_run(total, rate=300, amend_rate=AMEND, reorder_amendments=REORDER)
        with anyio.fail_after(60):
            while (await stack.audit())["posted"] < 150:
                await anyio.sleep(0.05)
        stack.kill_gateway()
        await anyio.sleep(0.3)
        await stack.start_gateway()
        result = await stack.wait_drained(total, stall_timeout=45)
        a = result.audit  # counted at rest: every consumer idle, the counts stable
        assert result.drained and result.lost == 0 and result.dead_letters == []
        assert (a["posted"], a["duplicates"], a["unexpected"], a["order_violations"]) == (
            total, 0, 0, 0)
        assert a["amended"] > 0 and a["superseded"] == a["reversals"]
        assert a["amount_posted_latest"] == a["amount_issued"] == a["amount_posted"]
    finally:
        await stack.close()
