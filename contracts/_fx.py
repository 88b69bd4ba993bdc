"""Exchange rates and currency conversion: exact decimals in, integer minor units out.

A rate is the price of one *major* unit of the transaction currency in major units of the
functional currency (``"0.9215"``: one USD is 0.9215 EUR), kept as an exact ``Decimal`` read
from a string (never a float: ``parse_rate`` refuses one). It is positive, finite and has at
most ``MAX_RATE_DECIMALS`` fraction digits, so it travels as a plain string in commands and
APIs and means the same everywhere.

``convert`` turns an amount in minor units of one currency into minor units of another: the
exact product ``amount x rate x 10^(exp_to - exp_from)`` (ISO-4217 exponents of
``CURRENCY_EXPONENTS``: JPY 0, USD 2, KWD 3) computed as a fraction, then rounded **once**,
half to even. Half-even because a ledger converts many amounts with the same rate: ties go
up as often as down, so conversions do not drift one way in total (rounding half up always
adds the half unit). Nothing is ever rounded twice: a converted amount is never converted
again, and the amounts derived from converted ones (a rounding line, an exchange gain) are
differences of integers, exact.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from fractions import Fraction

from ._money import CURRENCY_EXPONENTS, check_currency

__all__ = ["MAX_RATE_DECIMALS", "convert", "format_rate", "parse_rate"]

# A rate's fraction digits (ERPs keep rates to 6..10 decimals; 12 leaves room for cross rates).
MAX_RATE_DECIMALS = 12
# Largest rate accepted (one major unit of the weakest currency in the strongest is far below).
_MAX_RATE = Decimal(10) ** 9
_QUANTUM = Decimal(1).scaleb(-MAX_RATE_DECIMALS)


def parse_rate(value: Decimal | str | int) -> Decimal:
    """``value`` as an exact, positive rate (``"1.0842"`` → ``Decimal("1.0842")``).

    Raises ``ValueError`` (``fx.invalid_rate``) for a float, a non-number, a value not above
    zero or above 10^9, or one with more than ``MAX_RATE_DECIMALS`` fraction digits.
    """
    if isinstance(value, float) or isinstance(value, bool):
        raise ValueError("fx.invalid_rate: a float cannot carry an exact rate; send a string")
    try:
        rate = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"fx.invalid_rate: {value!r} is not a decimal rate") from None
    if not rate.is_finite() or not 0 < rate <= _MAX_RATE:
        raise ValueError(f"fx.invalid_rate: rate {value!r} must be above 0 and at most 10^9")
    if rate != rate.quantize(_QUANTUM):
        raise ValueError(f"fx.invalid_rate: rate {value!r} has more than {MAX_RATE_DECIMALS} "
                         "fraction digits")
    return rate


def format_rate(rate: Decimal) -> str:
    """``rate`` as the plain string a command or an API carries (no exponent notation,
    no trailing zeros): ``format_rate(Decimal("1.50")) == "1.5"``. Raises nothing."""
    return format(rate.normalize(), "f")


def convert(amount: int, from_currency: str, to_currency: str, rate: Decimal) -> int:
    """``amount`` minor units of ``from_currency`` in minor units of ``to_currency`` at
    ``rate`` (``to`` major units per ``from`` major unit), rounded once, half to even.

    ``convert(12345, "USD", "JPY", Decimal("151.5")) == 18703`` (123.45 USD = 18702.675 JPY);
    a negative amount converts to the mirror image of its absolute value. The same currency
    at rate 1 returns ``amount`` unchanged.

    Raises ``ValueError``: ``money.unknown_currency``; ``fx.invalid_rate`` (see
    ``parse_rate``); ``money.not_minor_units`` when ``amount`` is not an ``int``.
    """
    check_currency(from_currency)
    check_currency(to_currency)
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise ValueError(f"money.not_minor_units: {amount!r} is not an int of minor units")
    rate = parse_rate(rate)
    shift = CURRENCY_EXPONENTS[to_currency] - CURRENCY_EXPONENTS[from_currency]
    exact = abs(amount) * Fraction(rate) * Fraction(10) ** shift
    units = round(exact)  # Fraction.__round__: to the nearest int, ties to even
    return units if amount >= 0 else -units
