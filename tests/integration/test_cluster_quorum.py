"""Fault matrix F9: the loss of JetStream quorum on a 3-node loopback cluster (two nodes
SIGKILLed, then restarted), with a gateway process, the simulator and its webhook sender, on a
cluster of this test's own (it kills nodes). While quorum is lost a webhook is answered 503
with a JSON ``broker.*`` code and is not stored; once the nodes are back the gateway recovers
by itself (no restart) and the run completes: every invoice posted once, nothing lost, nothing
doubled, nothing unexpected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from contracts.platforms.billing import BillingEvent
from gateway.drills import Driller
from gateway.stack import Stack

from .conftest import billing_event, signed

# Its own cluster, processes started and stopped: longer than the default timeout.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

INVOICES = 120
FAULT = "lose-quorum"


async def _post(url: str, event: BillingEvent, secret: str) -> tuple[int, dict[str, Any]]:
    body = msgspec.json.encode(event)
    timeout = aiohttp.ClientTimeout(total=60)  # a guard against a hang, not a speed target
    async with aiohttp.ClientSession(timeout=timeout) as s, s.post(
            f"{url}/webhooks/billing", data=body, headers=signed(body, secret=secret)) as r:
        return r.status, msgspec.json.decode(await r.read())


async def test_losing_quorum_answers_503_then_recovers_losing_and_doubling_nothing(
        tmp_path: Path) -> None:
    stack = Stack(tmp_path, seed=29, cluster=3, gateways=1, ack_wait_s=5.0)
    driller = Driller(stack, [FAULT], INVOICES)
    stack.gateway_env.update(driller.gateway_env)
    try:
        await stack.start()
        pid = stack.gateway_pid
        # Issued over 12 s, and quorum goes once a third is in: the simulator's sender is
        # still delivering while it is lost.
        await stack.bill_run(INVOICES, rate=10)
        with anyio.fail_after(120):  # a guard against a hang, not a speed target
            while (await stack.audit())["accepted"] < INVOICES // 3:
                await anyio.sleep(0.1)
        await driller.inject(FAULT)
        # A webhook the gateway has never seen, straight to its ingress: refused, not stored.
        status, doc = await _post(stack.gateway_url, billing_event(990_001), stack.webhook_secret)
        # Quorum stays lost until the sender's deliveries (or its retries of refused ones) have
        # been refused too, however long the loaded machine takes to send the next one.
        with anyio.fail_after(120):  # a guard against a hang, not a speed target
            while sum((await driller.broker_refusals()).values()) < 2:
                await anyio.sleep(0.2)
        await driller.heal(FAULT, (await stack.audit())["postings"])
        result = await stack.wait_drained(INVOICES, stall_timeout=120, progress=lambda a, _d:
                                          driller.observe(a))
        report = driller.finish(result) | await driller.after_run(result)
        gateway_pid_after = stack.gateway_pid
    finally:
        await stack.close()
    assert status == 503 and str(doc["code"]).startswith("broker."), doc
    assert set(doc) >= {"code", "message"}
    q = report["quorum"]
    assert len(q["nodes"]) == 2 and report["killed_nats_nodes"][FAULT]["billing_leader"] in q[
        "nodes"]
    # The probe and at least one of the sender's deliveries, which it retried.
    assert sum(q["webhooks_refused"].values()) >= 2
    assert all(code.startswith("broker.") for code in q["webhooks_refused"])
    assert q["stream_leader_s"] is not None and q["t_recover_s"] is not None
    assert q["gateway_running"] and gateway_pid_after == pid  # recovered without a restart
    a = result.audit
    assert result.drained
    assert a["issued"] == a["accepted"] == a["posted"] == INVOICES
    assert result.lost == 0 and a["duplicates"] == 0 and a["unexpected"] == 0  # probe not stored
    assert a["amount_posted"] == a["amount_issued"]
