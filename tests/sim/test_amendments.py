"""Amendments (F23): bill runs with ``amend_rate`` issue a version 2 of some invoices as
``invoice.updated``, ``reorder_amendments`` delivers some v2 before v1, and the audit judges
posting against the latest version."""

from __future__ import annotations

from typing import Any

import msgspec

from contracts.platforms.billing import BillingEventList
from sim import IssuedInvoice, Posting, SimConfig, compute_audit, generate_invoices
from sim._billing import amended_invoice, plan_amendment

from .conftest import HOST, free_port, running_app, running_sim
from .receiver import GatewayLike
from .test_ground_truth import drained

SECRET = "whsec_amend"
NOW = 1_764_230_400


def test_version_2_changes_one_line_and_keeps_the_sums_right() -> None:
    for index in range(1, 40):
        (v1,) = generate_invoices(1, 3, index, now=NOW)
        v2 = amended_invoice(3, index, NOW)
        assert (v2.id, v2.version, v1.version) == (v1.id, 2, 1)
        changed = [(a, b) for a, b in zip(v1.lines.data, v2.lines.data, strict=True) if a != b]
        assert len(changed) == 1
        a, b = changed[0]
        assert b.quantity > a.quantity and b.amount == b.quantity * b.unit_amount
        assert v2.subtotal == sum(line.amount for line in v2.lines.data)
        assert v2.total == v2.subtotal + v2.tax > v1.total
        assert amended_invoice(3, index, NOW) == v2  # pure


def test_amendment_plan_is_seeded_and_off_by_default() -> None:
    plans = [plan_amendment(3, i, 0.3, 0.5) for i in range(1, 1001)]
    assert plans == [plan_amendment(3, i, 0.3, 0.5) for i in range(1, 1001)]
    amended = sum(a for a, _ in plans)
    early = sum(e for _, e in plans)
    assert 230 < amended < 370 and 0 < early < amended
    assert all(not e or a for a, e in plans)
    assert plan_amendment(3, 1, 0.0, 1.0) == (False, False)


def test_audit_judges_amended_invoices_by_their_latest_version() -> None:
    issued = [IssuedInvoice("in_1", "USD", 150, 10.0, version=2),
              IssuedInvoice("in_2", "USD", 100, 10.0),
              IssuedInvoice("in_3", "USD", 70, 10.0, version=2)]

    def posting(seq: int, external_id: str, amount: int) -> Posting:
        return Posting(seq=seq, id=f"JE-{seq}", idempotency_key=f"k{seq}",
                       external_id=external_id, currency="USD", amount=amount, accepted_at=11.0)

    audit = compute_audit(issued, {"in_1", "in_2", "in_3"}, [
        posting(1, "in_1:v1", 100),  # superseded by v2
        posting(2, "in_1:v2", 150),  # the latest: posted
        posting(3, "in_2", 100),     # never amended: any posting counts
        posting(4, "in_3", 60),      # unversioned = v1: superseded, so in_3 is unposted
        posting(5, "in_1:v1", 100),  # a v1 after v2: superseded, a duplicate, and ORDER
    ], now=20.0)
    assert (audit.posted, audit.superseded, audit.duplicates, audit.unexpected) == (2, 2, 1, 0)
    assert audit.postings == audit.posted + audit.duplicates + audit.unexpected + audit.superseded
    assert audit.unposted == ["in_3"]
    assert audit.amended == 2
    assert audit.amount_issued == {"USD": 320}
    assert audit.amount_posted_latest == {"USD": 250}
    assert (audit.order_violations, audit.order_violating) == (1, ["in_1"])


async def _run(receiver: GatewayLike, **options: Any) -> tuple[dict[str, Any], Any]:
    hook_port, sim_port = free_port(), free_port()
    receiver.erp_url = f"http://{HOST}:{sim_port}"
    config = SimConfig(port=sim_port, webhook_url=f"http://{HOST}:{hook_port}/hook",
                       webhook_secret=SECRET, seed=9, delivery_concurrency=4)
    async with running_app(receiver.app, hook_port), running_sim(config) as http:
        reply = await http.post("/billing/v1/bill-runs", json={"invoices": 40, **options})
        assert reply.status == 202
        audit = await drained(http, 40, receiver)
        async with http.session.get(http.base + "/billing/v1/events?limit=1000") as resp:
            events = msgspec.json.decode(await resp.read(), type=BillingEventList)
    return audit, events


async def test_a_version_checking_receiver_posts_every_latest_version() -> None:
    receiver = GatewayLike(SECRET, versioned=True, updates=True, ignore_stale=True)
    audit, events = await _run(receiver, amend_rate=0.5, reorder_amendments=0.5)
    early = [i for i in range(1, 41) if plan_amendment(9, i, 0.5, 0.5)[1]]
    amended = [i for i in range(1, 41) if plan_amendment(9, i, 0.5, 0.5)[0]]
    assert audit["amended"] == len(amended) > len(early) > 0
    assert audit["unposted"] == [] and audit["posted"] == 40
    assert audit["order_violations"] == 0
    assert audit["amount_posted_latest"] == audit["amount_issued"]
    # v1 of the early ones came after their v2 and was skipped as stale.
    assert sorted(receiver.stale) == sorted(f"evt_in_{i:06d}" for i in early)
    assert audit["superseded"] == len(amended) - len(early)
    # The events list carries both versions, v2 first where it was delivered first.
    updated = [e for e in events.data if e.type == "invoice.updated"]
    assert len(events.data) == 40 + len(amended)
    assert sorted(e.data.object.id for e in updated) == [f"in_{i:06d}" for i in amended]
    assert all(e.data.object.version == 2 and e.id.endswith("_v2") for e in updated)
    order = [(e.data.object.id, e.data.object.version) for e in events.data]
    for i in amended:
        inv = f"in_{i:06d}"
        before = order.index((inv, 2)) < order.index((inv, 1))
        assert before == (i in early)


async def test_a_receiver_without_a_version_check_breaks_order_ok() -> None:
    receiver = GatewayLike(SECRET, versioned=True, updates=True)
    audit, _ = await _run(receiver, amend_rate=0.5, reorder_amendments=1.0)
    amended = [i for i in range(1, 41) if plan_amendment(9, i, 0.5, 1.0)[0]]
    assert audit["order_violations"] == len(amended) > 0  # every v1 posted after its v2
    assert audit["order_violating"] == [f"in_{i:06d}" for i in amended]
    assert audit["superseded"] == len(amended)


async def test_amendments_are_off_by_default() -> None:
    receiver = GatewayLike(SECRET, versioned=True, updates=True)
    audit, events = await _run(receiver)
    assert audit["amended"] == audit["superseded"] == 0
    assert {e.type for e in events.data} == {"invoice.finalized"}
    assert set(receiver.types) == {"invoice.finalized"}
