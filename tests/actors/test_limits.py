"""The rate-limiter hub and actor (actors/limits.py): fail closed while down, ramp up after a
restart, the concurrency cap across incarnations (pure, with hypothesis), and the actor under
a real supervisor: crash → closed → restarted → open (F35)."""

from __future__ import annotations

import math
import time

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.limits import AccountLimiter, CrashOnce, LimiterHub, RateLimiterActor
from actors.resilience import Limiter, LimiterConfig, RateLimiter
from actors.runtime import ChildSpec, Supervisor, SupervisorEvent

from .support import WAIT

CFG = LimiterConfig(rate=10.0, burst=5, concurrency=3)


def hub(cfg: LimiterConfig = CFG) -> tuple[LimiterHub, AccountLimiter]:
    h = LimiterHub({"erp": cfg, "billing": LimiterConfig(rate=20.0, burst=10)})
    return h, h.account("erp")


def test_handles_satisfy_the_limiter_protocol() -> None:
    h, erp = hub()
    limiter: Limiter = erp  # mypy checks the protocol; the asserts check the sharing
    assert limiter.name == "erp" and limiter.config == CFG
    assert h.account("erp") is erp and [a.name for a in h.accounts] == ["erp", "billing"]
    other: Limiter = RateLimiter("x")
    assert other.name == "x"
    with pytest.raises(KeyError, match="no rate-limit budget"):
        h.account("revenue")


def test_a_closed_hub_fails_closed() -> None:
    h, erp = hub()
    assert not h.is_open  # nothing is granted before the actor opens it
    assert erp.acquire(1, 0.0) == h.closed_wait
    h.open(0.0)
    assert erp.acquire(1, 1.0) == 0.0
    h.close(1.0)
    # Whatever time passes, a closed account grants nothing; feedback is dropped.
    for t in (1.0, 5.0, 1000.0):
        assert erp.acquire(1, t) == h.closed_wait
    erp.on_throttled(30.0, 2.0)
    erp.on_success(2.0)
    stats = erp.statistics()
    assert stats["open"] is False and stats["throttles"] == 0 and stats["closed_refusals"] == 4
    assert stats["in_flight"] == 1 and stats["granted"] == 1
    with pytest.raises(ValueError, match="acquire"):
        erp.acquire(CFG.burst + 1, 3.0)


def test_reopen_starts_with_an_empty_bucket() -> None:
    h, erp = hub()
    h.open(0.0)
    assert erp.acquire(1, 10.0) == 0.0  # a long idle time filled the first bucket
    h.close()
    h.open(20.0)
    wait = erp.acquire(1, 20.0)
    assert wait == pytest.approx(1 / CFG.rate)  # ramp up at `rate`, no burst
    assert erp.acquire(1, 20.0 + wait) == 0.0
    assert h.incarnation == 2 and erp.statistics()["incarnation"] == 2


def test_an_old_release_frees_the_old_slot_never_a_new_one() -> None:
    h, erp = hub()
    h.open(0.0)
    granted = 0
    t = 0.0
    while granted < 2:
        t += 0.2
        granted += erp.acquire(1, t) == 0.0
    h.close()  # the actor died with two calls in flight
    erp.release(1)  # one of them ends while it is down
    h.open(t)
    t += 10.0
    assert erp.acquire(1, t) == 0.0  # the cap is 3: one old call + this one
    assert erp.acquire(1, t) == 0.0  # ... + this one
    assert erp.acquire(1, t) == math.inf  # cap reached: the old call still holds its slot
    erp.release(1)  # the old call ends: its slot comes back, nothing more
    assert erp.acquire(1, t) == 0.0
    assert erp.acquire(1, t) == math.inf
    assert erp.outstanding == 3
    with pytest.raises(ValueError, match="release"):
        erp.release(4)


def test_a_retry_after_deadline_survives_a_restart() -> None:
    h, erp = hub()
    h.open(0.0)
    erp.on_throttled(30.0, 1.0)
    h.close()
    h.open(2.0)
    assert erp.hold_until == 31.0
    assert erp.acquire(1, 30.0) == pytest.approx(1.0 + 1 / CFG.rate)
    assert erp.statistics()["throttles"] == 1  # counters add up across incarnations


_ops = st.lists(st.tuples(
    st.sampled_from(["acquire", "release", "close", "open", "throttle", "success"]),
    st.floats(min_value=0.0, max_value=0.3)), max_size=120)


@settings(max_examples=200, deadline=None)
@given(ops=_ops)
def test_caps_hold_across_restarts(ops: list[tuple[str, float]]) -> None:
    """Whatever the crashes and restarts: never more calls in flight than the cap, nothing
    granted while closed, and at most ``rate * T + burst`` permits in any window T."""
    h, erp = hub()
    now = 0.0
    h.open(now)
    in_flight = 0
    grants: list[float] = []
    for op, dt in ops:
        now += dt
        if op == "acquire":
            was_open = h.is_open
            if erp.acquire(1, now) == 0.0:
                assert was_open
                in_flight += 1
                grants.append(now)
        elif op == "release" and in_flight:
            erp.release(1)
            in_flight -= 1
        elif op == "close":
            h.close(now)
        elif op == "open":
            h.open(now)
        elif op == "throttle":
            erp.on_throttled(None, now)
        elif op == "success":
            erp.on_success(now)
        assert in_flight == erp.outstanding <= (CFG.concurrency or 0)
    for i, start in enumerate(grants):
        for j in range(i, len(grants)):
            assert j - i + 1 <= CFG.rate * (grants[j] - start) + CFG.burst + 1e-6


def test_crash_once_reads_the_fault_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"limiter.crash_after": "1.5", "limiter.down_for": "0.5"}
    monkeypatch.setattr("actors.limits.fault", values.get)
    assert CrashOnce.from_fault() == CrashOnce(1.5, 0.5)
    monkeypatch.setattr("actors.limits.fault", {"limiter.crash_after": ""}.get)
    assert CrashOnce.from_fault() == CrashOnce(0.0, 0.0)
    monkeypatch.setattr("actors.limits.fault", lambda name: None)
    assert CrashOnce.from_fault() is None
    monkeypatch.setattr("actors.limits.fault", lambda name: "-1")
    with pytest.raises(ValueError, match="crash_after"):
        CrashOnce.from_fault()


async def test_supervised_actor_crashes_closes_and_is_back_open() -> None:
    """F35 in the small: the actor opens the hub before it is ready, its crash closes it (an
    adapter gets no permit), the supervisor (production backoff) restarts it and the new
    incarnation opens it again, with an empty bucket. (How fast is a bench figure.)"""
    h, erp = hub()
    crash = CrashOnce(0.05, down_for=0.3)  # a slow restart: the outage is long enough to see
    seen: list[tuple[str, bool, float]] = []

    def on_event(ev: SupervisorEvent) -> None:
        # Decisions happen after the child's run() returned or raised: the hub's state here
        # is what adapters saw in between.
        seen.append((ev.kind, h.is_open, time.monotonic()))

    tree = Supervisor("test", [ChildSpec("rate-limiter", lambda: RateLimiterActor(
        "rate-limiter", h, interval=0.01, crash=crash))], on_event=on_event)
    async with anyio.create_task_group() as tg:
        await tg.start(tree.run)
        assert h.is_open and h.incarnation == 1  # open as soon as the tree is ready
        with anyio.fail_after(WAIT):
            while h.incarnation < 2 or not h.is_open:
                await anyio.sleep(0.005)
        assert crash.fired
        failed = [s for s in seen if s[0] == "failed"]
        assert len(failed) == 1 and failed[0][1] is False  # closed when it died
        assert h.opened_at is not None and h.closed_at is not None
        assert h.last_outage_s == h.opened_at - h.closed_at
        assert h.last_outage_s >= 0.3  # closed at least while the incarnation was down
        assert erp.acquire(1, h.opened_at) > 0  # a fresh, empty bucket
        stats = tree.statistics()["children"]
        assert isinstance(stats, list) and stats[0]["restarts"] == 1
        tree.request_stop()
    assert not h.is_open  # a normal stop closes it too
    assert erp.acquire(1, time.monotonic()) == h.closed_wait
