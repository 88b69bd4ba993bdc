"""Foreign-currency postings: a journal in the functional currency, and realized FX gain/loss.

Theory of operation
-------------------
Pure synchronous code over ``contracts.JournalLine`` s and exact rates (``contracts.convert``,
``contracts.parse_rate``): no I/O, no clock, stdlib and ``contracts`` only, like
``actors.lifecycle.arithmetic``.

* ``to_functional`` restates a balanced entry of the transaction currency in the entity's
  functional currency: each line is converted **once** (``convert``, half to even), then the
  difference between the converted debits and credits, which the independent roundings may
  leave (at most half a minor unit per line), goes to one rounding line on the side that
  balances the entry. So the restated entry balances to the minor unit, every line except the
  rounding line is exactly ``convert`` of its original, and nothing is rounded twice.
* ``realized_fx`` is the exchange gain (positive) or loss (negative) of settling a
  foreign-currency receivable at another rate than it was booked at: the functional value of
  the amount at the payment's rate less its value at the invoice's rate, each converted once.
  A receivable: the rate going up is a gain. Equal rates: zero.
* ``payment_in_functional`` is a payment's cash application restated in the functional
  currency: Dr cash the amount at the payment's rate, Cr receivable each applied amount at its
  invoice's rate (the unapplied rest at the payment's rate: it stays a credit on the account
  at today's value), and the difference on the realized FX gain or loss account. It
  balances by construction; the gain/loss is the sum of the applications' ``realized_fx``
  up to the half units the cash's single conversion rounds away.

* ``entity_of`` is which entity a customer's document is posted for, and, when the document
  is foreign to it, the entity's functional currency and the rate of the document's day.

Errors are ``ValueError("<code>: <message>")`` (``contracts.contract_error`` turns them into a
``ContractError``); every code is in docs/errors.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Annotated, NamedTuple

import msgspec

from contracts import Currency, JournalLine, check_currency, convert, parse_rate

__all__ = ["EntityMap", "Foreign", "FxAccounts", "RateTable", "entity_of",
           "payment_in_functional", "realized_fx", "signed", "to_functional"]

EntityId = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]


class EntityMap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which legal entity (the ERP's subsidiary) a customer's postings belong to, and each
    entity's functional currency (the ``[entities]`` configuration section).

    ``customers`` maps a billing customer id to an entity; a key ending in ``*`` is a prefix
    (``"cus_de_*" = "de"``): an exact id wins, then the longest matching prefix, then
    ``default``. An entity with no ``functional_currency`` posts every document in its own
    currency with no rate. Unconfigured (``configured`` false): postings name no entity,
    exactly as before entities existed.
    """

    default: EntityId = "default"
    functional_currency: dict[str, Currency] = {}
    customers: dict[str, EntityId] = {}

    def __post_init__(self) -> None:
        for entity, currency in self.functional_currency.items():
            try:
                check_currency(currency)
            except ValueError as exc:
                raise ValueError(f"{exc} (functional_currency.{entity})") from None

    @property
    def configured(self) -> bool:
        return bool(self.functional_currency or self.customers or self.default != "default")

    def entity_for(self, customer: str) -> str:
        """The entity of ``customer``'s postings (see the class). Raises nothing."""
        exact = self.customers.get(customer)
        if exact is not None:
            return exact
        best, entity = -1, self.default
        for key, value in self.customers.items():
            if key.endswith("*") and customer.startswith(key[:-1]) and len(key) > best:
                best, entity = len(key), value
        return entity

    def functional(self, entity: str) -> str | None:
        """``entity``'s functional currency, or ``None`` when none is configured."""
        return self.functional_currency.get(entity)


class RateTable:
    """Daily rates known so far: ``(day, currency, functional)`` → rate (functional major
    units per ``currency`` major unit). A day's rate never changes once published, so the
    table only grows; the same currency at par needs no entry."""

    def __init__(self) -> None:
        self._rates: dict[tuple[date, str, str], Decimal] = {}
        self._days: set[tuple[date, str]] = set()

    def add(self, day: date, functional: str, rates: dict[str, Decimal]) -> None:
        """Record ``day``'s rates into ``functional`` (currency → rate)."""
        for currency, rate in rates.items():
            self._rates[(day, currency, functional)] = rate
        self._days.add((day, functional))

    def has(self, day: date, functional: str) -> bool:
        """Whether ``day``'s rates into ``functional`` were added."""
        return (day, functional) in self._days

    def rate(self, day: date, currency: str, functional: str) -> Decimal:
        """The rate of ``currency`` in ``functional`` on ``day``. Raises ``ValueError``
        (``fx.missing_rate``) when the table has none."""
        if currency == functional:
            return Decimal(1)
        try:
            return self._rates[(day, currency, functional)]
        except KeyError:
            raise _fail("fx.missing_rate",
                        f"no {currency}/{functional} rate for {day}") from None


class FxAccounts(NamedTuple):
    """The accounts foreign-currency postings use beyond a flow's own (``AccountMap``)."""

    rounding: str = "7990"
    fx_gain: str = "7910"
    fx_loss: str = "7920"


_DEFAULT_ACCOUNTS = FxAccounts()


class Foreign(NamedTuple):
    """A document foreign to its entity: the entity, its functional currency, the rate."""

    entity: str
    functional: str
    rate: Decimal


def entity_of(entities: EntityMap, customer: str, currency: str, day: date,
              rates: RateTable | None) -> str | Foreign:
    """The entity ``customer``'s document in ``currency`` of ``day`` is posted for: its name
    when the document is in the entity's functional currency (or the entity has none), else
    ``Foreign`` with the rate of ``day`` from ``rates``.

    Raises ``ValueError`` (``fx.missing_rate``) when ``rates`` is ``None`` or has no rate.
    """
    entity = entities.entity_for(customer)
    functional = entities.functional(entity)
    if functional is None or functional == currency:
        return entity
    if rates is None:
        raise _fail("fx.missing_rate",
                    f"no rate source for {currency} in the {functional} entity {entity}")
    return Foreign(entity, functional, rates.rate(day, currency, functional))


def _fail(code: str, message: str) -> ValueError:
    return ValueError(f"{code}: {message}")


def signed(line: JournalLine) -> int:
    """A line's debit-positive amount (``debit - credit``). Raises nothing."""
    return line.debit - line.credit


def _line(account: str, amount: int, memo: str) -> JournalLine:
    """``amount`` (debit-positive) as a line: a debit when positive, a credit when negative."""
    if amount > 0:
        return JournalLine(account=account, debit=amount, memo=memo)
    return JournalLine(account=account, credit=-amount, memo=memo)


def to_functional(lines: Sequence[JournalLine], currency: str, functional: str,
                  rate: Decimal | str, *, rounding_account: str = FxAccounts.rounding,
                  ) -> list[JournalLine]:
    """``lines`` (a balanced entry in ``currency``) restated in ``functional`` at ``rate``.

    Every line is converted once; a line that converts to zero is dropped (a line is never
    zero); when the converted sides differ, one ``rounding_account`` line (memo ``fx
    rounding``) takes the difference. The result's debits equal its credits.

    Raises ``ValueError``: ``journal.unbalanced`` when ``lines`` do not balance;
    ``money.unknown_currency``; ``fx.invalid_rate``; ``journal.line_sides`` when everything
    converts to zero (nothing left to post).
    """
    check_currency(currency)
    check_currency(functional)
    r = parse_rate(rate)
    if sum(signed(ln) for ln in lines) != 0:
        raise _fail("journal.unbalanced", f"the {currency} lines do not balance")
    out: list[JournalLine] = []
    for ln in lines:
        amount = convert(signed(ln), currency, functional, r)
        if amount:
            out.append(_line(ln.account, amount, ln.memo))
    difference = sum(signed(ln) for ln in out)
    if difference:
        out.append(_line(rounding_account, -difference, "fx rounding"))
    if not out:
        raise _fail("journal.line_sides", f"every line converts to zero {functional}")
    return out


def realized_fx(amount: int, currency: str, functional: str, booked_rate: Decimal | str,
                settled_rate: Decimal | str) -> int:
    """The realized exchange gain (> 0) or loss (< 0), in minor units of ``functional``, of
    settling ``amount`` minor units of a ``currency`` receivable booked at ``booked_rate``
    at ``settled_rate``: ``convert(amount, settled) - convert(amount, booked)``.

    Zero when the rates are equal; a gain when the rate went up for a positive (receivable)
    amount; the mirror image for a negative one (a refund). Raises ``ValueError``:
    ``money.unknown_currency``, ``fx.invalid_rate``.
    """
    return (convert(amount, currency, functional, parse_rate(settled_rate))
            - convert(amount, currency, functional, parse_rate(booked_rate)))


def payment_in_functional(amount: int, applications: Sequence[tuple[int, Decimal | str]],
                          currency: str, functional: str, rate: Decimal | str, *,
                          cash_account: str, receivable_account: str,
                          accounts: FxAccounts = _DEFAULT_ACCOUNTS, memo: str = "",
                          ) -> list[JournalLine]:
    """A payment of ``amount`` minor units of ``currency`` received at ``rate``, applied to
    invoices as ``(applied amount, invoice rate)`` pairs, as lines in ``functional``.

    Dr ``cash_account`` ``convert(amount, rate)``; Cr ``receivable_account`` each applied
    amount at its invoice's rate and the unapplied rest at ``rate``; the difference on
    ``accounts.fx_gain`` (a credit: a gain) or ``accounts.fx_loss`` (a debit: a loss). Lines
    that convert to zero are dropped. Balanced by construction; empty when everything converts
    to zero (nothing to post).

    Raises ``ValueError``: ``payment.over_applied`` when the applications exceed ``amount``
    or one is not above zero; ``amount.negative`` for an amount not above zero;
    ``money.unknown_currency``; ``fx.invalid_rate``.
    """
    if amount <= 0:
        raise _fail("amount.negative", f"payment amount is {amount}, must be above zero")
    if any(a <= 0 for a, _ in applications) or sum(a for a, _ in applications) > amount:
        raise _fail("payment.over_applied",
                    f"applications {[a for a, _ in applications]} do not fit in {amount}")
    r = parse_rate(rate)
    cash = convert(amount, currency, functional, r)
    credited = [convert(a, currency, functional, parse_rate(ir)) for a, ir in applications]
    unapplied = amount - sum(a for a, _ in applications)
    if unapplied:
        credited.append(convert(unapplied, currency, functional, r))
    out: list[JournalLine] = []
    if cash:
        out.append(_line(cash_account, cash, "cash received"))
    out.extend(_line(receivable_account, -c, memo[:200]) for c in credited if c)
    gain = cash - sum(credited)
    if gain > 0:
        out.append(_line(accounts.fx_gain, -gain, "realized fx gain"))
    elif gain < 0:
        out.append(_line(accounts.fx_loss, -gain, "realized fx loss"))
    return out
