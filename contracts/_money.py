"""Money: integer minor units plus an ISO-4217 code. Never a float.

The exponent table says how many minor units a major unit has (USD 2, JPY 0, BHD 3). Amounts
are plain ``int`` fields on documents that carry one ``currency`` for the whole document, so a
document can never mix currencies; ``Money`` is the free-standing pair for everything else.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["CURRENCY_EXPONENTS", "Currency", "Money", "check_currency", "format_amount"]

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
