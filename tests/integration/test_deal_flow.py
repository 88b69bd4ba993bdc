"""Flow 1, deal to contract, against a real broker and the simulator over HTTP: every approved
deal becomes exactly one subscription, one sales order and one revenue contract; rejected deals
nothing; a deal whose sales order or revenue contract is refused for good is compensated exactly
once (subscription cancelled, order closed) and dead-lettered ``saga.compensated``.

Judged by the simulator's ground truth (``GET /sim/v1/audit``, section ``deals``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from contracts import DeadLetter, JsonCodec
from gateway.broker import EmbeddedBroker
from gateway.stack import Stack, StackError

from .conftest import LiveGateway, running_gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

_letters: JsonCodec[DeadLetter] = JsonCodec(DeadLetter)


async def _call(method: str, url: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as s, s.request(
            method, url, data=None if body is None else msgspec.json.encode(body),
            headers={"Content-Type": "application/json"}) as r:
        assert r.status < 300, await r.text()
        return msgspec.json.decode(await r.read())


async def wait_deals(sim_url: str, deals: int, gw: LiveGateway,
                     timeout: float = 90.0) -> dict[str, Any]:
    """The audit's ``deals`` section once every deal was delivered and every approved deal
    completed or compensated, read again once every consumer of the gateway is idle (so a
    late duplicate is counted); fails after ``timeout`` seconds with the last section."""
    section: dict[str, Any] = {}
    with anyio.move_on_after(timeout):
        while True:
            section = (await _call("GET", f"{sim_url}/sim/v1/audit"))["deals"]
            if section["accepted"] == deals and section["incomplete_count"] == 0:
                await gw.wait_idle()
                settled: dict[str, Any] = (await _call("GET", f"{sim_url}/sim/v1/audit"))[
                    "deals"]
                return settled
            await anyio.sleep(0.2)
    raise AssertionError(f"deals did not settle within {timeout:.0f} s: {section}")


async def saga_letters(gw: LiveGateway) -> list[DeadLetter]:
    raw = await gw.bus.read_stream(gw.subjects.dlq_stream)
    return [dl for dl in (_letters.decode(r) for r in raw) if dl.lane == "commercial"]


def assert_exact(section: dict[str, Any]) -> None:
    """No duplicate, nothing for rejected deals, everything approved completed or
    compensated, and the platforms' counts add up."""
    s = section
    assert s["duplicates"] == 0 and s["unexpected"] == 0, s
    assert s["completed"] == s["approved"] - s["injected_failures"], s
    assert s["compensated"] == s["injected_failures"], s
    assert s["revenue_contracts"] == s["completed"], s
    assert s["subscriptions_created"] == s["approved"], s  # every saga got that far
    assert s["subscriptions_cancelled"] == s["compensated"], s
    assert s["sales_orders_created"] - s["sales_orders_closed"] == s["completed"], s


async def test_deals_become_contracts_exactly_once(broker: EmbeddedBroker, tmp_path: Path,
                                                   sim_url: str) -> None:
    async with running_gateway(broker, tmp_path, sim_url,
                               partner={"base_url": sim_url}) as gw:
        hook = gw.url.replace("/webhooks/billing", "/webhooks/partner")
        run = await _call("POST", f"{sim_url}/partner/v1/deal-runs", {
            "deals": 40, "seed": 5, "webhookUrl": hook, "rejectRate": 0.2,
            "orderRejectRate": 0.1, "contractRejectRate": 0.1})
        assert run["deals"] == 40
        section = await wait_deals(sim_url, 40, gw)
        assert_exact(section)
        assert section["rejected"] > 0 and section["injected_failures"] > 0
        letters = await saga_letters(gw)
        assert sorted(dl.code for dl in letters) == \
            ["saga.compensated"] * section["injected_failures"]
        assert all(dl.business_key and dl.business_key.startswith("partner:dl_")
                   for dl in letters)
        # A compensated deal's order (if any) is closed with a reversal, never deleted.
        doomed = {dl.business_key.split(":")[1] for dl in letters if dl.business_key}
        for deal_id in doomed:
            orders = (await _call("GET", f"{sim_url}/erp/v1/sales-orders?externalId={deal_id}")
                      )["items"]
            assert all(o["status"] == "closed" and o["reversalId"] for o in orders)
        status = await _call("GET", f"{sim_url}/partner/v1/deal-runs/{run['dealRunId']}")
        assert status["done"] is True
        assert (await _call("GET", f"{sim_url}/sim/v1/audit"))["deals"] == section
        # The saga's own subscription events (activated; cancelled when compensating) are
        # settled by the subscription sync at once, not retried as unknown versions.
        with anyio.fail_after(10):
            while await gw.bus.consumer_pending(gw.subjects.stream("commercial"),
                                                "subscription-sync") != (0, 0):
                await anyio.sleep(0.1)
        assert await saga_letters(gw) == letters


async def test_a_sigkilled_saga_resumes_without_doubles(tmp_path: Path) -> None:
    """SIGKILL the gateway right after a platform answered a saga step, before its state was
    committed (crash point ``saga.after_step``), three times over: each restarted gateway
    redoes that step under the same idempotency key and never creates a second subscription,
    order or contract; compensations included."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=17,
                  gateway_env={"GW_CRASH_AT": "saga.after_step:3"})
    await stack.start()
    try:
        await stack.deal_run(12, reject_rate=0.0, order_reject_rate=0.25,
                             contract_reject_rate=0.25)
        assert await stack.wait_gateway_exit(60) == 137, stack.tail("gateway.log")
        for nth in (5, 8):
            stack.gateway_env = {"GW_CRASH_AT": f"saga.after_step:{nth}"}
            with contextlib.suppress(StackError):  # it may die before answering /readyz
                await stack.start_gateway()
            assert await stack.wait_gateway_exit(60) == 137, stack.tail("gateway.log")
        stack.gateway_env = {}
        await stack.start_gateway()
        section = await stack.wait_deals(12)
        assert section["incomplete_count"] == 0, section
        assert_exact(section)
        assert section["injected_failures"] > 0
        assert stack.gateway_starts == 4
        # Flow 5 across a crash: the ERP and revenue hold a version the ledger does not.
        stack.gateway_env = {"GW_CRASH_AT": "subscription.after_write:2"}
        await stack.stop_gateway()
        with contextlib.suppress(StackError):
            await stack.start_gateway()
        run = await stack.subscription_changes(8, reorder_rate=0.5, seed=2)
        assert await stack.wait_gateway_exit(60) == 137, stack.tail("gateway.log")
        stack.gateway_env = {}
        await stack.start_gateway()
        subs: dict[str, Any] = {}
        with anyio.move_on_after(60):
            while (subs := (await stack.audit())["subscriptions"])["in_sync"] < run[
                    "subscriptions"] or subs["accepted"] < run["changes"]:
                await anyio.sleep(0.2)
        assert subs["in_sync"] == subs["changed"] == run["subscriptions"] > 0, subs
        assert (await stack.audit())["deals"]["duplicates"] == 0
        assert not [dl for dl in await stack.dead_letters()
                    if dl.business_key and dl.business_key.startswith("billing:sub_")]
    finally:
        await stack.close()


async def test_amendments_renewals_and_cancellations_reach_the_erp_and_revenue_in_order(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    """Flow 5: after the deals became contracts, billing amends, renews and cancels their
    subscriptions, half of them with their webhooks shuffled (v3 before v2): every changed
    subscription's sales order and revenue contract end at its latest version, with the value
    of its phases; nothing is dead-lettered."""
    async with running_gateway(broker, tmp_path, sim_url, partner={"base_url": sim_url},
                               billing={"webhook_secrets": ["whsec_demo"]}) as gw:
        hook = gw.url.replace("/webhooks/billing", "/webhooks/partner")
        await _call("POST", f"{sim_url}/partner/v1/deal-runs", {
            "deals": 30, "seed": 8, "webhookUrl": hook, "rejectRate": 0.0})
        deals = await wait_deals(sim_url, 30, gw)
        assert deals["completed"] == 30
        run = await _call("POST", f"{sim_url}/billing/v1/subscription-changes", {
            "count": 20, "seed": 4, "reorderRate": 0.5, "webhookUrl": gw.url})
        assert run["subscriptions"] == 20 and run["reordered"] > 0
        section: dict[str, Any] = {}
        with anyio.move_on_after(60):
            while True:
                section = (await _call("GET", f"{sim_url}/sim/v1/audit"))["subscriptions"]
                if section["accepted"] == run["changes"] and section["in_sync"] == 20:
                    break
                await anyio.sleep(0.2)
        assert section["in_sync"] == section["changed"] == 20, section
        assert section["out_of_sync_count"] == 0 and section["cancelled"] > 0, section
        assert await saga_letters(gw) == []
        assert (await _call("GET", f"{sim_url}/sim/v1/audit"))["deals"]["duplicates"] == 0


async def test_a_revenue_outage_holds_deals_back_then_they_complete(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    """The revenue platform answers 503 to everything for a while: the saga's revenue breaker
    opens, deals wait (subscription and order done, no contract), nothing is dead-lettered or
    doubled; once the platform is back every deal completes."""
    async with running_gateway(broker, tmp_path, sim_url, partner={"base_url": sim_url},
                               deals_breaker={"consecutive_failures": 2, "open_for": 0.3,
                                              "open_for_cap": 1.0}) as gw:
        await _call("PUT", f"{sim_url}/sim/v1/faults", {"revenue": {"outage": True}})
        hook = gw.url.replace("/webhooks/billing", "/webhooks/partner")
        await _call("POST", f"{sim_url}/partner/v1/deal-runs", {
            "deals": 10, "seed": 9, "webhookUrl": hook, "rejectRate": 0.0})
        with anyio.fail_after(30):  # until the saga met the outage a few times
            while sum((audit := await _call("GET", f"{sim_url}/sim/v1/audit"))["faults"][
                    "http"].get("revenue/contracts", {}).values()) < 3:
                await anyio.sleep(0.1)
        assert audit["deals"]["revenue_contracts"] == 0
        assert audit["deals"]["sales_orders_created"] > 0
        await _call("DELETE", f"{sim_url}/sim/v1/faults")
        section = await wait_deals(sim_url, 10, gw)
        assert section["completed"] == 10 and section["duplicates"] == 0, section
        assert await saga_letters(gw) == []
