"""Flow 3's pure core: a payment's cash application, its commissions and their settlements.

Everything here is plain synchronous code over canonical messages: no I/O, no clock. Each
output is a deterministic function of its input, ids and idempotency keys included, so a
redelivered payment or commission plans byte-identical outputs (the stream drops the
republished messages by ``Nats-Msg-Id``, the platforms answer the repeated writes as replays
under the same idempotency key with the same body).

* ``journal_for_payment``: Dr cash the amount received, Cr receivable the same (unapplied
  cash stays on the customer's account as a credit balance).
* ``commissions_for_payment``: one ``CommissionAccrued`` per invoice the payment applies to,
  ``amount`` = the applied amount at the partner's rate (``actors.lifecycle.commission``,
  half away from zero); none when it rounds to zero.
* ``settlement_for`` / ``settlement_to_wire`` / ``payable_to_wire``: one settlement per
  commission (id derived from the commission id), recorded at the partner portal and owed in
  the ERP as a vendor bill whose ``externalId`` is the settlement id.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import msgspec

from contracts import (
    CommissionAccrued,
    JournalLine,
    PartnerSettlementIssued,
    PaymentReceived,
    PostJournalEntry,
    SettlementLine,
    derive_id,
    format_amount,
    format_rate,
)
from contracts.platforms.erp import VendorBillIn, VendorBillLineIn
from contracts.platforms.partner import Attribution, SettlementIn, SettlementLineIn

from ..lifecycle.arithmetic import commission
from ..lifecycle.fx import EntityMap, FxAccounts, RateTable, entity_of, payment_in_functional
from ..router.invoices import AccountMap

__all__ = [
    "commission_id",
    "commissions_for_payment",
    "erp_payable_key",
    "id_time",
    "journal_for_payment",
    "journal_for_payment_in_entity",
    "payable_to_wire",
    "portal_settlement_key",
    "settlement_for",
    "settlement_id",
    "settlement_to_wire",
]


def id_time(message_id: str | None) -> float | None:
    """The unix time (s) a UUIDv7 message id was made (``contracts.new_id``), or ``None`` for
    another kind of id. The ingress makes an envelope's id when the webhook arrives, so this is
    when a payment reached the gateway, whatever happened to it since. Raises nothing."""
    if not message_id:
        return None
    try:
        u = uuid.UUID(message_id)
    except ValueError:
        return None
    if u.version != 7:
        return None
    return (u.int >> 80) / 1000.0


def journal_for_payment(p: PaymentReceived, key: str, accounts: AccountMap) -> PostJournalEntry:
    """The cash application of a payment: Dr ``accounts.cash``, Cr ``accounts.receivable``,
    both the amount received; ``externalId`` the payment id. Raises ``ValueError``
    (``journal.line_sides``) for a zero payment: there is nothing to post."""
    applied = ", ".join(a.invoice_id for a in p.applications) or "on account"
    memo = f"Payment {p.payment_id} customer {p.customer_id} applied to {applied}"[:500]
    return PostJournalEntry(
        idempotency_key=key,
        external_id=p.payment_id,
        posting_date=p.received_at.date(),
        currency=p.currency,
        memo=memo,
        lines=[JournalLine(account=accounts.cash, debit=p.amount, memo="cash received"),
               JournalLine(account=accounts.receivable, credit=p.amount, memo=memo[:200])],
    )


def journal_for_payment_in_entity(p: PaymentReceived, key: str, accounts: AccountMap,
                                  entities: EntityMap, rates: RateTable | None,
                                  booked: Mapping[str, str]) -> PostJournalEntry:
    """``journal_for_payment`` posted for the entity of ``p``'s customer (``EntityMap``).

    Entities not configured: ``journal_for_payment`` unchanged. A payment in its entity's
    functional currency (or an entity without one): the same entry naming the entity. A
    payment in another currency: the cash application restated in the functional currency
    (``actors.lifecycle.fx.payment_in_functional``): Dr cash at the rate of the payment's day
    (``rates``), Cr receivable each applied amount at the rate its invoice was booked at
    (``booked``: invoice id → rate, as the ERP holds it), the unapplied rest at the payment's
    rate, and the difference on ``accounts.fx_gain`` (a credit) or ``accounts.fx_loss`` (a
    debit). Its memo names the payment's amount, currency and rate.

    Raises ``ValueError``: ``fx.missing_rate`` when the day's rate or an invoice's booked rate
    is unknown; ``journal.line_sides`` when nothing is left to post.
    """
    entry = journal_for_payment(p, key, accounts)
    if not entities.configured:
        return entry
    posted = entity_of(entities, p.customer_id, p.currency, p.received_at.date(), rates)
    if isinstance(posted, str):
        return msgspec.structs.replace(entry, entity=posted)
    entity, functional, rate = posted
    applications: list[tuple[int, str]] = []
    for a in p.applications:
        if a.amount:
            if a.invoice_id not in booked:
                raise ValueError(f"fx.missing_rate: invoice {a.invoice_id} has no booked "
                                 f"{p.currency}/{functional} rate in the ERP")
            applications.append((a.amount, booked[a.invoice_id]))
    memo = (f"{entry.memo[:400]}; {format_amount(p.amount, p.currency)} at "
            f"{format_rate(rate)} {functional}")
    lines = payment_in_functional(
        p.amount, applications, p.currency, functional, rate, cash_account=accounts.cash,
        receivable_account=accounts.receivable, memo=memo,
        accounts=FxAccounts(rounding=accounts.fx_rounding, fx_gain=accounts.fx_gain,
                            fx_loss=accounts.fx_loss))
    if len(lines) < 2:
        raise ValueError(f"journal.line_sides: payment {p.payment_id} converts to nothing "
                         f"in {functional}")
    return PostJournalEntry(
        idempotency_key=entry.idempotency_key, external_id=entry.external_id,
        posting_date=entry.posting_date, currency=functional, memo=memo, lines=lines,
        entity=entity)


def commission_id(payment_id: str, invoice_id: str) -> str:
    """The id of the commission a payment earns on one invoice (deterministic)."""
    return derive_id("commission", payment_id, invoice_id)


def commissions_for_payment(p: PaymentReceived, partner: Attribution | None
                            ) -> list[CommissionAccrued]:
    """What ``partner`` earns on ``p``: one commission per applied invoice at
    ``partner.commission_bp``; ``[]`` for a direct customer (``None``) or when every amount
    rounds to zero. ``accrued_at`` is the payment's time, so the result is deterministic.
    Raises ``ValueError`` (``commission.rate``) for a rate outside 0..10,000 bp."""
    if partner is None:
        return []
    out: list[CommissionAccrued] = []
    for a in p.applications:
        amount = commission(a.amount, partner.commission_bp)
        if amount <= 0:
            continue
        out.append(CommissionAccrued(
            commission_id=commission_id(p.payment_id, a.invoice_id), partner_id=partner.partner,
            invoice_id=a.invoice_id, customer_id=p.customer_id, deal_id=partner.deal_id,
            currency=p.currency, basis_amount=a.amount, rate_bp=partner.commission_bp,
            amount=amount, accrued_at=p.received_at))
    return out


def settlement_id(commission: str) -> str:
    """The settlement paying one commission (deterministic: a redelivered commission never
    makes a second settlement)."""
    return "st_" + derive_id("settlement", commission)[:24]


def portal_settlement_key(settlement: str) -> str:
    """The partner portal's ``Idempotency-Key`` for recording ``settlement``."""
    return derive_id("partner.settlement", settlement)


def erp_payable_key(settlement: str) -> str:
    """The ERP's ``Idempotency-Key`` for the vendor bill of ``settlement``."""
    return derive_id("erp.vendor_bill", settlement)


def settlement_for(c: CommissionAccrued) -> PartnerSettlementIssued:
    """The settlement paying commission ``c`` in full, dated when it accrued. Pure."""
    day = c.accrued_at.date()
    return PartnerSettlementIssued(
        settlement_id=settlement_id(c.commission_id), partner_id=c.partner_id,
        currency=c.currency, period_start=day, period_end=day, issued_at=c.accrued_at,
        lines=(SettlementLine(commission_id=c.commission_id, amount=c.amount,
                              currency=c.currency),),
        total=c.amount)


def settlement_to_wire(s: PartnerSettlementIssued, invoice_id: str) -> SettlementIn:
    """``s`` as the portal's ``POST /partner/v1/settlements`` body (currency lower-case)."""
    return SettlementIn(
        id=s.settlement_id, partner=s.partner_id, currency=s.currency.lower(),
        period_start=s.period_start.isoformat(), period_end=s.period_end.isoformat(),
        lines=[SettlementLineIn(commission_id=line.commission_id, invoice_id=invoice_id,
                                amount=line.amount) for line in s.lines],
        total=s.total)


def payable_to_wire(s: PartnerSettlementIssued, accounts: AccountMap,
                    invoice_id: str) -> VendorBillIn:
    """The ERP vendor bill owing ``s`` to its partner: one line on the commission expense
    account; ``externalId`` the settlement id."""
    memo = f"Partner commission settlement {s.settlement_id} for invoice {invoice_id}"
    return VendorBillIn(
        external_id=s.settlement_id, vendor=s.partner_id, currency=s.currency,
        tran_date=s.issued_at.date().isoformat(), amount=s.total, memo=memo,
        lines=[VendorBillLineIn(account=accounts.partner_commission, amount=line.amount,
                                memo=line.commission_id) for line in s.lines])
