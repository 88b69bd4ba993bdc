"""Pure tier: the token bucket / concurrency cap / lease limiter as tables and hypothesis
properties. No event loop, no clock."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.resilience import Lease, LimiterConfig, RateLimiter

CFG = LimiterConfig(rate=10.0, burst=5, concurrency=3, decrease=0.5, min_rate=1.0,
                    recovery=1.0, throttle_hold=1.0, lease_ttl=2.0, reclaim_after=10.0)


def full(cfg: LimiterConfig = CFG) -> RateLimiter:
    return RateLimiter("stripe", cfg, start_full=True)


# -- the bucket ----------------------------------------------------------------------------------


def test_starts_empty_and_ramps_at_the_rate() -> None:
    lim = RateLimiter("stripe", CFG)
    assert lim.acquire(1, 0.0) == pytest.approx(0.1)
    assert lim.acquire(1, 0.05) == pytest.approx(0.05)
    assert lim.acquire(1, 0.1) == 0.0


def test_burst_then_the_rate() -> None:
    lim = full(LimiterConfig(rate=10.0, burst=5))
    assert [lim.acquire(1, 0.0) for _ in range(5)] == [0.0] * 5
    assert lim.acquire(1, 0.0) == pytest.approx(0.1)
    assert lim.acquire(2, 0.0) == pytest.approx(0.2)
    assert lim.acquire(2, 0.2) == 0.0
    assert lim.acquire(5, 100.0) == 0.0  # idle time fills the bucket up to burst, no more
    assert lim.acquire(1, 100.0) == pytest.approx(0.1)


def test_waiting_the_advised_time_is_enough() -> None:
    lim = RateLimiter("p", LimiterConfig(rate=3.0, burst=4))
    now = 0.0
    for n in (1, 3, 2, 4, 1, 1, 4):
        wait = lim.acquire(n, now)
        if wait:
            now += wait
            assert lim.acquire(n, now) == 0.0


def test_concurrency_cap_and_release() -> None:
    lim = full()
    assert lim.acquire(2, 0.0) == 0.0
    assert lim.acquire(1, 0.0) == 0.0
    assert lim.acquire(1, 0.0) == math.inf  # 3 in flight: only a release helps
    lim.release(1)
    assert lim.acquire(1, 0.0) == 0.0
    assert lim.in_flight == 3
    lim.release(3)
    assert lim.in_flight == 0


@pytest.mark.parametrize(("n", "cfg"), [
    (0, CFG), (-1, CFG), (6, LimiterConfig(rate=1.0, burst=5)), (4, CFG),  # 4 > concurrency 3
])
def test_acquire_refuses_what_could_never_be_granted(n: int, cfg: LimiterConfig) -> None:
    with pytest.raises(ValueError):
        full(cfg).acquire(n, 0.0)


def test_release_more_than_acquired_is_a_bug() -> None:
    lim = full()
    lim.acquire(1, 0.0)
    with pytest.raises(ValueError):
        lim.release(2)
    with pytest.raises(ValueError):
        lim.release(0)


# -- adaptation ----------------------------------------------------------------------------------


def test_429_holds_until_retry_after_and_halves_the_rate() -> None:
    lim = full()
    lim.on_throttled(2.0, 10.0)
    assert lim.rate == 5.0 and lim.hold_until == 12.0
    wait = lim.acquire(1, 10.5)
    assert wait == pytest.approx(1.5 + 1 / 5.0)  # the hold, then an empty bucket at 5/s
    assert lim.acquire(1, 11.999) > 0
    assert lim.acquire(1, 12.0) > 0  # the bucket refills only from the deadline on
    assert lim.acquire(1, 12.2) == 0.0
    assert lim.lease(3, 11.0).n == 0


@pytest.mark.parametrize(("retry_after", "hold"), [
    (None, 1.0), (math.nan, 1.0), (0.0, 0.0), (-3.0, 0.0), (7.5, 7.5), (1e12, 3600.0),
    (math.inf, 3600.0),
])
def test_hold_length(retry_after: float | None, hold: float) -> None:
    lim = full()
    lim.on_throttled(retry_after, 100.0)
    assert lim.hold_until == 100.0 + hold


def test_one_decrease_per_hold_but_the_hold_is_extended() -> None:
    lim = full(LimiterConfig(rate=64.0, burst=10, min_rate=5.0))
    lim.on_throttled(2.0, 0.0)
    lim.on_throttled(3.0, 1.0)  # an echo from a call already in flight
    assert lim.rate == 32.0 and lim.hold_until == 4.0
    lim.on_throttled(0.5, 4.5)  # a fresh 429 after resuming
    assert lim.rate == 16.0
    for t in (5.5, 6.5, 7.5):
        lim.on_throttled(0.1, t)
    assert lim.rate == 5.0  # never below min_rate
    assert lim.statistics()["decreases"] == 5


def test_echoes_of_a_zero_retry_after_decrease_once() -> None:
    lim = full()
    for _ in range(5):
        lim.on_throttled(0.0, 3.0)
    assert lim.rate == 5.0 and lim.hold_until == 3.0
    assert lim.acquire(1, 3.0) == pytest.approx(0.2)  # empty bucket at the new rate


def test_additive_recovery_back_to_the_configured_rate() -> None:
    lim = full(LimiterConfig(rate=10.0, burst=5, recovery=2.0))
    lim.on_throttled(1.0, 0.0)
    assert lim.rate == 5.0
    lim.on_success(0.5)  # an answer to a call sent before the 429: ignored
    assert lim.rate == 5.0
    rates = []
    for t in (1.0, 1.1, 1.2, 1.3):
        lim.on_success(t)
        rates.append(lim.rate)
    assert rates == [7.0, 9.0, 10.0, 10.0]


def test_default_recovery_step_is_a_twentieth_of_the_rate() -> None:
    assert LimiterConfig(rate=100.0).recovery_step == 5.0
    assert LimiterConfig(rate=100.0, recovery=1.0).recovery_step == 1.0


# -- leases ----------------------------------------------------------------------------------------


def test_lease_grants_what_is_there_and_returns_unused_tokens() -> None:
    lim = full()
    lease = lim.lease(10, 0.0)
    assert (lease.n, lease.expires_at, lease.wait) == (3, 2.0, 0.0)  # concurrency 3 < burst 5
    assert lim.in_flight == 3 and lim.is_usable(lease, 1.0)
    assert lim.lease(1, 0.0) == Lease(n=0, expires_at=0.0, wait=math.inf, epoch=0)
    assert lim.return_lease(lease, 2, 0.5)
    assert lim.in_flight == 0
    assert lim.return_lease(lease, 2, 0.5) is False  # already returned
    assert not lim.is_usable(lease, 0.6)
    stats = lim.statistics()
    assert (stats["granted"], stats["used"], stats["returned"]) == (3, 1, 2)
    assert stats["tokens"] == pytest.approx(4.0)  # 5 - 3 + 2


def test_empty_bucket_lease_says_how_long_to_wait() -> None:
    lim = RateLimiter("p", CFG)
    lease = lim.lease(2, 0.0)
    assert lease.n == 0 and lease.wait == pytest.approx(0.1)
    assert lim.return_lease(lease, 0, 0.0) is False
    assert lim.lease(2, 0.25).n == 2


def test_lease_is_capped_by_max_lease_and_max_n() -> None:
    lim = full(LimiterConfig(rate=10.0, burst=50, max_lease=8))
    assert lim.lease(100, 0.0).n == 8
    assert lim.lease(3, 0.0).n == 3


def test_tokens_held_by_a_lease_do_not_refill() -> None:
    lim = full(LimiterConfig(rate=10.0, burst=5))
    lease = lim.lease(5, 0.0)
    assert lease.n == 5
    assert lim.acquire(1, 30.0) == math.inf  # the bucket could not hold it: wait for the lease
    assert lim.return_lease(lease, 5, 30.0)
    assert [lim.acquire(1, 30.0) for _ in range(6)][-2:] == [0.0, pytest.approx(0.1)]


def test_a_429_voids_leases_and_their_unused_tokens() -> None:
    lim = full()
    lease = lim.lease(2, 0.0)
    lim.on_throttled(1.0, 0.5)
    assert not lim.is_usable(lease, 0.6)
    assert lim.return_lease(lease, 2, 0.6)
    assert lim.statistics()["returned"] == 0 and lim.in_flight == 0


def test_expired_lease_is_not_usable_and_is_reclaimed_later() -> None:
    lim = full()
    lease = lim.lease(3, 0.0)
    assert lim.is_usable(lease, 1.999) and not lim.is_usable(lease, 2.0)
    assert lim.next_reclaim_at == 12.0
    assert lim.acquire(1, 11.0) == math.inf
    assert lim.acquire(1, 12.0) == 0.0  # reclaimed: its slots are back
    assert lim.return_lease(lease, 0, 12.5) is False
    assert lim.statistics()["reclaimed"] == 1 and lim.next_reclaim_at is None


@pytest.mark.parametrize("unused", [-1, 4])
def test_return_lease_refuses_impossible_counts(unused: int) -> None:
    lim = full()
    lease = lim.lease(3, 0.0)
    with pytest.raises(ValueError):
        lim.return_lease(lease, unused, 0.0)


def test_lease_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        full().lease(0, 0.0)


def test_statistics_are_json() -> None:
    lim = full()
    lim.lease(2, 0.0)
    lim.on_throttled(None, 0.0)
    stats = lim.statistics()
    assert msgspec.json.decode(msgspec.json.encode(stats)) == stats
    assert (stats["name"], stats["rate"], stats["configured_rate"], stats["leased"],
            stats["hold_until"], stats["epoch"]) == ("stripe", 5.0, 10.0, 2, 1.0, 1)
    assert RateLimiter("x").statistics()["hold_until"] is None


@pytest.mark.parametrize("bad", [
    {"rate": 0.0}, {"rate": math.inf}, {"burst": 0}, {"concurrency": 0}, {"decrease": 1.0},
    {"decrease": 0.0}, {"min_rate": 0.0}, {"rate": 5.0, "min_rate": 6.0}, {"recovery": 0.0},
    {"throttle_hold": -1.0}, {"max_retry_after": math.inf}, {"lease_ttl": 0.0},
    {"max_lease": 0}, {"reclaim_after": -1.0}, {"rate": math.nan},
])
def test_config_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LimiterConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, LimiterConfig)


# -- properties ------------------------------------------------------------------------------------

CONFIGS = st.builds(
    LimiterConfig,
    rate=st.floats(0.5, 50.0),
    burst=st.integers(1, 20),
    concurrency=st.one_of(st.none(), st.integers(1, 10)),
    decrease=st.floats(0.1, 0.9),
    min_rate=st.just(0.5),
    recovery=st.one_of(st.none(), st.floats(0.1, 10.0)),
    throttle_hold=st.floats(0.0, 3.0),
    max_retry_after=st.floats(0.0, 10.0),
    lease_ttl=st.floats(0.1, 5.0),
    max_lease=st.one_of(st.none(), st.integers(1, 10)),
    reclaim_after=st.just(1e9),  # no reclaiming here: the model tracks every lease
)
STEP = st.one_of(st.just(0.0), st.floats(0.0, 0.5), st.floats(0.0, 5.0))
OP = st.one_of(
    st.tuples(st.just("acquire"), STEP, st.integers(1, 20)),
    st.tuples(st.just("release"), STEP, st.integers(0, 100)),
    st.tuples(st.just("lease"), STEP, st.integers(1, 30)),
    st.tuples(st.just("return"), STEP, st.integers(0, 100)),
    st.tuples(st.just("throttle"), STEP,
              st.one_of(st.none(), st.just(math.nan), st.floats(-1.0, 20.0))),
    st.tuples(st.just("success"), STEP, st.none()),
)


def hold_for(cfg: LimiterConfig, retry_after: float | None) -> float:
    if retry_after is None or math.isnan(retry_after):
        return cfg.throttle_hold
    return min(max(0.0, retry_after), cfg.max_retry_after)


@dataclass
class Model:
    """What the test knows from the API alone."""

    cfg: LimiterConfig
    grants: list[tuple[float, int]] = field(default_factory=list)  # (granted at, permits used)
    leases: dict[int, tuple[Lease, float]] = field(default_factory=dict)
    acquired: int = 0
    deadline: float = -math.inf


def run(cfg: LimiterConfig, start_full: bool, ops: list[tuple[str, float, object]]) -> Model:
    lim = RateLimiter("p", cfg, start_full=start_full)
    m = Model(cfg)
    now = 0.0
    for op, step, arg in ops:
        now += step
        if op == "acquire":
            assert isinstance(arg, int)
            n = min(arg, cfg.burst, cfg.concurrency or arg)
            wait = lim.acquire(n, now)
            if wait == 0.0:
                assert now >= m.deadline, "granted before a Retry-After deadline"
                m.grants.append((now, n))
                m.acquired += n
            else:
                assert wait > 0
                if now < m.deadline:
                    assert wait >= m.deadline - now
        elif op == "release":
            assert isinstance(arg, int)
            if m.acquired:
                k = 1 + arg % m.acquired
                lim.release(k)
                m.acquired -= k
        elif op == "lease":
            assert isinstance(arg, int)
            lease = lim.lease(arg, now)
            assert 0 <= lease.n <= min(arg, cfg.max_lease or cfg.burst, cfg.burst)
            if lease.n:
                assert now >= m.deadline, "leased before a Retry-After deadline"
                assert lease.expires_at == now + cfg.lease_ttl
                assert lease.id not in m.leases
                m.leases[lease.id] = (lease, now)
            else:
                assert lease.wait > 0
        elif op == "return":
            assert isinstance(arg, int)
            if m.leases:
                lease_id = sorted(m.leases)[arg % len(m.leases)]
                lease, granted_at = m.leases.pop(lease_id)
                unused = arg % (lease.n + 1)
                assert lim.return_lease(lease, unused, now)
                m.grants.append((granted_at, lease.n - unused))
        elif op == "throttle":
            assert arg is None or isinstance(arg, float)
            lim.on_throttled(arg, now)
            m.deadline = max(m.deadline, now + hold_for(cfg, arg))
            assert lim.hold_until == m.deadline
        else:
            lim.on_success(now)
        # concurrency never exceeds the cap, and the limiter agrees with the model
        in_flight = m.acquired + sum(lease.n for lease, _ in m.leases.values())
        assert lim.in_flight == in_flight
        if cfg.concurrency is not None:
            assert in_flight <= cfg.concurrency
        assert 0 < cfg.min_rate <= lim.rate <= cfg.rate
    # leases still out count as fully used
    m.grants.extend((at, lease.n) for lease, at in m.leases.values())
    return m


def assert_rate_bound(m: Model) -> None:
    """Permits used in any window [a, b] <= rate * (b - a) + burst (counted at grant time)."""
    grants = sorted(m.grants)
    times = [t for t, _ in grants]
    prefix = [0]
    for _, used in grants:
        prefix.append(prefix[-1] + used)
    for i, a in enumerate(times):
        for j in range(i, len(times)):
            if j + 1 < len(times) and times[j + 1] == times[j]:
                continue  # take whole instants
            used = prefix[j + 1] - prefix[i]
            bound = m.cfg.rate * (times[j] - a) + m.cfg.burst
            assert used <= bound + 1e-6, f"{used} permits in [{a}, {times[j]}] > {bound}"


@given(cfg=CONFIGS, start_full=st.booleans(), ops=st.lists(OP, max_size=60))
def test_grants_never_exceed_rate_times_elapsed_plus_burst(
        cfg: LimiterConfig, start_full: bool, ops: list[tuple[str, float, object]]) -> None:
    # also asserted inside run(): no grant before a deadline, concurrency <= cap, lease sizes
    assert_rate_bound(run(cfg, start_full, ops))


@given(cfg=CONFIGS, n=st.integers(1, 20), ops=st.lists(STEP, min_size=1, max_size=40))
def test_waiting_the_advised_time_is_always_enough(cfg: LimiterConfig, n: int,
                                                   ops: list[float]) -> None:
    """A caller that waits the advised time is granted then, and never beats the bound."""
    n = min(n, cfg.burst, cfg.concurrency or n)
    lim = RateLimiter("p", cfg)
    now = 0.0
    m = Model(cfg)
    for step in ops:
        now += step
        wait = lim.acquire(n, now)
        if wait:
            assert wait < math.inf
            now += wait
            assert lim.acquire(n, now) == 0.0
        m.grants.append((now, n))
        lim.release(n)
    assert_rate_bound(m)


@given(retry_after=st.floats(0.0, 50.0), probes=st.lists(st.floats(0.0, 1.0), max_size=30),
       cfg=CONFIGS)
def test_nothing_is_granted_before_the_deadline(retry_after: float, probes: list[float],
                                                cfg: LimiterConfig) -> None:
    lim = RateLimiter("p", cfg, start_full=True)
    lim.on_throttled(retry_after, 100.0)
    deadline = 100.0 + hold_for(cfg, retry_after)
    for frac in probes:
        now = 100.0 + frac * (deadline - 100.0)
        if now >= deadline:
            continue
        assert lim.acquire(1, now) >= deadline - now
        lease = lim.lease(5, now)
        assert lease.n == 0 and lease.wait >= deadline - now


@given(cfg=CONFIGS.map(lambda c: msgspec.structs.replace(c, reclaim_after=1.0)),
       ops=st.lists(OP, max_size=60))
def test_reclaiming_never_breaks_the_cap(cfg: LimiterConfig,
                                         ops: list[tuple[str, float, object]]) -> None:
    lim = RateLimiter("p", cfg, start_full=True)
    now = 0.0
    leases: list[Lease] = []
    acquired = 0
    for op, step, arg in ops:
        now += step
        if op == "acquire" and isinstance(arg, int):
            n = min(arg, cfg.burst, cfg.concurrency or arg)
            if lim.acquire(n, now) == 0.0:
                acquired += n
        elif op == "release" and acquired:
            lim.release(acquired)
            acquired = 0
        elif op == "lease" and isinstance(arg, int):
            lease = lim.lease(arg, now)
            if lease.n:
                leases.append(lease)
        elif op == "return" and leases:
            lim.return_lease(leases.pop(0), 0, now)  # False when it was reclaimed
        elif op == "throttle":
            lim.on_throttled(2.0, now)
        assert lim.in_flight <= acquired + sum(lease.n for lease in leases)
        if cfg.concurrency is not None:
            assert lim.in_flight <= cfg.concurrency
