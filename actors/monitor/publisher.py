"""The NATS side of monitoring: ``MetricsPublisher``, the thin shell around the ``Monitor``.

A task group with the lag probe (a sleep-drift probe: how late a 0.1 s sleep wakes up is how
long the event loop was busy elsewhere) and the tick loop, which also forwards queued
supervisor events as soon as they arrive. Everything is core NATS (at most once): a missed
document is harmless, and any client in any language reads JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import msgspec
from anyio.abc import TaskStatus

from contracts import GatewayError, Subjects

from ..infra.bus import NatsBus
from ..runtime import Actor
from .snapshot import Monitor, kpi_subject

__all__ = ["MetricsPublisher", "events_flushed", "flush_events"]

_json = msgspec.json.Encoder()


async def flush_events(bus: NatsBus, subjects: Subjects, monitor: Monitor) -> None:
    """Publish the queued monitoring events now."""
    for kind, data in monitor.drain_events():
        await bus.emit(subjects.mon_event(kind), data)


@asynccontextmanager
async def events_flushed(bus: NatsBus, subjects: Subjects, monitor: Monitor,
                         ) -> AsyncIterator[None]:
    """On the way out, publish what is still queued: the tree stops the metrics actor first,
    so the other children's "stopped" events and an escalation would otherwise be lost.
    Shielded and bounded (2 s); the bus must still be open."""
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
            await flush_events(bus, subjects, monitor)


class MetricsPublisher(Actor):
    """Publishes ``<prefix>.mon.metrics`` every ``interval`` s, ``<prefix>.mon.kpi`` every
    ``sla.kpi_interval_s`` s, and the queued events on ``<prefix>.mon.events.<kind>``.

    Runs the tick loop and the lag probe in its own task group. Statistics of the tree and
    the pure cores are read synchronously; the broker is asked only for the consumers'
    backlog and the DLQ stream's counts (a broker that does not answer leaves them out).
    """

    probe_interval = 0.1

    def __init__(self, name: str, *, bus: NatsBus, subjects: Subjects, monitor: Monitor,
                 snapshot: Callable[[], dict[str, object]], interval: float = 1.0) -> None:
        super().__init__(name)
        self.bus = bus
        self.subjects = subjects
        self.subject = subjects.metrics
        self.monitor = monitor
        self.snapshot = snapshot
        self.interval = interval
        self.published = 0
        self.kpis_published = 0
        self.events_published = 0
        self.backlog: dict[str, dict[str, int]] = {}
        self._wake: anyio.Event | None = None

    def wake(self) -> None:
        """Publish queued events now rather than at the next tick (synchronous, never
        blocks). The wiring calls it after queueing a supervisor event."""
        if self._wake is not None:
            self._wake.set()

    async def _backlog(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for watch in self.monitor.lanes:
            for stream, durable in watch.watched:
                try:
                    out[durable] = await self.bus.consumer_pending(stream, durable)
                except GatewayError:
                    continue
        return out

    async def _dlq_counts(self) -> tuple[int, int] | None:
        s = self.subjects
        try:
            return (await self.bus.stream_messages(s.dlq_stream, s.dlq_letters),
                    await self.bus.stream_messages(s.dlq_stream, s.dlq_resolutions))
        except GatewayError:
            return None

    async def _events(self) -> None:
        for kind, data in self.monitor.drain_events():
            await self.bus.emit(self.subjects.mon_event(kind), data)
            self.events_published += 1

    async def _tick(self) -> None:
        backlog = await self._backlog()
        dlq = await self._dlq_counts()
        doc = self.monitor.observe(self.snapshot(), backlog, dlq)
        self.backlog = doc["backlog"]
        await self.bus.emit(self.subject, _json.encode(doc))
        self.published += 1

    async def _kpi(self) -> None:
        doc, events = self.monitor.kpis()
        await self.bus.emit(kpi_subject(self.subjects), _json.encode(doc))
        self.kpis_published += 1
        for ev in events:
            await self.bus.emit(self.subjects.mon_event("sla"), _json.encode(ev))
            self.events_published += 1

    async def _probe(self) -> None:
        clock = self.monitor.clock
        while True:
            t0 = clock()
            await anyio.sleep(self.probe_interval)
            self.monitor.note_lag(clock() - t0 - self.probe_interval)
            if self.monitor.awaiting_posting:
                self.monitor.poll_postings(self.snapshot())

    def request_stop(self) -> None:
        super().request_stop()
        self.wake()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await self._tick()
            await self._events()
            tg.start_soon(self._probe)
            self.monitor.waker = self.wake
            try:
                task_status.started()
                await self._loop()
            finally:
                self.monitor.waker = None
            tg.cancel_scope.cancel()

    async def _loop(self) -> None:
        clock = self.monitor.clock
        kpi_every = self.monitor.sla.kpi_interval_s
        next_tick = clock() + self.interval
        next_kpi = clock() + min(kpi_every, self.interval)
        while not self.stop_requested:
            self._wake = anyio.Event()
            if self.monitor.has_events:
                self._wake.set()
            with anyio.move_on_after(max(0.0, min(next_tick, next_kpi) - clock())):
                await self._wake.wait()
            self._wake = None
            await self._events()
            if self.stop_requested:
                return
            now = clock()
            if now >= next_tick:
                await self._tick()
                # On schedule, not drifting; after a long stall skip the missed ticks.
                next_tick = max(next_tick + self.interval, now + self.interval / 2)
            if now >= next_kpi:
                await self._kpi()
                next_kpi = max(next_kpi + kpi_every, now + kpi_every / 2)

    def statistics(self) -> dict[str, object]:
        return {"name": self.name, "published": self.published,
                "kpis_published": self.kpis_published, "events_published": self.events_published,
                "events_dropped": self.monitor.events_dropped}
