"""One valid, hand-written example of every canonical message (the base the invariant tests
mutate) and envelope helpers."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import msgspec

from contracts import (
    AUTHORITY,
    MESSAGE_SPECS,
    BusinessKey,
    CommissionAccrued,
    CreditMemoIssued,
    CreditMemoLine,
    CustomerUpserted,
    DealApproved,
    DealRegistered,
    DealRejected,
    Envelope,
    InvoiceIssued,
    InvoiceIssuedV2,
    InvoiceIssuedV3,
    InvoiceLine,
    InvoiceLineV3,
    JournalEntryPosted,
    JournalLine,
    LineTax,
    OrderBooked,
    OrderLine,
    PartnerSettlementIssued,
    PartnerTierChanged,
    PartnerUpserted,
    Payload,
    PaymentApplication,
    PaymentReceived,
    PostJournalEntry,
    PriceUpserted,
    ProductUpserted,
    RecognitionLine,
    RecurringTerms,
    RevenueScheduleUpdated,
    SettlementLine,
    SubscriptionActivated,
    SubscriptionAmended,
    SubscriptionCancelled,
    SubscriptionItem,
    SubscriptionRenewed,
    TaxLine,
    UsageRecorded,
)

T0 = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
D0 = date(2026, 11, 1)
D1 = date(2026, 11, 30)

ITEM = SubscriptionItem(item_id="si_1", product_id="prod_seat", price_id="price_seat",
                        quantity=10, unit_amount=1500)
INVOICE_LINES = [InvoiceLine("l1", "prod_seat", "10 seats", 10, 1500, 15000),
                 InvoiceLine("l2", "prod_api", "api calls", 3, 1000, 3000)]


def _samples() -> dict[str, Any]:
    return {
        "customer.upserted.v1": CustomerUpserted(
            customer_id="cus_1", name="Acme GmbH", country="DE", currency="EUR",
            tax_id="DE123456789", billing_email="ap@acme.example", partner_id="ptn_1"),
        "partner.upserted.v1": PartnerUpserted(
            partner_id="ptn_1", name="Channel Co", tier="gold", country="GB",
            payout_currency="GBP"),
        "partner.tier_changed.v1": PartnerTierChanged(
            partner_id="ptn_1", previous_tier="silver", tier="gold", effective_from=D0),
        "product.upserted.v1": ProductUpserted(
            product_id="prod_seat", sku="SEAT-STD", name="Seat", revenue_treatment="ratable"),
        "price.upserted.v1": PriceUpserted(
            price_id="price_seat", product_id="prod_seat", price_book_id="pb_eu",
            currency="EUR", unit_amount=2000, terms=RecurringTerms(interval="month"),
            effective_from=D0, effective_to=D1, max_discount_bp=1500),
        "deal.registered.v1": DealRegistered(
            deal_id="deal_1", partner_id="ptn_1", prospect_name="Acme", currency="EUR",
            estimated_amount=240000, expected_close=D1, registered_at=T0,
            product_ids=("prod_seat",)),
        "deal.approved.v1": DealApproved(
            deal_id="deal_1", partner_id="ptn_1", approved_at=T0, approver="vp.sales",
            discount_bp=2500, valid_from=D0, valid_until=D1),
        "deal.rejected.v1": DealRejected(
            deal_id="deal_2", partner_id="ptn_1", rejected_at=T0, reason="duplicate"),
        "order.booked.v1": OrderBooked(
            order_id="ord_1", quote_id="q_1", customer_id="cus_1", partner_id="ptn_1",
            deal_id="deal_1", currency="EUR", booked_at=T0,
            lines=(OrderLine(line_id="ol1", product_id="prod_seat", price_id="price_seat",
                             quantity=10, list_unit_amount=2000, discount_unit_amount=500,
                             unit_amount=1500, amount=15000, service_start=D0,
                             service_end=D1),
                   OrderLine(line_id="ol2", product_id="prod_setup", price_id="price_setup",
                             quantity=1, list_unit_amount=5000, unit_amount=5000,
                             amount=5000)),
            total=20000),
        "subscription.activated.v1": SubscriptionActivated(
            subscription_id="sub_1", customer_id="cus_1", order_id="ord_1", currency="EUR",
            billing_interval="month", items=(ITEM,), term_start=D0, term_end=date(2027, 10, 31),
            activated_at=T0),
        "subscription.amended.v1": SubscriptionAmended(
            subscription_id="sub_1", amendment_id="amd_1", currency="EUR",
            items=(msgspec.structs.replace(ITEM, quantity=12),), effective_date=D1,
            amended_at=T0, reason="2 more seats"),
        "subscription.renewed.v1": SubscriptionRenewed(
            subscription_id="sub_1", currency="EUR", items=(ITEM,),
            term_start=date(2027, 11, 1), term_end=date(2028, 10, 31), renewed_at=T0),
        "subscription.cancelled.v1": SubscriptionCancelled(
            subscription_id="sub_1", effective_date=date(2028, 10, 31), cancelled_at=T0,
            reason="customer_request"),
        "invoice.issued.v1": InvoiceIssued(
            invoice_id="in_1", number="INV-1", customer_id="cus_1", currency="EUR",
            issued_at=T0, period_start=D0, period_end=D1, lines=INVOICE_LINES,
            subtotal=18000, tax=3420, total=21420),
        "invoice.issued.v2": InvoiceIssuedV2(
            invoice_id="in_1", number="INV-1", customer_id="cus_1", currency="EUR",
            issued_at=T0, period_start=D0, period_end=D1, lines=INVOICE_LINES,
            subtotal=18000, tax=3420, total=21420,
            tax_lines=(TaxLine(jurisdiction="DE", kind="vat", rate_bp=1900,
                               taxable_amount=18000, amount=3420),)),
        "invoice.issued.v3": InvoiceIssuedV3(
            invoice_id="in_1", number="INV-1", customer_id="cus_1", currency="EUR",
            issued_at=T0, period_start=D0, period_end=D1,
            lines=(InvoiceLineV3(line_id="il_1", product_id="prod_seat", quantity=10,
                                 amount=15000, discount_amount=1500,
                                 taxes=(LineTax(jurisdiction="DE", kind="vat", rate_bp=1900,
                                                taxable_amount=13500, amount=2565),)),
                   InvoiceLineV3(line_id="il_2", product_id="prod_seat", quantity=2,
                                 amount=-3000, proration=True,
                                 taxes=(LineTax(jurisdiction="DE", kind="vat", rate_bp=1900,
                                                taxable_amount=-3000, amount=-570),))),
            subtotal=12000, discount=1500, tax=1995, total=12495),
        "credit_memo.issued.v1": CreditMemoIssued(
            credit_memo_id="cn_1", number="CN-1", customer_id="cus_1", invoice_id="in_1",
            currency="EUR", issued_at=T0, reason="pricing_correction",
            lines=(CreditMemoLine(line_id="c1", product_id="prod_seat", quantity=10,
                                  unit_amount=500, amount=5000),
                   CreditMemoLine(line_id="c2", product_id="prod_api", quantity=-1,
                                  unit_amount=1000, amount=-1000)),
            subtotal=4000, tax=760, total=4760),
        "payment.received.v1": PaymentReceived(
            payment_id="pay_1", customer_id="cus_1", currency="EUR", amount=25000,
            received_at=T0, method="bank_transfer", reference="SEPA-77",
            applications=(PaymentApplication(invoice_id="in_1", amount=21420, currency="EUR"),)),
        "erp.journal.post.v1": PostJournalEntry(
            idempotency_key="k" * 32, external_id="in_1", posting_date=D1, currency="EUR",
            memo="Invoice INV-1",
            lines=[JournalLine(account="1200", debit=21420),
                   JournalLine(account="2400", credit=18000),
                   JournalLine(account="2200", credit=3420)]),
        "ledger.journal.posted.v1": JournalEntryPosted(
            entry_id="JE-1", idempotency_key="k" * 32, external_id="in_1", posting_date=D1,
            posted_at=T0, currency="EUR", amount=21420),
        "usage.recorded.v1": UsageRecorded(
            usage_id="u_1", subscription_id="sub_1", customer_id="cus_1",
            product_id="prod_api", meter="api_call", quantity=1200,
            window_start=T0, window_end=datetime(2026, 11, 27, 10, 30, tzinfo=UTC),
            recorded_at=T0),
        "revenue.schedule.updated.v1": RevenueScheduleUpdated(
            schedule_id="rs_1", customer_id="cus_1", product_id="prod_seat",
            source_type="order", source_id="ord_1", currency="EUR", method="ratable",
            service_start=D0, service_end=date(2027, 1, 31), total_amount=45000,
            lines=(RecognitionLine(period_start=D0, period_end=D1, amount=15000,
                                   status="recognized"),
                   RecognitionLine(period_start=date(2026, 12, 1),
                                   period_end=date(2026, 12, 31), amount=15000),
                   RecognitionLine(period_start=date(2027, 1, 1),
                                   period_end=date(2027, 1, 31), amount=15000)),
            updated_at=T0),
        "partner.commission.accrued.v1": CommissionAccrued(
            commission_id="com_1", partner_id="ptn_1", invoice_id="in_1", customer_id="cus_1",
            deal_id="deal_1", currency="EUR", basis_amount=18005, rate_bp=1250, amount=2251,
            accrued_at=T0),
        "partner.settlement.issued.v1": PartnerSettlementIssued(
            settlement_id="set_1", partner_id="ptn_1", currency="EUR", period_start=D0,
            period_end=D1, issued_at=T0,
            lines=(SettlementLine(commission_id="com_1", amount=2251, currency="EUR"),
                   SettlementLine(commission_id="com_2", amount=749, currency="EUR")),
            total=3000),
    }


SAMPLES: dict[str, Any] = _samples()


def source_for(type_: str) -> str:
    """The platform allowed to send ``type_``: its authority, or the gateway for commands."""
    spec = MESSAGE_SPECS[type_]
    return AUTHORITY[spec.domain] if spec.kind == "evt" else "gateway"


def envelope_of(payload: Payload, *, source: str | None = None, occurred_at: datetime = T0,
                msg_id: str = "01937a5e-0000-7000-8000-000000000001") -> Envelope:
    type_ = payload.__struct_config__.tag
    assert isinstance(type_, str)
    src = source or source_for(type_)
    return Envelope(id=msg_id, source=src, tenant="acme", occurred_at=occurred_at,
                    correlation_id=msg_id, causation_id=None,
                    key=BusinessKey(src, f"{type_}:obj", 3), payload=payload,
                    traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")


def as_doc(obj: Any) -> Any:
    """``obj`` as the plain JSON document a peer would send (lists, str dates, …)."""
    return msgspec.json.decode(msgspec.json.encode(obj))


def set_path(doc: Any, path: str, value: Any) -> None:
    """Set ``$.a.b[2].c`` in a JSON document."""
    parts = path.replace("[", ".[").split(".")[1:]
    for part in parts[:-1]:
        doc = doc[int(part[1:-1])] if part.startswith("[") else doc[part]
    last = parts[-1]
    if last.startswith("["):
        doc[int(last[1:-1])] = value
    else:
        doc[last] = value
