"""Flow 1 in the simulator: seeded deals and their signed webhooks, subscriptions, sales orders
and revenue contracts (each idempotent its own way), and the ``deals`` ground truth."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import date

import anyio
import msgspec
import pytest
from aiohttp import web

from contracts import SignatureError
from contracts.platforms.billing import SubscriptionIn, SubscriptionItemIn
from contracts.platforms.erp import (
    ErpError,
    SalesOrderIn,
    SalesOrderLineIn,
    SalesOrderRecord,
    SalesOrderRevision,
)
from contracts.platforms.partner import DEAL_SIGNATURE_HEADER, DealEvent
from contracts.platforms.revenue import (
    ContractError,
    ContractLineIn,
    RevenueContract,
    RevenueContractIn,
)
from contracts.platforms.signing import verify
from sim import SimConfig
from sim._deals import (
    DealRegistry,
    SagaStep,
    _Deal,
    deal_audit,
    decide_deal,
    generate_deal,
    saga_fault,
)
from sim._erp_orders import SalesOrderBook
from sim._http import SimHTTPError
from sim._revenue_contracts import ContractBook
from sim._subscriptions import SubscriptionBook, end_date, subscription_value

from .conftest import HOST, Http, free_port, running_app, running_sim
from .test_partner import post_keyed

SECRET = "whsec_partner_test"
T0 = 1_764_230_400  # 2025-11-27


def test_deals_are_seeded_and_decided_deterministically() -> None:
    a, b = generate_deal(5, 7, T0), generate_deal(5, 7, T0)
    assert a == b and a.id == "dl_000007" and a.version == 1 and a.status == "registered"
    assert generate_deal(6, 7, T0) != a
    assert a.start_date == "2025-12-01" and a.partner.startswith("pt_000")
    decisions = [decide_deal(generate_deal(5, i, T0), 5, i, 0.3, T0) for i in range(1, 401)]
    rejected = sum(d.status == "rejected" for d in decisions)
    assert 80 < rejected < 160
    approved = next(d for d in decisions if d.status == "approved")
    assert approved.version == 2 and approved.valid_from and approved.valid_until
    assert all(decide_deal(generate_deal(5, i, T0), 5, i, 0.0, T0).status == "approved"
               for i in range(1, 50))
    faults = [saga_fault(5, i, 0.2, 0.3) for i in range(1, 1001)]
    assert 150 < faults.count("sales_order") < 250
    assert 250 < faults.count("revenue_contract") < 350
    assert saga_fault(5, 1, 0.0, 0.0) is None


def _sub(deal: str = "dl_000001", qty: int = 2) -> SubscriptionIn:
    return SubscriptionIn(customer="cus_00001", currency="usd",
                          items=[SubscriptionItemIn(product="prod_seats", quantity=qty,
                                                    unit_amount=2_000)],
                          start_date=date(2026, 1, 31), term_months=1,
                          metadata={"deal_id": deal})


def test_subscriptions_are_idempotent_and_cancelled_once() -> None:
    book = SubscriptionBook()
    sub, replayed = book.create("k1", _sub(), 1.0)
    assert not replayed and sub.id == "sub_000001" and sub.amount == 4_000
    assert sub.end_date == date(2026, 2, 27)
    assert end_date(date(2026, 1, 1), 12) == date(2026, 12, 31)
    assert book.create("k1", _sub(), 2.0) == (sub, True)
    with pytest.raises(SimHTTPError) as err:
        book.create("k1", _sub(qty=3), 3.0)
    assert err.value.status == 422 and err.value.code == "idempotency.key_reused"
    cancelled = book.cancel(sub.id, 4.0)
    assert cancelled.status == "canceled" and cancelled.version == 2
    assert book.cancel(sub.id, 5.0) == cancelled  # idempotent: no version 3
    with pytest.raises(SimHTTPError):
        book.cancel("sub_nope", 6.0)


def _order(deal: str = "dl_000001", unit: int = 12_000) -> SalesOrderIn:
    return SalesOrderIn(external_id=deal, customer="cus_00001", currency="USD",
                        tran_date=date(2025, 11, 27),
                        lines=[SalesOrderLineIn(product="prod_seats", quantity=2,
                                                unit_amount=unit)])


def _code(result: object) -> str:
    assert isinstance(result, ErpError | ContractError), result
    return result.code


def test_sales_orders_are_idempotent_refusable_and_closed_not_deleted() -> None:
    book = SalesOrderBook()
    status, order = book.create("k", _order(), 1.0)
    assert status == 201 and isinstance(order, SalesOrderRecord) and order.id == "SO-1"
    assert order.total == 24_000 and order.lines[0].amount == 24_000
    assert book.create("k", _order(), 2.0) == (200, order)
    status, err = book.create("k", _order(unit=1), 3.0)
    assert status == 422 and _code(err) == "IDEMPOTENCY_KEY_REUSED"
    status, err = book.create("k2", msgspec.structs.replace(_order(), currency="usd"), 3.0)
    assert status == 422 and _code(err) == "INVALID"
    status, err = book.create("k3", _order("dl_000002"), 3.0, reject=True)
    assert status == 422 and _code(err) == "CREDIT_HOLD"
    assert book.refused == ["dl_000002"] and book.by_external_id("dl_000002") == []
    closed = book.close("SO-1", "compensation", 4.0)
    assert closed.status == "closed" and closed.reversal_id == "SOR-1"
    assert book.close("SO-1", "again", 5.0) == closed
    assert book.by_external_id("dl_000001") == [closed]


def _contract(version: int, amount: int = 1_200) -> RevenueContractIn:
    return RevenueContractIn(version=version, customer="cus_00001", currency="USD",
                             lines=[ContractLineIn(line_id="l1", product="prod_seats",
                                                   amount=amount,
                                                   period_start=date(2026, 1, 15), months=3)])


def test_revenue_contracts_upsert_by_version_with_a_ratable_schedule() -> None:
    book = ContractBook()
    status, c = book.put("dl_000001", _contract(1), 1.0)
    assert status == 201 and isinstance(c, RevenueContract)
    # 17, 28, 31 and 14 days of 90: largest remainder, summing to the amount exactly
    assert [(e.period, e.amount) for e in c.schedule] == [
        ("2026-01", 227), ("2026-02", 373), ("2026-03", 413), ("2026-04", 187)]
    assert book.put("dl_000001", _contract(1), 2.0) == (200, c)
    assert book.put("dl_000001", _contract(1, 999), 3.0)[0] == 409
    status, c2 = book.put("dl_000001", _contract(2, 900), 4.0)
    assert status == 200 and isinstance(c2, RevenueContract) and c2.version == 2
    assert sum(e.amount for e in c2.schedule) == 900
    status, err = book.put("dl_000001", _contract(1), 5.0)
    assert status == 409 and _code(err) == "STALE_VERSION"
    status, err = book.put("dl_000002", _contract(1), 5.0, reject=True)
    assert status == 422 and _code(err) == "CONTRACT_REJECTED"
    assert book.recognition("2026-02").amount == {"USD": sum(
        e.amount for e in c2.schedule if e.period == "2026-02")}


def test_the_audit_tells_completed_compensated_duplicate_and_unexpected() -> None:
    registry = DealRegistry()
    ids = []
    faults: tuple[SagaStep | None, ...] = (None, "sales_order", "revenue_contract", None, None)
    for i, fault in enumerate(faults, 1):
        deal = decide_deal(generate_deal(1, i, T0), 1, i, 0.0, T0)
        registry.deals[deal.id] = _Deal(i, deal, deal, fault)
        ids.append(deal.id)
    rejected = msgspec.structs.replace(generate_deal(1, 6, T0), status="rejected", version=2)
    registry.deals[rejected.id] = _Deal(6, rejected, rejected, None)
    subs, orders, contracts = SubscriptionBook(), SalesOrderBook(), ContractBook()

    def sub(deal: str, key: str) -> str:
        return subs.create(key, _sub(deal), 1.0)[0].id

    def order(deal: str, key: str) -> str:
        _, o = orders.create(key, _order(deal), 1.0, reject=deal == ids[1])
        return o.id if isinstance(o, SalesOrderRecord) else ""

    # deal 1 completes; deal 2's order is refused and compensated; deal 3's contract refused
    sub(ids[0], "a1"), order(ids[0], "a2"), contracts.put(ids[0], _contract(1), 1.0)
    subs.cancel(sub(ids[1], "b1"), 2.0)
    order(ids[1], "b2")
    subs.cancel(sub(ids[2], "c1"), 2.0)
    orders.close(order(ids[2], "c2"), "comp", 2.0)
    contracts.put(ids[2], _contract(1), 1.0, reject=True)
    # deal 4 has two subscriptions (a DUP); deal 5 nothing yet; the rejected deal an order
    sub(ids[3], "d1"), sub(ids[3], "d2")
    order(rejected.id, "r1")
    a = deal_audit(registry, subs, orders, contracts)
    assert (a.deals, a.approved, a.rejected, a.injected_failures) == (6, 5, 1, 2)
    assert (a.completed, a.compensated, a.duplicates, a.unexpected) == (1, 2, 1, 1)
    assert a.incomplete == [ids[3], ids[4]] and a.incomplete_count == 2
    assert (a.subscriptions_created, a.subscriptions_cancelled) == (5, 2)
    assert (a.sales_orders_created, a.sales_orders_closed, a.revenue_contracts) == (3, 1, 1)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[DealEvent]]]:
    got: list[DealEvent] = []
    seen: set[str] = set()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(request.headers.get(DEAL_SIGNATURE_HEADER), body, [SECRET],
                   now=time.time())
        except SignatureError:
            return web.Response(status=401)
        event = msgspec.json.decode(body, type=DealEvent)
        if event.id not in seen and len(seen) == 3 and event.id.endswith("_v1"):
            seen.add("fail-once")
            return web.Response(status=503)  # the portal retries until a 2xx
        seen.add(event.id)
        got.append(event)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    port = free_port()
    async with running_app(app, port) as base:
        yield f"{base}/hook", got


async def test_a_deal_run_delivers_signed_webhooks_in_order(
        receiver: tuple[str, list[DealEvent]]) -> None:
    url, got = receiver
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/x", seed=3,
                       partner_webhook_secret=SECRET)
    async with running_sim(config) as http:
        run = (await http.post("/partner/v1/deal-runs", json={
            "deals": 6, "webhookUrl": url, "rejectRate": 0.5})).body
        with anyio.fail_after(20):
            while not (status := (await http.get(
                    f"/partner/v1/deal-runs/{run['dealRunId']}")).body)["done"]:
                await anyio.sleep(0.05)
        assert status["accepted"] == 6 and status["approved"] + status["rejected"] == 6
        assert status["attempts"] == 13  # 12 webhooks, one answered 503 once
        by_deal: dict[str, list[str]] = {}
        for e in got:
            by_deal.setdefault(e.data.object.id, []).append(e.type)
        assert len(by_deal) == 6
        for types in by_deal.values():
            assert types[0] == "deal.registered"
            assert types[1] in ("deal.approved", "deal.rejected") and len(types) == 2
        deal = (await http.get(f"/partner/v1/deals/{run['firstDeal']}")).body
        assert deal["version"] == 2 and deal["status"] in ("approved", "rejected")
        assert (await http.get("/partner/v1/deals/dl_999999")).status == 404
        audit = (await http.get("/sim/v1/audit")).body["deals"]
        assert audit["deals"] == 6 and audit["accepted"] == 6
        # a customer registered by a deal is attributed to the deal's partner
        attribution = (await http.get(f"/partner/v1/attributions/{deal['customer']}")).body
        assert attribution["partner"] == deal["partner"]
        assert (await http.post("/partner/v1/deal-runs", json={"deals": 0})).status == 400


async def test_subscription_and_order_apis_need_an_idempotency_key(sim: Http) -> None:
    body = msgspec.to_builtins(_sub())
    assert (await post_keyed(sim, "/billing/v1/subscriptions", body, None)).status == 400
    first = await post_keyed(sim, "/billing/v1/subscriptions", body, "key-1")
    again = await post_keyed(sim, "/billing/v1/subscriptions", body, "key-1")
    assert first.status == 201 and again.status == 200 and again.body == first.body
    assert again.headers.get("Idempotent-Replayed") == "true"
    cancel = await sim.post(f"/billing/v1/subscriptions/{first.body['id']}/cancel")
    assert cancel.status == 200 and cancel.body["status"] == "canceled"
    order = msgspec.to_builtins(_order())
    made = await post_keyed(sim, "/erp/v1/sales-orders", order, "o-1")
    assert made.status == 201
    found = (await sim.get("/erp/v1/sales-orders?externalId=dl_000001")).body["items"]
    assert [o["id"] for o in found] == [made.body["id"]]
    closed = await sim.post(f"/erp/v1/sales-orders/{made.body['id']}/close",
                            json={"reason": "test"})
    assert closed.body["status"] == "closed" and closed.body["closeReason"] == "test"
    put = await sim.put("/revenue/v1/contracts/dl_000001",
                        json=msgspec.to_builtins(_contract(1)))
    assert put.status == 201 and (await sim.put(
        "/revenue/v1/contracts/dl_000001", json=msgspec.to_builtins(_contract(1)))).status == 200
    assert (await sim.get("/revenue/v1/recognition?period=2026-02")).body["amount"] == {
        "USD": 373}


def test_subscription_changes_make_versions_with_phases() -> None:
    book = SubscriptionBook()
    sub, _ = book.create("k", msgspec.structs.replace(_sub(), start_date=date(2026, 1, 1),
                                                      term_months=12), 1.0)
    assert sub.phases[0].end_date == date(2026, 12, 31) and subscription_value(sub) == 48_000
    with pytest.raises(SimHTTPError) as err:
        book.amend(sub.id, [SubscriptionItemIn(product="p", quantity=1, unit_amount=1)],
                   date(2026, 3, 15), 2.0)
    assert err.value.code == "subscription.bad_effective_date"
    v2 = book.amend(sub.id, [SubscriptionItemIn(product="prod_seats", quantity=5,
                                                unit_amount=2_000)], date(2026, 4, 1), 2.0)
    assert v2.version == 2 and len(v2.phases) == 2 and v2.proration == 3 * 2_000 * 9
    v3 = book.renew(sub.id, 12, 3.0)
    assert v3.end_date == date(2027, 12, 31) and v3.phases[-1].start_date == date(2027, 1, 1)
    v4 = book.cancel_at(sub.id, date(2027, 2, 1), 4.0)
    assert v4.status == "canceled" and v4.end_date == date(2027, 1, 31)
    assert subscription_value(v4) == 4_000 * 3 + 10_000 * 9 + 10_000 * 1
    assert [v.version for v in book.history[sub.id]] == [1, 2, 3, 4]
    with pytest.raises(SimHTTPError):
        book.renew(sub.id, 12, 5.0)


def test_sales_order_revisions_go_forward_only() -> None:
    book = SalesOrderBook()
    _, order = book.create("k", _order(), 1.0)
    assert isinstance(order, SalesOrderRecord)
    rev = SalesOrderRevision(version=2, lines=[SalesOrderLineIn(product="prod_seats",
                                                                quantity=3, unit_amount=100)])
    status, revised = book.revise(order.id, rev, 2.0)
    assert status == 200 and isinstance(revised, SalesOrderRecord) and revised.total == 300
    assert book.revise(order.id, rev, 3.0) == (200, revised)  # a replay
    status, err = book.revise(order.id, msgspec.structs.replace(rev, lines=rev.lines * 2), 4.0)
    assert status == 409 and _code(err) == "VERSION_CONFLICT"
    status, err = book.revise(order.id, msgspec.structs.replace(rev, version=2), 4.0)
    assert status == 200
    book.close(order.id, "cancelled", 5.0)
    status, err = book.revise(order.id, msgspec.structs.replace(rev, version=3), 6.0)
    assert status == 422 and _code(err) == "ORDER_CLOSED" and book.stale == 1
