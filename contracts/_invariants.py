"""Invariant checks shared by the canonical messages' ``__post_init__``.

msgspec runs ``__post_init__`` both when a message is constructed and when it is decoded, so one
check covers a mapping bug in our adapter and a bad message from a peer. A violated invariant
raises ``ValueError("<code>: <message> (field `<relative path>`)")``; msgspec appends
`` - at `$.payload` `` on decode, and ``contracts.contract_error`` joins the two into the
field path of the ``ContractError`` (``$.payload.lines[2].amount``). Codes are stable and
listed in docs/contracts.md; never change what an existing code means.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from ._money import CURRENCY_EXPONENTS

__all__ = [
    "require_known_currency",
    "require_lines_sum",
    "require_non_negative",
    "require_ordered",
    "require_same_currency",
    "violation",
]


def violation(code: str, message: str, field: str | None = None) -> ValueError:
    """The ``ValueError`` an invariant raises; ``field`` is relative to the checked struct."""
    suffix = f" (field `{field}`)" if field else ""
    return ValueError(f"{code}: {message}{suffix}")


def require_known_currency(currency: str, field: str = "currency") -> None:
    """``money.unknown_currency`` unless ``currency`` is in ``CURRENCY_EXPONENTS``."""
    if currency not in CURRENCY_EXPONENTS:
        raise violation("money.unknown_currency", f"unknown ISO-4217 currency {currency!r}",
                        field)


def require_non_negative(obj: Any, *fields: str, prefix: str = "") -> None:
    """``amount.negative`` unless every named integer field of ``obj`` is >= 0."""
    for name in fields:
        value = getattr(obj, name)
        if value is not None and value < 0:
            raise violation("amount.negative", f"{name} is {value}, must not be negative",
                            prefix + name)


def require_ordered(start: date | datetime | None, end: date | datetime | None,
                    start_name: str, end_name: str, *, code: str = "period.reversed",
                    prefix: str = "") -> None:
    """``period.reversed`` (or ``code``) when ``start`` is after ``end``; None is open-ended."""
    if start is None or end is None:
        return
    try:
        reversed_ = start > end
    except TypeError:  # a naive and an aware datetime: decode refuses naive ones (tz=True)
        raise violation("contract.constraint", "Expected `datetime` with a timezone component",
                        prefix + (start_name if getattr(start, "tzinfo", None) is None
                                  else end_name)) from None
    if reversed_:
        raise violation(code, f"{start_name} {start} is after {end_name} {end}",
                        prefix + end_name)


def require_lines_sum(amounts: Iterable[int], total: int, total_name: str,
                      *, code: str = "document.lines_total_mismatch") -> None:
    """``document.lines_total_mismatch`` (or ``code``) unless ``amounts`` add up to ``total``."""
    line_sum = sum(amounts)
    if line_sum != total:
        raise violation(code, f"lines sum to {line_sum}, {total_name} is {total}", total_name)


def require_same_currency(currency: str, items: Iterable[Any], list_name: str) -> None:
    """``money.currency_mismatch`` when an item restates a currency other than the document's."""
    for i, item in enumerate(items):
        if item.currency != currency:
            raise violation("money.currency_mismatch",
                            f"{list_name}[{i}] is in {item.currency}, the document is in "
                            f"{currency}", f"{list_name}[{i}].currency")
