"""Literal journals: for one known invoice, credit memo and payment, the ``erp.journal``
command the routers publish holds exactly these lines (account, debit, credit), written out by
hand with the default chart of accounts, not derived from the code under test.

Receivable 1200, deferred revenue 2400, tax payable 2200, cash 1000 (``AccountMap``'s
defaults, documented in the configuration reference)."""

from __future__ import annotations

import msgspec

from actors.payments.cash import plan_cash
from actors.router.credits import plan_credit_memo
from actors.router.invoices import AccountMap, plan_invoice
from contracts import BusinessKey, Envelope, MsgpackCodec, PostJournalEntry, Subjects
from tests.contracts.samples import SAMPLES
from tests.contracts.samples import envelope_of as _envelope_of

_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
SUBJECTS = Subjects()


def envelope_of(payload: object) -> Envelope:
    """The sample as the first version of its business object."""
    env = _envelope_of(payload)  # type: ignore[arg-type]
    return msgspec.structs.replace(env, key=BusinessKey(env.key.source, env.key.object_id, 1))


def journal(out: object) -> tuple[str, str, list[tuple[str, int, int]]]:
    assert out is not None
    env = _codec.decode(out.data)  # type: ignore[attr-defined]
    entry = env.payload
    assert isinstance(entry, PostJournalEntry)
    assert out.subject == "erpgw.billing.cmd.erp.journal.v1"  # type: ignore[attr-defined]
    return entry.external_id, entry.currency, [(ln.account, ln.debit, ln.credit)
                                               for ln in entry.lines]


def test_an_invoice_debits_receivable_total_and_credits_revenue_and_tax() -> None:
    # INV-1: EUR 180.00 + 34.20 VAT = 214.20
    out = plan_invoice(envelope_of(SAMPLES["invoice.issued.v1"]), SUBJECTS, AccountMap())
    assert journal(out) == ("in_1", "EUR", [
        ("1200", 21_420, 0),  # receivable: the total
        ("2400", 0, 18_000),  # deferred revenue: the subtotal
        ("2200", 0, 3_420),  # tax payable: the tax
    ])


def test_a_credit_memo_reverses_revenue_and_tax_against_receivable() -> None:
    # CN-1 on INV-1: EUR 40.00 + 7.60 VAT = 47.60
    out = plan_credit_memo(envelope_of(SAMPLES["credit_memo.issued.v1"]), SUBJECTS,
                           AccountMap())
    assert journal(out) == ("cn_1", "EUR", [
        ("2400", 4_000, 0),  # deferred revenue reversed
        ("2200", 760, 0),  # tax reversed
        ("1200", 0, 4_760),  # receivable reduced by the total
    ])


def test_a_payment_debits_cash_and_credits_receivable() -> None:
    # pay_1: EUR 250.00 received (214.20 applied to INV-1, the rest on account)
    out = plan_cash(envelope_of(SAMPLES["payment.received.v1"]), SUBJECTS, AccountMap())
    assert journal(out) == ("pay_1", "EUR", [
        ("1000", 25_000, 0),  # cash
        ("1200", 0, 25_000),  # receivable
    ])


def test_the_three_leave_receivable_at_what_is_still_owed() -> None:
    """Invoice 214.20 - credit 47.60 - payment 250.00 = 83.40 in the customer's favour."""
    net = 0
    for out in (plan_invoice(envelope_of(SAMPLES["invoice.issued.v1"]), SUBJECTS, AccountMap()),
                plan_credit_memo(envelope_of(SAMPLES["credit_memo.issued.v1"]), SUBJECTS,
                                 AccountMap()),
                plan_cash(envelope_of(SAMPLES["payment.received.v1"]), SUBJECTS, AccountMap())):
        net += sum(d - c for acct, d, c in journal(out)[2] if acct == "1200")
    assert net == -8_340
