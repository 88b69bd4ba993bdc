"""A Stripe test-mode ``invoice.finalized``, signed in Stripe's scheme, into a gateway with
``billing.dialect = "stripe"`` (real broker, in-process simulator's ERP): accepted on
``Stripe-Signature`` alone, posted to the ERP exactly once, balanced, receivable = total."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from gateway.broker import EmbeddedBroker
from tests.platforms.stripe_fixtures import SECRET, invoice_event, stripe_signature

from .conftest import running_gateway

pytestmark = pytest.mark.integration

INVOICE = "in_1QxT4vLkdIwHu7ixN0b2Qz1A"


async def test_stripe_test_mode_invoice_is_posted_once(broker: EmbeddedBroker, tmp_path: Path,
                                                       sim_url: str) -> None:
    async with running_gateway(broker, tmp_path, sim_url,
                               billing={"webhook_secrets": [SECRET], "dialect": "stripe"}) as gw:
        now = int(time.time())
        body = msgspec.json.encode(invoice_event(created=now - 30))
        headers = {"Stripe-Signature": stripe_signature(body, at=now),
                   "Content-Type": "application/json; charset=utf-8"}
        status, doc = await gw.post(body, headers)
        assert (status, doc["status"]) == (200, "accepted"), doc
        # Stripe retries (a fresh signature): deduplicated, still 2xx.
        again = {**headers, "Stripe-Signature": stripe_signature(body, at=now + 1)}
        status, doc2 = await gw.post(body, again)
        assert (status, doc2["status"]) == (200, "duplicate")
        # The erpgw header alone is not Stripe's: refused, nothing published.
        status, refused = await gw.post(body, {"Billing-Signature": headers["Stripe-Signature"]})
        assert (status, refused["code"]) == (401, "signature.missing")
        assert "Stripe-Signature" in str(refused["message"])
        with anyio.fail_after(30):
            while not await gw.erp_postings(INVOICE):
                await anyio.sleep(0.05)
            # drained: the router and the ERP poster hold nothing more
            stream = gw.subjects.stream("billing")
            while (await gw.bus.consumer_pending(stream, "invoice-router") != (0, 0)
                   or await gw.bus.consumer_pending(stream, "erp-journal") != (0, 0)):
                await anyio.sleep(0.05)
        postings = await gw.erp_postings(INVOICE)
        assert len(postings) == 1, postings
        assert postings[0]["amount"] == 36679  # the receivable debit = the invoice total
        assert await gw.bus.stream_messages(stream, gw.subjects.for_type("invoice.issued.v3")) == 1


async def test_stripe_drift_and_bad_types_are_refused(broker: EmbeddedBroker, tmp_path: Path,
                                                      sim_url: str) -> None:
    async with running_gateway(broker, tmp_path, sim_url,
                               billing={"webhook_secrets": [SECRET], "dialect": "stripe"}) as gw:
        now = int(time.time())
        drift = invoice_event("invoice.finalised", created=now)
        body = msgspec.json.encode(drift)
        status, doc = await gw.post(body, {"Stripe-Signature": stripe_signature(body, at=now)})
        assert (status, doc["code"]) == (422, "webhook.unknown_event_type")
        bad = invoice_event(created=now)
        bad["data"]["object"]["lines"]["data"][0]["amount"] = "48000"
        body = msgspec.json.encode(bad)
        status, doc = await gw.post(body, {"Stripe-Signature": stripe_signature(body, at=now)})
        assert status == 400 and doc["path"] == "$.data.object.lines.data[0].amount"
        ack = invoice_event("invoice.marked_uncollectible", created=now)
        body = msgspec.json.encode(ack)
        status, doc = await gw.post(body, {"Stripe-Signature": stripe_signature(body, at=now)})
        assert (status, doc["status"]) == (200, "ignored")
        assert await gw.bus.stream_messages(gw.subjects.stream("billing"),
                                            gw.subjects.billing_events) == 0


async def test_stripe_subscription_changes_are_published_at_billings_versions(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    """The simulator's Stripe subscription webhooks (flow 5), v3 before v2: each accepted and
    published once (a resend is a duplicate: the message id derives from the metadata
    version); a change without a version is refused with its code and path; an update that
    changes nothing is ignored."""
    from datetime import date

    from contracts.platforms.billing import SubscriptionIn, SubscriptionItemIn
    from sim._stripe import subscription_event
    from sim._subscriptions import SubscriptionBook

    book = SubscriptionBook()
    now = int(time.time())
    v1, _ = book.create("k1", SubscriptionIn(
        customer="cus_1", currency="usd", start_date=date(2026, 3, 1), term_months=12,
        items=[SubscriptionItemIn(product="seats", quantity=3, unit_amount=1200)]), now)
    v2 = book.amend(v1.id, [SubscriptionItemIn(product="seats", quantity=5, unit_amount=1200)],
                    date(2026, 7, 1), now)
    v3 = book.renew(v1.id, 12, now)
    async with running_gateway(broker, tmp_path, sim_url,
                               billing={"webhook_secrets": [SECRET], "dialect": "stripe"}) as gw:
        answers = []
        for prev, sub, at in ((v2, v3, now), (v1, v2, now), (v2, v3, now + 1)):  # v3 resent
            body = subscription_event(prev, sub, at)
            status, doc = await gw.post(body, {"Stripe-Signature": stripe_signature(body,
                                                                                    at=now)})
            answers.append((status, doc["status"]))
        assert answers == [(200, "accepted"), (200, "accepted"), (200, "duplicate")]
        unversioned: dict[str, Any] = msgspec.json.decode(subscription_event(v1, v2, now))
        del unversioned["data"]["object"]["metadata"]["erpgw_version"]
        body = msgspec.json.encode(unversioned)
        status, doc = await gw.post(body, {"Stripe-Signature": stripe_signature(body, at=now)})
        assert (status, doc["code"]) == (422, "stripe.subscription_version")
        assert doc["path"] == "$.data.object.metadata.erpgw_version"
        rollover = msgspec.json.decode(subscription_event(v1, v2, now))
        rollover["id"], rollover["data"]["previous_attributes"] = "evt_roll", {
            "latest_invoice": "in_1"}
        body = msgspec.json.encode(rollover)
        status, doc = await gw.post(body, {"Stripe-Signature": stripe_signature(body, at=now)})
        assert (status, doc["status"]) == (200, "ignored")
        stream = gw.subjects.stream("commercial")
        for kind in ("amended", "renewed"):
            subject = gw.subjects.for_type(f"subscription.{kind}.v1")
            assert await gw.bus.stream_messages(stream, subject) == 1, kind
