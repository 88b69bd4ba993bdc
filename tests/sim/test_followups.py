"""Credit notes and payments: bill runs with ``credit_memo_rate`` / ``payment_rate`` send
``credit_note.created`` and ``invoice.paid`` webhooks after the invoice was accepted, retried
until a 2xx, and the audit counts them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import msgspec
from aiohttp import web

from contracts.platforms.billing import CreditNoteEvent, PaymentEvent
from sim import SimConfig, generate_invoices
from sim._billing import BillRunOptions, followup_events

from .conftest import HOST, Http, free_port, running_app, running_sim

NOW = 1_764_230_400


def test_followups_are_seeded_and_consistent() -> None:
    opts = BillRunOptions(credit_memo_rate=0.5, payment_rate=0.5)
    kinds: Counter[str] = Counter()
    for index in range(1, 101):
        (inv,) = generate_invoices(1, 4, index, now=NOW)
        events = followup_events(4, index, inv, NOW, opts)
        assert events == followup_events(4, index, inv, NOW, opts)
        credited = 0
        for kind, body in events:
            kinds[kind] += 1
            if kind == "credit_memos":
                note = msgspec.json.decode(body, type=CreditNoteEvent).data.object
                assert (note.id, note.invoice, note.currency) == (
                    f"cn_{index:06d}", inv.id, inv.currency)
                assert note.amount == sum(x.amount for x in note.lines.data) > 0
                credited = note.amount
            else:
                pay = msgspec.json.decode(body, type=PaymentEvent)
                assert pay.type == "invoice.paid"
                assert pay.data.object.amount == inv.total - credited
                assert pay.data.object.paid_at > NOW
    assert 30 < kinds["credit_memos"] < 70 and 30 < kinds["payments"] < 70
    (inv,) = generate_invoices(1, 4, 1, now=NOW)
    assert followup_events(4, 1, inv, NOW, BillRunOptions()) == []


class Flaky:
    """Accepts invoices; answers 500 to the first delivery of every other event."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.types: list[str] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        event = msgspec.json.decode(await request.read())
        self.seen[event["id"]] += 1
        self.types.append(event["type"])
        if event["type"] != "invoice.finalized" and self.seen[event["id"]] == 1:
            return web.json_response({"code": "unhandled"}, status=500)
        return web.json_response({"ok": True})


async def test_followups_are_delivered_after_the_invoice_and_retried() -> None:
    receiver = Flaky()
    hook_port, sim_port = free_port(), free_port()
    config = SimConfig(port=sim_port, webhook_url=f"http://{HOST}:{hook_port}/hook", seed=4,
                       delivery_concurrency=4)
    async with running_app(receiver.app, hook_port), running_sim(config) as http:
        await http.post("/billing/v1/bill-runs", json={
            "invoices": 30, "credit_memo_rate": 0.5, "payment_rate": 0.5})
        audit = await _settled(http)
    notes = [k for k in receiver.seen if k.startswith("evt_cn_")]
    pays = [k for k in receiver.seen if k.startswith("evt_py_")]
    assert audit["credit_memos"] == {"issued": len(notes), "accepted": len(notes)}
    assert audit["payments"] == {"issued": len(pays), "accepted": len(pays)}
    assert notes and pays
    assert all(receiver.seen[k] == 2 for k in notes + pays)  # a 500, then the retry
    # Each follow-up came after its invoice's own delivery.
    for k in notes + pays:
        assert receiver.seen[f"evt_in_{k[-6:]}"] == 1
    assert audit["accepted"] == 30 and audit["posted"] == 0


async def _settled(http: Http) -> dict[str, Any]:
    """The audit once every follow-up the run plans (known from the seed: not a time) was
    issued and accepted."""
    opts = BillRunOptions(credit_memo_rate=0.5, payment_rate=0.5)
    kinds = [kind for i in range(1, 31)
             for kind, _ in followup_events(4, i, generate_invoices(1, 4, i, now=0)[0], 0, opts)]
    planned = {k: kinds.count(k) for k in ("credit_memos", "payments")}
    with anyio.fail_after(30):  # a guard against a hang, not a speed target
        while True:
            audit: dict[str, Any] = (await http.get("/sim/v1/audit")).body
            if audit["accepted"] == 30 and all(
                    audit[k] == {"issued": n, "accepted": n} for k, n in planned.items()):
                return audit
            await anyio.sleep(0.02)


async def test_no_followups_by_default(sim: Http) -> None:
    audit = (await sim.get("/sim/v1/audit")).body
    assert audit["credit_memos"] == audit["payments"] == {"issued": 0, "accepted": 0}
