"""Credit notes and payments in the billing events list (``?type=``) and in the audit's
per-document counts, against a receiver that accepts everything."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
from aiohttp import web

from contracts.platforms.billing import CreditNoteEventList, PaymentEventList
from sim import SimConfig, generate_invoices
from sim._billing import BillRunOptions, followup_events

from .conftest import HOST, Http, free_port, running_app, running_sim

SEED = 5
OPTS = BillRunOptions(credit_memo_rate=0.5, payment_rate=0.5)


class Receiver:
    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.app = web.Application()
        self.app.router.add_post("/hook", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.bodies[msgspec.json.decode(raw)["id"]] = raw
        return web.json_response({"ok": True})


def expected(invoices: int) -> tuple[int, int]:
    kinds = [k for i in range(1, invoices + 1)
             for k, _ in followup_events(SEED, i, generate_invoices(1, SEED, i, now=0)[0], 0,
                                         OPTS)]
    return kinds.count("credit_memos"), kinds.count("payments")


async def test_followups_are_listed_by_type_in_delivery_order() -> None:
    receiver = Receiver()
    hook_port, sim_port = free_port(), free_port()
    config = SimConfig(port=sim_port, webhook_url=f"http://{HOST}:{hook_port}/hook", seed=SEED,
                       delivery_concurrency=4)
    notes, pays = expected(20)
    assert notes and pays
    async with running_app(receiver.app, hook_port), running_sim(config) as http:
        await http.post("/billing/v1/bill-runs", json={
            "invoices": 20, "credit_memo_rate": 0.5, "payment_rate": 0.5})
        with anyio.fail_after(15):
            while True:
                audit: dict[str, Any] = (await http.get("/sim/v1/audit")).body
                if (audit["credit_memos"]["accepted"], audit["payments"]["accepted"]) == (
                        notes, pays):
                    break
                await anyio.sleep(0.02)
        listed = await _all(http, "credit_note.created", CreditNoteEventList)
        paid = await _all(http, "invoice.paid", PaymentEventList)
        invoices = (await http.get("/billing/v1/events?limit=1000")).body["data"]
        bad = await http.get("/billing/v1/events?type=invoice.voided")
        audit = (await http.get("/sim/v1/audit")).body
    assert len(listed) == notes and len(paid) == pays
    # Byte for byte what the webhooks carried.
    for event in [*listed, *paid]:
        assert msgspec.json.encode(event) == receiver.bodies[event.id]
    assert {e.type for e in listed} == {"credit_note.created"}
    assert {e.type for e in paid} == {"invoice.paid"}
    assert all(e["type"] == "invoice.finalized" for e in invoices) and len(invoices) == 20
    assert bad.status == 400 and bad.body["path"] == "type"
    # Nothing posted them: issued, unposted, no postings, and no settlement expected to be
    # found (the gateway is absent).
    assert audit["credit_memo_postings"]["issued"] == notes
    assert audit["credit_memo_postings"]["unposted"] == notes
    assert audit["payment_postings"]["postings"] == 0
    assert audit["settlements"]["recorded"] == 0


async def _all(http: Http, event_type: str, typ: Any) -> list[Any]:
    """Every event of ``event_type``, two per page, following the cursor."""
    out: list[Any] = []
    cursor = ""
    while True:
        async with http.session.get(f"{http.base}/billing/v1/events",
                                    params={"type": event_type, "after": cursor,
                                            "limit": "2"}) as resp:
            page = msgspec.json.decode(await resp.read(), type=typ)
        out.extend(page.data)
        cursor = page.next_cursor
        if not page.has_more:
            return out
