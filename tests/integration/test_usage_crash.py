"""Flow 4 under crashes: the gateway (a process) dies at a named point of the usage
aggregator's 2nd batch, restarts, and the sender sends everything again. Judged by the
simulator's per-record audit and the gateway's ledger: no usage record is ever counted twice
on either platform; what the gateway cannot vouch for is held in doubt, never re-sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from actors.infra import NatsBus
from actors.infra.ledger import Ledger
from actors.usage import BILLING, REVENUE
from contracts import Subjects
from gateway.app import USAGE_CONSUMER
from gateway.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TOKEN = "usage_demo_token"
RECORDS = 900


async def _send_all(stack: Stack, records: list[Any]) -> int:
    """Post every record in requests of 150; returns how many requests failed (the gateway
    may be dead meanwhile)."""
    failed = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for i in range(0, len(records), 150):
            try:
                async with http.post(f"{stack.gateway_url}/usage/v1/records",
                                     data=msgspec.json.encode(records[i:i + 150]),
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"}) as resp:
                    await resp.read()
                    failed += resp.status != 200
            except (aiohttp.ClientError, TimeoutError):
                failed += 1
    return failed


async def _usage_drained(stack: Stack, timeout: float = 60.0) -> dict[str, Any]:
    bus = await NatsBus.connect(stack.url, auth=stack.auth())
    try:
        with anyio.fail_after(timeout):
            while await bus.consumer_pending(Subjects().stream("usage"),
                                             USAGE_CONSUMER) != (0, 0):
                await anyio.sleep(0.2)
    finally:
        await bus.close()
    usage: dict[str, Any] = (await stack.audit())["usage"]
    return usage


async def _ledger(stack: Stack) -> dict[str, dict[str, list[str]]]:
    """Usage ids by platform and status; the gateway must be stopped."""
    ledger = await Ledger.open(stack.workdir / "gateway" / "ledger.db")
    try:
        assert await ledger.verify_audit(stack.audit_key()) is None
        out: dict[str, dict[str, list[str]]] = {}
        for platform in (BILLING, REVENUE):
            for row in await ledger.find_uploads(platform):
                out.setdefault(platform, {}).setdefault(row.status, []).append(row.line_id)
        return out
    finally:
        await ledger.close()


@pytest.mark.parametrize("point", ["usage.after_billing", "usage.after_billing_commit",
                                   "usage.after_revenue"])
async def test_crash_points_of_the_usage_aggregator(tmp_path: Path, point: str) -> None:
    """- after_billing: billing rated the batch, the ledger still says pending: after the
      restart the claimed aggregates are sent again exactly as they were and billing answers
      ``replayed`` (rated once); one that cannot be rebuilt from the redelivered batch is in
      doubt at billing and not sent to revenue (its amount is unknown): missing there,
      flagged.
    - after_billing_commit: billing's answer is committed; revenue goes out after the restart.
      Exactly once on both.
    - after_revenue: the revenue platform recorded the lines, the ledger says pending: in
      doubt at revenue, never sent again. Exactly once on both, flagged.
    """
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=29, gateway_env={"GW_CRASH_AT": f"{point}:2"},
                  gateway_toml="[usage]\nbatch = 128\n")
    await stack.start()
    try:
        async with aiohttp.ClientSession() as http, http.post(
                f"{stack.sim_url}/sim/v1/usage-runs",
                json={"count": RECORDS, "seed": 5, "subscriptions": 8}) as resp:
            records = (await resp.json())["records"]
        await _send_all(stack, records)
        assert await stack.wait_gateway_exit(timeout=60) == 137
        stack.gateway_env = {}
        await stack.start_gateway()
        assert await _send_all(stack, records) == 0  # the sender retries everything
        usage = await _usage_drained(stack)
        assert await stack.stop_gateway() == 0
        ledger = await _ledger(stack)
    finally:
        await stack.close()
    assert usage["generated"] == RECORDS
    assert usage["billing_duplicates"] == usage["revenue_duplicates"] == 0  # DUP 0, always
    assert usage["billing_unexpected"] == usage["revenue_unexpected"] == 0
    assert usage["billing_missing"] == 0  # everything rated exactly once
    assert usage["quantity_mismatches"] == 0
    billing, revenue = ledger[BILLING], ledger.get(REVENUE, {})
    assert set(billing) <= {"uploaded", "in_doubt"} and set(revenue) <= {"uploaded", "in_doubt"}
    if point == "usage.after_billing":
        # Sent again as they were (billing answers "replayed"), or, when the redelivered batch
        # did not hold a whole claimed aggregate, held in doubt and not sent to revenue.
        doubtful = billing.get("in_doubt", [])
        assert usage["replayed"] > 0 or doubtful
        assert usage["revenue_missing"] == len(doubtful)  # flagged, not guessed
        assert not set(doubtful) & set(revenue.get("uploaded", []))
    elif point == "usage.after_revenue":
        assert revenue.get("in_doubt"), "the interrupted upload's records must be in doubt"
        assert usage["revenue_missing"] == 0  # recorded once, never sent again
    else:
        assert "in_doubt" not in billing and "in_doubt" not in revenue
        assert usage["revenue_missing"] == 0
        assert usage["amount_billed"] == usage["amount_revenue"]
