"""A Stripe test-mode ``invoice.finalized``, signed in Stripe's scheme, into a gateway with
``billing.dialect = "stripe"`` (real broker, in-process simulator's ERP): accepted on
``Stripe-Signature`` alone, posted to the ERP exactly once, balanced, receivable = total."""

from __future__ import annotations

import time
from pathlib import Path

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
