"""Metrics publisher: a JSON snapshot every second on ``<prefix>.mon.metrics``.

Fed only by ``statistics()`` of the supervision tree and the consumers' backlog, so it observes
without touching the hot path. Core NATS (at most once): a missed snapshot is harmless, and any
NATS client in any language can subscribe and read it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import anyio
import msgspec
from anyio.abc import TaskStatus

from contracts import GatewayError

from .infra.bus import NatsBus
from .runtime import Actor

__all__ = ["MetricsPublisher"]

_json = msgspec.json.Encoder()


class MetricsPublisher(Actor):
    def __init__(self, name: str, *, bus: NatsBus, subject: str,
                 snapshot: Callable[[], dict[str, object]],
                 consumers: Sequence[tuple[str, str]], interval: float = 1.0) -> None:
        super().__init__(name)
        self.bus = bus
        self.subject = subject
        self.snapshot = snapshot
        self.consumers = tuple(consumers)
        self.interval = interval
        self.published = 0
        self.backlog: dict[str, dict[str, int]] = {}
        self._t0 = time.monotonic()

    async def _backlog(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for stream, durable in self.consumers:
            try:
                pending, ack_pending = await self.bus.consumer_pending(stream, durable)
            except GatewayError:
                continue
            out[durable] = {"pending": pending, "ack_pending": ack_pending}
        return out

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self.stop_requested:
            self.backlog = await self._backlog()
            doc = {
                "at": time.time(),
                "uptime_s": round(time.monotonic() - self._t0, 3),
                "backlog": self.backlog,
                "actors": self.snapshot(),
            }
            await self.bus.emit(self.subject, _json.encode(doc))
            self.published += 1
            with anyio.move_on_after(self.interval):
                await self.wait_stop_requested()

    def statistics(self) -> dict[str, object]:
        return {"name": self.name, "published": self.published}
