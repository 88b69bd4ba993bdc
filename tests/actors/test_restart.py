"""Pure tier: restart intensity and backoff as tables and properties (no event loop)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.runtime import Backoff, RestartIntensity

# -- RestartIntensity ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_restarts", "period", "times", "expected"),
    [
        # exactly max_restarts within the period are allowed, the next one is refused
        (3, 5.0, [0.0, 1.0, 2.0], [True, True, True]),
        (3, 5.0, [0.0, 1.0, 2.0, 3.0], [True, True, True, False]),
        # all at the same instant
        (2, 1.0, [7.0, 7.0, 7.0], [True, True, False]),
        # intensity 0: the first restart already escalates (OTP: never restart)
        (0, 5.0, [0.0], [False]),
        # one restart per period forever is fine
        (1, 5.0, [0.0, 5.5, 11.0, 16.5], [True, True, True, True]),
        # OTP's window is closed: a restart exactly `period` ago still counts ...
        (1, 5.0, [0.0, 5.0], [True, False]),
        # ... and has aged out just after
        (1, 5.0, [0.0, 5.000001], [True, True]),
        # old restarts age out one by one: at 10.5 only 6.0 and 8.0 are within the window
        (3, 5.0, [0.0, 1.0, 6.0, 8.0, 10.5], [True, True, True, True, True]),
        (2, 5.0, [0.0, 1.0, 6.0, 8.0, 10.5], [True, True, True, True, False]),
        # a refused restart still counts: a burst keeps refusing until it ages out
        (1, 2.0, [0.0, 1.0, 1.5, 2.5, 3.6], [True, False, False, False, False]),
        (1, 2.0, [0.0, 1.0, 2.9, 5.0], [True, False, False, True]),
    ],
)
def test_intensity_table(
    max_restarts: int, period: float, times: list[float], expected: list[bool]
) -> None:
    intensity = RestartIntensity(max_restarts, period)
    assert [intensity.record(t) for t in times] == expected


def test_recent_counts_only_the_window() -> None:
    intensity = RestartIntensity(10, 5.0)
    for t in (0.0, 1.0, 2.0):
        intensity.record(t)
    assert intensity.recent(2.0) == 3
    assert intensity.recent(5.0) == 3  # 0.0 is exactly period ago: still in
    assert intensity.recent(5.5) == 2
    assert intensity.recent(7.5) == 0
    assert intensity.record(7.5) is True
    assert intensity.recent(7.5) == 1


@pytest.mark.parametrize(
    ("max_restarts", "period"), [(-1, 5.0), (1, 0.0), (1, -1.0), (1, math.nan)]
)
def test_intensity_refuses_nonsense(max_restarts: int, period: float) -> None:
    with pytest.raises(ValueError):
        RestartIntensity(max_restarts, period)


@settings(deadline=None)  # pure and fast; a loaded CI box must not make it flaky
@given(
    max_restarts=st.integers(0, 5),
    period=st.floats(0.1, 10.0),
    gaps=st.lists(st.floats(0.0, 4.0), max_size=40),
)
def test_intensity_matches_a_naive_model(
    max_restarts: int, period: float, gaps: list[float]
) -> None:
    intensity = RestartIntensity(max_restarts, period)
    now, seen = 0.0, []
    for gap in gaps:
        now += gap
        seen.append(now)
        in_window = [t for t in seen if now <= t + period]
        assert intensity.record(now) is (len(in_window) <= max_restarts)
        assert intensity.recent(now) == len(in_window)


# -- Backoff -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "ceilings"),
    [
        (Backoff(), [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]),
        (Backoff(base=1.0, factor=3.0, cap=20.0), [1.0, 3.0, 9.0, 20.0, 20.0]),
        (Backoff(base=0.5, factor=1.0, cap=10.0), [0.5, 0.5, 0.5]),
        (Backoff(base=5.0, factor=2.0, cap=1.0), [1.0, 1.0]),  # cap below base wins
        (Backoff(base=0.0, factor=2.0, cap=1.0), [0.0, 0.0, 0.0]),
        (Backoff(base=1.0, factor=2.0, cap=0.0), [0.0, 0.0]),
    ],
)
def test_ceiling_table(backoff: Backoff, ceilings: list[float]) -> None:
    assert [backoff.ceiling(n) for n in range(len(ceilings))] == pytest.approx(ceilings)


@pytest.mark.parametrize(
    "attempt", [1_100, 10**6, 10**100, 10**400], ids=["1e3", "1e6", "1e100", "1e400"]
)
def test_huge_attempts_do_not_overflow(attempt: int) -> None:
    assert Backoff().ceiling(attempt) == 10.0
    assert Backoff().delay(attempt, 0.5) == 5.0
    assert Backoff(base=0.0).ceiling(attempt) == 0.0
    assert Backoff(factor=1.0).ceiling(attempt) == 0.1


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [(0, 0.0, 0.0), (0, 0.5, 0.05), (0, 0.999, 0.0999), (3, 0.25, 0.2), (20, 0.5, 5.0)],
)
def test_delay_is_full_jitter(attempt: int, rand: float, expected: float) -> None:
    assert Backoff().delay(attempt, rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": -0.1},
        {"factor": 0.5},
        {"cap": -1.0},
        {"cap": math.inf},
        {"base": math.nan},
        {"factor": math.inf},
    ],
)
def test_backoff_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


@pytest.mark.parametrize(("attempt", "rand"), [(-1, 0.5), (0, 1.0), (0, -0.1), (0, math.nan)])
def test_delay_refuses_bad_arguments(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError):
        Backoff().delay(attempt, rand)


def test_backoff_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Backoff().base = 1.0  # type: ignore[misc]


backoffs = st.builds(
    Backoff,
    base=st.floats(0.0, 100.0),
    factor=st.floats(1.0, 10.0),
    cap=st.floats(0.0, 1000.0),
)


def _reference_ceiling(backoff: Backoff, attempt: int) -> float:
    """min(cap, base * factor**attempt) computed with exact rationals (no overflow)."""
    exact = Fraction(backoff.base) * Fraction(backoff.factor) ** attempt
    return float(min(Fraction(backoff.cap), exact))


@settings(deadline=None)  # pure and fast; a loaded CI box must not make it flaky
@given(backoffs, st.integers(0, 5_000), st.floats(0.0, 1.0, exclude_max=True))
def test_delay_within_the_ceiling(backoff: Backoff, attempt: int, rand: float) -> None:
    delay = backoff.delay(attempt, rand)
    assert 0.0 <= delay <= backoff.ceiling(attempt) <= backoff.cap
    # float pow may differ from the exact value in the last bit, never more
    assert backoff.ceiling(attempt) == pytest.approx(
        _reference_ceiling(backoff, attempt), rel=1e-12
    )


@settings(deadline=None)  # pure and fast; a loaded CI box must not make it flaky
@given(backoffs, st.integers(0, 5_000))
def test_ceiling_never_decreases(backoff: Backoff, attempt: int) -> None:
    assert backoff.ceiling(attempt) <= backoff.ceiling(attempt + 1)
    assert backoff.ceiling(attempt) == pytest.approx(
        _reference_ceiling(backoff, attempt), rel=1e-12
    )
