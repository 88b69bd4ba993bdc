"""The load generator's pacing and admission rule, its signed webhooks, and the ERP budget
every raw path spends (pure: no clock, no sockets)."""

from __future__ import annotations

import msgspec
import pytest

from bench._loadgen import LoadConfig, build_webhooks, due_now
from bench._raw import ErpBudget
from contracts.platforms.billing import BillingEvent
from contracts.platforms.signing import verify


def test_maximum_load_fills_the_window_and_no_more() -> None:
    assert due_now(0, 0, 0.0, None, 1000, 64) == 64
    assert due_now(64, 64, 0.0, None, 1000, 64) == 0  # window full: wait for an answer
    assert due_now(64, 61, 0.0, None, 1000, 64) == 3  # three answered: three more go
    assert due_now(990, 0, 0.0, 0.0, 1000, 64) == 10  # never past the total


def test_a_fixed_rate_releases_event_k_at_k_over_rate() -> None:
    # 1,000/s: event 0 at once, event k at k ms; none early.
    assert due_now(0, 0, 0.0, 1000.0, 500, 64) == 1
    assert due_now(1, 0, 0.0005, 1000.0, 500, 64) == 0
    assert due_now(1, 0, 0.0100, 1000.0, 500, 64) == 10  # events 1..10 are due at 10 ms
    # Behind schedule, the window still bounds what goes at once.
    assert due_now(100, 60, 1.0, 1000.0, 500, 64) == 4
    assert due_now(499, 0, 10.0, 1000.0, 500, 64) == 1


@pytest.mark.parametrize("args", [
    (0, 0, 0.0, None, 10, 0),       # no window
    (5, 6, 0.0, None, 10, 4),       # more outstanding than sent
    (11, 0, 0.0, None, 10, 4),      # more sent than there are
])
def test_contradictory_counts_are_refused(args: tuple[int, int, float, None, int, int]) -> None:
    with pytest.raises(ValueError):
        due_now(*args)


def test_webhooks_are_signed_before_the_clock_with_the_gateways_scheme() -> None:
    cfg = LoadConfig(url="http://127.0.0.1:1/webhooks/billing", events=5, secret="whsec_t",
                     seed=3, start_index=800_001)
    amounts: dict[str, int] = {}
    hooks = build_webhooks(cfg, now=1_800_000_000.0, amounts=amounts)
    assert [k for k, _b, _s in hooks] == [f"in_{i}" for i in range(800_001, 800_006)]
    total = 0
    for key, body, sig in hooks:
        assert verify(sig, body, ["whsec_t"], now=1_800_000_010.0) == 1_800_000_000
        event = msgspec.json.decode(body, type=BillingEvent)
        assert event.type == "invoice.finalized" and event.data.object.id == key
        total += event.data.object.total
    assert sum(amounts.values()) == total and total > 0
    with pytest.raises(Exception, match="no v1 signature matches"):
        verify(hooks[0][2], hooks[1][1], ["whsec_t"], now=1_800_000_000.0)


def test_the_erp_budget_spends_a_burst_then_paces_at_its_rate() -> None:
    b = ErpBudget(rate=50.0, burst=20)
    t = b.at
    assert [b.wait_s(t) for _ in range(20)] == [0.0] * 20  # the burst
    assert b.wait_s(t) == pytest.approx(1 / 50)  # the 21st waits one token's time
    assert b.wait_s(t) == pytest.approx(2 / 50)
    assert b.wait_s(t + 1.0) == pytest.approx(0.0)  # a second later: the bucket is full again
    assert ErpBudget(rate=0.0, burst=1).wait_s(t) == 0.0  # no budget: never waits
