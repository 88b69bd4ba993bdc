"""Money allocation never loses or creates a minor unit; rates round the same everywhere."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    MAX_AMOUNT,
    Money,
    allocate,
    allocate_money,
    apply_rate_bp,
    contract_error,
    split_evenly,
)

amounts = st.integers(-MAX_AMOUNT, MAX_AMOUNT)
weights = st.lists(st.integers(0, 10**6), min_size=1, max_size=40).filter(any)


@given(amounts, weights)
def test_parts_sum_to_the_whole_and_stay_within_a_unit(amount: int, ws: list[int]) -> None:
    parts = allocate(amount, ws)
    assert len(parts) == len(ws)
    assert sum(parts) == amount
    total = sum(ws)
    for part, w in zip(parts, ws, strict=True):
        assert abs(Fraction(part) - Fraction(amount * w, total)) < 1
        if w == 0:
            assert part == 0


@given(amounts, weights)
def test_allocation_is_deterministic_and_mirrored(amount: int, ws: list[int]) -> None:
    assert allocate(amount, ws) == allocate(amount, list(ws))
    assert allocate(-amount, ws) == [-p for p in allocate(amount, ws)]


@given(st.integers(0, 10**12), weights)
def test_non_negative_amounts_give_non_negative_parts_in_weight_order(
        amount: int, ws: list[int]) -> None:
    parts = allocate(amount, ws)
    assert min(parts) >= 0
    for i in range(len(ws)):
        for j in range(len(ws)):
            if ws[i] > ws[j]:
                assert parts[i] >= parts[j]  # a heavier weight never gets less


@given(amounts, st.integers(1, 50))
def test_split_evenly_differs_by_at_most_one_larger_first(amount: int, n: int) -> None:
    parts = split_evenly(amount, n)
    assert sum(parts) == amount and max(parts) - min(parts) <= 1
    assert parts == sorted(parts, reverse=amount >= 0)


def test_largest_remainder_examples() -> None:
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]  # tie: the earlier position wins
    assert allocate(-100, [1, 1, 1]) == [-34, -33, -33]
    assert allocate(5, [3, 7]) == [2, 3]  # 1.5 / 3.5: tie on .5, earlier first
    assert allocate(10, [1, 0, 2]) == [3, 0, 7]  # 3.33 / 0 / 6.67: the larger remainder
    assert allocate(0, [1, 2]) == [0, 0]
    assert allocate(1, [1] * 3) == [1, 0, 0]
    assert allocate_money(Money(1000, "JPY"), [1, 2]) == [Money(333, "JPY"), Money(667, "JPY")]


@pytest.mark.parametrize("bad", [[], [0, 0], [1, -1], [1.5], [True]])
def test_bad_weights_have_a_code(bad: list[object]) -> None:
    with pytest.raises(ValueError) as info:
        allocate(100, bad)  # type: ignore[arg-type]
    assert contract_error(info.value).code == "money.allocation_weights"
    with pytest.raises(ValueError, match=r"money\.allocation_weights"):
        split_evenly(1, 0)


@given(st.integers(-10**12, 10**12), st.integers(0, 10_000))
def test_rate_rounds_half_away_from_zero(amount: int, rate: int) -> None:
    exact = Fraction(amount * rate, 10_000)
    got = apply_rate_bp(amount, rate)
    assert abs(Fraction(got) - exact) <= Fraction(1, 2)
    if abs(Fraction(got) - exact) == Fraction(1, 2):
        assert abs(got) > abs(exact)
    assert apply_rate_bp(-amount, rate) == -got


def test_rate_examples() -> None:
    assert apply_rate_bp(1005, 5000) == 503
    assert apply_rate_bp(-1005, 5000) == -503
    assert apply_rate_bp(18005, 1250) == 2251
    assert apply_rate_bp(100, 0) == 0 and apply_rate_bp(100, 10_000) == 100
