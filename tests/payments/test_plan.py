"""Pure cores of credit memos and flow 3: the reversing entry, the cash application, the
commissions and settlements (deterministic ids and bodies), and the ingress mappings."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime

import msgspec
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from actors.lifecycle.arithmetic import reversing_credit_memo
from actors.monitor import Monitor, prometheus_text
from actors.payments.plan import (
    commission_id,
    commissions_for_payment,
    erp_payable_key,
    id_time,
    journal_for_payment,
    payable_to_wire,
    portal_settlement_key,
    settlement_for,
    settlement_to_wire,
)
from actors.platforms.billing.erpgw import inbound_credit_note, inbound_payment
from actors.router.credits import journal_for_credit_memo
from actors.router.invoices import AccountMap, journal_for_invoice
from contracts import (
    ContractError,
    CreditMemoIssued,
    CreditMemoLine,
    InvoiceIssued,
    InvoiceLine,
    PaymentApplication,
    PaymentReceived,
    new_id,
)
from contracts.platforms.billing import (
    BillingCreditNote,
    BillingPayment,
    CreditNoteEvent,
    CreditNoteEventData,
    CreditNoteLine,
    CreditNoteLineList,
    PaymentEvent,
    PaymentEventData,
)
from contracts.platforms.partner import Attribution

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ACCOUNTS = AccountMap()


@st.composite
def invoices(draw: st.DrawFn) -> InvoiceIssued:
    n = draw(st.integers(1, 8))
    lines = []
    for i in range(n):
        q, u = draw(st.integers(0, 1000)), draw(st.integers(0, 10**7))
        lines.append(InvoiceLine(f"il_{i}", f"prod_{i}", f"line {i}", q, u, q * u))
    subtotal = sum(line.amount for line in lines)
    tax = draw(st.integers(0, 10**7))
    assume(subtotal + tax > 0)
    return InvoiceIssued(invoice_id="in_1", number="INV-1", customer_id="cus_1",
                         currency=draw(st.sampled_from(["USD", "JPY", "EUR"])), issued_at=T0,
                         period_start=date(2026, 11, 1), period_end=date(2026, 11, 30),
                         lines=lines, subtotal=subtotal, tax=tax, total=subtotal + tax)


def sides(lines: list[tuple[str, int, int]]) -> Counter[tuple[str, int, int]]:
    return Counter(lines)


@settings(max_examples=200, deadline=None)
@given(invoices())
def test_a_full_credit_memo_exactly_reverses_its_invoice(inv: InvoiceIssued) -> None:
    entry = journal_for_invoice(inv, "k" * 16, ACCOUNTS)
    memo = reversing_credit_memo(inv, issued_at=T0)
    reversal = journal_for_credit_memo(memo, "r" * 16, ACCOUNTS)
    assert reversal.amount == entry.amount == inv.total
    assert reversal.external_id == memo.credit_memo_id and reversal.currency == inv.currency
    # Every account's debit becomes the same credit and vice versa, nothing else.
    assert sides([(ln.account, ln.credit, ln.debit) for ln in reversal.lines]) == sides(
        [(ln.account, ln.debit, ln.credit) for ln in entry.lines])
    net: Counter[str] = Counter()
    for ln in [*entry.lines, *reversal.lines]:
        net[ln.account] += ln.debit - ln.credit
    assert all(v == 0 for v in net.values())


def test_a_credit_memo_with_a_negative_subtotal_posts_it_on_the_other_side() -> None:
    memo = CreditMemoIssued(
        credit_memo_id="cn_1", number="CN-1", customer_id="cus_1", invoice_id="in_1",
        currency="USD", issued_at=T0,
        lines=(CreditMemoLine(line_id="a", product_id="p", quantity=-1, unit_amount=100,
                              amount=-100),),
        subtotal=-100, tax=300, total=200)
    entry = journal_for_credit_memo(memo, "k" * 16, ACCOUNTS)
    assert [(ln.account, ln.debit, ln.credit) for ln in entry.lines] == [
        (ACCOUNTS.deferred_revenue, 0, 100), (ACCOUNTS.tax_payable, 300, 0),
        (ACCOUNTS.receivable, 0, 200)]


def payment(amount: int = 10_000, invoice: str = "in_1") -> PaymentReceived:
    return PaymentReceived(payment_id="py_1", customer_id="cus_1", currency="USD",
                           amount=amount, received_at=T0,
                           applications=(PaymentApplication(invoice_id=invoice, amount=amount,
                                                            currency="USD"),))


def test_cash_application_debits_cash_and_credits_receivable() -> None:
    entry = journal_for_payment(payment(), "k" * 16, ACCOUNTS)
    assert entry.external_id == "py_1" and entry.posting_date == T0.date()
    assert [(ln.account, ln.debit, ln.credit) for ln in entry.lines] == [
        (ACCOUNTS.cash, 10_000, 0), (ACCOUNTS.receivable, 0, 10_000)]
    with pytest.raises(ValueError):
        journal_for_payment(payment(0), "k" * 16, ACCOUNTS)


GOLD = Attribution(customer="cus_1", partner="pt_0003", tier="gold", commission_bp=2000)


@pytest.mark.parametrize(("amount", "partner", "expected"), [
    (10_000, GOLD, [2000]),
    (3, GOLD, [1]),        # 0.6 rounds half away from zero to 1
    (2, GOLD, []),         # 0.4 rounds to 0: no commission
    (10_000, None, []),    # a direct customer
])
def test_commissions_by_tier(amount: int, partner: Attribution | None,
                             expected: list[int]) -> None:
    found = commissions_for_payment(payment(amount), partner)
    assert [c.amount for c in found] == expected
    for c in found:
        assert (c.partner_id, c.rate_bp, c.basis_amount, c.invoice_id) == (
            "pt_0003", 2000, amount, "in_1")
        assert c.commission_id == commission_id("py_1", "in_1")


def test_settlement_and_payable_are_deterministic_and_agree() -> None:
    (c,) = commissions_for_payment(payment(), GOLD)
    s1, s2 = settlement_for(c), settlement_for(c)
    assert s1 == s2 and s1.total == c.amount and s1.settlement_id.startswith("st_")
    wire = settlement_to_wire(s1, "in_1")
    bill = payable_to_wire(s1, ACCOUNTS, "in_1")
    assert msgspec.json.encode(wire) == msgspec.json.encode(settlement_to_wire(s2, "in_1"))
    assert (wire.id, wire.partner, wire.currency, wire.total) == (
        s1.settlement_id, "pt_0003", "usd", 2000)
    assert (bill.external_id, bill.vendor, bill.currency, bill.amount) == (
        s1.settlement_id, "pt_0003", "USD", 2000)
    assert sum(line.amount for line in bill.lines) == bill.amount
    assert portal_settlement_key(s1.settlement_id) != erp_payable_key(s1.settlement_id)


def test_id_time_reads_uuid7_ids_only() -> None:
    stamp = id_time(new_id())
    assert stamp is not None and abs(stamp - datetime.now(UTC).timestamp()) < 5
    assert id_time("0" * 32) is None and id_time(None) is None and id_time("nope") is None


def test_billing_credit_notes_and_payments_map_to_canonical_messages() -> None:
    note = BillingCreditNote(
        id="cn_000001", invoice="in_000001", currency="usd", created=int(T0.timestamp()),
        customer="cus_00042", amount=700,
        lines=CreditNoteLineList(data=[CreditNoteLine(id="cnli_1", invoice_line="il_1",
                                                      description="seats", amount=700)]))
    inbound = inbound_credit_note(CreditNoteEvent(
        id="evt_cn_000001", type="credit_note.created", created=0,
        data=CreditNoteEventData(object=note)))
    memo = inbound.payload
    assert isinstance(memo, CreditMemoIssued)
    assert (memo.credit_memo_id, memo.invoice_id, memo.currency, memo.total, memo.tax) == (
        "cn_000001", "in_000001", "USD", 700, 0)
    assert str(inbound.key) == "billing:cn_000001:v1"
    pay = BillingPayment(id="py_000001", invoice="in_000001", amount=900, currency="eur",
                         paid_at=int(T0.timestamp()), customer="cus_00042")
    inbound = inbound_payment(PaymentEvent(id="evt_py_000001", type="invoice.paid", created=0,
                                           data=PaymentEventData(object=pay)))
    received = inbound.payload
    assert isinstance(received, PaymentReceived)
    assert (received.payment_id, received.customer_id, received.currency, received.amount) == (
        "py_000001", "cus_00042", "EUR", 900)
    assert [a.invoice_id for a in received.applications] == ["in_000001"]
    with pytest.raises(ContractError) as missing:
        inbound_payment(PaymentEvent(id="e", type="invoice.paid", created=0,
                                     data=PaymentEventData(object=msgspec.structs.replace(
                                         pay, customer=""))))
    assert missing.value.code == "payment.customer_missing"


def test_the_monitor_publishes_the_settlement_cycle_percentiles() -> None:
    monitor = Monitor(lanes=[], posting_child="erp-journal")
    doc, _ = monitor.kpis()
    assert doc["partner_settlement_cycle_ms"] == {"p50": 0.0, "p99": 0.0, "max": 0.0,
                                                  "settlements": 0}
    for ms in range(1, 101):
        monitor.note_settlement_cycle(float(ms))
    doc, _ = monitor.kpis()
    assert doc["partner_settlement_cycle_ms"] == {"p50": 50.0, "p99": 99.0, "max": 100.0,
                                                  "settlements": 100}


def test_the_settlement_cycle_is_exported_to_prometheus() -> None:
    monitor = Monitor(lanes=[], posting_child="erp-journal")
    monitor.note_settlement_cycle(1500.0)
    monitor.observe({"children": []}, {}, (0, 0))
    doc, _ = monitor.kpis()
    assert monitor.last_metrics is not None
    text = prometheus_text(monitor.last_metrics, doc)
    assert 'erpgw_partner_settlement_cycle_seconds{quantile="0.99"} 1.5' in text
    assert "erpgw_partner_settlements_total 1" in text
