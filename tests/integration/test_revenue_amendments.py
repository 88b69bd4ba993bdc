"""Revenue follows every billing change, against a real broker, the gateway in this process and
the simulated revenue platform over HTTP: an invoice amended (its v2 delivered before v1) and
credit notes against two invoices leave the platform's billings report at each invoice's latest
subtotal less its credit notes, every line once, and the reconciler's revenue leg agrees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from actors.reconcile import RevenueDoc, RevenueRecord, reconcile_revenue
from contracts.platforms.billing import (
    BillingCreditNote,
    BillingEvent,
    BillingInvoiceLine,
    CreditNoteEvent,
    CreditNoteEventData,
    CreditNoteLine,
    CreditNoteLineList,
    EventData,
    LineList,
)
from gateway.broker import EmbeddedBroker

from .conftest import actor_stats, billing_event, running_gateway, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def amended(n: int) -> BillingEvent:
    """Version 2 of ``billing_event(n)``: its line 3 seats instead of 2, and a new line."""
    v1 = billing_event(n)
    inv = v1.data.object
    lines = [msgspec.structs.replace(inv.lines.data[0], quantity=3, amount=4500),
             BillingInvoiceLine(id=f"il_{n}_b", product="prod_support", description="support",
                                quantity=1, unit_amount=700, amount=700)]
    v2 = msgspec.structs.replace(inv, lines=LineList(data=lines), subtotal=5200, tax=300,
                                 total=5500, version=2)
    return BillingEvent(id=f"evt_{n}_v2", type="invoice.updated", created=v1.created,
                        data=EventData(object=v2))


def credit_note(n: int, amount: int) -> CreditNoteEvent:
    inv = billing_event(n).data.object
    note = BillingCreditNote(
        id=f"cn_{n:06d}", invoice=inv.id, currency=inv.currency, amount=amount,
        created=inv.created, customer=inv.customer,
        lines=CreditNoteLineList(data=[CreditNoteLine(id=f"cnli_{n}", invoice_line=f"il_{n}",
                                                      description="seat", amount=amount)]))
    return CreditNoteEvent(id=f"evt_cn_{n}", type="credit_note.created", created=inv.created,
                           data=CreditNoteEventData(object=note))


async def billings(sim_url: str) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(
            f"{sim_url}/revenue/v1/reports/billings?limit=1000") as r:
        assert r.status == 200
        return {row["invoiceId"]: row for row in msgspec.json.decode(await r.read())["items"]}


async def test_amendments_and_credit_notes_leave_the_latest_billed_amounts(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    async with running_gateway(broker, tmp_path, sim_url) as gw:
        # invoice 1: v2 before v1, then a credit note of 1000; invoice 2: a credit note of 800
        for evt in (amended(1), billing_event(1), billing_event(2), credit_note(1, 1000),
                    credit_note(2, 800)):
            body = msgspec.json.encode(evt)
            status, _ = await gw.post(body, signed(body))
            assert status == 200, evt.id
        want = {"in_000001": 5200 - 1000, "in_000002": 3000 - 800}
        with anyio.fail_after(60):
            while {k: r["amount"] for k, r in (await billings(gw.sim_url)).items()} != want:
                await anyio.sleep(0.1)
        report = await billings(gw.sim_url)
        # every line once: v1's, v2's differences (one per line of v2), one per credit note line
        assert {k: (r["lines"], r["distinctLines"]) for k, r in report.items()} == {
            "in_000001": (1 + 2 + 1, 4), "in_000002": (1 + 1, 2)}
        stats = await actor_stats(gw.admin_url, "revenue-billing")
        assert stats["waiting_versions"] >= 1  # v2 came first and waited for v1
        # the reconciler's revenue leg compares with the latest version less the credit notes
        docs = [RevenueDoc("in_000001", "USD", 5200, 2, 0.0, ((3000, 1), (5200, 2)), 1000, 1),
                RevenueDoc("in_000002", "USD", 3000, 1, 0.0, ((3000, 1),), 800, 1)]
        records = [RevenueRecord(k, r["currency"], r["amount"], r["lines"], r["distinctLines"])
                   for k, r in report.items()]
        recon = reconcile_revenue(docs, records, ledger=None, now=1.0)
        assert recon.breaks == [] and recon.matched == 2
        # what an older version would have held is a break now
        stale = reconcile_revenue([msgspec.structs.replace(docs[0], subtotal=3000)], records[:1],
                                  ledger=None, now=1.0)
        assert [b.kind for b in stale.breaks] == ["revenue_amount"]
