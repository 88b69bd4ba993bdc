"""The bench's pure statistics: nearest-rank percentiles as the simulator's audit computes
them, summaries that never pass off a maximum as a p99.9, CDFs and time series."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench._stats import (
    auto_bin,
    backlog_series,
    cdf_points,
    latency_summary,
    nearest_rank,
    rate_series,
    redelivery_stalls,
    window_series,
)
from sim._audit import nearest_rank as audit_nearest_rank


def test_nearest_rank_small_table() -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert nearest_rank(xs, 50) == 5.0
    assert nearest_rank(xs, 95) == 10.0
    assert nearest_rank(xs, 0) == 1.0
    assert nearest_rank(xs, 100) == 10.0
    assert nearest_rank([], 99) == 0.0


def test_p99_9_of_a_thousand_is_the_999th_value_not_the_max() -> None:
    xs = [float(i) for i in range(1, 1001)]
    assert nearest_rank(xs, 99.9) == 999.0


@pytest.mark.parametrize("pct", [-1.0, 100.5])
def test_nearest_rank_refuses_out_of_range(pct: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        nearest_rank([1.0], pct)


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1,
                max_size=300), st.sampled_from([50.0, 95.0, 99.0]))
def test_agrees_with_the_simulators_audit(xs: list[float], pct: float) -> None:
    xs.sort()
    assert nearest_rank(xs, pct) == audit_nearest_rank(xs, pct)


def test_summary_leaves_p99_9_out_below_a_thousand_samples() -> None:
    s = latency_summary([5.0, 1.0, 3.0])
    assert s["n"] == 3 and s["p50"] == 3.0 and s["max"] == 5.0
    assert s["p99_9"] is None
    big = latency_summary(float(i) for i in range(2000))
    assert big["p99_9"] == 1997.0 and big["max"] == 1999.0


def test_summary_of_nothing() -> None:
    s = latency_summary([])
    assert s["n"] == 0 and s["p99"] == 0.0 and s["max"] == 0.0


def test_cdf_keeps_ends_and_is_monotonic() -> None:
    pts = cdf_points([float(i) for i in range(10_000)], points=50)
    assert pts[0] == (0.0, 1 / 10_000) and pts[-1] == (9999.0, 1.0)
    assert len(pts) < 200
    assert all(a[0] <= b[0] and a[1] < b[1] for a, b in itertools.pairwise(pts))
    assert sum(1 for _, f in pts if f > 0.99) >= 10  # the tail is drawn densely
    assert cdf_points([]) == []


def test_rate_series_counts_per_bin() -> None:
    series = rate_series([10.0, 10.1, 10.6, 11.7], start=10.0, bin_s=0.5)
    assert series == [(0.0, 4.0), (0.5, 2.0), (1.0, 0.0), (1.5, 2.0)]
    with pytest.raises(ValueError):
        rate_series([1.0], 0.0, 0.0)


def test_window_series_skips_empty_bins() -> None:
    series = window_series([(0.1, 5.0), (0.2, 7.0), (1.2, 1.0)], start=0.0, bin_s=0.5)
    assert series == [(0.0, 7.0), (1.0, 1.0)]


def test_auto_bin_gives_about_forty_bins_within_bounds() -> None:
    assert auto_bin(20.0) == 0.5
    assert auto_bin(0.1) == 0.05 and auto_bin(0.0) == 0.05
    assert auto_bin(10_000.0) == 5.0


def test_backlog_counts_what_was_due_not_only_what_arrived() -> None:
    samples = [(9.0, 0, 0), (10.0, 1, 0), (11.0, 50, 40), (12.0, 60, 60)]
    # at maximum load: arrived and not done
    assert backlog_series(samples, 10.0, None, 100) == [(0.0, 1), (1.0, 10), (2.0, 0)]
    # offered at 100/s: 101 were due after 1 s although only 50 had been let in
    assert backlog_series(samples, 10.0, 100.0, 100) == [(0.0, 1), (1.0, 60), (2.0, 40)]


def test_a_redelivery_stands_out_from_its_neighbours_and_a_backlog_does_not() -> None:
    # A backlog: latency climbs steadily to 60 s, every event queued behind the one before.
    backlog = [(i * 0.01, 10.0 * i) for i in range(6000)]
    assert redelivery_stalls(backlog) == 0
    # The same events, three of them (early, middle, late) left for ack_wait: +30 s each.
    stalled = {100, 3000, 5990}
    late = [(t, ms + 30_000.0 if i in stalled else ms) for i, (t, ms) in enumerate(backlog)]
    assert redelivery_stalls(late) == 3
    # At a steady rate with no backlog, each one late by ack_wait is counted, in any order.
    steady = [(i * 0.001, 1_500.0 + (31_000.0 if i % 97 == 5 else 0.0)) for i in range(1000)]
    assert redelivery_stalls(reversed(steady)) == sum(1 for i in range(1000) if i % 97 == 5)
    assert redelivery_stalls([]) == 0 and redelivery_stalls([(0.0, 40_000.0)]) == 1
