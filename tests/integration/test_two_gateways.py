"""Two gateway processes on one broker, each with its own data directory (its own ledger).

The failure cases of a per-process ledger, each run across two processes and judged by the
simulator's ground truth:

* version 1 of an invoice posted by one process, version 2 by the other: the second must
  reverse the first (one receivable, the latest), not post beside it, and upload version 2's
  revenue difference though only the first process's ledger holds version 1's lines;
* a payment parked by one process whose invoice the other posts: the other resumes it;
* a subscription change delivered to the process that did not run its deal's saga: applied,
  not dead-lettered as unknown;

and both processes consuming the same lanes at once through a bill run with amendments
delivered out of order, credit memos and payments: every document posted once, ORDER_OK.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from contracts.platforms.billing import (
    BillingInvoiceLine,
    BillingPayment,
    LineList,
    PaymentEvent,
    PaymentEventData,
)
from contracts.platforms.signing import SIGNATURE_HEADER, sign
from gateway.stack import Stack
from gateway.usage_demo import run_usage
from sim._billing import BillRunOptions

from .conftest import actor_stats, billing_event
from .test_payment_flow import assert_exactly_once, at_rest, wait_money
from .test_revenue_flow import assert_revenue_billed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def post(stack: Stack, base: str, body: bytes) -> None:
    headers = {SIGNATURE_HEADER: sign(stack.webhook_secret, body, int(time.time())),
               "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s, s.post(f"{base}/webhooks/billing", data=body,
                                                    headers=headers) as r:
        assert r.status == 200, await r.text()


async def erp_postings(stack: Stack, external_id: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(
            f"{stack.sim_url}/erp/v1/journal-entries", params={"externalId": external_id}) as r:
        assert r.status == 200
        items: list[dict[str, Any]] = msgspec.json.decode(await r.read())["items"]
        return items


async def wait_postings(stack: Stack, external_id: str, count: int = 1) -> None:
    with anyio.fail_after(30):  # a guard against a hang, not a speed target
        while len(await erp_postings(stack, external_id)) < count:
            await anyio.sleep(0.05)


def invoice_v(n: int, version: int) -> bytes:
    """Invoice ``n`` at ``version`` (2: amended, ``invoice.updated``, twice the seats)."""
    ev = billing_event(n)
    line = BillingInvoiceLine(id=f"il_{n}", product="prod_seat", description="seat",
                              quantity=2 * version, unit_amount=1500, amount=3000 * version)
    inv = msgspec.structs.replace(ev.data.object, lines=LineList(data=[line]),
                                  subtotal=3000 * version, tax=300 * version,
                                  total=3300 * version, version=version)
    return msgspec.json.encode(msgspec.structs.replace(
        ev, id=f"evt_{n}_v{version}",
        type="invoice.finalized" if version == 1 else "invoice.updated",
        data=msgspec.structs.replace(ev.data, object=inv)))


def payment(n: int, amount: int) -> bytes:
    pay = BillingPayment(id=f"py_{n:06d}", invoice=f"in_{n:06d}", amount=amount,
                         currency="usd", paid_at=int(time.time()), customer="cus_1")
    return msgspec.json.encode(PaymentEvent(id=f"evt_py_{n:06d}", type="invoice.paid",
                                            created=int(time.time()),
                                            data=PaymentEventData(object=pay)))


async def test_each_old_failure_case_ends_correct_across_two_processes(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=31,
                  gateway_toml="[payments]\npark_recheck_s = 0.2\n")
    await stack.start()
    try:
        # Process A (the stack's gateway): version 1 of invoice 1, and a payment of invoice 2
        # before invoice 2 exists (parked by A); a deal saga run to its end (A's saga).
        await post(stack, stack.gateway_url, invoice_v(1, 1))
        await wait_postings(stack, "in_000001")
        await post(stack, stack.gateway_url, payment(2, 3300))
        with anyio.fail_after(30):
            while (await actor_stats(stack.admin_url, "payment-router"))["parked"] < 1:
                await anyio.sleep(0.05)
        await stack.deal_run(4, reject_rate=0.0, order_reject_rate=0.0, contract_reject_rate=0.0)
        deals = await stack.wait_deals(4)
        assert deals["completed"] > 0 and deals["incomplete_count"] == 0, deals
        assert await stack.stop_gateway() == 0

        # Process B: a fresh data directory (nothing in its ledger), same broker.
        peer = await stack.start_peer_gateway("gateway-b")
        try:
            await post(stack, peer.url, invoice_v(1, 2))
            await wait_postings(stack, "in_000001:v2")
            # the revenue half too: B plans v2's difference from the rows A shared (A is
            # stopped: no delivery can reach the process whose ledger holds version 1)
            with anyio.fail_after(30):
                while (await actor_stats(peer.admin_url, "revenue-billing"))[
                        "uploaded_lines"] < 1:
                    await anyio.sleep(0.05)
            # v1 is reversed: the receivable holds version 2 once
            with anyio.fail_after(30):
                while not await erp_postings(stack, "in_000001:reversal"):
                    await anyio.sleep(0.05)
            assert [len(await erp_postings(stack, x)) for x in (
                "in_000001", "in_000001:reversal", "in_000001:v2")] == [1, 1, 1]
            # invoice 2 posted by B releases the payment A parked
            await post(stack, peer.url, invoice_v(2, 1))
            await wait_postings(stack, "py_000002")
            (inv,) = await erp_postings(stack, "in_000002")
            (pay,) = await erp_postings(stack, "py_000002")
            assert pay["seq"] > inv["seq"] and pay["amount"] == 3300
            with anyio.fail_after(30):
                while (await actor_stats(peer.admin_url, "payment-router"))["resumed"] < 1:
                    await anyio.sleep(0.05)
        finally:
            assert await stack.stop_process(peer.proc) == 0

        # Subscription changes, delivered to a third process that ran no saga (the simulator
        # sends to the stack's webhook port, now served by a fresh data directory).
        await stack.start_gateway(env={"ERPGW_DATA_DIR": str(tmp_path / "gateway-c"),
                                       "ERPGW_NATS_IDENTITIES_DIR": str(stack.identities_dir)})
        run = await stack.subscription_changes(6, seed=3)
        assert run["changes"] > 0
        subs: dict[str, Any] = {}
        with anyio.move_on_after(60):
            while (subs := (await stack.audit())["subscriptions"])["in_sync"] < run[
                    "subscriptions"] or subs["accepted"] < run["changes"]:
                await anyio.sleep(0.2)
        assert subs["in_sync"] == subs["changed"] == run["subscriptions"] > 0, subs
        rest = await at_rest(stack)
        assert rest["duplicates"] == 0 and rest["deals"]["duplicates"] == 0
        assert await stack.dead_letters() == []
    finally:
        await stack.close()


async def test_two_processes_at_once_post_every_document_once(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=32,
                  gateway_toml="[payments]\npark_recheck_s = 0.25\n")
    await stack.start()
    peer = await stack.start_peer_gateway("gateway-b")
    try:
        opts = BillRunOptions(credit_memo_rate=0.3, payment_rate=0.7)
        await stack.bill_run(240, rate=200, amend_rate=0.4, reorder_amendments=0.5,
                             credit_memo_rate=0.3, payment_rate=0.7)
        # Freeze the first process mid-run past ack_wait: what it holds is redelivered to the
        # other, and whatever it was sending completes when it wakes (the zombie writer).
        with anyio.fail_after(60):
            while (await stack.audit())["revenue"]["lines"] < 40:
                await anyio.sleep(0.05)
        stack.signal_gateway(signal.SIGSTOP)
        await anyio.sleep(stack.ack_wait_s * 2)  # the fault's length, not a wait for an event
        stack.signal_gateway(signal.SIGCONT)
        await wait_money(stack, 240, opts)
        a = await at_rest(stack)
        assert_exactly_once(a)
        assert a["order_violations"] == 0 and a["amended"] > 0
        assert a["amount_posted_latest"] == a["amount_issued"] == a["amount_posted"]
        assert await stack.dead_letters() == []
        # Revenue: every line once, though both processes upload and one froze mid-run.
        # Amendments (differences per line) and credit notes (negative lines) applied: the
        # platform holds each invoice's latest subtotal less its credit notes.
        assert_revenue_billed(await stack.wait_revenue(stall_timeout=45))
        # both processes took part
        shares = [(await actor_stats(url, "erp-journal"))["processed"]
                  for url in (stack.admin_url, peer.admin_url)]
        assert all(n > 0 for n in shares), shares
    finally:
        await stack.stop_process(peer.proc)
        await stack.close()


async def test_a_usage_flood_through_two_processes_counts_every_record_once(
        tmp_path: Path) -> None:
    """Both processes run the usage aggregator on the same consumer (small batches, so both
    take part); the first is frozen past ``ack_wait`` while it holds records, which are
    redelivered to the other meanwhile. Billing rates each record once, the revenue platform
    records each once, with the amount billing rated."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=33,
                  gateway_toml="[usage]\nbatch = 24\nmax_bulk_items = 8\n")
    await stack.start()
    peer = await stack.start_peer_gateway("gateway-b")
    try:
        async def freeze_mid_run() -> None:
            with anyio.fail_after(60):
                while (await actor_stats(stack.admin_url, "usage-aggregator"))[
                        "processed"] < 48:
                    await anyio.sleep(0.02)
            stack.signal_gateway(signal.SIGSTOP)
            await anyio.sleep(stack.ack_wait_s * 2)  # the fault's length, not a wait for events
            stack.signal_gateway(signal.SIGCONT)

        async with anyio.create_task_group() as tg:
            tg.start_soon(freeze_mid_run)
            usage = await run_usage(stack, 480, seed=5, stall_timeout=90)
        assert usage["drained"] and usage["lost"] == 0 and usage["duplicates"] == 0, usage
        assert usage["amount_ok"], usage
        shares = [await actor_stats(url, "usage-aggregator")
                  for url in (stack.admin_url, peer.admin_url)]
        assert all(s["processed"] > 0 for s in shares), shares
        assert await stack.dead_letters() == []
    finally:
        await stack.stop_process(peer.proc)
        await stack.close()
