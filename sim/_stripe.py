"""The billing platform in Stripe's dialect (``--billing-dialect stripe``).

Pure generation of Stripe-shaped invoices and their events, and the Stripe list APIs. The
billing service (``sim._billing``) keeps doing the issuing, pacing, delivery and the audit's
records; in this dialect it asks this module for the bodies and signs them with
``Stripe-Signature`` (the same ``t=…,v1=…`` scheme, so Stripe's own library verifies them).

Invoice ``i`` depends only on the seed, ``i`` and its creation time (its own
``random.Random(f"{seed}/stripe/{i}")``), and carries what real invoices carry: per-unit,
graduated (tiered) and volume prices (a tiered line's amount is not quantity x a unit price,
and its ``unit_amount_decimal`` is null), a coupon spread over the discountable lines
(``discount_amounts``), a proration credit (a negative line whose ``parent`` says
``proration``), taxes per line by tax rate (US state and district sales tax, EU and UK VAT
exclusive or included in the price, Japan's consumption tax included, Bahrain's VAT),
currencies USD, EUR, GBP, JPY (zero-decimal) and BHD, KWD (three decimals; Stripe requires
their amounts to end in 0, so every amount of such an invoice is a multiple of 10 fils).

Subscription changes (flow 5, ``sim._sub_changes`` in this dialect): each new version of a
subscription is a ``customer.subscription.updated`` (an amendment: ``previous_attributes``
name ``items``; a renewal: ``cancel_at`` moved to the new term's end) or
``customer.subscription.deleted`` (``ended_at`` the first day without service) carrying the
Stripe subscription object (``stripe_subscription``). Stripe keeps no version counter: the
version rides in ``metadata["erpgw_version"]``, as the gateway reads it.

Follow-ups (per invoice, seeded): a void (``invoice.voided``, instead of anything else), a
credit note (``credit_note.created``) crediting part of one line and its exclusive tax, and a
payment (``invoice.paid``: the invoice, ``paid``, for its total less any credit note).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
from aiohttp import web

from contracts.platforms.billing import (
    BillingCreditNote,
    BillingPayment,
    BillingSubscription,
    CreditNoteLine,
    CreditNoteLineList,
    SubscriptionItemRecord,
)
from contracts.platforms.signing import same_secret
from contracts.platforms.stripe import STRIPE_API_VERSION

from ._http import SimHTTPError, query_int

__all__ = [
    "DEFAULT_SECRET_KEY",
    "SIGNATURE_HEADER",
    "VERSION_KEY",
    "StripeLog",
    "event_body",
    "followup_events",
    "project_followup",
    "stripe_invoice",
    "stripe_subscription",
    "subscription_event",
]

SIGNATURE_HEADER = "Stripe-Signature"
DEFAULT_SECRET_KEY = "sk_test_erpgw_demo"  # noqa: S105 - the public demo key, not a credential
MAX_PAGE = 100
VERSION_KEY = "erpgw_version"  # the subscription's version, in its metadata (Stripe has none)

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()

# (product, description, pricing): "unit" per unit, "graduated" first 10 units at the price
# and the rest at 80 %, "volume" every unit at the tier the quantity reaches, "flat" one fee.
_PRODUCTS = (
    ("prod_seats", "Team seats", "unit"),
    ("prod_api", "API requests (thousands)", "graduated"),
    ("prod_storage", "Storage (GB-month)", "volume"),
    ("prod_support", "Premium support", "flat"),
    ("prod_sso", "SSO add-on", "unit"),
)
_PRODUCT_WEIGHTS = (35, 20, 20, 10, 15)
_CURRENCIES = ("usd", "eur", "gbp", "jpy", "bhd", "kwd")
_CURRENCY_WEIGHTS = (50, 15, 10, 10, 8, 7)
# Tax rates per currency: a list of (choices of rate sets, weights); a rate is
# (tax rate id, jurisdiction, basis points, inclusive).
_TaxRate = tuple[str, str, int, bool]
_US = [("txr_us_ca_state", "US-CA", 600, False), ("txr_us_ca_sf", "US-CA-SF", 225, False)]
_TAXES: dict[str, tuple[list[list[_TaxRate]], list[int]]] = {
    "usd": ([_US, [("txr_us_ny_state", "US-NY", 400, False)], []], [50, 30, 20]),
    "eur": ([[("txr_de_vat", "DE", 1900, True)], [("txr_fr_vat", "FR", 2000, False)]], [50, 50]),
    "gbp": ([[("txr_gb_vat", "GB", 2000, False)]], [1]),
    "jpy": ([[("txr_jp_ct", "JP", 1000, True)]], [1]),
    "bhd": ([[("txr_bh_vat", "BH", 1000, False)], []], [80, 20]),
    "kwd": ([[]], [1]),
}


def _half_up(num: int, den: int) -> int:
    """``num / den`` rounded half away from zero (``den`` > 0)."""
    q, r = divmod(abs(num), den)
    q += 2 * r >= den
    return q if num >= 0 else -q


def _month(created: int) -> tuple[int, int]:
    start = created - created % 2_592_000
    return start, start + 2_592_000 - 1


def _unit_price(rng: random.Random, currency: str) -> int:
    return rng.randint(100, 20_000) if currency == "jpy" else rng.randint(100, 50_000)


def _priced(rng: random.Random, pricing: str, unit: int) -> tuple[int, int, int | None]:
    """(quantity, amount, per-unit price or None for tiered) of one line."""
    if pricing == "flat":
        return 1, unit * 10, unit * 10
    qty = rng.randint(1, 5) if rng.random() < 0.6 else rng.randint(6, 60)
    if pricing == "graduated":
        first = min(qty, 10)
        return qty, first * unit + (qty - first) * (unit * 8 // 10), None
    if pricing == "volume":
        tier = unit if qty <= 10 else unit * 9 // 10 if qty <= 50 else unit * 3 // 4
        return qty, qty * tier, None
    return qty, qty * unit, unit


def _taxes(base: int, rates: Iterable[_TaxRate]) -> list[dict[str, Any]]:
    out = []
    for rate_id, jurisdiction, bp, inclusive in rates:
        if inclusive:  # the price holds the tax: tax = gross x r / (1 + r)
            amount = _half_up(base * bp, 10_000 + bp)
            taxable = base - amount
        else:
            amount = _half_up(base * bp, 10_000)
            taxable = base
        out.append({"amount": amount, "tax_behavior": "inclusive" if inclusive else "exclusive",
                    "taxable_amount": taxable, "taxability_reason": "standard_rated",
                    "type": "tax_rate_details", "tax_rate_details": {"tax_rate": rate_id},
                    "jurisdiction": jurisdiction, "percentage": bp / 100})
    return out


def _scale(node: Any, step: int) -> Any:
    """Every amount in ``node`` times ``step`` (three-decimal currencies: whole 10 fils)."""
    if step == 1:
        return node
    keys = {"amount", "taxable_amount", "subtotal", "subtotal_excluding_tax", "total",
            "total_excluding_tax", "amount_due", "amount_remaining", "amount_paid"}
    if isinstance(node, dict):
        out = {k: (v * step if k in keys and isinstance(v, int) and not isinstance(v, bool)
                   else _scale(v, step)) for k, v in node.items()}
        if isinstance(out.get("unit_amount_decimal"), str):
            out["unit_amount_decimal"] = str(int(out["unit_amount_decimal"]) * step)
        return out
    if isinstance(node, list):
        return [_scale(v, step) for v in node]
    return node


def stripe_invoice(seed: int, index: int, created: int) -> dict[str, Any]:
    """Invoice ``index`` as Stripe's invoice object (status ``open``, just finalized). Pure."""
    rng = random.Random(f"{seed}/stripe/{index}")
    currency = rng.choices(_CURRENCIES, _CURRENCY_WEIGHTS)[0]
    step = 10 if currency in ("bhd", "kwd") else 1
    sets, weights = _TAXES[currency]
    rates = rng.choices(sets, weights)[0]
    inv_id = f"in_{index:06d}"
    customer = f"cus_{rng.randint(1, 2_000):05d}"
    sub = f"sub_{index:06d}"
    start, end = _month(created)
    coupon = rng.choice((10, 15, 20)) if rng.random() < 0.3 else 0
    lines: list[dict[str, Any]] = []
    for k in range(1, rng.choices((1, 2, 3, 4), (40, 30, 20, 10))[0] + 1):
        product, description, pricing = rng.choices(_PRODUCTS, _PRODUCT_WEIGHTS)[0]
        qty, amount, unit = _priced(rng, pricing, _unit_price(rng, currency))
        lines.append(_line(inv_id, k, product, description, qty, amount, unit, currency,
                           sub, (start, end), discount=amount * coupon // 100,
                           proration=False, rates=rates, coupon=coupon, index=index))
    if rng.random() < 0.2:  # a mid-period downgrade: unused time credited
        first = lines[0]
        credit = -(first["amount"] * rng.randint(10, 50) // 100)
        if credit:
            lines.append(_line(inv_id, len(lines) + 1, first["pricing"]["price_details"]
                               ["product"], f"Unused time on {first['description']}",
                               first["quantity"], credit, None, currency, sub,
                               ((start + end) // 2, end), discount=0, proration=True,
                               rates=rates, coupon=0, index=index))
    subtotal = sum(ln["amount"] for ln in lines)
    discount = sum(d["amount"] for ln in lines for d in ln["discount_amounts"])
    taxes = [t for ln in lines for t in ln["taxes"]]
    exclusive = sum(t["amount"] for t in taxes if t["tax_behavior"] == "exclusive")
    total = subtotal - discount + exclusive
    by_rate: dict[str, dict[str, Any]] = {}
    for t in taxes:
        agg = by_rate.setdefault(t["tax_rate_details"]["tax_rate"], {**t, "amount": 0,
                                                                     "taxable_amount": 0})
        agg["amount"] += t["amount"]
        agg["taxable_amount"] += t["taxable_amount"]
    doc = {
        "id": inv_id, "object": "invoice", "account_country": "US",
        "account_name": "erpgw simulated billing", "amount_due": total, "amount_paid": 0,
        "amount_remaining": total, "amount_shipping": 0, "attempt_count": 0,
        "attempted": False, "auto_advance": True, "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically", "created": created,
        "currency": currency, "customer": customer, "customer_tax_exempt": "none",
        "description": None, "discounts": [f"di_{index:06d}"] if coupon else [],
        "due_date": None, "effective_at": created, "ending_balance": 0,
        "hosted_invoice_url": None, "livemode": False, "metadata": {},
        "lines": {"object": "list", "data": lines, "has_more": False,
                  "total_count": len(lines), "url": f"/v1/invoices/{inv_id}/lines"},
        "number": f"SIM-{index:06d}", "period_end": created, "period_start": created,
        "parent": {"type": "subscription_details",
                   "subscription_details": {"subscription": sub, "metadata": {}}},
        "starting_balance": 0, "status": "open",
        "status_transitions": {"finalized_at": created, "paid_at": None,
                               "marked_uncollectible_at": None, "voided_at": None},
        "subtotal": subtotal, "subtotal_excluding_tax": subtotal, "total": total,
        "total_discount_amounts": ([{"amount": discount, "discount": f"di_{index:06d}"}]
                                   if coupon else []),
        "total_excluding_tax": subtotal - discount,
        "total_taxes": list(by_rate.values()), "webhooks_delivered_at": None,
    }
    return dict(_scale(doc, step))


def _line(inv_id: str, k: int, product: str, description: str, qty: int, amount: int,
          unit: int | None, currency: str, sub: str, period: tuple[int, int], *,
          discount: int, proration: bool, rates: list[_TaxRate], coupon: int,
          index: int) -> dict[str, Any]:
    return {
        "id": f"il_{inv_id[3:]}_{k}", "object": "line_item", "amount": amount,
        "currency": currency, "description": f"{qty} x {description}",
        "discount_amounts": [{"amount": discount, "discount": f"di_{index:06d}"}]
        if coupon and discount else [],
        "discountable": not proration, "discounts": [f"di_{index:06d}"] if coupon else [],
        "invoice": inv_id, "livemode": False, "metadata": {},
        "parent": {"type": "subscription_item_details", "invoice_item_details": None,
                   "subscription_item_details": {
                       "invoice_item": f"ii_{inv_id[3:]}_{k}" if proration else None,
                       "proration": proration, "proration_details": {"credited_items": None},
                       "subscription": sub, "subscription_item": f"si_{sub[4:]}_{product}"}},
        "period": {"start": period[0], "end": period[1]},
        "pretax_credit_amounts": [],
        "pricing": {"type": "price_details", "unit_amount_decimal":
                    None if unit is None else str(unit),
                    "price_details": {"price": f"price_{product[5:]}_{currency}",
                                      "product": product}},
        "quantity": qty, "subtotal": amount, "taxes": _taxes(amount - discount, rates),
    }


def event_body(event_id: str, event_type: str, created: int, obj: dict[str, Any],
               previous: dict[str, Any] | None = None) -> bytes:
    """The webhook body of one Stripe event (``data.object`` = ``obj``)."""
    data: dict[str, Any] = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return _enc.encode({
        "id": event_id, "object": "event", "api_version": STRIPE_API_VERSION,
        "created": created, "data": data, "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None}, "type": event_type})


def followup_events(seed: int, index: int, invoice: dict[str, Any], created: int,
                    credit_memo_rate: float, payment_rate: float) -> list[tuple[str, bytes]]:
    """The void, credit note and payment events of invoice ``index`` as (kind, body), kinds
    ``credit_memos`` (a void is a reversing credit memo) and ``payments``. Pure, seeded."""
    rng = random.Random(f"{seed}/stripe-followups/{index}")
    out: list[tuple[str, bytes]] = []
    step = 10 if invoice["currency"] in ("bhd", "kwd") else 1
    if credit_memo_rate > 0 and rng.random() < credit_memo_rate / 4:
        voided = {**invoice, "status": "void", "amount_remaining": 0,
                  "status_transitions": {**invoice["status_transitions"], "voided_at": created}}
        return [("credit_memos", event_body(f"evt_{invoice['id']}_void", "invoice.voided",
                                            created, voided))]
    credited = 0
    if credit_memo_rate > 0 and rng.random() < credit_memo_rate:
        positive = [ln for ln in invoice["lines"]["data"] if ln["amount"] > 0]
        line = rng.choice(positive)
        net = line["amount"] - sum(d["amount"] for d in line["discount_amounts"])
        part = max(step, net * rng.randint(10, 100) // 100 // step * step)
        taxes = []
        for t in line["taxes"]:
            if t["tax_behavior"] == "exclusive" and t["taxable_amount"]:
                taxes.append({**t, "taxable_amount": part,
                              "amount": _half_up(part * t["amount"], t["taxable_amount"])
                              // step * step})
        tax = sum(t["amount"] for t in taxes)
        credited = part + tax
        note_id = f"cn_{index:06d}"
        note = {"id": note_id, "object": "credit_note", "amount": credited,
                "amount_shipping": 0, "created": created, "currency": invoice["currency"],
                "customer": invoice["customer"], "discount_amount": 0, "discount_amounts": [],
                "effective_at": created, "invoice": invoice["id"], "livemode": False,
                "memo": None, "metadata": {}, "number": f"{invoice['number']}-CN-01",
                "reason": "order_change", "status": "issued", "subtotal": part,
                "subtotal_excluding_tax": part, "total": credited,
                "total_excluding_tax": part, "type": "pre_payment", "voided_at": None,
                "lines": {"object": "list", "has_more": False,
                          "url": f"/v1/credit_notes/{note_id}/lines", "data": [{
                              "id": f"cnli_{index:06d}_1", "object": "credit_note_line_item",
                              "amount": part, "description": line["description"],
                              "discount_amount": 0, "discount_amounts": [],
                              "invoice_line_item": line["id"], "livemode": False,
                              "quantity": 1, "type": "invoice_line_item",
                              "unit_amount": None, "taxes": taxes}]}}
        out.append(("credit_memos", event_body(f"evt_{note_id}", "credit_note.created",
                                               created, note)))
    if payment_rate > 0 and rng.random() < payment_rate:
        paid_at = created + rng.randint(1, 3600)
        paid = {**invoice, "status": "paid", "amount_paid": max(0, invoice["total"] - credited),
                "amount_remaining": 0,
                "status_transitions": {**invoice["status_transitions"], "paid_at": paid_at}}
        out.append(("payments", event_body(f"evt_{invoice['id']}_paid", "invoice.paid", paid_at,
                                           paid)))
    return out


def project_followup(kind: str, body: bytes) -> BillingCreditNote | BillingPayment:
    """A delivered follow-up event as the audit's record of it (the ids the gateway derives:
    ``cn_…`` for a note, ``cn_void_…`` for a void, ``py_…`` for a payment)."""
    evt = _dec.decode(body)
    obj = evt["data"]["object"]
    if evt["type"] == "invoice.paid":
        return BillingPayment(id="py_" + obj["id"].removeprefix("in_"), invoice=obj["id"],
                              amount=obj["amount_paid"], currency=obj["currency"],
                              paid_at=obj["status_transitions"]["paid_at"],
                              customer=obj["customer"])
    if evt["type"] == "invoice.voided":
        return BillingCreditNote(
            id="cn_void_" + obj["id"].removeprefix("in_"), invoice=obj["id"],
            currency=obj["currency"], amount=obj["total"], created=evt["created"],
            customer=obj["customer"], reason="void",
            lines=CreditNoteLineList(data=[CreditNoteLine(
                id=ln["id"], invoice_line=ln["id"], description=ln["description"] or "",
                amount=max(0, ln["amount"])) for ln in obj["lines"]["data"]]))
    return BillingCreditNote(
        id=obj["id"], invoice=obj["invoice"], currency=obj["currency"], amount=obj["total"],
        created=obj["created"], customer=obj["customer"], reason=obj["reason"] or "",
        lines=CreditNoteLineList(data=[CreditNoteLine(
            id=ln["id"], invoice_line=ln["invoice_line_item"], description=ln["description"],
            amount=ln["amount"]) for ln in obj["lines"]["data"]]))


def _midnight(day: date) -> int:
    """``day`` at 00:00 UTC, in Unix seconds."""
    return int(datetime.combine(day, datetime.min.time(), UTC).timestamp())


def _next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def _sub_items(sub: BillingSubscription, items: list[SubscriptionItemRecord],
               start: date) -> dict[str, Any]:
    cur = sub.currency.lower()
    return {"object": "list", "has_more": False, "total_count": len(items),
            "url": f"/v1/subscription_items?subscription={sub.id}", "data": [{
                "id": it.id, "object": "subscription_item", "created": sub.created,
                "current_period_start": _midnight(start),
                "current_period_end": _midnight(_next_month(start)),
                "discounts": [], "metadata": {}, "quantity": it.quantity,
                "subscription": sub.id, "tax_rates": [],
                "price": {"id": f"price_{it.product}_{cur}", "object": "price",
                          "active": True, "billing_scheme": "per_unit", "currency": cur,
                          "livemode": False, "product": it.product, "type": "recurring",
                          "recurring": {"interval": "month", "interval_count": 1,
                                        "usage_type": "licensed"},
                          "unit_amount": it.unit_amount,
                          "unit_amount_decimal": str(it.unit_amount)}} for it in items]}


def stripe_subscription(sub: BillingSubscription) -> dict[str, Any]:
    """Billing's subscription ``sub`` as a Stripe subscription object: its items (prices of
    their products, the current period from the item set's first month: an amendment's
    effective date), ``cancel_at`` the instant its term ends (00:00 UTC the day after its last
    day), ``ended_at`` the first day without service once canceled, its metadata with
    ``erpgw_version``. Pure."""
    canceled = sub.status == "canceled"
    start = sub.effective_date if sub.change == "amend" and sub.effective_date else \
        sub.start_date
    ends = _midnight(sub.end_date + timedelta(days=1))
    return {
        "id": sub.id, "object": "subscription", "application": None,
        "billing_cycle_anchor": _midnight(sub.start_date), "cancel_at": ends,
        "cancel_at_period_end": False, "canceled_at": sub.canceled_at if canceled else None,
        "cancellation_details": {"comment": None, "feedback": None,
                                 "reason": "cancellation_requested" if canceled else None},
        "collection_method": "charge_automatically", "created": sub.created,
        "currency": sub.currency.lower(), "customer": sub.customer, "days_until_due": None,
        "default_payment_method": None, "description": None, "discounts": [],
        "ended_at": ends if canceled else None, "items": _sub_items(sub, sub.items, start),
        "latest_invoice": None, "livemode": False,
        "metadata": {**sub.metadata, VERSION_KEY: str(sub.version)}, "schedule": None,
        "start_date": _midnight(sub.start_date), "status": "canceled" if canceled else "active",
        "trial_end": None, "trial_start": None}


def subscription_event(previous: BillingSubscription, sub: BillingSubscription,
                       created: int) -> bytes:
    """The webhook body of the change from ``previous`` to ``sub`` (the next version):
    ``customer.subscription.deleted`` for a cancellation, else ``customer.subscription.updated``
    whose ``previous_attributes`` hold what changed (``items`` for an amendment, ``cancel_at``
    for a renewal) and the previous metadata. Pure."""
    obj = stripe_subscription(sub)
    before = stripe_subscription(previous)
    event_id = f"evt_{sub.id}_v{sub.version}"
    if sub.status == "canceled":
        return event_body(event_id, "customer.subscription.deleted", created, obj)
    changed = {k: before[k] for k in ("items", "cancel_at") if before[k] != obj[k]}
    if sub.change == "renew":
        changed.pop("items", None)  # the same items; only their period moved on
    return event_body(event_id, "customer.subscription.updated", created, obj,
                      {**changed, "metadata": before["metadata"]})


class StripeLog:
    """Every Stripe event the platform created, in creation order (what ``GET /v1/events``
    and ``GET /v1/invoices`` list, newest first), and the invoices' current state."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, bytes]] = []  # (id, type, body)
        self._event_pos: dict[str, int] = {}
        self.invoices: dict[str, bytes] = {}  # id -> the latest invoice object (JSON)
        self._invoice_order: list[str] = []

    def add(self, body: bytes) -> None:
        evt = _dec.decode(body)
        if evt["id"] in self._event_pos:
            return
        self._event_pos[evt["id"]] = len(self.events)
        self.events.append((evt["id"], evt["type"], body))
        obj = evt["data"]["object"]
        if obj.get("object") == "invoice":
            if obj["id"] not in self.invoices:
                self._invoice_order.append(obj["id"])
            self.invoices[obj["id"]] = _enc.encode(obj)

    @staticmethod
    def _page(ids: list[str], starting_after: str | None, limit: int) -> tuple[list[str], bool]:
        """Newest first after ``starting_after`` (an id of the list); 400 for an unknown id."""
        newest = ids[::-1]
        start = 0
        if starting_after is not None:
            try:
                start = newest.index(starting_after) + 1
            except ValueError:
                raise SimHTTPError(400, "resource_missing",
                                   f"starting_after: no such object {starting_after!r}",
                                   path="starting_after") from None
        page = newest[start:start + limit]
        return page, start + limit < len(newest)

    def list_events(self, query: Any) -> bytes:
        limit = query_int(query.get("limit"), "limit", 10, 1, MAX_PAGE)
        wanted = {v for k, v in query.items() if k in ("type", "types[]")
                  or k.startswith("types[")}
        ids = [i for i, t, _ in self.events if not wanted or t in wanted]
        page, more = self._page(ids, query.get("starting_after"), limit)
        data = [msgspec.Raw(self.events[self._event_pos[i]][2]) for i in page]
        return _enc.encode({"object": "list", "data": data, "has_more": more,
                            "url": "/v1/events"})

    def list_invoices(self, query: Any) -> bytes:
        limit = query_int(query.get("limit"), "limit", 10, 1, MAX_PAGE)
        status = query.get("status")
        ids = [i for i in self._invoice_order
               if status is None or _dec.decode(self.invoices[i]).get("status") == status]
        page, more = self._page(ids, query.get("starting_after"), limit)
        return _enc.encode({"object": "list", "data": [msgspec.Raw(self.invoices[i])
                                                       for i in page],
                            "has_more": more, "url": "/v1/invoices"})


def check_key(request: web.Request, secret_key: str) -> None:
    """Stripe's authentication: ``Authorization: Bearer sk_test_…``; 401 otherwise."""
    auth = request.headers.get("Authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise SimHTTPError(401, "api_key_missing",
                           "You did not provide an API key. Provide it in the Authorization "
                           "header as a bearer token.", path="Authorization")
    if not same_secret(key, secret_key):
        shown = key[:8] + "*" * max(0, len(key) - 12) + key[-4:]
        raise SimHTTPError(401, "api_key_invalid", f"Invalid API Key provided: {shown}",
                           path="Authorization")
