"""One process's share of a platform account's budget (``actors.limits.share_of``) and a
budget taking a new share live (``RateLimiter.reconfigure``), without a broker."""

from __future__ import annotations

import math

import pytest

from actors.limits import LimiterHub, share_of
from actors.resilience import LimiterConfig, RateLimiter

ACCOUNT = LimiterConfig(rate=40.0, burst=20, concurrency=8, min_rate=2.0, max_lease=10)


def test_one_process_keeps_the_account_limits_exactly() -> None:
    assert share_of(ACCOUNT, 1) is ACCOUNT


@pytest.mark.parametrize(("n", "rate", "burst", "concurrency", "min_rate"), [
    (2, 20.0, 10, 4, 1.0), (3, 40 / 3, 6, 2, 2 / 3), (16, 2.5, 1, 1, 0.125)])
def test_n_processes_each_take_a_nth_at_least_one_permit(
        n: int, rate: float, burst: int, concurrency: int, min_rate: float) -> None:
    share = share_of(ACCOUNT, n)
    assert share.rate == pytest.approx(rate)
    assert (share.burst, share.concurrency) == (burst, concurrency)
    assert share.min_rate == pytest.approx(min_rate)
    assert share.max_lease == min(burst, 10)
    assert share.recovery_step == pytest.approx(ACCOUNT.recovery_step / n)


def test_share_of_zero_members_is_refused() -> None:
    with pytest.raises(ValueError, match="members"):
        share_of(ACCOUNT, 0)


def test_a_budget_taking_a_half_share_keeps_its_adaptive_proportion() -> None:
    rl = RateLimiter("erp", ACCOUNT, start_full=True)
    rl.on_throttled(None, 0.0)  # rate 40 -> 20 (decrease 0.5)
    assert rl.rate == 20.0
    rl.reconfigure(share_of(ACCOUNT, 2), 5.0)
    assert rl.rate == 10.0  # half of the configured 20, as before half of 40
    tokens = rl.statistics()["tokens"]
    assert isinstance(tokens, float) and tokens <= 10  # at most the new burst
    rl.reconfigure(ACCOUNT, 5.0)  # the other process left
    assert rl.rate == 20.0


def test_the_hub_splits_every_account_and_back() -> None:
    hub = LimiterHub({"erp": ACCOUNT, "cpq": LimiterConfig(rate=200.0, burst=100)})
    hub.open(0.0)
    hub.set_members(4, 0.0)
    assert [h.statistics()["configured_rate"] for h in hub.accounts] == [10.0, 50.0]
    hub.close(1.0)
    hub.open(2.0)  # a new incarnation starts with the share in force
    assert hub.account("erp").statistics()["burst"] == 5
    hub.set_members(1, 3.0)
    assert hub.account("erp").statistics()["burst"] == 20


def test_a_remote_throttle_holds_the_account_and_is_not_told_again() -> None:
    hub = LimiterHub({"erp": ACCOUNT})
    told: list[tuple[str, float]] = []
    hub.on_throttle = lambda account, hold: told.append((account, hold))
    hub.open(0.0)
    assert hub.remote_throttle("erp", 5.0, 1.0)
    assert not hub.remote_throttle("nope", 5.0, 1.0)
    erp = hub.account("erp")
    assert erp.hold_until == 6.0 and erp.acquire(1, 5.9) > 0
    assert told == []  # heard from another process: not broadcast back
    erp.on_throttled(10.0, 2.0)  # this process's own 429, ending later: told
    erp.on_throttled(1.0, 2.5)  # an echo ending sooner: not told again
    assert told == [("erp", 10.0)]
    assert erp.statistics()["remote_throttles"] == 1
    assert math.isfinite(erp.hold_until)
