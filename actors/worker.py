"""The JetStream batch worker: the shell every consuming actor shares.

Theory of operation: bind to a durable pull consumer, then loop: fetch up to ``batch``
messages, hand the whole batch to ``handle()`` (no task per message), repeat. While ``handle``
runs, a heartbeat tells the server every ``ack_wait/3`` seconds that the unsettled messages are
still being worked on, so a slow platform never causes a concurrent redelivery. ``handle`` must
settle each delivery (ack after its effect is durable, nak with a delay, or dead-letter + term).

If ``handle`` raises a ``Retryable`` (a passing failure of the whole batch, e.g. the ledger is
busy or its disk is full), the unsettled deliveries are nak'ed with a delay (never before its
``retry_after``) and the worker carries on. Anything else (a bug) naks them too and propagates to
the supervisor, which restarts the actor.
A stop request is honoured between batches: the current batch is finished, never abandoned.

A fetch the broker cannot answer (connection down, no stream leader during an election or a
quorum loss) is tried again after a jittered backoff capped at ``OUTAGE_RETRY.cap`` (2 s): a
fetch is one small request, and the cap is how long after the broker's return a worker may
still be waiting. It is not the messages' backoff (``retry``, for naks), which grows to 30 s.
"""

from __future__ import annotations

import logging
import random
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence

import anyio
import msgspec
from anyio.abc import TaskStatus

from contracts import ContractError, Retryable

from . import otel
from .crash import crashpoint
from .deadletter import DeadLetterSink
from .infra.bus import BrokerUnavailable, ConsumerSettings, Delivery, NatsBus, OutMsg, PullConsumer
from .resilience import DeadLetter, Decision, Retry, RetryPolicy, decide
from .runtime import Actor, Backoff
from .stats import WorkerStats

__all__ = ["BatchWorker", "WorkerStats"]

log = logging.getLogger("erpgw.worker")

# Retrying a fetch the broker did not answer (see the module docstring).
OUTAGE_RETRY = Backoff(base=0.25, factor=2.0, cap=2.0)


class BatchWorker(Actor):
    fetch_timeout = 1.0

    def __init__(self, name: str, *, bus: NatsBus, stream: str, durable: str,
                 consumer: ConsumerSettings, batch: int = 100,
                 retry: Backoff | None = None, seed: int | None = None,
                 latency_observer: Callable[[float], None] | None = None) -> None:
        super().__init__(name)
        self.bus = bus
        self.stream = stream
        self.durable = durable
        self.consumer_settings = consumer
        self.batch = batch
        self.retry = retry or Backoff(base=0.5, factor=2.0, cap=30.0)
        self.policy = RetryPolicy(backoff=self.retry, min_delay=self.retry.base)
        self._rng = random.Random(seed)
        self._consumer: PullConsumer | None = None
        self._fetch_scope: anyio.CancelScope | None = None
        self.processed = 0
        self.failed = 0
        self.in_flight = 0
        self.batches = 0
        self.retried = 0
        self.last_error: str | None = None
        # Called with each posting's latency (ms) by workers that post to a platform.
        self.latency_observer = latency_observer

    def retry_delay(self, d: Delivery, err: Retryable | None = None) -> float:
        """Delay before redelivery: jittered backoff, never earlier than a ``Retry-After``."""
        delay = self.retry.delay(max(0, d.num_delivered - 1), self._rng.random())
        delay = max(delay, self.retry.base)
        if err is not None and err.retry_after is not None:
            delay = max(delay, err.retry_after)
        return delay

    def decide(self, d: Delivery, err: Exception) -> Decision:
        """The retry policy's verdict for ``d`` after ``err`` (see ``actors.resilience``)."""
        return decide(err, d.num_delivered, self.consumer_settings.max_deliver,
                      self._rng.random(), self.policy)

    async def fail(self, d: Delivery, err: Exception, dlq: DeadLetterSink,
                   **context: str | None) -> None:
        """Settle ``d`` whose work failed with ``err``: nak it with backoff when ``decide``
        says another delivery is worth it, else dead-letter it with ``context`` (business
        key, correlation id, platform response; then ``failed`` counts it). Runs in the
        actor's task. Raises what ``nak`` and ``dlq.send`` raise."""
        self.last_error = str(err)
        match self.decide(d, err):
            case Retry(delay=delay):
                await d.nak(delay=delay)
                self.retried += 1
            case DeadLetter() as verdict:
                await dlq.send(d, verdict.as_error(err), **context)
                self.failed += 1

    async def route(self, batch: Sequence[Delivery], plan: Callable[[Delivery], OutMsg | None],
                    dlq: DeadLetterSink, *, crash_at: str | None = None) -> tuple[int, int]:
        """The router's step: ``plan`` one output per delivery, publish them all as one atomic
        batch (one commit), then ack each delivery whose output is stored and ``fail`` the
        others. A delivery ``plan`` refuses (``ContractError``) is dead-lettered at once; one
        it plans nothing for (``None``) is acked. Returns ``(published, skipped)``: the
        deliveries acked after their output was stored, and those acked with nothing to
        publish. ``crash_at`` names the crash point between the commit and the acks. Runs in
        the actor's task.

        Traced (``actors.otel``): a ``route <actor>`` span per delivery, child of its
        ``traceparent``; the output planned inside it carries its context."""
        outs: list[OutMsg] = []
        owners: list[Delivery] = []
        spans: list[otel.Span] = []
        skipped = 0
        for d in batch:
            span = otel.span(f"route {self.name}", d.headers.get("traceparent"),
                             kind="consumer")
            try:
                with span.activate():
                    out = plan(d)
            except ContractError as err:
                span.fail(err)
                span.end()
                await dlq.send(d, err)
                self.failed += 1
                continue
            if out is None:
                span.end()
                skipped += 1
                await d.ack()
                continue
            outs.append(out)
            owners.append(d)
            spans.append(span)
        try:
            results = await self.bus.publish_atomic(outs)
            if crash_at is not None:
                crashpoint(crash_at)
            published = 0
            for d, outcome, span in zip(owners, results, spans, strict=True):
                if isinstance(outcome, Exception):
                    span.fail(outcome)
                    await self.fail(d, outcome, dlq)
                    continue
                await d.ack()
                published += 1
                self.processed += 1
        finally:
            for span in spans:
                span.end()
        return published, skipped

    async def gate(self) -> None:
        """Wait until the next fetch may happen. Default: at once. Adapters guarding a
        platform override it so that, while the platform is down, work waits in the stream
        instead of being fetched and failed."""

    @abstractmethod
    async def handle(self, batch: Sequence[Delivery]) -> None:
        """Process and settle every delivery of ``batch``. Runs in the worker's task."""

    async def _heartbeat(self, batch: Sequence[Delivery]) -> None:
        interval = max(0.5, self.consumer_settings.ack_wait_s / 3)
        while True:
            await anyio.sleep(interval)
            for d in batch:
                if not d.settled:
                    await d.in_progress()

    async def _nak_unsettled(self, batch: Sequence[Delivery],
                             err: Retryable | None = None) -> None:
        with anyio.move_on_after(5, shield=True):
            for d in batch:
                if not d.settled:
                    await d.nak(delay=self.retry_delay(d, err))
                    self.retried += 1

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` before fetching again, or less if a stop is requested."""
        with anyio.move_on_after(seconds):
            await self.wait_stop_requested()

    def request_stop(self) -> None:
        """Stop after the current batch; a fetch waiting for messages is abandoned at once."""
        super().request_stop()
        if self._fetch_scope is not None:
            self._fetch_scope.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._consumer = await self.bus.pull(self.stream, self.durable)
        task_status.started()
        outage_attempt = 0
        while not self.stop_requested:
            await self.gate()
            if self.stop_requested:
                break
            batch: list[Delivery] = []
            try:
                with anyio.CancelScope() as self._fetch_scope:
                    batch = await self._consumer.fetch(self.batch, timeout=self.fetch_timeout)
            except BrokerUnavailable as exc:
                self.last_error = str(exc)
                delay = OUTAGE_RETRY.delay(outage_attempt, self._rng.random()) + 0.05
                outage_attempt += 1
                log.info("%s: broker unavailable, retrying in %.2f s", self.name, delay)
                await self._pause(delay)
                continue
            finally:
                self._fetch_scope = None
            outage_attempt = 0
            if not batch:
                continue
            self.in_flight = len(batch)
            started = time.monotonic()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._heartbeat, batch)
                    await self.handle(batch)
                    tg.cancel_scope.cancel()
            except Exception as exc:
                inner: BaseException = exc
                while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
                    inner = inner.exceptions[0]
                if isinstance(inner, Retryable):
                    # A passing failure of the whole batch (the ledger is busy or full): its
                    # unsettled messages come back after a delay; the actor need not restart.
                    self.last_error = f"[{inner.code}] {inner}"
                    log.error("%s: batch of %d will be redelivered: %s", self.name, len(batch),
                              self.last_error)
                    await self._nak_unsettled(batch, inner)
                    continue
                self.last_error = repr(exc)
                await self._nak_unsettled(batch)
                raise
            except BaseException:
                await self._nak_unsettled(batch)
                raise
            finally:
                self.in_flight = 0
            self.batches += 1
            log.debug("%s: batch of %d in %.1f ms", self.name, len(batch),
                      (time.monotonic() - started) * 1000)

    def observe_latency(self, ms: float) -> None:
        """Report one posting's latency (ms) to the ``latency_observer``, if any."""
        if self.latency_observer is not None:
            self.latency_observer(ms)

    def worker_stats(self) -> WorkerStats:
        return WorkerStats(name=self.name, consumer=f"{self.stream}/{self.durable}",
                           processed=self.processed, failed=self.failed, retried=self.retried,
                           in_flight=self.in_flight, batches=self.batches,
                           last_error=self.last_error)

    def statistics(self) -> dict[str, object]:
        return msgspec.structs.asdict(self.worker_stats())
