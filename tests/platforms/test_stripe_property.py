"""Property: any Stripe invoice → ``invoice.issued.v3`` → ERP journal entry balances to the
minor unit and keeps every amount per currency (derandomized by the suite's profile)."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.platforms.billing.stripe import STRIPE_ROUTES
from actors.router.credits import journal_for_credit_memo
from actors.router.invoices import AccountMap, journal_for_invoice_v3
from contracts import CreditMemoIssued, InvoiceIssuedV3, tax_by_jurisdiction

CURRENCIES = ["usd", "eur", "jpy", "bhd", "kwd", "gbp"]
JURISDICTIONS = ["txr_us_ca", "txr_us_ny", "txr_de", "txr_jp"]
ACCOUNTS = AccountMap(tax_payable_by_jurisdiction={"txr_de": "2210", "txr_us_ca": "2220"})


@st.composite
def stripe_invoices(draw: st.DrawFn) -> dict[str, Any]:
    currency = draw(st.sampled_from(CURRENCIES))
    step = 10 if currency in ("bhd", "kwd") else 1  # Stripe: 3-decimal amounts end in 0
    lines, taxes_total, excl = [], 0, 0
    for i in range(draw(st.integers(1, 6))):
        amount = draw(st.integers(-50_000, 2_000_000)) * step
        discount = draw(st.integers(0, max(0, amount))) if amount > 0 else 0
        taxes = []
        for j in draw(st.lists(st.sampled_from(JURISDICTIONS), max_size=3, unique=True)):
            inclusive = draw(st.booleans())
            base = amount - discount
            tax = base * draw(st.integers(0, 2500)) // 10_000
            taxes.append({"amount": tax, "taxable_amount": base,
                          "tax_behavior": "inclusive" if inclusive else "exclusive",
                          "type": "tax_rate_details", "tax_rate_details": {"tax_rate": j}})
            taxes_total += tax
            excl += 0 if inclusive else tax
        quantity = draw(st.integers(0, 500))
        lines.append({"id": f"il_{i}", "object": "line_item", "amount": amount,
                      "currency": currency, "quantity": quantity,
                      "discount_amounts": [{"amount": discount, "discount": "di_1"}]
                      if discount else [],
                      "taxes": taxes,
                      "pricing": {"type": "price_details", "unit_amount_decimal": None,
                                  "price_details": {"price": "price_1", "product": f"prod_{i}"}},
                      "parent": {"type": "subscription_item_details",
                                 "subscription_item_details": {
                                     "subscription": "sub_1", "proration": amount < 0}}})
    subtotal = sum(ln["amount"] for ln in lines)
    discount = sum(d["amount"] for ln in lines for d in ln["discount_amounts"])
    total = subtotal - discount + excl
    return {"id": "in_prop", "object": "invoice", "customer": "cus_1", "currency": currency,
            "created": 1_765_000_000, "status": "open", "number": "N-1",
            "lines": {"object": "list", "has_more": False, "data": lines},
            "subtotal": subtotal, "total": total, "total_excluding_tax": subtotal - discount,
            "total_discount_amounts": [{"amount": discount, "discount": "di_1"}],
            "total_taxes": [{"amount": taxes_total, "tax_behavior": "exclusive"}],
            "amount_due": max(total, 0)}


def _event(obj: dict[str, Any], type_: str) -> bytes:
    return msgspec.json.encode({"id": "evt_prop", "object": "event", "created": 1_765_000_000,
                                "type": type_, "livemode": False, "data": {"object": obj}})


@settings(max_examples=300)
@given(stripe_invoices())
def test_stripe_invoice_to_journal_balances_and_keeps_every_amount(obj: dict[str, Any]) -> None:
    route = STRIPE_ROUTES["invoice.finalized"]
    inv = route.map(route.decode(_event(obj, "invoice.finalized"))).payload
    assert isinstance(inv, InvoiceIssuedV3)
    assert inv.currency == obj["currency"].upper()
    assert inv.total == obj["total"]
    entry = journal_for_invoice_v3(inv, "k" * 32, ACCOUNTS)
    debit = {ln.account: 0 for ln in entry.lines}
    for ln in entry.lines:
        debit[ln.account] += ln.debit - ln.credit
    assert sum(debit.values()) == 0  # balances to the minor unit
    assert debit.get("1200", 0) == inv.total  # receivable = total
    assert -debit.get("2400", 0) == inv.net_revenue  # revenue net of discounts, ex tax
    by_account: dict[str, int] = {}
    for j, amount in tax_by_jurisdiction(inv).items():
        acct = ACCOUNTS.tax_account(j)
        by_account[acct] = by_account.get(acct, 0) + amount
    for acct, amount in by_account.items():
        assert -debit.get(acct, 0) == amount  # tax per jurisdiction's account


@settings(max_examples=150)
@given(stripe_invoices())
def test_a_void_reverses_the_invoice_entry_exactly(obj: dict[str, Any]) -> None:
    if obj["total"] <= 0:
        return  # nothing billed, nothing to reverse
    route = STRIPE_ROUTES["invoice.voided"]
    memo = route.map(route.decode(_event({**obj, "status": "void"}, "invoice.voided"))).payload
    assert isinstance(memo, CreditMemoIssued)
    plain = AccountMap()  # one tax account: the credit memo reverses tax there
    inv_route = STRIPE_ROUTES["invoice.finalized"]
    inv = inv_route.map(inv_route.decode(_event(obj, "invoice.finalized"))).payload
    net: dict[str, int] = {}
    for entry in (journal_for_invoice_v3(inv, "k" * 32, plain),
                  journal_for_credit_memo(memo, "m" * 32, plain)):
        for ln in entry.lines:
            net[ln.account] = net.get(ln.account, 0) + ln.debit - ln.credit
    assert all(v == 0 for v in net.values()), net
