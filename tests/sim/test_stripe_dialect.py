"""The simulator in Stripe's dialect: every webhook it sends passes the official ``stripe``
library's ``Webhook.construct_event``, decodes with the gateway's Stripe reader and maps to a
canonical message; its bill run carries what real invoices carry; its list APIs page like
Stripe's and check the secret key."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import msgspec
import pytest
from aiohttp import web

from actors.platforms.billing.stripe import STRIPE_ROUTES
from contracts import InvoiceIssuedV3
from sim import SimConfig
from sim._stripe import stripe_invoice

from .conftest import HOST, free_port, running_app, running_sim

stripe = pytest.importorskip("stripe")

SECRET = "whsec_stripe_dialect"


async def _get(http: Any, path: str, key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with http.session.get(http.base + path, headers=headers) as resp:
        return resp.status, msgspec.json.decode(await resp.read())
KEY = "sk_test_dialect_51Qx"


def test_bill_run_invoices_carry_real_invoice_features() -> None:
    seen: Counter[str] = Counter()
    for i in range(1, 401):
        inv = stripe_invoice(7, i, 1_765_000_000)
        lines = inv["lines"]["data"]
        seen[inv["currency"]] += 1
        seen["discount"] += bool(inv["total_discount_amounts"])
        seen["proration"] += any(ln["amount"] < 0 for ln in lines)
        seen["tiered"] += any(ln["pricing"]["unit_amount_decimal"] is None for ln in lines)
        seen["multi_tax"] += any(len(ln["taxes"]) > 1 for ln in lines)
        seen["inclusive"] += any(t["tax_behavior"] == "inclusive" for ln in lines
                                 for t in ln["taxes"])
        if inv["currency"] in ("bhd", "kwd"):  # Stripe: three-decimal amounts end in 0
            assert inv["total"] % 10 == 0 and all(ln["amount"] % 10 == 0 for ln in lines)
        assert inv["total"] > 0
    for feature in ("usd", "jpy", "bhd", "kwd", "discount", "proration", "tiered",
                    "multi_tax", "inclusive"):
        assert seen[feature] > 0, feature


async def test_every_stripe_webhook_passes_construct_event_and_maps() -> None:
    received: list[tuple[bytes, str | None]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get("Stripe-Signature")))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    hook_port = free_port()
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{hook_port}/hook",
                       webhook_secret=SECRET, seed=5, billing_dialect="stripe",
                       stripe_secret_key=KEY)
    async with running_app(app, hook_port), running_sim(config) as http:
        await http.post("/billing/v1/bill-runs", json={
            "invoices": 60, "credit_memo_rate": 0.4, "payment_rate": 0.5})
        with anyio.fail_after(30):
            while True:
                audit = (await http.get("/sim/v1/audit")).body
                done = audit["credit_memos"]["issued"] == audit["credit_memos"]["accepted"] \
                    and audit["payments"]["issued"] == audit["payments"]["accepted"]
                if audit["accepted"] == 60 and done:
                    break
                await anyio.sleep(0.02)
        # Stripe's list APIs: bearer key checked, newest first, starting_after paging.
        status, denied = await _get(http, "/v1/events", "sk_test_nope")
        assert status == 401 and denied["error"]["code"] == "api_key_invalid"
        status, missing = await _get(http, "/v1/invoices")
        assert status == 401 and missing["error"]["code"] == "api_key_missing"
        ids: list[str] = []
        after = ""
        while True:
            status, page = await _get(http, "/v1/events?limit=25" + after, KEY)
            assert status == 200
            ids += [e["id"] for e in page["data"]]
            if not page["has_more"]:
                break
            after = f"&starting_after={page['data'][-1]['id']}"
        _, invoices = await _get(http, "/v1/invoices?limit=100", KEY)
    types: Counter[str] = Counter()
    for body, header in received:
        event = stripe.Webhook.construct_event(body, header, SECRET)  # raises if not Stripe's
        types[event["type"]] += 1
        route = STRIPE_ROUTES[event["type"]]
        inbound = route.map(route.decode(body))  # the gateway's reader takes it as is
        assert inbound is not None
    assert types["invoice.finalized"] == 60
    assert types["credit_note.created"] > 0 and types["invoice.paid"] > 0
    assert types["invoice.voided"] > 0
    assert len(ids) == len(set(ids)) == sum(types.values())  # every event listed once
    assert [i["id"] for i in invoices["data"]][:3] == ["in_000060", "in_000059", "in_000058"]


def test_finalized_invoices_become_balanced_v3_invoices() -> None:
    from actors.router.invoices import AccountMap, journal_for_invoice_v3
    from sim._stripe import event_body

    for i in range(1, 200):
        inv = stripe_invoice(11, i, 1_765_000_000)
        body = event_body(f"evt_{i}", "invoice.finalized", 1_765_000_000, inv)
        route = STRIPE_ROUTES["invoice.finalized"]
        canonical = route.map(route.decode(body)).payload
        assert isinstance(canonical, InvoiceIssuedV3)
        entry = journal_for_invoice_v3(canonical, "k" * 32, AccountMap())
        assert entry.amount == inv["total"]  # the debit side is the receivable alone
        doc: dict[str, Any] = msgspec.json.decode(body)
        assert doc["data"]["object"]["total"] == canonical.total


async def test_subscription_changes_are_stripe_events_that_replay_to_billings_book() -> None:
    """Flow 5 in Stripe's dialect: every change webhook passes ``construct_event``, maps to
    the canonical change with the version billing made, and those changes, applied in version
    order from the saga's baseline, end at the value and status billing holds."""
    from datetime import date

    from actors.commercial import lifecycle
    from contracts import SubscriptionAmended, SubscriptionCancelled, SubscriptionRenewed

    received: list[tuple[bytes, str | None]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get("Stripe-Signature")))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    hook_port = free_port()
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{hook_port}/hook",
                       webhook_secret=SECRET, seed=5, billing_dialect="stripe",
                       stripe_secret_key=KEY)
    subs: dict[str, Any] = {}
    async with running_app(app, hook_port), running_sim(config) as http:
        for n in range(24):  # as the deal saga creates them
            async with http.session.post(http.base + "/billing/v1/subscriptions", json={
                    "customer": f"cus_{n}", "currency": "eur", "start_date": "2026-03-01",
                    "term_months": 12, "metadata": {"deal_id": f"D-{n}"},
                    "items": [{"product": "seats", "quantity": 2 + n % 5, "unit_amount": 1500},
                              {"product": "support", "quantity": 1, "unit_amount": 9000}]},
                    headers={"Idempotency-Key": f"k-{n}"}) as resp:
                assert resp.status == 201
                created = msgspec.json.decode(await resp.read())
            subs[created["id"]] = created
        run = await http.post("/billing/v1/subscription-changes",
                              json={"count": 24, "reorderRate": 1.0})
        assert run.status == 202 and run.body["reordered"] > 0
        with anyio.fail_after(30):
            while not (await http.get(
                    f"/billing/v1/subscription-changes/{run.body['changeRunId']}")).body["done"]:
                await anyio.sleep(0.02)
        final = {i: (await http.get(f"/billing/v1/subscriptions/{i}")).body for i in subs}
    assert len(received) == run.body["changes"]
    changes: dict[str, list[tuple[int, Any]]] = {}
    kinds: Counter[str] = Counter()
    for body, header in received:
        event = stripe.Webhook.construct_event(body, header, SECRET)  # raises if not Stripe's
        assert event["type"] in ("customer.subscription.updated",
                                 "customer.subscription.deleted")
        route = STRIPE_ROUTES[event["type"]]
        inbound = route.map(route.decode(body))
        assert inbound is not None  # every change is a version: none is acknowledged away
        kinds[type(inbound.payload).__name__] += 1
        changes.setdefault(inbound.key.object_id, []).append((inbound.key.version,
                                                              inbound.payload))
    assert kinds["SubscriptionAmended"] and kinds["SubscriptionRenewed"]
    assert kinds["SubscriptionCancelled"]
    assert any([v for v, _ in got] != sorted(v for v, _ in got) for got in changes.values())
    for sub_id, got in changes.items():
        first, last = subs[sub_id], final[sub_id]
        assert sorted(v for v, _ in got) == list(range(2, last["version"] + 1))
        state = lifecycle.LifecycleState(
            deal_id=first["metadata"]["deal_id"], customer_id=first["customer"],
            currency="EUR", order_id="SO-1", phases=(lifecycle.Phase(
                start=date.fromisoformat(first["start_date"]),
                end=date.fromisoformat(first["end_date"]),
                items=tuple(lifecycle.PhaseItem(i["product"], i["quantity"], i["unit_amount"])
                            for i in first["items"])),))
        for _, change in sorted(got, key=lambda vc: vc[0]):
            assert isinstance(change, SubscriptionAmended | SubscriptionRenewed |
                              SubscriptionCancelled)
            state = lifecycle.evolve(state, change)
        value = sum(sum(i["amount"] for i in p["items"]) * lifecycle.months(lifecycle.Phase(
            start=date.fromisoformat(p["start_date"]), end=date.fromisoformat(p["end_date"]),
            items=())) for p in last["phases"])
        assert lifecycle.value(state) == value
        assert state.cancelled == (last["status"] == "canceled")
