"""Lifecycle arithmetic: money is split, never created or lost (pure: no event loop)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from actors.lifecycle import (
    TIER_ORDER,
    Period,
    amended_charges,
    check_tier_table,
    commission,
    commission_for_tier,
    commission_increments,
    month_periods,
    plan_value,
    prorate,
    ratable_schedule,
    recognition_lines,
    recognized_to_date,
    reversing_credit_memo,
    segment_value,
    share,
    signed_lines,
    to_minor_units,
)
from contracts import (
    MAX_AMOUNT,
    CommissionAccrued,
    CreditMemoIssued,
    InvoiceIssued,
    InvoiceIssuedV2,
    InvoiceLine,
    TaxLine,
    contract_error,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)

# Dates around leap days and year ends; periods up to ~3 years (daily schedules stay small).
starts = st.dates(min_value=date(1999, 1, 1), max_value=date(2031, 12, 31))
lengths = st.integers(0, 3 * 366)
values = st.integers(0, MAX_AMOUNT)
small_values = st.integers(0, 10**9)


@st.composite
def periods(draw: st.DrawFn, max_days: int = 3 * 366) -> Period:
    start = draw(starts)
    return Period(start, start + timedelta(days=draw(st.integers(0, max_days - 1))))


# -- ratable recognition ---------------------------------------------------------------------------


@given(st.integers(-MAX_AMOUNT, MAX_AMOUNT), periods(), st.sampled_from(["daily", "monthly"]))
def test_recognised_revenue_over_the_life_equals_the_contract_value(
        total: int, p: Period, granularity: str) -> None:
    schedule = ratable_schedule(total, p.start, p.end, granularity)  # type: ignore[arg-type]
    assert sum(amount for _, amount in schedule) == total
    assert recognized_to_date(schedule, p.end) == total
    assert recognized_to_date(schedule, p.start - timedelta(days=1)) == 0
    # The lines tile the service period: contiguous, in order, nothing outside it.
    assert schedule[0].period.start == p.start and schedule[-1].period.end == p.end
    for a, b in itertools.pairwise(schedule):
        assert b.period.start == a.period.end + timedelta(days=1)


@given(st.integers(0, MAX_AMOUNT), periods())
def test_daily_lines_differ_by_at_most_one_minor_unit(total: int, p: Period) -> None:
    amounts = [a for _, a in ratable_schedule(total, p.start, p.end, "daily")]
    assert len(amounts) == p.days
    assert max(amounts) - min(amounts) <= 1
    assert all(abs(Fraction(a) - Fraction(total, p.days)) < 1 for a in amounts)


@given(st.integers(0, MAX_AMOUNT), periods())
def test_monthly_lines_are_each_within_a_unit_of_their_share(total: int, p: Period) -> None:
    schedule = ratable_schedule(total, p.start, p.end, "monthly")
    assert [line.period for line in schedule] == month_periods(p.start, p.end)
    months = [Fraction(line.period.days, _month_days(line.period.start)) for line in schedule]
    whole = sum(months)
    for (_, amount), m in zip(schedule, months, strict=True):
        assert abs(amount - total * m / whole) < 1


@given(st.integers(0, 10**12), periods())
def test_recognition_to_date_is_monotone(total: int, p: Period) -> None:
    schedule = ratable_schedule(total, p.start, p.end, "monthly")
    seen = [recognized_to_date(schedule, line.period.end) for line in schedule]
    assert seen == sorted(seen) and seen[-1] == total


def _month_days(d: date) -> int:
    nxt = date(d.year + d.month // 12, d.month % 12 + 1, 1)
    return (nxt - date(d.year, d.month, 1)).days


# -- proration -------------------------------------------------------------------------------------


@st.composite
def amendments(draw: st.DrawFn) -> tuple[int, int, Period, date]:
    p = draw(periods(max_days=400))
    effective = p.start + timedelta(days=draw(st.integers(0, p.days)))
    return draw(values), draw(values), p, effective


@given(amendments())
def test_proration_conserves_money(case: tuple[int, int, Period, date]) -> None:
    old, new, p, effective = case
    r = prorate(old, new, p.start, p.end, effective)
    assert r.used_days + r.remaining_days == r.period_days == p.days
    assert r.credit <= 0 <= r.charge and r.net == r.credit + r.charge
    # Old credit + new charge == the difference of the two plans over the remaining days.
    rem_old = segment_value(old, r.used_days, r.period_days, r.period_days)
    rem_new = segment_value(new, r.used_days, r.period_days, r.period_days)
    assert r.credit + r.charge == rem_new - rem_old
    # Each plan splits into used + remaining exactly; each part within half a unit of exact.
    used_old = segment_value(old, 0, r.used_days, r.period_days)
    assert used_old + rem_old == old
    assert old + r.credit == used_old
    assert abs(Fraction(-r.credit) - Fraction(old * r.remaining_days, p.days)) <= Fraction(1, 2)
    assert abs(Fraction(r.charge) - Fraction(new * r.remaining_days, p.days)) <= Fraction(1, 2)
    assert abs(Fraction(r.net) - Fraction((new - old) * r.remaining_days, p.days)) <= 1


@given(periods(max_days=400), st.lists(small_values, min_size=1, max_size=8), st.data())
def test_a_chain_of_amendments_has_no_rounding_drift(p: Period, plans: list[int],
                                                     data: st.DataObject) -> None:
    offsets = sorted(data.draw(st.lists(st.integers(0, p.days), min_size=len(plans) - 1,
                                        max_size=len(plans) - 1)))
    effective = [p.start + timedelta(days=o) for o in offsets]
    charged = amended_charges(plans, effective, p.start, p.end)
    nets = [prorate(a, b, p.start, p.end, d).net
            for a, b, d in zip(plans[:-1], plans[1:], effective, strict=True)]
    assert sum(charged) == plans[0] + sum(nets)
    # Exactly the day-weighted value, to within one rounding per plan boundary.
    bounds = [0, *offsets, p.days]
    exact = sum(Fraction(v * (bounds[i + 1] - bounds[i]), p.days) for i, v in enumerate(plans))
    assert abs(sum(charged) - exact) <= Fraction(len(plans), 2)


@given(amendments())
def test_amending_there_and_back_on_the_same_day_nets_to_zero(
        case: tuple[int, int, Period, date]) -> None:
    old, new, p, effective = case
    there = prorate(old, new, p.start, p.end, effective)
    back = prorate(new, old, p.start, p.end, effective)
    assert there.net + back.net == 0


@given(amendments())
def test_revenue_of_an_amended_contract_equals_what_it_bills(
        case: tuple[int, int, Period, date]) -> None:
    old, new, p, effective = case
    r = prorate(old, new, p.start, p.end, effective)
    value = old + r.net
    schedule = []
    if r.used_days:
        schedule += ratable_schedule(old + r.credit, p.start, effective - timedelta(days=1))
    if r.remaining_days:
        schedule += ratable_schedule(r.charge, effective, p.end, "daily")
    assert recognized_to_date(schedule, p.end) == value


def test_share_is_monotone_and_anchored() -> None:
    for total in (1, 28, 29, 30, 31, 365, 366):
        shares = [share(1001, d, total) for d in range(total + 1)]
        assert shares[0] == 0 and shares[-1] == 1001 and shares == sorted(shares)


# -- commission ------------------------------------------------------------------------------------


@st.composite
def tier_tables(draw: st.DrawFn) -> dict[str, int]:
    rates = sorted(draw(st.lists(st.integers(0, 10_000), min_size=4, max_size=4)))
    return dict(zip(TIER_ORDER, rates, strict=True))


@given(st.integers(0, MAX_AMOUNT), tier_tables())
def test_commission_never_exceeds_the_paid_amount_and_is_monotone_in_tier(
        paid: int, table: dict[str, int]) -> None:
    check_tier_table(table)
    earned = [commission_for_tier(paid, tier, table) for tier in TIER_ORDER]
    assert all(0 <= c <= paid for c in earned)
    assert earned == sorted(earned)


@given(st.integers(0, MAX_AMOUNT // 2), st.integers(0, MAX_AMOUNT // 2), st.integers(0, 10_000))
def test_commission_is_monotone_in_the_paid_amount(a: int, b: int, rate: int) -> None:
    lo, hi = sorted((a, b))
    assert commission(lo, rate) <= commission(hi, rate)
    assert commission(-hi, rate) == -commission(hi, rate)  # a refund claws back the mirror


@given(st.lists(st.integers(0, 10**12), max_size=20), st.integers(0, 10_000))
def test_commission_on_instalments_reconciles_with_the_total(payments: list[int],
                                                             rate: int) -> None:
    parts = commission_increments(payments, rate)
    assert sum(parts) == commission(sum(payments), rate)
    assert all(0 <= c <= p for c, p in zip(parts, payments, strict=True))


# (paid, tier) -> commission, by hand: the tiers' rates are 5, 10, 15 and 20 %; half a minor
# unit rounds away from zero (a refund claws back the mirror amount).
COMMISSION_TABLE = [
    (10_000, "registered", 500),
    (10, "registered", 1),  # 0.5 -> 1
    (9, "registered", 0),  # 0.45 -> 0
    (-10, "registered", -1),  # a refund of 10: -0.5 -> -1
    (15, "silver", 2),  # 1.5 -> 2
    (14, "silver", 1),  # 1.4 -> 1
    (10, "gold", 2),  # 1.5 -> 2
    (3, "gold", 0),  # 0.45 -> 0
    (25, "platinum", 5),
    (0, "platinum", 0),
]


@pytest.mark.parametrize(("paid", "tier", "earned"), COMMISSION_TABLE)
def test_commission_per_tier_as_the_table_says(paid: int, tier: str, earned: int) -> None:
    assert commission_for_tier(paid, tier) == earned


def test_the_canonical_accrual_refuses_an_amount_off_by_one() -> None:
    """The accrual checks its amount against its basis and rate: the right one is taken, one
    minor unit more or less is refused with the invariant's code."""
    def accrual(amount: int) -> CommissionAccrued:
        return CommissionAccrued(commission_id="c1", partner_id="p1", invoice_id="in1",
                                 customer_id="cu1", currency="USD", basis_amount=15,
                                 rate_bp=1_000, amount=amount, accrued_at=T0)

    assert accrual(2).amount == 2  # 1.5 -> 2, as commission_for_tier(15, "silver")
    for wrong in (1, 3):
        with pytest.raises(ValueError, match=r"^commission\.amount_mismatch: "):
            accrual(wrong)


# -- credit memos ----------------------------------------------------------------------------------


@st.composite
def invoices(draw: st.DrawFn) -> InvoiceIssued | InvoiceIssuedV2:
    n = draw(st.integers(1, 20))
    lines = []
    for i in range(n):
        q, u = draw(st.integers(0, 10_000)), draw(st.integers(0, 10**9))
        lines.append(InvoiceLine(f"il_{i}", f"prod_{i % 3}", f"line {i}", q, u, q * u))
    subtotal = sum(line.amount for line in lines)
    tax = draw(st.integers(0, 10**9))
    assume(subtotal + tax > 0)
    fields = dict(invoice_id=draw(st.text("abc123", min_size=1, max_size=20)), number="INV-1",
                  customer_id="cus_1", currency=draw(st.sampled_from(["USD", "JPY", "BHD"])),
                  issued_at=T0, period_start=date(2024, 2, 1), period_end=date(2024, 2, 29),
                  lines=lines, subtotal=subtotal, tax=tax, total=subtotal + tax)
    if draw(st.booleans()):
        return InvoiceIssued(**fields)  # type: ignore[arg-type]
    return InvoiceIssuedV2(**fields, tax_lines=(  # type: ignore[arg-type]
        TaxLine(jurisdiction="US-CA", taxable_amount=subtotal, amount=tax),))


@given(invoices())
def test_a_credit_memo_reverses_its_invoice_exactly(inv: InvoiceIssued | InvoiceIssuedV2) -> None:
    memo = reversing_credit_memo(inv, issued_at=T0)
    assert isinstance(memo, CreditMemoIssued)
    assert memo.invoice_id == inv.invoice_id and memo.currency == inv.currency
    effect: dict[str, int] = defaultdict(int)
    for what, amount in signed_lines(inv) + signed_lines(memo):
        effect[what] += amount
    assert set(effect.values()) == {0}  # every line and the tax cancel
    assert sum(a for _, a in signed_lines(inv)) == inv.total
    assert sum(a for _, a in signed_lines(memo)) == -inv.total
    assert reversing_credit_memo(inv, issued_at=T0).credit_memo_id == memo.credit_memo_id


# -- tables: edge cases ----------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end", "granularity", "expected"), [
    # A leap year: 366 days, Feb 29 included; monthly weighs February like January.
    (date(2024, 1, 1), date(2024, 12, 31), "daily", None),
    (date(2024, 1, 1), date(2024, 12, 31), "monthly", [100] * 12),
    (date(2024, 2, 1), date(2024, 2, 29), "monthly", [1200]),
    # A leap day alone, and any one-day period: one line with everything.
    (date(2024, 2, 29), date(2024, 2, 29), "daily", [1200]),
    (date(2023, 12, 31), date(2023, 12, 31), "monthly", [1200]),
    # Across a leap February: 17/31 + 10 full months + 14/31 = 11 months, full ones equal
    # (1200/11 = 109.09); the two leftover units go to the largest remainders (Jan, Dec).
    (date(2024, 1, 15), date(2024, 12, 14), "monthly",
     [60, 109, 109, 109, 109, 109, 109, 109, 109, 109, 109, 50]),
])
def test_schedule_table(start: date, end: date, granularity: str,
                        expected: list[int] | None) -> None:
    schedule = ratable_schedule(1200, start, end, granularity)  # type: ignore[arg-type]
    assert sum(a for _, a in schedule) == 1200
    if expected is None:
        assert len(schedule) == 366
        assert Period(date(2024, 2, 29), date(2024, 2, 29)) in [p for p, _ in schedule]
    else:
        assert [a for _, a in schedule] == expected


def test_zero_amounts_give_zero_lines_and_no_proration() -> None:
    assert {a for _, a in ratable_schedule(0, date(2024, 1, 1), date(2024, 3, 31))} == {0}
    r = prorate(0, 0, date(2024, 2, 1), date(2024, 2, 29), date(2024, 2, 10))
    assert (r.credit, r.charge, r.net) == (0, 0, 0)
    assert commission(0, 10_000) == 0
    assert commission_increments([], 500) == []
    assert plan_value([]) == 0


@pytest.mark.parametrize(("effective", "credit", "charge"), [
    (date(2024, 2, 1), -2900, 5800),    # from the first day: the whole period swaps
    (date(2024, 2, 29), -100, 200),     # the leap day alone: 1/29 of each plan
    (date(2024, 3, 1), 0, 0),           # the day after the period: nothing changes
])
def test_proration_table_in_a_leap_february(effective: date, credit: int, charge: int) -> None:
    r = prorate(2900, 5800, date(2024, 2, 1), date(2024, 2, 29), effective)
    assert (r.credit, r.charge) == (credit, charge)


def test_proration_of_a_one_day_period() -> None:
    day = date(2023, 2, 28)
    assert prorate(999, 1, day, day, day)[:3] == (-999, 1, -998)
    assert prorate(999, 1, day, day, day + timedelta(days=1))[:3] == (0, 0, 0)


def test_proration_in_february_of_a_common_and_a_leap_year() -> None:
    common = prorate(2800, 5600, date(2023, 2, 1), date(2023, 2, 28), date(2023, 2, 15))
    leap = prorate(2800, 5600, date(2024, 2, 1), date(2024, 2, 29), date(2024, 2, 15))
    assert (common.remaining_days, common.net) == (14, 1400)
    # Credit and charge are each the nearest unit (2800 x 15/29 = 1448.28 -> 1448 and
    # 5600 x 15/29 = 2896.55 -> 2897), so the net is within one unit of exact 1448.28.
    assert (leap.remaining_days, leap.credit, leap.charge, leap.net) == (15, -1448, 2897, 1449)


@pytest.mark.parametrize(("major", "currency", "minor"), [
    ("100", "JPY", 100), ("12.345", "BHD", 12345), ("0.001", "BHD", 1), ("12.34", "USD", 1234),
    ("0", "JPY", 0), ("-5", "JPY", -5),
])
def test_minor_units_follow_the_currency_exponent(major: str, currency: str, minor: int) -> None:
    assert to_minor_units(major, currency) == minor


def test_jpy_and_bhd_split_the_same_major_amount_at_their_own_precision() -> None:
    jpy = ratable_schedule(to_minor_units("100", "JPY"), date(2024, 1, 1), date(2024, 3, 31))
    bhd = ratable_schedule(to_minor_units("100", "BHD"), date(2024, 1, 1), date(2024, 3, 31))
    assert [a for _, a in jpy] == [34, 33, 33]
    assert [a for _, a in bhd] == [33334, 33333, 33333]
    # Half a yen does not exist: 1,005 yen at 50 % rounds half away from zero, like the ERP.
    assert commission(1005, 5000) == 503
    assert commission(to_minor_units("1.005", "BHD"), 5000) == 503


def test_credit_memo_of_a_jpy_invoice_with_a_zero_line() -> None:
    inv = InvoiceIssued("in_1", "INV-1", "cus_1", "JPY", T0, date(2024, 2, 1), date(2024, 2, 29),
                        [InvoiceLine("il_1", "prod_a", "seats", 3, 1000, 3000),
                         InvoiceLine("il_2", "prod_b", "free tier", 5, 0, 0)],
                        3000, 300, 3300)
    memo = reversing_credit_memo(inv, issued_at=T0, number="CM-9")
    assert [(ln.quantity, ln.unit_amount, ln.amount) for ln in memo.lines] == [
        (3, 1000, 3000), (5, 0, 0)]
    assert (memo.subtotal, memo.tax, memo.total, memo.number) == (3000, 300, 3300, "CM-9")


@pytest.mark.parametrize(("call", "code"), [
    (lambda: ratable_schedule(1, date(2024, 2, 2), date(2024, 2, 1)), "period.reversed"),
    (lambda: ratable_schedule(1, date(2024, 2, 1), date(2024, 2, 1), "weekly"),
     "schedule.granularity"),
    (lambda: prorate(1, 2, date(2024, 2, 1), date(2024, 2, 29), date(2024, 3, 2)),
     "proration.outside_period"),
    (lambda: prorate(1, 2, date(2024, 2, 1), date(2024, 2, 29), date(2024, 1, 31)),
     "proration.outside_period"),
    (lambda: prorate(-1, 2, date(2024, 2, 1), date(2024, 2, 29), date(2024, 2, 2)),
     "amount.negative"),
    (lambda: amended_charges([1, 2], [], date(2024, 2, 1), date(2024, 2, 29)),
     "proration.unordered"),
    (lambda: amended_charges([1, 2, 3], [date(2024, 2, 9), date(2024, 2, 8)],
                             date(2024, 2, 1), date(2024, 2, 29)), "proration.unordered"),
    (lambda: share(1, 3, 2), "proration.days"),
    (lambda: segment_value(1, 2, 1, 3), "proration.days"),
    (lambda: plan_value([(1, -1)]), "amount.negative"),
    (lambda: commission(1, 10_001), "commission.rate"),
    (lambda: commission_for_tier(1, "diamond"), "commission.unknown_tier"),
    (lambda: check_tier_table({"registered": 1, "silver": 2, "gold": 3}), "commission.tier_table"),
    (lambda: check_tier_table(dict(zip(TIER_ORDER, [5, 4, 6, 7], strict=True))),
     "commission.tier_table"),
    (lambda: check_tier_table(dict(zip(TIER_ORDER, [0, 0, 0, 10_001], strict=True))),
     "commission.tier_table"),
    (lambda: commission_increments([100, -101], 500), "commission.over_refunded"),
    (lambda: to_minor_units("1.5", "JPY"), "money.sub_minor_precision"),
    (lambda: to_minor_units("0.0001", "BHD"), "money.sub_minor_precision"),
    (lambda: to_minor_units("abc", "USD"), "money.sub_minor_precision"),
    (lambda: to_minor_units("NaN", "USD"), "money.sub_minor_precision"),
    (lambda: to_minor_units("1", "XXX"), "money.unknown_currency"),
    (lambda: recognition_lines(ratable_schedule(-3, date(2024, 1, 1), date(2024, 1, 2))),
     "amount.negative"),
])
def test_documented_raises(call: object, code: str) -> None:
    with pytest.raises(ValueError) as info:
        call()  # type: ignore[operator]
    assert contract_error(info.value).code == code


def test_zero_total_invoice_has_nothing_to_reverse() -> None:
    inv = InvoiceIssued("in_0", "INV-0", "cus_1", "BHD", T0, date(2024, 2, 1), date(2024, 2, 29),
                        [InvoiceLine("il_1", "prod_a", "trial", 1, 0, 0)], 0, 0, 0)
    with pytest.raises(ValueError, match=r"^credit_memo\.nothing_to_reverse: "):
        reversing_credit_memo(inv, issued_at=T0)


def test_recognition_lines_mark_what_is_recognised() -> None:
    schedule = ratable_schedule(300, date(2024, 1, 1), date(2024, 3, 31))
    lines = recognition_lines(schedule, recognized_through=date(2024, 2, 29))
    assert [(ln.amount, ln.status) for ln in lines] == [
        (100, "recognized"), (100, "recognized"), (100, "planned")]
