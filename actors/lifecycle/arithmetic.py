"""Revenue, proration, commission and credit-memo arithmetic: pure functions in minor units.

Theory of operation
-------------------
Every function here is plain synchronous code over integers (minor units of one currency) and
dates: no I/O, no clock, no logging, stdlib and ``contracts`` only. The routers of the
commercial lifecycle call them and publish what they return; the tests are tables and
hypothesis properties.

Money is only ever *split*, never computed twice and rounded twice:

* **Ratable recognition** splits a contract value over the periods of its service period
  with ``contracts.allocate`` (largest remainder), so the lines sum to the value exactly.
* **Proration** splits each plan's value at the amendment date with one monotone cumulative
  share ``share(value, days, total_days)`` (rounded half up). The value of a plan over
  ``[a, b)`` is ``share(b) - share(a)``, so the segments of one plan always telescope back to
  its whole value, and any chain of amendments in a period charges exactly the sum of the
  segments actually used: no cent created or lost, no drift however many amendments there are.
* **Commission** is ``contracts.apply_rate_bp`` (half away from zero, the rule
  ``CommissionAccrued`` checks). On partial payments the commission of each payment is the
  increase of the commission on the *cumulative* paid amount, so the commissions of an
  invoice's payments add up to the commission on everything paid, to the minor unit.
* **Reversal** copies an invoice's lines and tax into a credit memo; a credit memo's positive
  amounts are credit, so its signed effect (``signed_lines``) cancels the invoice exactly.

Errors are ``ValueError("<code>: <message>")`` like the contracts' invariants
(``contracts.contract_error`` turns them into a ``ContractError``); every code is in
docs/errors.md.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from math import lcm
from types import MappingProxyType
from typing import Literal, NamedTuple

from contracts import (
    CURRENCY_EXPONENTS,
    CreditMemoIssued,
    CreditMemoLine,
    InvoiceIssued,
    InvoiceIssuedV2,
    RecognitionLine,
    allocate,
    apply_rate_bp,
    check_currency,
    derive_id,
)

__all__ = [
    "DEFAULT_TIER_RATES_BP",
    "TIER_ORDER",
    "Granularity",
    "Period",
    "Proration",
    "ScheduleLine",
    "amended_charges",
    "check_tier_table",
    "commission",
    "commission_for_tier",
    "commission_increments",
    "month_periods",
    "plan_value",
    "prorate",
    "ratable_schedule",
    "recognition_lines",
    "recognized_to_date",
    "reversing_credit_memo",
    "segment_value",
    "share",
    "signed_lines",
    "to_minor_units",
]

Granularity = Literal["daily", "monthly"]

# Tiers from lowest to highest. A tier table must pay a higher tier at least as much.
TIER_ORDER: tuple[str, ...] = ("registered", "silver", "gold", "platinum")

# The demo programme's rates (basis points of paid amounts); real ones come from the partner
# programme as data, checked with ``check_tier_table``.
DEFAULT_TIER_RATES_BP: Mapping[str, int] = MappingProxyType(
    {"registered": 500, "silver": 1000, "gold": 1500, "platinum": 2000})

_ONE_DAY = timedelta(days=1)
# Common denominator of a day's share of any month (28, 29, 30 or 31 days): integer weights.
_MONTH_LCM = lcm(28, 29, 30, 31)


def _fail(code: str, message: str) -> ValueError:
    return ValueError(f"{code}: {message}")


class Period(NamedTuple):
    """Dates ``start`` to ``end``, both inclusive."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


class ScheduleLine(NamedTuple):
    """``amount`` minor units recognised over ``period``; unpacks as ``(period, amount)``."""

    period: Period
    amount: int


def _check_period(start: date, end: date, what: str = "service period") -> None:
    if start > end:
        raise _fail("period.reversed", f"{what} starts {start}, after its end {end}")


# -- ratable revenue recognition ----------------------------------------------------------------


def month_periods(start: date, end: date) -> list[Period]:
    """The calendar months ``start``..``end`` touches, clipped to it, in order.

    Raises ``ValueError`` (``period.reversed``) when ``start`` is after ``end``.
    """
    _check_period(start, end)
    out: list[Period] = []
    first = start
    while first <= end:
        last_day = calendar.monthrange(first.year, first.month)[1]
        month_end = first.replace(day=last_day)
        out.append(Period(first, min(month_end, end)))
        first = month_end + _ONE_DAY
    return out


def ratable_schedule(total: int, service_start: date, service_end: date,
                     granularity: Granularity = "monthly") -> list[ScheduleLine]:
    """Recognise ``total`` minor units evenly over ``service_start``..``service_end``.

    ``daily``: one line per day, every day the same (to one minor unit). ``monthly``: one line
    per calendar month the service period touches (partial first and last months clipped);
    every *full* month weighs the same whatever its length (February like January), a partial
    month its share of that month's days, the usual convention of monthly ratable schedules.
    Split by largest remainder, so the lines sum to ``total`` exactly and each is within one
    minor unit of its exact share; earlier lines get the leftover units first. A negative
    ``total`` (a reversal) gives the mirror image.

    Raises ``ValueError``: ``period.reversed`` when the start is after the end,
    ``schedule.granularity`` for an unknown granularity.
    """
    _check_period(service_start, service_end)
    if granularity == "daily":
        days = (service_end - service_start).days + 1
        periods = [Period(service_start + timedelta(days=i), service_start + timedelta(days=i))
                   for i in range(days)]
        weights = [1] * days
    elif granularity == "monthly":
        periods = month_periods(service_start, service_end)
        weights = [
            p.days * (_MONTH_LCM // calendar.monthrange(p.start.year, p.start.month)[1])
            for p in periods
        ]
    else:
        raise _fail("schedule.granularity",
                    f"granularity is {granularity!r}, expected 'daily' or 'monthly'")
    return [ScheduleLine(p, a) for p, a in zip(periods, allocate(total, weights), strict=True)]


def recognized_to_date(schedule: Iterable[ScheduleLine], as_of: date) -> int:
    """What ``schedule`` has recognised by the end of ``as_of``: the lines whose period has
    ended by then (a line is recognised at the end of its period). Raises nothing."""
    return sum(line.amount for line in schedule if line.period.end <= as_of)


def recognition_lines(schedule: Iterable[ScheduleLine], *,
                      recognized_through: date | None = None) -> tuple[RecognitionLine, ...]:
    """``schedule`` as canonical ``RecognitionLine`` s (for ``RevenueScheduleUpdated``); lines
    ended by ``recognized_through`` are marked ``recognized``.

    Raises ``ValueError`` (``amount.negative``) for a negative line: a canonical schedule
    never recognises a negative amount (a reversal is a new, smaller schedule).
    """
    return tuple(
        RecognitionLine(
            period_start=line.period.start, period_end=line.period.end, amount=line.amount,
            status="recognized" if recognized_through is not None
            and line.period.end <= recognized_through else "planned")
        for line in schedule)


# -- proration on amendments --------------------------------------------------------------------


def share(value: int, days: int, total_days: int) -> int:
    """The part of ``value`` earned over the first ``days`` of ``total_days``:
    ``value x days / total_days`` rounded half up. Monotone in ``days``, ``share(v, 0, n) ==
    0`` and ``share(v, n, n) == v``, so differences of shares telescope (see the module
    docstring).

    Raises ``ValueError``: ``amount.negative`` for a negative ``value``,
    ``proration.days`` unless ``0 <= days <= total_days`` and ``total_days >= 1``.
    """
    if value < 0:
        raise _fail("amount.negative", f"plan value is {value}, must not be negative")
    if total_days < 1 or not 0 <= days <= total_days:
        raise _fail("proration.days", f"{days} days of {total_days} is not a share of a period")
    return (2 * value * days + total_days) // (2 * total_days)


def segment_value(value: int, first_day: int, end_day: int, total_days: int) -> int:
    """The part of ``value`` earned on days ``[first_day, end_day)`` (0-based) of a period of
    ``total_days``: ``share(end_day) - share(first_day)``. Raises as ``share``."""
    if first_day > end_day:
        raise _fail("proration.days", f"segment [{first_day}, {end_day}) is reversed")
    return share(value, end_day, total_days) - share(value, first_day, total_days)


class Proration(NamedTuple):
    """The effect of changing plans on ``effective`` inside a billing period.

    ``credit`` (<= 0) gives back the old plan's value over the remaining days, ``charge``
    (>= 0) bills the new plan's value over the same days; ``net == credit + charge``.
    ``used_days + remaining_days == period_days``.
    """

    credit: int
    charge: int
    net: int
    used_days: int
    remaining_days: int
    period_days: int


def prorate(old_value: int, new_value: int, period_start: date, period_end: date,
            effective: date) -> Proration:
    """Upgrade or downgrade from ``old_value`` to ``new_value`` (each a plan's value for the
    whole billing period ``period_start``..``period_end``, inclusive) from ``effective`` on
    (the first day of the new plan), to the day.

    The credit is exactly what the old plan would have earned on the remaining days and the
    charge exactly what the new plan earns on them (``segment_value``), so
    ``credit + charge`` is the difference of the two plans over the remaining days, and what
    the customer pays for the period, ``old_value + credit + charge``, is the old plan's value
    for the used days plus the new plan's for the rest, to the minor unit. ``effective`` on
    the period's first day swaps the whole period; the day after its end changes nothing.

    Raises ``ValueError``: ``period.reversed``, ``amount.negative`` for a negative plan value,
    ``proration.outside_period`` when ``effective`` is before the period or later than the
    day after its end.
    """
    _check_period(period_start, period_end, "billing period")
    total = (period_end - period_start).days + 1
    used = (effective - period_start).days
    if not 0 <= used <= total:
        raise _fail("proration.outside_period",
                    f"effective date {effective} is outside the billing period "
                    f"{period_start}..{period_end}")
    credit = -segment_value(old_value, used, total, total)
    charge = segment_value(new_value, used, total, total)
    return Proration(credit=credit, charge=charge, net=credit + charge, used_days=used,
                     remaining_days=total - used, period_days=total)


def amended_charges(values: Sequence[int], effective: Sequence[date], period_start: date,
                    period_end: date) -> list[int]:
    """What each plan of a chain of amendments earns in one billing period.

    ``values[0]`` is in force from ``period_start``; ``values[i]`` from ``effective[i - 1]``
    (non-decreasing dates inside the period, as for ``prorate``). The result, one amount per
    plan, is what the period's invoice and credit memos add up to; its sum equals
    ``values[0] + Σ prorate(...).net`` over the chain exactly (no drift).

    Raises ``ValueError`` as ``prorate``, and ``proration.unordered`` when the dates go
    backwards or ``len(effective) != len(values) - 1``.
    """
    _check_period(period_start, period_end, "billing period")
    if len(effective) != len(values) - 1:
        raise _fail("proration.unordered",
                    f"{len(values)} plans need {len(values) - 1} effective dates, "
                    f"got {len(effective)}")
    total = (period_end - period_start).days + 1
    bounds = [0]
    for day in effective:
        used = (day - period_start).days
        if not 0 <= used <= total:
            raise _fail("proration.outside_period",
                        f"effective date {day} is outside the billing period "
                        f"{period_start}..{period_end}")
        if used < bounds[-1]:
            raise _fail("proration.unordered", f"effective date {day} is before the previous one")
        bounds.append(used)
    bounds.append(total)
    return [segment_value(v, bounds[i], bounds[i + 1], total) for i, v in enumerate(values)]


def plan_value(items: Iterable[tuple[int, int]]) -> int:
    """A plan's value for one period from ``(quantity, unit_amount)`` pairs (for example a
    subscription's items). Raises ``ValueError`` (``amount.negative``) for a negative pair."""
    total = 0
    for quantity, unit_amount in items:
        if quantity < 0 or unit_amount < 0:
            raise _fail("amount.negative",
                        f"quantity {quantity} x unit_amount {unit_amount}: must not be negative")
        total += quantity * unit_amount
    return total


# -- partner commission -------------------------------------------------------------------------


def check_tier_table(table: Mapping[str, int]) -> None:
    """A tier table (tier → basis points) names every tier of ``TIER_ORDER`` with a rate in
    0..10,000, never paying a higher tier less than a lower one.

    Raises ``ValueError`` (``commission.tier_table``) naming the first problem.
    """
    missing = [t for t in TIER_ORDER if t not in table]
    if missing:
        raise _fail("commission.tier_table", f"no rate for tier(s) {', '.join(missing)}")
    previous = 0
    for tier in TIER_ORDER:
        rate = table[tier]
        if isinstance(rate, bool) or not isinstance(rate, int) or not 0 <= rate <= 10_000:
            raise _fail("commission.tier_table",
                        f"tier {tier} rate is {rate!r}, expected basis points 0..10000")
        if rate < previous:
            raise _fail("commission.tier_table",
                        f"tier {tier} pays {rate} bp, less than a lower tier's {previous} bp")
        previous = rate


def commission(paid: int, rate_bp: int) -> int:
    """Commission on ``paid`` minor units at ``rate_bp``: ``apply_rate_bp``, rounded half away
    from zero, exactly what ``CommissionAccrued`` checks. A refund (negative ``paid``) claws
    back the mirror amount. Never larger in size than ``paid``.

    Raises ``ValueError`` (``commission.rate``) unless ``0 <= rate_bp <= 10_000``.
    """
    if isinstance(rate_bp, bool) or not isinstance(rate_bp, int) or not 0 <= rate_bp <= 10_000:
        raise _fail("commission.rate", f"rate is {rate_bp!r}, expected basis points 0..10000")
    return apply_rate_bp(paid, rate_bp)


def commission_for_tier(paid: int, tier: str,
                        table: Mapping[str, int] = DEFAULT_TIER_RATES_BP) -> int:
    """``commission`` at ``tier``'s rate in ``table``.

    Raises ``ValueError``: ``commission.unknown_tier`` for a tier the table does not name,
    ``commission.rate`` for a rate outside 0..10,000 (check tables with ``check_tier_table``).
    """
    try:
        rate = table[tier]
    except KeyError:
        raise _fail("commission.unknown_tier", f"no commission rate for tier {tier!r}") from None
    return commission(paid, rate)


def commission_increments(payments: Sequence[int], rate_bp: int) -> list[int]:
    """The commission of each payment on one invoice, so that they add up exactly.

    Payment ``i`` earns ``commission(cum_i) - commission(cum_{i-1})`` where ``cum_i`` is the
    amount paid up to and including it; the sum is ``commission(sum(payments))``, so paying
    in instalments never earns a partner more or less than paying at once. Refunds (negative
    payments) claw back.

    Raises ``ValueError``: ``commission.rate``; ``commission.over_refunded`` when the refunds
    take the cumulative paid amount below zero.
    """
    out: list[int] = []
    cum = 0
    earned = commission(0, rate_bp)
    for i, amount in enumerate(payments):
        cum += amount
        if cum < 0:
            raise _fail("commission.over_refunded",
                        f"payment {i} takes the amount paid to {cum}, below zero")
        now = commission(cum, rate_bp)
        out.append(now - earned)
        earned = now
    return out


# -- credit memos -------------------------------------------------------------------------------


def reversing_credit_memo(invoice: InvoiceIssued | InvoiceIssuedV2, *, issued_at: datetime,
                          credit_memo_id: str | None = None, number: str | None = None,
                          reason: Literal["refund", "service_credit", "pricing_correction",
                                          "cancellation", "other"] = "cancellation",
                          ) -> CreditMemoIssued:
    """A credit memo that fully reverses ``invoice``: every line with its quantity, unit
    amount and amount, and the whole tax, credited (a credit memo's positive amounts are
    credit), so that its ``signed_lines`` cancel the invoice's line by line and in total.

    ``credit_memo_id`` defaults to one derived from the invoice id (the same invoice always
    gets the same reversal id, so a retried reversal is deduplicated); ``number`` to
    ``CM-<invoice number>``.

    Raises ``ValueError`` (``credit_memo.nothing_to_reverse``) for an invoice whose total is
    zero: there is nothing to credit and a credit memo must credit something.
    """
    if invoice.total == 0:
        raise _fail("credit_memo.nothing_to_reverse",
                    f"invoice {invoice.invoice_id} totals zero; nothing to reverse")
    lines = tuple(
        CreditMemoLine(line_id=line.line_id, product_id=line.product_id,
                       description=line.description[:2000], quantity=line.quantity,
                       unit_amount=line.unit_amount, amount=line.amount)
        for line in invoice.lines)
    return CreditMemoIssued(
        credit_memo_id=credit_memo_id or derive_id("credit_memo", "reversal",
                                                   invoice.invoice_id),
        number=number or f"CM-{invoice.number}"[:100], customer_id=invoice.customer_id,
        invoice_id=invoice.invoice_id, currency=invoice.currency, issued_at=issued_at,
        reason=reason, lines=lines, subtotal=invoice.subtotal, tax=invoice.tax,
        total=invoice.total)


def signed_lines(doc: InvoiceIssued | InvoiceIssuedV2 | CreditMemoIssued
                 ) -> list[tuple[str, int]]:
    """The receivable effect of a document as ``(what, amount)`` pairs, positive for what the
    customer owes: an invoice's lines and tax as they are, a credit memo's negated.
    ``what`` is ``line:<line id>`` or ``tax``. Raises nothing."""
    sign = -1 if isinstance(doc, CreditMemoIssued) else 1
    out = [(f"line:{line.line_id}", sign * line.amount) for line in doc.lines]
    out.append(("tax", sign * doc.tax))
    return out


# -- currencies -----------------------------------------------------------------------------------


def to_minor_units(major: Decimal | str | int, currency: str) -> int:
    """An amount in major units (``"12.345"`` BHD) as minor units of ``currency`` (12345).

    Exact: never rounds. Raises ``ValueError``: ``money.unknown_currency``;
    ``money.sub_minor_precision`` when the amount has more decimals than the currency's
    exponent (``"1.5"`` JPY) or is not a finite number.
    """
    check_currency(currency)
    try:
        value = Decimal(major)
    except (InvalidOperation, ValueError):
        raise _fail("money.sub_minor_precision",
                    f"{major!r} is not a decimal amount") from None
    if not value.is_finite():
        raise _fail("money.sub_minor_precision", f"{major!r} is not a finite amount")
    scaled = value.scaleb(CURRENCY_EXPONENTS[currency])
    if scaled != scaled.to_integral_value():
        raise _fail("money.sub_minor_precision",
                    f"{major} {currency} has more than {CURRENCY_EXPONENTS[currency]} "
                    "decimal(s)")
    return int(scaled)
