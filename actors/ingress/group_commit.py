"""Group commit: many concurrent handlers' publishes stored as one atomic JetStream batch.

The handlers of concurrent requests (webhooks, usage records) hand their messages to one
committer task, which stores whatever arrived while its previous commit was in flight as one
atomic batch (one fsync instead of one per message) and wakes each handler with its own
outcome. Under light load a batch is a single message, so nothing waits for company.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio

from ..infra.bus import NatsBus, OutMsg

__all__ = ["GroupCommit"]


class GroupCommit:
    """Gathers publishes from concurrent handlers; one atomic commit per gathering.

    ``publish`` (``publish_many``) runs in a handler's task and waits for its message's
    (messages') outcome; ``run`` is the committer, a task of the owning actor's task group.
    Every message of one committer must be bound for one stream (an atomic batch is).
    """

    def __init__(self, bus: NatsBus, max_batch: int = 256) -> None:
        self._bus = bus
        self._max = max_batch
        self._queue: list[tuple[OutMsg, asyncio.Future[Exception | bool]]] = []
        self._wake = anyio.Event()
        self.commits = 0

    async def publish(self, m: OutMsg) -> bool:
        """True when the stream already held this id. Raises the translated broker error."""
        fut: asyncio.Future[Exception | bool] = asyncio.get_running_loop().create_future()
        self._queue.append((m, fut))
        self._wake.set()
        outcome = await fut
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def publish_many(self, msgs: Sequence[OutMsg]) -> list[Exception | bool]:
        """``publish`` for several messages at once (one request's records): their outcomes in
        order, True for an id the stream already held, never raising for one message."""
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[Exception | bool]] = []
        for m in msgs:
            fut: asyncio.Future[Exception | bool] = loop.create_future()
            self._queue.append((m, fut))
            futs.append(fut)
        self._wake.set()
        return [await f for f in futs]

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._queue:
                take, self._queue = self._queue[:self._max], self._queue[self._max:]
                results = await self._bus.publish_atomic([m for m, _ in take])
                self.commits += 1
                for (_, fut), outcome in zip(take, results, strict=True):
                    if not fut.done():
                        fut.set_result(outcome)
