"""A Stripe test-mode ``invoice.finalized`` event as Stripe documents its objects (API version
2025-03-31.basil and later): ids, nulls and the fields the gateway does not read included, so
the tolerant reader is exercised on a full object. Built here from the published object
shapes; the values are our own."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

SECRET = "whsec_test_5f1d0e3a9c8b7a6f"


def stripe_signature(body: bytes, secret: str = SECRET, *, at: int,
                     extra_v0: bool = True) -> str:
    """``Stripe-Signature`` as Stripe sends it (a ``v0`` test-mode value too, ignored)."""
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    header = f"t={at},v1={mac}"
    return header + (",v0=" + "6ffbb59b2300aadb" * 4 if extra_v0 else "")


def _tax(amount: int, taxable: int, rate: str, behavior: str = "exclusive") -> dict[str, Any]:
    return {"amount": amount, "tax_behavior": behavior, "taxable_amount": taxable,
            "taxability_reason": "standard_rated", "type": "tax_rate_details",
            "tax_rate_details": {"tax_rate": rate}}


def invoice_object(invoice_id: str = "in_1QxT4vLkdIwHu7ixN0b2Qz1A", *, created: int,
                   status: str = "open") -> dict[str, Any]:
    """An invoice with a tiered line (amount is not quantity x a unit price) under a 10 %
    coupon, a proration credit, and US-CA sales tax on both."""
    sub = "sub_1QxT4aLkdIwHu7ixp3XoZ0aB"
    lines = [
        {"id": "il_1QxT4vLkdIwHu7ixa1", "object": "line_item", "amount": 48000,
         "currency": "usd", "description": "12 x Team seats (Tier 1 at $45.00, Tier 2 at "
         "$37.50)", "discount_amounts": [{"amount": 4800, "discount": "di_1QxT4vLkdIwHu7ix"}],
         "discountable": True, "discounts": ["di_1QxT4vLkdIwHu7ix"],
         "invoice": invoice_id, "livemode": False, "metadata": {},
         "parent": {"type": "subscription_item_details", "invoice_item_details": None,
                    "subscription_item_details": {
                        "invoice_item": None, "proration": False, "proration_details": {
                            "credited_items": None},
                        "subscription": sub, "subscription_item": "si_RqL3t9Ck2Xy1Ab"}},
         "period": {"end": created + 2_592_000, "start": created},
         "pretax_credit_amounts": [], "pricing": {
             "price_details": {"price": "price_1QxT3kLkdIwHu7ixTier", "product":
                               "prod_RqL2seats"},
             "type": "price_details", "unit_amount_decimal": None},
         "quantity": 12, "taxes": [_tax(3132, 43200, "txr_1QxT2CaLkdIwHu7ix")]},
        {"id": "il_1QxT4vLkdIwHu7ixa2", "object": "line_item", "amount": -9000,
         "currency": "usd", "description": "Unused time on 2 x Team seats",
         "discount_amounts": [], "discountable": False, "discounts": [],
         "invoice": invoice_id, "livemode": False, "metadata": {},
         "parent": {"type": "subscription_item_details", "invoice_item_details": None,
                    "subscription_item_details": {
                        "invoice_item": "ii_1QxT4uLkdIwHu7ix", "proration": True,
                        "proration_details": {"credited_items": {
                            "invoice": "in_1QwA0bLkdIwHu7ixPrev",
                            "invoice_line_items": ["il_1QwA0bLkdIwHu7ixq9"]}},
                        "subscription": sub, "subscription_item": "si_RqL3t9Ck2Xy1Ab"}},
         "period": {"end": created + 1_296_000, "start": created},
         "pretax_credit_amounts": [], "pricing": {
             "price_details": {"price": "price_1QxT3kLkdIwHu7ixTier", "product":
                               "prod_RqL2seats"},
             "type": "price_details", "unit_amount_decimal": "4500"},
         "quantity": 2, "taxes": [_tax(-653, -9000, "txr_1QxT2CaLkdIwHu7ix")]},
    ]
    return {
        "id": invoice_id, "object": "invoice", "account_country": "US",
        "account_name": "Acme Tools, Inc.", "amount_due": 36679,
        "amount_paid": 36679 if status == "paid" else 0,
        "amount_remaining": 0 if status == "paid" else 36679, "amount_shipping": 0,
        "application": None,
        "attempt_count": 0, "attempted": False, "auto_advance": True,
        "automatic_tax": {"enabled": False, "liability": None, "status": None,
                          "disabled_reason": None, "provider": None},
        "billing_reason": "subscription_update", "collection_method": "charge_automatically",
        "created": created, "currency": "usd", "customer": "cus_RqL1mXh0Zb2Yc3",
        "customer_email": "ap@example.com", "customer_name": "Example Corp",
        "customer_tax_exempt": "none", "default_tax_rates": [], "description": None,
        "discounts": ["di_1QxT4vLkdIwHu7ix"], "due_date": None, "effective_at": created,
        "ending_balance": 0, "footer": None, "from_invoice": None,
        "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1Qx/test_YWNjdA",
        "invoice_pdf": "https://pay.stripe.com/invoice/acct_1Qx/test_YWNjdA/pdf",
        "issuer": {"type": "self"}, "last_finalization_error": None, "latest_revision": None,
        "lines": {"object": "list", "data": lines, "has_more": False,
                  "total_count": 2, "url": f"/v1/invoices/{invoice_id}/lines"},
        "livemode": False, "metadata": {}, "next_payment_attempt": created + 3600,
        "number": "B7A1C2D3-0042", "on_behalf_of": None,
        "parent": {"type": "subscription_details", "quote_details": None,
                   "subscription_details": {"metadata": {}, "subscription": sub}},
        "payment_settings": {"default_mandate": None, "payment_method_options": None,
                             "payment_method_types": None},
        "period_end": created, "period_start": created - 2_592_000,
        "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0,
        "receipt_number": None, "starting_balance": 0, "statement_descriptor": None,
        "status": status, "status_transitions": {
            "finalized_at": created + 5, "marked_uncollectible_at": None,
            "paid_at": created + 60 if status == "paid" else None, "voided_at": None},
        "subtotal": 39000, "subtotal_excluding_tax": 39000, "test_clock": None,
        "total": 36679, "total_discount_amounts": [
            {"amount": 4800, "discount": "di_1QxT4vLkdIwHu7ix"}],
        "total_excluding_tax": 34200, "total_pretax_credit_amounts": [],
        "total_taxes": [_tax(2479, 34200, "txr_1QxT2CaLkdIwHu7ix")],
        "webhooks_delivered_at": None,
    }


def invoice_event(event_type: str = "invoice.finalized", *, created: int,
                  invoice_id: str = "in_1QxT4vLkdIwHu7ixN0b2Qz1A",
                  event_id: str = "evt_1QxT4xLkdIwHu7ixVb3k9Lq2",
                  status: str = "open") -> dict[str, Any]:
    """The webhook event of ``invoice_object`` (``type`` ``event_type``)."""
    return {"id": event_id, "object": "event", "api_version": "2025-03-31.basil",
            "created": created, "data": {"object": invoice_object(
                invoice_id, created=created, status=status)},
            "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": event_type}
