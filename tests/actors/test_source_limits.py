"""The per-source token bucket of the webhook listener (``actors.ingress.abuse``), as properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.ingress.abuse import SourceLimit, SourceLimits, admit, source_key
from gateway.config import ConfigError, load_config

rates = st.floats(min_value=0.5, max_value=1000.0, allow_nan=False)
bursts = st.integers(min_value=1, max_value=50)
# Non-decreasing request times (gaps between 0 and 2 s).
times = st.lists(st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
                 min_size=1, max_size=200).map(
    lambda gaps: [1000.0 + sum(gaps[: i + 1]) for i in range(len(gaps))])


@given(rate=rates, burst=bursts, at=times)
def test_never_more_than_burst_plus_rate_times_the_window(rate: float, burst: int,
                                                          at: list[float]) -> None:
    tat = 0.0
    admitted: list[float] = []
    for now in at:
        tat, wait = admit(tat, now, rate, burst)
        if wait == 0.0:
            admitted.append(now)
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            window = admitted[j] - start
            assert j - i + 1 <= burst + rate * window + 1e-6


@given(rate=rates, burst=bursts)
def test_a_fresh_source_gets_exactly_its_burst_at_once(rate: float, burst: int) -> None:
    tat, now, outcomes = 0.0, 500.0, []
    for _ in range(burst + 3):
        tat, wait = admit(tat, now, rate, burst)
        outcomes.append(wait == 0.0)
    assert outcomes == [True] * burst + [False] * 3


@given(rate=rates, burst=bursts, at=times)
def test_a_refused_request_is_admitted_after_its_wait(rate: float, burst: int,
                                                      at: list[float]) -> None:
    tat = 0.0
    for now in at:
        before = tat
        tat, wait = admit(tat, now, rate, burst)
        if wait > 0:
            assert tat == before  # a refusal spends nothing
            assert admit(tat, now + wait + 1e-9, rate, burst)[1] == 0.0
            assert admit(tat, now + wait * 0.5, rate, burst)[1] > 0.0


@given(at=times)
def test_one_source_never_spends_anothers_budget(at: list[float]) -> None:
    limits = SourceLimits(SourceLimit(rate=5.0, burst=3, exempt=[]))
    for now in at:
        limits.check("198.51.100.7", now)  # a flooding source
    assert limits.check("203.0.113.9", at[-1]) == 0.0  # a quiet one is admitted


def test_exempt_networks_and_off() -> None:
    limits = SourceLimits(SourceLimit(rate=1.0, burst=1))  # loopback exempt by default
    assert all(limits.check("127.0.0.1", 0.0) == 0.0 for _ in range(10))
    assert limits.check("192.0.2.1", 0.0) == 0.0
    assert limits.check("192.0.2.1", 0.0) == pytest.approx(1.0)
    off = SourceLimits(SourceLimit(rate=0.0, exempt=[]))
    assert all(off.check("192.0.2.1", 0.0) == 0.0 for _ in range(10))
    with pytest.raises(ConfigError, match=r"^http\.source_limit: exempt: 'nope' is not a network"):
        load_config(env={}, overrides={"http": {"source_limit": {"exempt": ["nope"]}}})


def test_ipv6_sources_are_their_64_and_mapped_v4_is_v4() -> None:
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::9")
    assert source_key("2001:db8:1:2::1") != source_key("2001:db8:1:3::1")
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key(None) == "?"


def test_the_table_stays_bounded_and_forgets_full_buckets_first() -> None:
    limits = SourceLimits(SourceLimit(rate=1.0, burst=2, exempt=[], max_sources=3))
    limits.check("192.0.2.1", 0.0)
    limits.check("192.0.2.1", 0.0)  # this one's bucket is empty until t = 1
    for i in range(2, 6):
        limits.check(f"192.0.2.{i}", 0.9)  # the others' refill by t = 1.9
    assert len(limits) <= 3
    # Late enough that every bucket is full again: forgetting them changed nothing.
    for i in range(10, 20):
        assert limits.check(f"192.0.2.{i}", 100.0) == 0.0
    assert len(limits) <= 3
    assert math.isclose(limits.check("192.0.2.10", 100.0), 0.0)


def test_remembered_exemptions_answer_as_the_first_and_stay_bounded() -> None:
    limits = SourceLimits(SourceLimit(rate=1.0, burst=1, exempt=["10.0.0.0/8"]))
    for _ in range(3):  # asked again, the remembered answer is the same
        assert limits.check("10.1.2.3", 0.0) == 0.0
    assert limits.check("192.0.2.1", 0.0) == 0.0
    assert limits.check("192.0.2.1", 0.0) > 0.0  # not exempt, remembered or not
    assert limits.check("not-an-ip", 0.0) == 0.0 and limits.check("not-an-ip", 0.0) > 0.0
    for n in range(10_000):  # many sources: the memory of answers stays bounded
        limits.check(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", 0.0)
    assert len(limits._exempt_seen) <= 4096
    assert limits.check("10.1.2.3", 0.0) == 0.0
