"""Reconciliation of entities and currencies: what a foreign-currency payment's ERP posting must
be. Pure: records in, expectations out; no I/O, no clock.

A payment of a customer whose entity (``EntityMap``) has a functional currency other than the
payment's is posted by the payment router in the functional currency
(``actors.lifecycle.fx.payment_in_functional``): Dr cash the payment at the rate of its day,
Cr receivable the applied amount at the rate its invoice was booked at, the difference on the
realized FX gain or loss account. The reconciler rebuilds that entry with the same pure core
from the same facts, so it compares exactly, in minor units of the functional currency, with
no rounding of its own:

* the invoice's booked rate is the rate the ERP posting of the invoice carries
  (``exchangeRate`` of its live posting of the highest version, ``booked_rates``);
* the payment day's rate is the ERP's daily rate (``GET /erp/v1/exchange-rates``, read by
  the shell for each ``rate_days`` pair; a day's rate never changes);
* billing's payment settles one invoice with its whole amount (``invoice.paid``).

``restate`` returns each such payment's expected lines; the ERP leg compares the posting's
currency and amount (the sum of its debits) with them, the GL leg books them instead of the
transaction-currency cash application. A payment whose rates are not both known is not
restated: it is compared in its own currency as before (a ``currency`` break whose detail
says which rate is missing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal

import msgspec

from contracts import JournalLine, format_rate, parse_rate

from ..lifecycle.fx import EntityMap, FxAccounts, payment_in_functional
from .matching import ErpPosting, split_external_id

__all__ = ["ForeignPayment", "PaymentRef", "Restated", "booked_rates", "foreign_payments",
           "rate_days", "restate"]


class PaymentRef(msgspec.Struct, frozen=True):
    """A billing payment as the reconciler reads it: it settles ``invoice`` with ``amount``
    minor units of ``currency`` (upper-case) on ``day`` (UTC)."""

    key: str
    invoice: str
    customer: str
    currency: str
    amount: int
    day: date


class ForeignPayment(msgspec.Struct, frozen=True):
    """A payment foreign to its customer's entity: posted in ``functional``."""

    payment: PaymentRef
    entity: str
    functional: str


class Restated(msgspec.Struct, frozen=True):
    """The expected functional-currency posting of a foreign payment: its currency, lines and
    the sum of their debits (the posting's amount at the ERP), and the two rates."""

    currency: str
    lines: list[JournalLine]
    amount: int
    rate: str
    booked: str


def foreign_payments(payments: Iterable[PaymentRef], entities: EntityMap
                     ) -> list[ForeignPayment]:
    """The payments of ``payments`` whose entity has a functional currency other than the
    payment's (none when ``entities`` is not configured). Raises nothing."""
    out: list[ForeignPayment] = []
    if not entities.configured:
        return out
    for p in payments:
        entity = entities.entity_for(p.customer)
        functional = entities.functional(entity)
        if p.amount > 0 and functional is not None and functional != p.currency:
            out.append(ForeignPayment(p, entity, functional))
    return out


def rate_days(foreign: Iterable[ForeignPayment]) -> set[tuple[date, str]]:
    """The ``(day, functional currency)`` pairs whose daily rates ``restate`` needs."""
    return {(f.payment.day, f.functional) for f in foreign}


def booked_rates(postings: Iterable[ErpPosting]) -> dict[str, tuple[str, Decimal]]:
    """Document id → ``(functional currency, rate)`` of the ERP posting of its highest
    version that carries a rate and is not reversed (a reversal ``…:reversal`` cancels the
    entry it names). Raises nothing: a malformed rate is left out."""
    everything = list(postings)
    reversed_ids = {split_external_id(p.key)[0:2] for p in everything
                    if split_external_id(p.key)[2]}
    best: dict[str, tuple[int, str, Decimal]] = {}
    for p in everything:
        doc, version, is_reversal = split_external_id(p.key)
        if is_reversal or (doc, version) in reversed_ids:
            continue
        if p.exchange_rate is None or p.functional_currency is None:
            continue
        try:
            rate = parse_rate(p.exchange_rate)
        except ValueError:
            continue
        if doc not in best or best[doc][0] < version:
            best[doc] = (version, p.functional_currency, rate)
    return {doc: (functional, rate) for doc, (_, functional, rate) in best.items()}


def restate(foreign: Iterable[ForeignPayment], booked: Mapping[str, tuple[str, Decimal]],
            rates: Mapping[tuple[date, str, str], Decimal], *, cash: str, receivable: str,
            accounts: FxAccounts) -> tuple[dict[str, Restated], dict[str, str]]:
    """``(restated, missing)``: each foreign payment's expected posting
    (``payment_in_functional`` of its amount applied to its invoice at the invoice's booked
    rate, at ``rates[(day, currency, functional)]``), by payment id; and, for a payment that
    cannot be restated, why (no daily rate, no booked rate in that functional currency).
    Raises nothing for valid input."""
    out: dict[str, Restated] = {}
    missing: dict[str, str] = {}
    for f in foreign:
        p = f.payment
        rate = rates.get((p.day, p.currency, f.functional))
        inv = booked.get(p.invoice)
        if rate is None:
            missing[p.key] = f"no {p.currency}/{f.functional} rate of {p.day} at the ERP"
            continue
        if inv is None or inv[0] != f.functional:
            missing[p.key] = (f"invoice {p.invoice} has no booked {p.currency}/{f.functional} "
                              "rate at the ERP")
            continue
        lines = payment_in_functional(p.amount, [(p.amount, inv[1])], p.currency,
                                      f.functional, rate, cash_account=cash,
                                      receivable_account=receivable, accounts=accounts)
        out[p.key] = Restated(f.functional, lines, sum(ln.debit for ln in lines),
                              format_rate(rate), format_rate(inv[1]))
    return out, missing
