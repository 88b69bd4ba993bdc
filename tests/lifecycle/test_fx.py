"""Foreign exchange: each conversion rounds once, by ISO-4217 exponent, and every entry
restated in the functional currency balances to the minor unit (pure: no event loop)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.lifecycle.fx import (
    FxAccounts,
    payment_in_functional,
    realized_fx,
    signed,
    to_functional,
)
from contracts import CURRENCY_EXPONENTS, JournalLine, convert, format_rate, parse_rate

CURRENCIES = sorted(CURRENCY_EXPONENTS)
currencies = st.sampled_from(CURRENCIES)
# Rates as the ERP quotes them: up to 8 significant digits, 12 fraction digits, at most 10^9.
rates = st.builds(lambda digits, exp: Decimal(digits).scaleb(exp),
                  st.integers(1, 99_999_999), st.integers(-12, 1))
amounts = st.integers(-10**12, 10**12)


def _exact(amount: int, src: str, dst: str, rate: Decimal) -> Fraction:
    return amount * Fraction(rate) * Fraction(10) ** (CURRENCY_EXPONENTS[dst]
                                                      - CURRENCY_EXPONENTS[src])


# -- convert ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "src", "dst", "rate", "expected"), [
    (12345, "USD", "JPY", "151.5", 18703),     # 123.45 USD = 18702.675 JPY
    (18702, "JPY", "USD", "0.0066", 12343),    # 18702 JPY = 123.4332 USD
    (1000, "EUR", "KWD", "0.33", 3300),        # 10.00 EUR = 3.300 KWD
    (1, "KWD", "EUR", "2.5", 0),               # 0.0025 EUR: below half a cent
    (3, "KWD", "EUR", "2.5", 1),               # 0.0075 EUR: 0.75 cent, nearest is 1
    (5, "USD", "EUR", "0.5", 2),               # 2.5 cents: half to even → 2
    (7, "USD", "EUR", "0.5", 4),               # 3.5 cents: half to even → 4
    (-7, "USD", "EUR", "0.5", -4),             # mirror image
    (12345, "USD", "USD", "1", 12345),
])
def test_convert_table(amount: int, src: str, dst: str, rate: str, expected: int) -> None:
    assert convert(amount, src, dst, parse_rate(rate)) == expected


@given(amounts, currencies, currencies, rates)
def test_convert_rounds_once_to_the_nearest_minor_unit(amount: int, src: str, dst: str,
                                                       rate: Decimal) -> None:
    exact = _exact(amount, src, dst, rate)
    got = convert(amount, src, dst, rate)
    assert abs(got - exact) <= Fraction(1, 2)  # the nearest minor unit: one rounding
    if abs(got - exact) == Fraction(1, 2):
        assert got % 2 == 0  # ties to even
    assert convert(-amount, src, dst, rate) == -got


@pytest.mark.parametrize(("value", "code"), [
    (1.5, "fx.invalid_rate"), ("abc", "fx.invalid_rate"), ("0", "fx.invalid_rate"),
    ("-1.2", "fx.invalid_rate"), ("NaN", "fx.invalid_rate"), ("1e10", "fx.invalid_rate"),
    ("0.0000000000001", "fx.invalid_rate"),
])
def test_parse_rate_refuses(value: object, code: str) -> None:
    with pytest.raises(ValueError, match=code):
        parse_rate(value)  # type: ignore[arg-type]


def test_rates_and_currencies_are_checked() -> None:
    assert parse_rate("1.250000000000") == Decimal("1.25")
    assert format_rate(Decimal("1.2500")) == "1.25" and format_rate(Decimal("1E+2")) == "100"
    with pytest.raises(ValueError, match=r"money.unknown_currency"):
        convert(1, "USD", "XXX", Decimal(1))
    with pytest.raises(ValueError, match=r"money.not_minor_units"):
        convert(1.0, "USD", "EUR", Decimal(1))  # type: ignore[arg-type]


# -- an entry restated in the functional currency -----------------------------------------------


@st.composite
def balanced_lines(draw: st.DrawFn) -> list[JournalLine]:
    """A balanced entry: random debit-positive parts plus one line that balances them."""
    parts = draw(st.lists(st.integers(-10**9, 10**9).filter(bool), min_size=1, max_size=12))
    rest = -sum(parts)
    if rest:
        parts.append(rest)
    else:
        parts.extend([5, -5])
    return [JournalLine(account=f"{1000 + i}", debit=max(a, 0), credit=max(-a, 0))
            for i, a in enumerate(parts)]


@given(balanced_lines(), currencies, currencies, rates)
def test_restated_entry_balances_and_each_line_is_converted_once(
        lines: list[JournalLine], src: str, dst: str, rate: Decimal) -> None:
    try:
        out = to_functional(lines, src, dst, rate, rounding_account="7990")
    except ValueError as exc:  # only when every line converts to zero
        assert "journal.line_sides" in str(exc)
        assert all(convert(signed(ln), src, dst, rate) == 0 for ln in lines)
        return
    assert sum(ln.debit for ln in out) == sum(ln.credit for ln in out)
    body = [ln for ln in out if ln.memo != "fx rounding"]
    expected = [convert(signed(ln), src, dst, rate) for ln in lines]
    assert [signed(ln) for ln in body] == [a for a in expected if a]
    rounding = [ln for ln in out if ln.memo == "fx rounding"]
    assert len(rounding) <= 1
    # each line is off its exact value by at most half a unit, so the sides by at most n/2
    assert sum(abs(signed(ln)) for ln in rounding) * 2 <= len(lines)
    # the source entry still balances in its own currency (it is not changed)
    assert sum(signed(ln) for ln in lines) == 0


def test_restating_in_the_same_currency_at_par_changes_nothing() -> None:
    lines = [JournalLine(account="1200", debit=11900, memo="ar"),
             JournalLine(account="2400", credit=10000), JournalLine(account="2200", credit=1900)]
    assert to_functional(lines, "EUR", "EUR", "1") == lines


def test_rounding_difference_goes_to_the_rounding_account() -> None:
    # 3 x 0.5 cent lines: each rounds to even (0), the 1.5 cent debit rounds to 2
    lines = [JournalLine(account="1200", debit=3), JournalLine(account="4000", credit=1),
             JournalLine(account="4001", credit=1), JournalLine(account="4002", credit=1)]
    out = to_functional(lines, "USD", "EUR", "0.5", rounding_account="7990")
    assert [(ln.account, signed(ln)) for ln in out] == [("1200", 2), ("7990", -2)]
    with pytest.raises(ValueError, match=r"journal.unbalanced"):
        to_functional(lines[:2], "USD", "EUR", "0.5")


# -- realized FX gain or loss -------------------------------------------------------------------


@given(st.integers(1, 10**12), currencies, currencies, rates, rates)
def test_realized_fx_sign_and_zero(amount: int, src: str, dst: str, booked: Decimal,
                                   settled: Decimal) -> None:
    gain = realized_fx(amount, src, dst, booked, settled)
    assert realized_fx(amount, src, dst, booked, booked) == 0
    if settled > booked:
        assert gain >= 0  # the receivable is worth more when paid: a gain (or rounds to 0)
    elif settled < booked:
        assert gain <= 0
    assert realized_fx(-amount, src, dst, booked, settled) == -gain  # a refund: mirror
    # a gain of at least one unit beyond rounding shows whenever the exact gain does
    exact = _exact(amount, src, dst, settled) - _exact(amount, src, dst, booked)
    assert abs(gain - exact) <= 1


@given(st.integers(1, 10**10), st.lists(st.tuples(st.integers(1, 10**8), rates), max_size=5),
       currencies, currencies, rates)
def test_payment_in_functional_balances_and_books_the_gain_or_loss(
        amount: int, apps: list[tuple[int, Decimal]], src: str, dst: str,
        rate: Decimal) -> None:
    applied = sum(a for a, _ in apps)
    amount += applied  # a payment covers its applications
    out = payment_in_functional(amount, apps, src, dst, rate, cash_account="1000",
                                receivable_account="1200")
    assert sum(ln.debit for ln in out) == sum(ln.credit for ln in out)
    by = {acct: sum(signed(ln) for ln in out if ln.account == acct)
          for acct in ("1000", "1200", "7910", "7920")}
    assert by["1000"] == convert(amount, src, dst, rate)  # the cash: one conversion
    assert not (by["7910"] and by["7920"])
    assert by["7910"] <= 0 <= by["7920"]  # a gain is a credit, a loss a debit
    gains = sum(realized_fx(a, src, dst, r, rate) for a, r in apps)
    # the whole gain/loss is the applications' (the unapplied rest is at today's rate),
    # up to the half units the cash's single conversion rounds away
    assert abs(-(by["7910"] + by["7920"]) - gains) <= len(apps) + 1


def test_payment_at_another_rate_books_the_gain_and_at_the_same_rate_none() -> None:
    # 1,000.00 USD invoiced at 0.90 (900.00 EUR), paid at 0.92 (920.00 EUR): 20.00 EUR gain
    out = payment_in_functional(100000, [(100000, "0.90")], "USD", "EUR", "0.92",
                                cash_account="1000", receivable_account="1200",
                                accounts=FxAccounts(fx_gain="7910", fx_loss="7920"))
    assert [(ln.account, signed(ln)) for ln in out] == [
        ("1000", 92000), ("1200", -90000), ("7910", -2000)]
    out = payment_in_functional(100000, [(60000, "0.95")], "USD", "EUR", "0.92",
                                cash_account="1000", receivable_account="1200")
    assert [(ln.account, signed(ln)) for ln in out] == [
        ("1000", 92000), ("1200", -57000), ("1200", -36800), ("7920", 1800)]
    out = payment_in_functional(100000, [(100000, "0.92")], "USD", "EUR", "0.92",
                                cash_account="1000", receivable_account="1200")
    assert [ln.account for ln in out] == ["1000", "1200"]
    with pytest.raises(ValueError, match=r"payment.over_applied"):
        payment_in_functional(100, [(101, "1")], "USD", "EUR", "1", cash_account="1000",
                              receivable_account="1200")
