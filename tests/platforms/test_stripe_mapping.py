"""Stripe's webhooks → canonical messages: a documented test-mode event, drift, unknown fields,
wrong types, and every mapped event type."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from actors.platforms.billing.stripe import (
    ACKNOWLEDGED,
    STRIPE_ROUTES,
    invoice_from_stripe,
    stripe_source,
)
from actors.router.invoices import AccountMap, journal_for_invoice_v3
from contracts import (
    ContractError,
    CreditMemoIssued,
    InvoiceIssuedV3,
    PaymentReceived,
    SubscriptionActivated,
    SubscriptionAmended,
    SubscriptionCancelled,
    SubscriptionRenewed,
)
from contracts.platforms.stripe import StripeInvoice

from .stripe_fixtures import invoice_event, invoice_object

T0 = 1_765_000_000


def _map(doc: dict[str, Any]) -> Any:
    route = STRIPE_ROUTES[doc["type"]]
    return route.map(route.decode(msgspec.json.encode(doc)))


def test_documented_invoice_finalized_maps_to_v3_and_a_balanced_entry() -> None:
    inbound = _map(invoice_event(created=T0))
    inv = inbound.payload
    assert isinstance(inv, InvoiceIssuedV3)
    assert (inv.subtotal, inv.discount, inv.tax, inv.total) == (39000, 4800, 2479, 36679)
    tiered, credit = inv.lines
    assert tiered.amount == 48000 and tiered.unit_amount is None  # tiered: no unit price
    assert (tiered.discount_amount, tiered.product_id) == (4800, "prod_RqL2seats")
    assert credit.proration and credit.amount == -9000 and credit.unit_amount == 4500
    assert credit.subscription_id == "sub_1QxT4aLkdIwHu7ixp3XoZ0aB"
    assert (inbound.key.object_id, inbound.key.version) == (inv.invoice_id, 1)
    entry = journal_for_invoice_v3(inv, "k" * 32, AccountMap())
    assert entry.lines[0].debit == inv.total  # receivable = what the customer owes
    assert sum(ln.debit for ln in entry.lines) == sum(ln.credit for ln in entry.lines)
    revenue = sum(ln.credit for ln in entry.lines if ln.account == "2400")
    assert revenue == inv.subtotal - inv.discount  # no inclusive tax here
    assert [ln.credit for ln in entry.lines if ln.account == "2200"] == [2479]


def test_unknown_fields_anywhere_never_break_decoding() -> None:
    doc = invoice_event(created=T0)
    doc["brand_new_field"] = {"nested": [1, 2]}
    doc["data"]["object"]["lines"]["data"][0]["pricing"]["future"] = "x"
    doc["data"]["object"]["status_transitions"]["something_else_at"] = 1
    assert isinstance(_map(doc).payload, InvoiceIssuedV3)


@pytest.mark.parametrize(("path", "value", "where"), [
    (("data", "object", "total"), "36679", "$.data.object.total"),
    (("data", "object", "lines", "data", 0, "amount"), 1.5, "$.data.object.lines.data[0].amount"),
    (("data", "object", "lines", "data", 1, "taxes", 0, "amount"), None,
     "$.data.object.lines.data[1].taxes[0].amount"),
    (("created",), "yesterday", "$.created"),
])
def test_wrong_types_are_refused_naming_the_path(path: tuple[Any, ...], value: Any,
                                                 where: str) -> None:
    doc = invoice_event(created=T0)
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ContractError) as info:
        STRIPE_ROUTES["invoice.finalized"].decode(msgspec.json.encode(doc))
    assert info.value.path == where


def test_totals_that_disagree_with_the_lines_are_refused() -> None:
    doc = invoice_event(created=T0)
    doc["data"]["object"]["total"] += 1
    with pytest.raises(ContractError) as info:
        _map(doc)
    assert (info.value.code, info.value.path) == ("invoice.total_mismatch",
                                                  "$.data.object.total")
    doc = invoice_event(created=T0)
    doc["data"]["object"]["total_taxes"][0]["amount"] += 1
    with pytest.raises(ContractError) as info:
        _map(doc)
    assert info.value.code == "invoice.tax_breakdown_mismatch"


def test_truncated_lines_are_refused_not_posted_partially() -> None:
    doc = invoice_event(created=T0)
    doc["data"]["object"]["lines"]["has_more"] = True
    with pytest.raises(ContractError) as info:
        _map(doc)
    assert info.value.code == "stripe.lines_truncated"


def test_source_routes_drift_and_acknowledged_types() -> None:
    src = stripe_source("/webhooks/billing", ["whsec_x"])
    assert src.signature_header == "Stripe-Signature"
    assert "invoice.finalised".startswith(src.drift_prefixes)  # a misspelt type is drift
    assert "invoice.finalised" not in src.routes
    assert "charge.refunded" in ACKNOWLEDGED and "invoice.marked_uncollectible" in ACKNOWLEDGED
    assert not "charge.succeeded".startswith(src.drift_prefixes)  # not ours: ignored


def test_zero_decimal_and_three_decimal_currencies_keep_every_minor_unit() -> None:
    # JPY: Stripe's amounts are whole yen; BHD: fils (three decimals, multiples of 10).
    for currency, scale in (("jpy", 1), ("bhd", 10)):
        obj = invoice_object(created=T0)
        obj["currency"] = currency
        for key in ("subtotal", "total"):
            obj[key] *= scale
        obj["total_discount_amounts"][0]["amount"] *= scale
        obj["total_taxes"][0]["amount"] *= scale
        for line in obj["lines"]["data"]:
            line["currency"] = currency
            line["amount"] *= scale
            for d in line["discount_amounts"]:
                d["amount"] *= scale
            for t in line["taxes"]:
                t["amount"] *= scale
        inv = invoice_from_stripe(msgspec.convert(obj, StripeInvoice))
        assert (inv.currency, inv.total, inv.tax) == (currency.upper(), 36679 * scale,
                                                      2479 * scale)
        entry = journal_for_invoice_v3(inv, "k" * 32, AccountMap())
        assert entry.currency == currency.upper() and entry.amount == 36679 * scale


def test_paid_voided_credit_note_and_subscription_events() -> None:
    paid = _map(invoice_event("invoice.paid", created=T0, status="paid",
                              event_id="evt_1QxT5aLkdIwHu7ixPaid"))
    pay = paid.payload
    assert isinstance(pay, PaymentReceived)
    assert pay.applications[0].invoice_id == "in_1QxT4vLkdIwHu7ixN0b2Qz1A"
    voided = _map(invoice_event("invoice.voided", created=T0, status="void"))
    memo = voided.payload
    assert isinstance(memo, CreditMemoIssued) and memo.total == 36679
    assert memo.subtotal == 34200 and memo.tax == 2479 and memo.reason == "cancellation"
    note = {"id": "cn_1QxT6bLkdIwHu7ix", "object": "credit_note", "currency": "usd",
            "customer": "cus_RqL1mXh0Zb2Yc3", "invoice": "in_1QxT4vLkdIwHu7ixN0b2Qz1A",
            "created": T0, "reason": "order_change", "status": "issued", "subtotal": 1000,
            "total": 1073, "number": "B7A1C2D3-0042-CN-01",
            "lines": {"object": "list", "has_more": False, "data": [
                {"id": "cnli_1", "object": "credit_note_line_item", "amount": 1000,
                 "invoice_line_item": "il_1QxT4vLkdIwHu7ixa1", "discount_amount": 0,
                 "taxes": [{"amount": 73, "tax_behavior": "exclusive",
                            "taxable_amount": 1000, "type": "tax_rate_details",
                            "tax_rate_details": {"tax_rate": "txr_1"}}]}]}}
    evt = {"id": "evt_cn", "object": "event", "api_version": "2025-03-31.basil",
           "created": T0, "livemode": False, "type": "credit_note.created",
           "data": {"object": note}, "request": {"id": "req_1", "idempotency_key": "k"}}
    cm = _map(evt).payload
    assert isinstance(cm, CreditMemoIssued) and (cm.subtotal, cm.tax, cm.total) == (1000, 73,
                                                                                   1073)
    void_note = copy.deepcopy(evt)
    void_note["type"] = "credit_note.voided"
    rebill = _map(void_note).payload
    assert isinstance(rebill, InvoiceIssuedV3) and rebill.total == 1073
    sub = {"id": "sub_1", "object": "subscription", "customer": "cus_1", "currency": "eur",
           "status": "active", "created": T0, "items": {"object": "list", "data": [
               {"id": "si_1", "quantity": 3, "current_period_start": T0,
                "current_period_end": T0 + 2_592_000,
                "price": {"id": "price_1", "product": "prod_1", "unit_amount": 1500,
                          "currency": "eur"}}]}}
    created = {"id": "evt_s1", "object": "event", "created": T0, "type":
               "customer.subscription.created", "data": {"object": sub}}
    assert isinstance(_map(created).payload, SubscriptionActivated)
    deleted = {**created, "id": "evt_s2", "type": "customer.subscription.deleted",
               "created": T0 + 10, "data": {"object": {**sub, "metadata": {
                   "erpgw_version": "2"}}}}
    gone = _map(deleted)
    assert isinstance(gone.payload, SubscriptionCancelled) and gone.key.version == 2


MIDNIGHT = 1_767_225_600  # 2026-01-01T00:00:00Z


def _sub_event(kind: str, version: str | None, *, previous: dict[str, Any] | None,
               start: int = MIDNIGHT, cancel_at: int | None = None,
               ended_at: int | None = None) -> dict[str, Any]:
    sub: dict[str, Any] = {
        "id": "sub_9", "object": "subscription", "customer": "cus_9", "currency": "usd",
        "status": "canceled" if ended_at else "active", "created": T0,
        "cancel_at": cancel_at, "ended_at": ended_at, "canceled_at": T0 if ended_at else None,
        "metadata": {"deal_id": "D-1"} | ({"erpgw_version": version} if version else {}),
        "items": {"object": "list", "has_more": False, "data": [
            {"id": "si_9", "object": "subscription_item", "quantity": 4,
             "current_period_start": start, "current_period_end": start + 31 * 86_400,
             "price": {"id": "price_seats_usd", "product": "seats", "unit_amount": 1200,
                       "currency": "usd"}}]}}
    data: dict[str, Any] = {"object": sub}
    if previous is not None:
        data["previous_attributes"] = previous
    return {"id": f"evt_{kind}_{version}", "object": "event", "created": T0 + 5,
            "type": f"customer.subscription.{kind}", "data": data}


def test_subscription_changes_map_to_flow_5_versions() -> None:
    feb = MIDNIGHT + 31 * 86_400  # 2026-02-01
    amended = _map(_sub_event("updated", "2", start=feb,
                              previous={"items": {"object": "list", "data": []}}))
    assert isinstance(amended.payload, SubscriptionAmended)
    assert amended.key.version == 2 and str(amended.payload.effective_date) == "2026-02-01"
    assert [(i.product_id, i.quantity, i.unit_amount) for i in amended.payload.items] == [
        ("seats", 4, 1200)]
    renewed = _map(_sub_event("updated", "3", previous={"cancel_at": MIDNIGHT},
                              cancel_at=MIDNIGHT + 365 * 86_400))
    assert isinstance(renewed.payload, SubscriptionRenewed) and renewed.key.version == 3
    assert (str(renewed.payload.term_start), str(renewed.payload.term_end)) == (
        "2026-01-01", "2026-12-31")
    assert renewed.msg_id != amended.msg_id
    cancelled = _map(_sub_event("deleted", "4", previous=None, ended_at=feb))
    assert isinstance(cancelled.payload, SubscriptionCancelled)
    assert cancelled.key.version == 4 and str(cancelled.payload.effective_date) == "2026-02-01"
    # A period rolling over or a metadata edit is no new version: acknowledged.
    assert _map(_sub_event("updated", "4", previous={"latest_invoice": "in_1"})) is None
    assert _map(_sub_event("updated", "4", previous={"cancel_at": MIDNIGHT + 86_400},
                           cancel_at=MIDNIGHT)) is None


@pytest.mark.parametrize("version", [None, "1", "two", "-3"])
def test_subscription_change_without_a_version_is_refused(version: str | None) -> None:
    with pytest.raises(ContractError) as info:
        _map(_sub_event("updated", version, previous={"items": {}}))
    assert info.value.code == "stripe.subscription_version"
    assert info.value.path == "$.data.object.metadata.erpgw_version"


def test_invoice_updated_is_an_amendment_only_when_amounts_changed() -> None:
    doc = invoice_event("invoice.updated", created=T0 + 100)
    doc["data"]["previous_attributes"] = {"metadata": {}}
    assert _map(doc) is None  # a metadata edit: acknowledged, nothing published
    doc["data"]["previous_attributes"] = {"total": 30000, "lines": {}}
    amended = _map(doc)
    assert isinstance(amended.payload, InvoiceIssuedV3) and amended.key.version == T0 + 100
