"""Hypothesis builders: every canonical message, valid by construction (lines summing to
totals, balanced entries, ordered periods), spread over the whole value space the contracts
allow (all currencies, zero and huge amounts, signed credit memo lines, odd UTC offsets)."""

from __future__ import annotations

import string
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from contracts import (
    CURRENCY_EXPONENTS,
    MAX_AMOUNT,
    BusinessKey,
    CommissionAccrued,
    CreditMemoIssued,
    CreditMemoLine,
    CustomerUpserted,
    DeadLetter,
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
    Money,
    OneTimeTerms,
    OrderBooked,
    OrderLine,
    PartnerSettlementIssued,
    PartnerTierChanged,
    PartnerUpserted,
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
    UsageTerms,
    allocate,
    apply_rate_bp,
    split_evenly,
)

from .samples import source_for

ids = st.text(string.ascii_letters + string.digits + "_-.:", min_size=1, max_size=24)
names = st.text(min_size=1, max_size=40)
texts = st.text(max_size=40)
currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
countries = st.sampled_from(["DE", "US", "GB", "JP", "BH", "FR", "BR", "IN"])
amounts = st.integers(0, 10**12) | st.sampled_from([0, 1, MAX_AMOUNT])
small = st.integers(0, 10**6)
quantities = st.integers(0, 10_000)
rates = st.integers(0, 10_000)
dates = st.dates(min_value=date(1990, 1, 1), max_value=date(2200, 12, 31))
offsets = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                           timezone(timedelta(hours=-8)), timezone(timedelta(hours=14))])
instants = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1),
                        timezones=offsets)


def opt(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


@st.composite
def date_range(draw: st.DrawFn) -> tuple[date, date]:
    a, b = draw(dates), draw(dates)
    return (a, b) if a <= b else (b, a)


@st.composite
def invoice_lines(draw: st.DrawFn) -> list[InvoiceLine]:
    pairs = draw(st.lists(st.tuples(quantities, small), min_size=1, max_size=8))
    return [InvoiceLine(f"l{i}", draw(ids), draw(texts), q, u, q * u)
            for i, (q, u) in enumerate(pairs)]


@st.composite
def invoices(draw: st.DrawFn, v2: bool = False) -> InvoiceIssued | InvoiceIssuedV2:
    lines = draw(invoice_lines())
    sub = sum(x.amount for x in lines)
    tax = draw(small)
    start, end = draw(date_range())
    common: dict[str, Any] = dict(
        invoice_id=draw(ids), number=draw(texts), customer_id=draw(ids),
        currency=draw(currencies), issued_at=draw(instants), period_start=start,
        period_end=end, lines=lines, subtotal=sub, tax=tax, total=sub + tax)
    if not v2:
        return InvoiceIssued(**common)
    parts = allocate(tax, draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))) if tax else []
    tax_lines = tuple(
        TaxLine(jurisdiction=draw(st.sampled_from(["DE", "US-CA", "FR", "unknown"])),
                kind=draw(st.sampled_from(["vat", "gst", "sales", "withholding", "other"])),
                rate_bp=draw(opt(rates)), taxable_amount=draw(small), amount=p)
        for p in parts)
    return InvoiceIssuedV2(**common, tax_lines=tax_lines)


@st.composite
def invoices_v3(draw: st.DrawFn) -> InvoiceIssuedV3:
    """Real-platform invoices: any pricing, signed lines, discounts, taxes per jurisdiction."""
    lines = []
    for i in range(draw(st.integers(1, 6))):
        amount = draw(st.integers(-10**6, 10**7))
        discount = draw(st.integers(0, max(0, amount))) if draw(st.booleans()) else 0
        taxes = tuple(
            LineTax(jurisdiction=draw(st.sampled_from(["DE", "US-CA", "US-NY", "JP", "BH"])),
                    kind=draw(st.sampled_from(["vat", "gst", "sales", "other"])),
                    rate_bp=draw(opt(rates)), inclusive=draw(st.booleans()),
                    taxable_amount=amount - discount,
                    amount=(amount - discount) * draw(st.integers(0, 2500)) // 10_000)
            for _ in range(draw(st.integers(0, 3))))
        lines.append(InvoiceLineV3(line_id=f"il_{i}", product_id=draw(ids),
                                   quantity=draw(quantities), amount=amount,
                                   discount_amount=discount, taxes=taxes,
                                   proration=amount < 0))
    start, end = draw(date_range())
    sub = sum(x.amount for x in lines)
    disc = sum(x.discount_amount for x in lines)
    return InvoiceIssuedV3(
        invoice_id=draw(ids), number=draw(texts), customer_id=draw(ids),
        currency=draw(currencies), issued_at=draw(instants), period_start=start,
        period_end=end, lines=tuple(lines), subtotal=sub, discount=disc,
        tax=sum(t.amount for x in lines for t in x.taxes),
        total=sub - disc + sum(x.exclusive_tax for x in lines))


@st.composite
def credit_memos(draw: st.DrawFn) -> CreditMemoIssued:
    pairs = draw(st.lists(st.tuples(st.integers(-100, 100), st.integers(-10**6, 10**6)),
                          min_size=1, max_size=6))
    lines = tuple(CreditMemoLine(line_id=f"c{i}", product_id=draw(ids), description=draw(texts),
                                 quantity=q, unit_amount=u, amount=q * u)
                  for i, (q, u) in enumerate(pairs))
    sub = sum(x.amount for x in lines)
    tax = max(draw(st.integers(-10**5, 10**6)), 1 - sub)  # the memo must credit something
    return CreditMemoIssued(
        credit_memo_id=draw(ids), number=draw(ids), customer_id=draw(ids),
        invoice_id=draw(opt(ids)), currency=draw(currencies), issued_at=draw(instants),
        reason=draw(st.sampled_from(["refund", "service_credit", "pricing_correction",
                                     "cancellation", "other"])),
        lines=lines, subtotal=sub, tax=tax, total=sub + tax)


@st.composite
def payments(draw: st.DrawFn) -> PaymentReceived:
    cur, amount = draw(currencies), draw(amounts)
    applied = draw(st.integers(0, amount))
    weights = draw(st.lists(st.integers(1, 9), max_size=5))
    apps = tuple(PaymentApplication(invoice_id=f"in_{i}", amount=p, currency=cur)
                 for i, p in enumerate(allocate(applied, weights))) if weights else ()
    return PaymentReceived(
        payment_id=draw(ids), customer_id=draw(ids), currency=cur, amount=amount,
        received_at=draw(instants), method=draw(st.sampled_from(
            ["card", "bank_transfer", "direct_debit", "check", "other"])),
        reference=draw(texts), applications=apps)


@st.composite
def journal_entries(draw: st.DrawFn) -> PostJournalEntry:
    debits = draw(st.lists(st.integers(1, 10**9), min_size=1, max_size=5))
    total = sum(debits)
    credits = split_evenly(total, draw(st.integers(1, min(5, total))))
    lines = ([JournalLine(account=draw(ids.map(lambda s: s[:50])), debit=d, memo=draw(texts))
              for d in debits]
             + [JournalLine(account="2400", credit=c) for c in credits])
    return PostJournalEntry(
        idempotency_key=draw(st.text(string.hexdigits, min_size=8, max_size=64)),
        external_id=draw(ids), posting_date=draw(dates), currency=draw(currencies),
        memo=draw(texts), lines=draw(st.permutations(lines)))


@st.composite
def order_lines(draw: st.DrawFn, i: int) -> OrderLine:
    lst = draw(small)
    disc = draw(st.integers(0, lst))
    q = draw(quantities)
    period = draw(opt(date_range()))
    return OrderLine(line_id=f"ol{i}", product_id=draw(ids), price_id=draw(ids),
                     description=draw(texts), quantity=q, list_unit_amount=lst,
                     discount_unit_amount=disc, unit_amount=lst - disc, amount=q * (lst - disc),
                     service_start=period[0] if period else None,
                     service_end=period[1] if period else None)


@st.composite
def orders(draw: st.DrawFn) -> OrderBooked:
    n = draw(st.integers(1, 6))
    lines = tuple(draw(order_lines(i)) for i in range(n))
    return OrderBooked(
        order_id=draw(ids), quote_id=draw(ids), customer_id=draw(ids), partner_id=draw(opt(ids)),
        deal_id=draw(opt(ids)), currency=draw(currencies), booked_at=draw(instants),
        lines=lines, total=sum(x.amount for x in lines))


items = st.builds(SubscriptionItem, item_id=ids, product_id=ids, price_id=ids,
                  quantity=quantities, unit_amount=amounts)
item_sets = st.lists(items, min_size=1, max_size=5).map(tuple)


@st.composite
def activations(draw: st.DrawFn) -> SubscriptionActivated:
    start, end = draw(date_range())
    return SubscriptionActivated(
        subscription_id=draw(ids), customer_id=draw(ids), order_id=draw(opt(ids)),
        partner_id=draw(opt(ids)), currency=draw(currencies),
        billing_interval=draw(st.sampled_from(["month", "quarter", "year"])),
        items=draw(item_sets), term_start=start, term_end=end, activated_at=draw(instants))


@st.composite
def renewals(draw: st.DrawFn) -> SubscriptionRenewed:
    start, end = draw(date_range())
    return SubscriptionRenewed(subscription_id=draw(ids), currency=draw(currencies),
                               items=draw(item_sets), term_start=start, term_end=end,
                               renewed_at=draw(instants))


@st.composite
def prices(draw: st.DrawFn) -> PriceUpserted:
    start = draw(dates)
    end = draw(opt(st.dates(min_value=start, max_value=date(2200, 12, 31))))
    terms = draw(st.builds(RecurringTerms, interval=st.sampled_from(["month", "quarter", "year"]),
                           interval_count=st.integers(1, 36))
                 | st.builds(UsageTerms, unit=ids.map(lambda s: s[:50]),
                             block_size=st.integers(1, 10**9))
                 | st.just(OneTimeTerms()))
    return PriceUpserted(price_id=draw(ids), product_id=draw(ids), price_book_id=draw(ids),
                         currency=draw(currencies), unit_amount=draw(amounts), terms=terms,
                         effective_from=start, effective_to=end, max_discount_bp=draw(rates))


@st.composite
def usage_records(draw: st.DrawFn) -> UsageRecorded:
    start = draw(instants)
    end = start + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)))
    return UsageRecorded(usage_id=draw(ids), subscription_id=draw(ids), customer_id=draw(ids),
                         product_id=draw(ids), meter=draw(ids.map(lambda s: s[:50])),
                         quantity=draw(amounts), window_start=start, window_end=end,
                         recorded_at=draw(instants))


@st.composite
def revenue_schedules(draw: st.DrawFn) -> RevenueScheduleUpdated:
    start = draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)))
    lengths = draw(st.lists(st.integers(1, 40), min_size=1, max_size=12))
    lines, cursor = [], start
    for n in lengths:
        end = cursor + timedelta(days=n - 1)
        lines.append(RecognitionLine(period_start=cursor, period_end=end, amount=draw(small),
                                     status=draw(st.sampled_from(["planned", "recognized"]))))
        cursor = end + timedelta(days=1)
    return RevenueScheduleUpdated(
        schedule_id=draw(ids), customer_id=draw(ids), product_id=draw(ids),
        source_type=draw(st.sampled_from(["order", "invoice", "subscription"])),
        source_id=draw(ids), currency=draw(currencies),
        method=draw(st.sampled_from(["ratable", "point_in_time", "usage"])),
        service_start=start, service_end=cursor - timedelta(days=1),
        total_amount=sum(x.amount for x in lines), lines=tuple(lines), updated_at=draw(instants))


@st.composite
def commissions(draw: st.DrawFn) -> CommissionAccrued:
    basis, rate = draw(amounts), draw(rates)
    return CommissionAccrued(
        commission_id=draw(ids), partner_id=draw(ids), invoice_id=draw(ids),
        customer_id=draw(ids), deal_id=draw(opt(ids)), currency=draw(currencies),
        basis_amount=basis, rate_bp=rate, amount=apply_rate_bp(basis, rate),
        accrued_at=draw(instants))


@st.composite
def settlements(draw: st.DrawFn) -> PartnerSettlementIssued:
    cur = draw(currencies)
    start, end = draw(date_range())
    lines = tuple(SettlementLine(commission_id=f"com_{i}", amount=a, currency=cur)
                  for i, a in enumerate(draw(st.lists(small, min_size=1, max_size=8))))
    return PartnerSettlementIssued(
        settlement_id=draw(ids), partner_id=draw(ids), currency=cur, period_start=start,
        period_end=end, issued_at=draw(instants), lines=lines,
        total=sum(x.amount for x in lines))


@st.composite
def deal_approvals(draw: st.DrawFn) -> DealApproved:
    start, end = draw(date_range())
    return DealApproved(deal_id=draw(ids), partner_id=draw(ids), approved_at=draw(instants),
                        approver=draw(ids), discount_bp=draw(rates), valid_from=start,
                        valid_until=end)


tiers = st.sampled_from(["registered", "silver", "gold", "platinum"])

PAYLOADS: dict[str, st.SearchStrategy[Any]] = {
    "customer.upserted.v1": st.builds(
        CustomerUpserted, customer_id=ids, name=names, country=countries, currency=currencies,
        status=st.sampled_from(["active", "inactive"]), tax_id=opt(ids),
        billing_email=opt(st.just("ap@acme.example")), partner_id=opt(ids)),
    "partner.upserted.v1": st.builds(
        PartnerUpserted, partner_id=ids, name=names,
        kind=st.sampled_from(["reseller", "referral", "marketplace"]), tier=tiers,
        country=countries, payout_currency=currencies,
        status=st.sampled_from(["active", "suspended", "terminated"])),
    "partner.tier_changed.v1": st.builds(
        PartnerTierChanged, partner_id=ids, previous_tier=tiers, tier=tiers,
        effective_from=dates, reason=texts),
    "product.upserted.v1": st.builds(
        ProductUpserted, product_id=ids, sku=ids, name=names, description=texts,
        revenue_treatment=st.sampled_from(["ratable", "point_in_time", "usage"]),
        active=st.booleans()),
    "price.upserted.v1": prices(),
    "deal.registered.v1": st.builds(
        DealRegistered, deal_id=ids, partner_id=ids, prospect_name=names,
        customer_id=opt(ids), currency=currencies, estimated_amount=amounts,
        expected_close=dates, registered_at=instants,
        product_ids=st.lists(ids, max_size=4).map(tuple)),
    "deal.approved.v1": deal_approvals(),
    "deal.rejected.v1": st.builds(DealRejected, deal_id=ids, partner_id=ids,
                                  rejected_at=instants, reason=texts),
    "order.booked.v1": orders(),
    "subscription.activated.v1": activations(),
    "subscription.amended.v1": st.builds(
        SubscriptionAmended, subscription_id=ids, amendment_id=ids, currency=currencies,
        items=item_sets, effective_date=dates, amended_at=instants, reason=texts),
    "subscription.renewed.v1": renewals(),
    "subscription.cancelled.v1": st.builds(
        SubscriptionCancelled, subscription_id=ids, effective_date=dates, cancelled_at=instants,
        reason=st.sampled_from(["customer_request", "non_payment", "replaced", "other"]),
        note=texts),
    "invoice.issued.v1": invoices(),
    "invoice.issued.v2": invoices(v2=True),
    "invoice.issued.v3": invoices_v3(),
    "credit_memo.issued.v1": credit_memos(),
    "payment.received.v1": payments(),
    "erp.journal.post.v1": journal_entries(),
    "ledger.journal.posted.v1": st.builds(
        JournalEntryPosted, entry_id=ids, idempotency_key=st.just("k" * 32), external_id=ids,
        posting_date=dates, posted_at=instants, currency=currencies, amount=amounts),
    "usage.recorded.v1": usage_records(),
    "revenue.schedule.updated.v1": revenue_schedules(),
    "partner.commission.accrued.v1": commissions(),
    "partner.settlement.issued.v1": settlements(),
}


@st.composite
def envelopes(draw: st.DrawFn, type_: str) -> Envelope:
    payload = draw(PAYLOADS[type_])
    src = source_for(type_)
    mid = draw(st.uuids(version=4).map(str))
    return Envelope(id=mid, source=src, tenant=draw(ids), occurred_at=draw(instants),
                    correlation_id=draw(st.just(mid) | ids), causation_id=draw(opt(ids)),
                    key=BusinessKey(src, draw(ids), draw(st.integers(0, 2**31))),
                    payload=payload, traceparent=draw(opt(st.just(
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))))


moneys = st.builds(Money, amount=st.integers(-MAX_AMOUNT, MAX_AMOUNT), currency=currencies)
dead_letters = st.builds(
    DeadLetter, id=ids, failed_at=instants, lane=st.sampled_from(["billing", "usage"]),
    subject=ids, stream_seq=opt(st.integers(0, 2**63 - 1)), code=ids, reason=texts,
    attempts=st.integers(0, 100), business_key=opt(ids), correlation_id=opt(ids),
    data=st.binary(max_size=64), path=opt(ids), platform_response=opt(texts))
