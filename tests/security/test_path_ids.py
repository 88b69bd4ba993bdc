"""S11, S21: every id the gateway later puts into a platform's URL path is refused on decode
when it could leave its path segment — ``..``, ``/``, ``%2e``, control characters, an
over-long id — with ``contract.constraint`` naming the field's path (a webhook gets a 422, a
platform's answer is dead-lettered: ``ContractError`` is permanent), while ordinary ids pass.

The fields (``contracts.platforms._ids``): a payment's customer (``GET
/partner/v1/attributions/{customer}``, in both billing dialects), a deal's id (``GET
/partner/v1/deals/{id}``, ``PUT /revenue/v1/contracts/{deal}``), a subscription's id (``POST
/billing/v1/subscriptions/{id}/cancel``) and a sales order's id (``POST
/erp/v1/sales-orders/{id}/revise|close``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import msgspec
import pytest

from contracts import ContractError, JsonCodec, Permanent
from contracts.platforms.billing import (
    BillingPayment,
    BillingSubscription,
    PaymentEvent,
    PaymentEventData,
    SubscriptionEvent,
)
from contracts.platforms.erp import SalesOrderRecord
from contracts.platforms.partner import DealEvent, DealEventData, PartnerDeal
from contracts.platforms.stripe import StripeInvoiceEvent
from sim._deals import generate_deal

T0 = 1_760_000_000
DAY = date(2026, 1, 1)

# What an attacker (or a broken platform) could put in an id to move a request elsewhere.
HOSTILE = {
    "dot-dot": "..",
    "dot": ".",
    "climb": "../../erp/v1/journal-entries",
    "hidden climb": "cus_1/../../admin",
    "slash": "a/b",
    "backslash": "..\\..\\x",
    "encoded dots": "%2e%2e",
    "encoded slash": "cus_1%2Fx",
    "query": "cus_1?limit=1000",
    "fragment": "cus_1#x",
    "space": "cus 1",
    "NUL": "cus_1\x00",
    "CR/LF": "cus_1\r\nX-Injected: 1",
    "trailing newline": "cus_1\n",
    "ESC": "cus_\x1b[31m",
    "DEL": "cus_\x7f",
    "line separator": "cus_\u2028",
    "non-ASCII": "cüs_1",
    "over-length": "c" * 201,
}
GOOD = ["cus_00042", "dl_000001", "sub_000001", "SO-17", "in_1:il_2", "a", "c" * 200]


def payment_event(customer: str) -> dict[str, Any]:
    pay = BillingPayment(id="py_1", invoice="in_1", amount=100, currency="usd", paid_at=T0,
                         customer=customer)
    return msgspec.to_builtins(PaymentEvent(id="evt_1", type="invoice.paid", created=T0,
                                            data=PaymentEventData(object=pay)))


def _deal(deal_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = msgspec.to_builtins(generate_deal(3, 1, T0))
    doc["id"] = deal_id
    return doc


def deal_event(deal_id: str) -> dict[str, Any]:
    evt: dict[str, Any] = msgspec.to_builtins(DealEvent(
        id="evt_d1", type="deal.approved", created=T0,
        data=DealEventData(object=generate_deal(3, 1, T0))))
    evt["data"]["object"]["id"] = deal_id
    return evt


def _subscription(sub_id: str) -> dict[str, Any]:
    sub = BillingSubscription(id="sub_000001", customer="cus_1", currency="usd", items=[],
                              amount=0, start_date=DAY, end_date=DAY, term_months=12,
                              interval="month", created=T0)
    doc: dict[str, Any] = msgspec.to_builtins(sub)
    doc["id"] = sub_id
    return doc


def subscription_event(sub_id: str) -> dict[str, Any]:
    return {"id": "evt_s1", "type": "customer.subscription.updated", "created": T0,
            "data": {"object": _subscription(sub_id)}}


def _sales_order(order_id: str) -> dict[str, Any]:
    return {"id": order_id, "externalId": "dl_000001", "idempotencyKey": "k", "customer":
            "cus_1", "currency": "USD", "total": 0, "lines": [], "tranDate": "2026-01-01",
            "createdAt": 0.0}


def _stripe_paid(customer: str) -> dict[str, Any]:
    return {"id": "evt_1", "object": "event", "created": T0, "type": "invoice.paid",
            "data": {"object": {"id": "in_1", "object": "invoice", "customer": customer,
                                "currency": "usd", "created": T0,
                                "subtotal": 0, "total": 0, "amount_paid": 0,
                                "lines": {"object": "list", "data": []}}}}


# (what is decoded, a valid document with ``value`` in the id, the id's JSON path)
CASES: dict[str, tuple[type[Any], Callable[[str], dict[str, Any]], str]] = {
    "payment webhook's customer": (PaymentEvent, payment_event, "$.data.object.customer"),
    "Stripe invoice's customer": (StripeInvoiceEvent, _stripe_paid, "$.data.object.customer"),
    "deal webhook's deal id": (DealEvent, deal_event, "$.data.object.id"),
    "portal's deal (answer)": (PartnerDeal, _deal, "$.id"),
    "subscription webhook's id": (SubscriptionEvent, subscription_event, "$.data.object.id"),
    "billing's subscription (answer)": (BillingSubscription, _subscription, "$.id"),
    "ERP's sales order (answer)": (SalesOrderRecord, _sales_order, "$.id"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_id_bound_for_a_url_path_refuses_what_could_leave_its_segment(case: str) -> None:
    type_, build, path = CASES[case]
    codec: JsonCodec[Any] = JsonCodec(type_)
    for value in GOOD:
        codec.decode(msgspec.json.encode(build(value)))  # ordinary ids pass
    for name, value in HOSTILE.items():
        with pytest.raises(ContractError) as err:
            codec.decode(msgspec.json.encode(build(value)))
        assert (err.value.code, err.value.path) == ("contract.constraint", path), (case, name)
        assert isinstance(err.value, Permanent)  # dead-lettered, never retried


def test_a_payment_may_still_name_no_customer() -> None:
    """An empty customer (older platforms) is not an id in a path: the mapping refuses it
    with its own code (``payment.customer_missing``), not the pattern."""
    evt = JsonCodec(PaymentEvent).decode(msgspec.json.encode(payment_event("")))
    assert evt.data.object.customer == ""

