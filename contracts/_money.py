"""Money: integer minor units plus an ISO-4217 code. Never a float.

The exponent table says how many minor units a major unit has (USD 2, JPY 0, BHD 3). Amounts
are plain ``int`` fields on documents that carry one ``currency`` for the whole document, so a
document can never mix currencies; ``Money`` is the free-standing pair for everything else.

Splitting money (a discount over lines, a payment over invoices, revenue over months) goes
through ``allocate``: largest remainder, so the parts always add up to the whole, no minor unit
lost or created, and ties broken by position so every process splits the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated

import msgspec

__all__ = [
    "CURRENCY_EXPONENTS",
    "Currency",
    "Money",
    "allocate",
    "allocate_money",
    "apply_rate_bp",
    "check_currency",
    "format_amount",
    "from_decimal",
    "split_evenly",
    "to_decimal",
]

# ISO-4217 minor-unit exponents of the currencies the gateway accepts. Extend, never change.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AED": 2, "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2, "CZK": 2,
    "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "ISK": 0,
    "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "MXN": 2, "MYR": 2, "NOK": 2, "NZD": 2, "OMR": 3,
    "PHP": 2, "PLN": 2, "SAR": 2, "SEK": 2, "SGD": 2, "THB": 2, "TND": 3, "TRY": 2, "TWD": 2,
    "USD": 2, "VND": 0, "ZAR": 2,
}  # fmt: skip

Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$", description="ISO-4217 code")]


def check_currency(code: str) -> None:
    """Raise ``ValueError`` (code ``money.unknown_currency``) for a code we do not know."""
    if code not in CURRENCY_EXPONENTS:
        raise ValueError(f"money.unknown_currency: unknown ISO-4217 currency {code!r}")


def format_amount(amount: int, currency: str) -> str:
    """Render minor units for people: ``format_amount(123456, "USD") == "1234.56 USD"``."""
    exp = CURRENCY_EXPONENTS.get(currency, 2)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**exp)
    return f"{sign}{major}.{minor:0{exp}d} {currency}" if exp else f"{sign}{major} {currency}"


class Money(msgspec.Struct, frozen=True):
    """An amount in minor units of ``currency``."""

    amount: int
    currency: Currency

    def __post_init__(self) -> None:
        check_currency(self.currency)


def allocate(amount: int, weights: Sequence[int]) -> list[int]:
    """Split ``amount`` minor units into ``len(weights)`` parts proportional to ``weights``.

    The parts always sum to ``amount`` exactly and each is within one minor unit of its exact
    share. Largest remainder: every part first gets the floor of its share, then the units left
    over go one each to the parts with the largest remainders; equal remainders go to the
    earlier position (deterministic in every process). A negative amount is split as the
    mirror image of its absolute value, so ``allocate(-a, w) == [-p for p in allocate(a, w)]``.
    A zero weight always gets zero.

    Raises ``ValueError`` (code ``money.allocation_weights``) when there are no weights, a
    weight is negative or not an ``int``, or all weights are zero.
    """
    if not weights:
        raise ValueError("money.allocation_weights: need at least one weight")
    for i, w in enumerate(weights):
        if not isinstance(w, int) or isinstance(w, bool) or w < 0:
            raise ValueError(
                f"money.allocation_weights: weight {i} is {w!r}, weights are ints >= 0")
    total = sum(weights)
    if total == 0:
        raise ValueError("money.allocation_weights: all weights are zero")
    if amount < 0:
        return [-part for part in allocate(-amount, weights)]
    parts: list[int] = []
    remainders: list[int] = []
    for w in weights:
        q, r = divmod(amount * w, total)
        parts.append(q)
        remainders.append(r)
    left = amount - sum(parts)  # < number of non-zero remainders, so zero weights stay zero
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        parts[i] += 1
    return parts


def split_evenly(amount: int, parts: int) -> list[int]:
    """``amount`` in ``parts`` parts that differ by at most one minor unit, larger ones first.

    Raises ``ValueError`` (code ``money.allocation_weights``) when ``parts`` < 1.
    """
    if parts < 1:
        raise ValueError(f"money.allocation_weights: cannot split into {parts} parts")
    return allocate(amount, [1] * parts)


def allocate_money(money: Money, weights: Sequence[int]) -> list[Money]:
    """``allocate`` for a ``Money``: the parts keep its currency."""
    return [Money(part, money.currency) for part in allocate(money.amount, weights)]


def apply_rate_bp(amount: int, rate_bp: int) -> int:
    """``amount`` x ``rate_bp`` / 10,000, rounded half away from zero (commission arithmetic).

    ``apply_rate_bp(1005, 5000) == 503``; ``apply_rate_bp(-1005, 5000) == -503``.
    """
    q, r = divmod(abs(amount) * rate_bp, 10_000)
    if 2 * r >= 10_000:
        q += 1
    return q if amount >= 0 else -q


def to_decimal(amount: int, currency: str) -> Decimal:
    """Minor units as the exact decimal amount a vendor API speaks, with exactly the
    currency's ISO-4217 exponent of fraction digits: ``to_decimal(12345, "USD") ==
    Decimal("123.45")``, ``to_decimal(500, "JPY") == Decimal("500")``, ``to_decimal(1, "KWD")
    == Decimal("0.001")``. Exact for every int (no context rounding). Raises ``ValueError``
    (``money.unknown_currency``) for a currency not in ``CURRENCY_EXPONENTS``."""
    check_currency(currency)
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise ValueError(f"money.not_minor_units: {amount!r} is not an int of minor units")
    sign, digits, _ = Decimal(amount).as_tuple()
    return Decimal((sign, digits, -CURRENCY_EXPONENTS[currency]))


def from_decimal(value: Decimal | str | int, currency: str) -> int:
    """A vendor's decimal amount back to minor units, exactly: ``from_decimal("123.45",
    "USD") == 12345``; ``"123.450"`` is accepted (trailing zeros), ``"123.456"`` in USD is
    not. Never goes through a float. Raises ``ValueError``: ``money.unknown_currency``,
    ``money.not_decimal`` (not a finite decimal), ``money.inexact`` (more fraction digits
    than the currency has minor units)."""
    check_currency(currency)
    if isinstance(value, float):
        raise ValueError("money.not_decimal: a float cannot carry an exact amount")
    try:
        d = Decimal(value)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise ValueError(f"money.not_decimal: {value!r} is not a decimal amount") from exc
    if not d.is_finite():
        raise ValueError(f"money.not_decimal: {value!r} is not a finite amount")
    exp = CURRENCY_EXPONENTS[currency]
    sign, digits, e = d.as_tuple()
    assert isinstance(e, int)
    shift = e + exp  # the exponent of the amount in minor units
    if shift >= 0:
        units = int("".join(map(str, digits)) or "0") * 10**shift
    else:
        kept, dropped = digits[:shift], digits[shift:]
        if any(dropped):
            raise ValueError(f"money.inexact: {value!r} has more than {exp} fraction digits "
                             f"for {currency}")
        units = int("".join(map(str, kept)) or "0")
    result: int = -units if sign else units
    return result
