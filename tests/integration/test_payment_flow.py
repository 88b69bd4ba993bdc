"""Flow 3 and credit memos against a real broker and the simulator over HTTP.

In process: a payment delivered before its invoice is parked, then applied after the invoice,
exactly once, and its commission settled once at the portal and once as an ERP payable.
Whole stack (processes): a bill run with credit memos and payments drains with every
document posted exactly once and every commissioned invoice settled exactly once, also after
a SIGKILL of the gateway and a republish of every payment and commission under new message
ids (the redelivery the stream's dedupe window would not catch).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import nats
import pytest

from actors.infra import NatsBus
from actors.infra.bus import OutMsg
from contracts import Subjects, new_id
from contracts.platforms.billing import BillingPayment, PaymentEvent, PaymentEventData
from gateway.broker import EmbeddedBroker
from gateway.stack import Stack
from sim import generate_invoices
from sim._billing import BillRunOptions, followup_events
from sim._partner import partner_of

from .conftest import LiveGateway, actor_stats, billing_event, running_gateway, signed

pytestmark = pytest.mark.integration


async def sim_get(sim_url: str, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(sim_url + path) as r:
        assert r.status == 200, path
        return msgspec.json.decode(await r.read())


def payment_body(n: int, amount: int, customer: str = "cus_1") -> bytes:
    pay = BillingPayment(id=f"py_{n:06d}", invoice=f"in_{n:06d}", amount=amount,
                         currency="usd", paid_at=int(time.time()), customer=customer)
    return msgspec.json.encode(PaymentEvent(id=f"evt_py_{n:06d}", type="invoice.paid",
                                            created=int(time.time()),
                                            data=PaymentEventData(object=pay)))


async def test_a_payment_before_its_invoice_is_parked_then_applied_once(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    async with running_gateway(broker, tmp_path, sim_url, payments={"park_recheck_s": 0.2},
                               sla={"kpi_interval_s": 0.2}) as gw:
        kpis: list[dict[str, Any]] = []

        async def on_kpi(msg: Any) -> None:
            kpis.append(msgspec.json.decode(msg.data))

        nc = await nats.connect(gw.cfg.nats.url, **gw.nats_options())
        try:
            await nc.subscribe(f"{gw.subjects.prefix}.mon.kpi", cb=on_kpi)
            await _payment_before_invoice(gw)
            # The settlement's cycle time reaches the KPI document.
            with anyio.fail_after(10):
                while not any(k["partner_settlement_cycle_ms"]["settlements"] == 1
                              for k in kpis):
                    await anyio.sleep(0.05)
            cycle = next(k for k in kpis if k["partner_settlement_cycle_ms"]["settlements"])
            assert 0 < cycle["partner_settlement_cycle_ms"]["p50"] <= cycle[
                "partner_settlement_cycle_ms"]["p99"]
        finally:
            await nc.close()


async def _payment_before_invoice(gw: LiveGateway) -> None:
    base = gw.admin_url
    invoice = msgspec.json.encode(billing_event(42))
    payment = payment_body(42, 3300)
    status, _ = await gw.post(payment, signed(payment))
    assert status == 200
    with anyio.fail_after(20):
        while (await actor_stats(base, "payment-router"))["parked"] < 1:
            await anyio.sleep(0.05)
    # Parked: acked and held, nothing at the ERP while the invoice is not posted.
    assert await gw.erp_postings("py_000042") == []
    status, _ = await gw.post(invoice, signed(invoice))
    assert status == 200
    with anyio.fail_after(20):
        while not await gw.erp_postings("py_000042"):
            await anyio.sleep(0.05)
    (inv_posting,) = await gw.erp_postings("in_000042")
    (pay_posting,) = await gw.erp_postings("py_000042")
    assert pay_posting["seq"] > inv_posting["seq"]  # applied after the invoice
    assert pay_posting["amount"] == 3300
    with anyio.fail_after(10):  # the resumed mark is committed just after the publish
        while (stats := await actor_stats(base, "payment-router"))["resumed"] < 1:
            await anyio.sleep(0.05)
    assert (stats["parked"], stats["resumed"], stats["waiting"]) == (1, 1, 0)
    # The same webhook again: stored once by the stream, nothing more at the ERP.
    status, _ = await gw.post(payment, signed(payment))
    assert status == 200
    # cus_1 is attributed at the simulator's seed 3: one settlement, one payable.
    partner = partner_of("cus_1", 3)
    assert partner is not None
    with anyio.fail_after(20):
        while not (await sim_get(gw.sim_url, "/erp/v1/vendor-bills"))["items"]:
            await anyio.sleep(0.05)
    settlements = (await sim_get(gw.sim_url, f"/partner/v1/settlements?partner={partner}"))
    (settlement,) = settlements["items"]
    (bill,) = (await sim_get(gw.sim_url, "/erp/v1/vendor-bills"))["items"]
    assert bill["externalId"] == settlement["id"] and bill["vendor"] == partner
    assert bill["amount"] == settlement["total"] > 0
    assert [line["invoiceId"] for line in settlement["lines"]] == ["in_000042"]
    assert len(await gw.erp_postings("py_000042")) == 1


# -- the whole stack -------------------------------------------------------------------------

def expected_followups(seed: int, invoices: int, opts: BillRunOptions) -> tuple[int, int]:
    """How many credit notes and payments a fresh simulator's first bill run of ``invoices``
    sends (the draws are seeded per invoice and do not depend on the issue time)."""
    kinds = [kind for i in range(1, invoices + 1)
             for kind, _ in followup_events(seed, i, generate_invoices(1, seed, i, now=0)[0],
                                            0, opts)]
    return kinds.count("credit_memos"), kinds.count("payments")


async def wait_money(stack: Stack, invoices: int, opts: BillRunOptions, *,
                     stall_timeout: float = 60.0) -> dict[str, Any]:
    """The audit once all ``invoices`` were accepted and posted, every credit memo and payment
    delivered and posted and every commissioned invoice settled with its payable, or when
    nothing moved for ``stall_timeout`` seconds."""
    notes, payments = expected_followups(stack.seed, invoices, opts)
    last: tuple[int, ...] = ()
    last_change = time.monotonic()
    while True:
        audit = await stack.audit()
        cm, pay = audit["credit_memo_postings"], audit["payment_postings"]
        st = audit["settlements"] or {}
        done = (audit["accepted"] == invoices
                and audit["credit_memos"]["accepted"] == notes
                and audit["payments"]["accepted"] == payments
                and audit["unposted_count"] == 0 and cm["unposted"] == 0
                and pay["unposted"] == 0 and st.get("missing") == 0
                and st.get("without_payable") == 0)
        if done:
            return audit
        sig = (audit["posted"], cm["postings"], pay["postings"], st.get("recorded", 0),
               st.get("payables", 0), audit["payments"]["accepted"])
        now = time.monotonic()
        if sig != last:
            last, last_change = sig, now
        elif now - last_change > stall_timeout:
            return audit
        await anyio.sleep(0.25)


def assert_exactly_once(audit: dict[str, Any]) -> None:
    cm, pay, st = audit["credit_memo_postings"], audit["payment_postings"], audit["settlements"]
    assert audit["unposted_count"] == 0 and audit["duplicates"] == 0, audit
    assert audit["unexpected"] == 0
    assert cm["issued"] > 0 and pay["issued"] > 0
    assert (cm["posted"], cm["duplicates"], cm["unexpected"]) == (cm["issued"], 0, 0), cm
    assert (pay["posted"], pay["duplicates"], pay["unexpected"]) == (pay["issued"], 0, 0), pay
    assert st["expected"] > 0 and st["missing"] == 0, st
    assert st["recorded"] == st["distinct"] == st["payables"] == st["expected"], st
    assert (st["duplicates"], st["payable_duplicates"], st["without_payable"],
            st["payable_without_settlement"]) == (0, 0, 0, 0), st


async def at_rest(stack: Stack) -> dict[str, Any]:
    """The audit once every consumer is idle and the counts stopped moving (after the
    redelivery window of the short test ``ack_wait``): the moment duplicates are counted."""
    rest = await stack.wait_quiet(timeout=60)
    assert rest.quiet, f"not at rest: busy {rest.busy}"
    return rest.audit


async def republish(stack: Stack) -> int:
    """Every stored payment and commission again, under new message ids (past the dedupe
    window, as a replay or a late redelivery would be)."""
    subjects = Subjects()
    bus = await NatsBus.connect(stack.url, auth=stack.auth(), name="erpgw-test")
    count = 0
    try:
        for lane, type_ in (("billing", "payment.received.v1"),
                            ("revpartner", "partner.commission.accrued.v1")):
            subject = subjects.for_type(type_)
            stored = await bus.scan(subjects.stream(lane), subject=subject)
            outs = [OutMsg(subject=subject, data=m.data, msg_id=new_id()) for m in stored]
            results = await bus.publish_batch(outs)
            assert all(r is None for r in results)
            count += len(outs)
    finally:
        await bus.close()
    return count


async def test_bill_run_with_credit_memos_and_payments_posts_and_settles_once(
        tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=71,
                  gateway_toml="[payments]\npark_recheck_s = 0.25\n")
    await stack.start()
    try:
        opts = BillRunOptions(credit_memo_rate=0.3, payment_rate=0.7)
        await stack.bill_run(120, credit_memo_rate=0.3, payment_rate=0.7)
        await wait_money(stack, 120, opts)
        audit = await at_rest(stack)
        assert_exactly_once(audit)
        cycle = audit["settlements"]["cycle_ms"]
        assert 0 < cycle["p50"] <= cycle["p99"] <= cycle["max"]
        assert await stack.dead_letters() == []
        # Redelivery beyond the dedupe window: every payment and commission once more.
        assert await republish(stack) > 0
        again = await at_rest(stack)
        assert_exactly_once(again)
        for key in ("credit_memo_postings", "payment_postings", "settlements"):
            assert again[key] == audit[key], key
        assert again["postings"] == audit["postings"]
        assert await stack.stop_gateway() == 0
    finally:
        await stack.close()


async def test_sigkill_mid_run_never_doubles_money(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=72,
                  gateway_toml="[payments]\npark_recheck_s = 0.25\n")
    await stack.start()
    try:
        opts = BillRunOptions(credit_memo_rate=0.3, payment_rate=0.7)
        await stack.bill_run(300, rate=300, credit_memo_rate=0.3, payment_rate=0.7)
        with anyio.fail_after(60):
            while (await stack.audit())["payment_postings"]["postings"] < 20:
                await anyio.sleep(0.05)
        stack.kill_gateway()
        await stack.start_gateway()
        await wait_money(stack, 300, opts)
        audit = await at_rest(stack)  # a doubling by a redelivery after the kill lands first
        assert_exactly_once(audit)
        assert await stack.stop_gateway() == 0
    finally:
        await stack.close()
