"""A worker whose fetches the broker cannot answer tries again within a bounded pause, so it
resumes soon after the broker returns (failure recovery time), whatever the outage's length.

Runs the real ``BatchWorker.run`` loop over a consumer that fails a seeded number of times;
only the pause itself is recorded instead of slept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.infra.bus import BrokerUnavailable, ConsumerSettings, Delivery
from actors.worker import OUTAGE_RETRY, BatchWorker

FAILURES = 12  # a long outage: the messages' own backoff would have reached its 30 s cap


class _Settled:
    settled = True
    num_delivered = 1


class _Consumer:
    """Fails ``FAILURES`` fetches, hands over one batch, then fails for ever."""

    def __init__(self) -> None:
        self.fetches = 0

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        self.fetches += 1
        if self.fetches == FAILURES + 1:
            return [_Settled()]
        raise BrokerUnavailable("no stream leader")


class _Bus:
    def __init__(self) -> None:
        self.consumer = _Consumer()

    async def pull(self, stream: str, durable: str) -> _Consumer:
        return self.consumer


class _Worker(BatchWorker):
    def __init__(self, bus: _Bus) -> None:
        super().__init__("outage-test", bus=bus, stream="S", durable="d",  # type: ignore[arg-type]
                         consumer=ConsumerSettings(), seed=7)
        self.pauses: list[tuple[int, float]] = []  # (fetches so far, pause)
        self.handled = 0

    async def handle(self, batch: Sequence[Delivery]) -> None:
        self.handled += len(batch)

    async def _pause(self, seconds: float) -> None:
        fetches = self.bus.consumer.fetches  # type: ignore[attr-defined]
        self.pauses.append((fetches, seconds))
        if fetches >= FAILURES + 3:
            self.request_stop()


async def test_a_long_outage_never_pauses_fetching_longer_than_the_cap() -> None:
    worker = _Worker(_Bus())
    await worker.run()
    assert worker.handled == 1
    before = [p for n, p in worker.pauses if n <= FAILURES]
    after = [p for n, p in worker.pauses if n > FAILURES + 1]
    assert len(before) == FAILURES and len(after) == 2
    # Bounded however long the outage: never more than 2 s (+ the fixed 50 ms).
    assert max(before) <= 2.05
    # The schedule still grows (jittered) before it reaches the cap...
    assert max(before[-4:]) > OUTAGE_RETRY.base + 0.05
    # ... and starts again from the base once a fetch was answered.
    assert after[0] <= OUTAGE_RETRY.base + 0.05


def test_the_cap_is_seconds_not_the_messages_backoff() -> None:
    assert OUTAGE_RETRY.cap <= 2.0
    assert all(OUTAGE_RETRY.ceiling(n) <= 2.0 for n in range(64))
