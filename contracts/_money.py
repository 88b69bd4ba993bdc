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
    "split_evenly",
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
