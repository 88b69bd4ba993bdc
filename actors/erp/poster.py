"""ERP poster: journal entry commands → one bulk ERP request per fetched batch.

Theory of operation, per batch:

1. decode every command (a contract violation is dead-lettered at once);
2. drop the ones whose idempotency key the ledger already holds (a redelivery after a crash
   or a lost ack): ack them, nothing goes to the ERP;
3. send the rest in one bulk request, each item with its idempotency key, so a retry after an
   ambiguous outcome (timeout after the ERP committed) is answered ``replayed`` and never
   posts twice;
4. write the outcomes (posted / dead-lettered) and their audit rows to the ledger in one
   transaction; only then ack (or dead-letter and term) the inputs.

A retryable failure of the whole request (429, 5xx, timeout, connection) naks the batch with a
jittered delay no shorter than the platform's ``Retry-After`` (``actors.resilience.decide``); on
the last allowed delivery the message is dead-lettered instead, with the platform's answer as
evidence.

Guarding the ERP: a circuit breaker per endpoint stops the poster from *fetching* while the ERP
is failing (work waits in the stream, nothing is nak'ed or failed), then lets one probe through;
its state changes are published on ``<prefix>.mon.events.breaker``. A rate limiter (token
bucket, adaptive on 429 and ``Retry-After``) paces the requests; it fails closed: no permit, no
request.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import anyio
from anyio.abc import TaskStatus

from contracts import (
    ContractError,
    Envelope,
    GatewayError,
    JsonCodec,
    MsgpackCodec,
    Permanent,
    PostJournalEntry,
    Retryable,
)
from contracts.platforms import erp as wire

from ..crash import crashpoint, fault
from ..deadletter import DeadLetterSink
from ..guard import PlatformGuard
from ..infra.bus import Delivery
from ..infra.http import HttpClient, PlatformRejected
from ..infra.ledger import Ledger, PostingRow
from ..replay import REPAIR_HEADER
from ..resilience import CircuitBreaker, DeadLetter, RateLimiter, Retry, Transition
from ..stats import percentiles
from ..worker import BatchWorker

__all__ = ["ErpPoster", "entry_to_wire"]

log = logging.getLogger("erpgw.erp")
_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
_json: JsonCodec[wire.BulkRequest] = JsonCodec(wire.BulkRequest)
_bulk_dec: JsonCodec[wire.BulkResponse] = JsonCodec(wire.BulkResponse)

BULK_PATH = "/erp/v1/journal-entries/bulk"


def entry_to_wire(e: PostJournalEntry) -> wire.JournalEntryIn:
    return wire.JournalEntryIn(
        idempotency_key=e.idempotency_key,
        external_id=e.external_id,
        tran_date=e.posting_date.isoformat(),
        currency=e.currency,
        memo=e.memo,
        lines=[wire.JournalLineIn(account=ln.account, debit=ln.debit, credit=ln.credit,
                                  memo=ln.memo) for ln in e.lines],
    )


class ErpPoster(BatchWorker):
    def __init__(self, name: str, *, erp: HttpClient, ledger: Ledger, dlq: DeadLetterSink,
                 breaker: CircuitBreaker | None = None, limiter: RateLimiter | None = None,
                 on_transitions: Callable[[list[Transition]], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.monotonic, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.erp = erp
        self.ledger = ledger
        self.dlq = dlq
        self.breaker = breaker
        self.limiter = limiter
        self.guard = PlatformGuard("ERP", erp, open_code="erp.breaker_open", breaker=breaker,
                                   limiter=limiter, on_transitions=on_transitions, clock=clock)
        self.posted = 0
        self.replayed = 0
        self.skipped_known = 0
        self.requests = 0
        self._latency_ms: deque[float] = deque(maxlen=20_000)
        every = fault("erp.raise_every")
        self._raise_every = int(every) if every and every.isdigit() else 0
        self._since_raise = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if fault("erp.fail_start") is not None:
            raise RuntimeError("fault hook erp.fail_start: the ERP poster fails at start")
        await super().run(task_status=task_status)

    async def gate(self) -> None:
        """While the breaker is open, wait here (work stays in the stream)."""
        await self.guard.gate(self)

    async def handle(self, batch: Sequence[Delivery]) -> None:
        if self._raise_every:
            self._since_raise += len(batch)
            if self._since_raise >= self._raise_every:
                raise RuntimeError(f"fault hook erp.raise_every:{self._raise_every}")
        # LedgerUnavailable (retryable) propagates: the worker naks the batch. Safe: the ERP
        # answers a redelivered posting 'replayed' under its idempotency key.
        todo: dict[str, tuple[Envelope, PostJournalEntry, list[Delivery]]] = {}
        for d in batch:
            try:
                env = _codec.decode(d.data)
                entry = env.payload
                if not isinstance(entry, PostJournalEntry):
                    raise ContractError(f"ERP poster cannot handle {env.type}",
                                        code="route.unexpected_type", path="$.payload.type")
            except ContractError as err:
                await self.dlq.send(d, err)
                self.failed += 1
                continue
            slot = todo.get(entry.idempotency_key)
            if slot is None:
                todo[entry.idempotency_key] = (env, entry, [d])
            else:
                slot[2].append(d)  # the same posting twice in one batch: post once
        if not todo:
            return
        repairs = {k for k, (_, _, ds) in todo.items()
                   if any(REPAIR_HEADER in d.headers for d in ds)}
        known = await self.ledger.known(todo) - repairs  # a proven-missing posting goes again
        for key in known:
            for d in todo.pop(key)[2]:
                await d.ack()
                self.skipped_known += 1
        if not todo:
            return
        await self._post(list(todo.values()))

    async def _post(self, items: list[tuple[Envelope, PostJournalEntry, list[Delivery]]]) -> None:
        body = _json.encode(wire.BulkRequest(items=[entry_to_wire(e) for _, e, _ in items]))
        self.requests += 1
        try:
            resp = await self.guard.post(BULK_PATH, body)
            results = _bulk_dec.decode(resp.body).results  # ContractError is Permanent
            if len(results) != len(items):
                raise PlatformRejected(
                    f"ERP answered {len(results)} results for {len(items)} items",
                    status=resp.status, body="", code="erp.bad_response")
        except Retryable as err:
            self.last_error = str(err)
            log.info("ERP bulk of %d not posted (%s): %s", len(items), err.code, err)
            await self.guard.publish_transitions()
            for env, _, ds in items:
                for d in ds:
                    match self.decide(d, err):
                        case Retry(delay=delay):
                            await d.nak(delay=delay)
                        case DeadLetter() as verdict:
                            await self.dlq.send(d, verdict.as_error(err),
                                                business_key=str(env.key),
                                                correlation_id=env.correlation_id,
                                                platform_response=err.message)
                            self.failed += 1
            return
        except (Permanent, ValueError) as exc:
            refusal = exc if isinstance(exc, GatewayError) else Permanent(
                f"ERP answer could not be read: {exc}", code="erp.bad_response")
            body_text = getattr(refusal, "body", None)
            for env, _, ds in items:
                for d in ds:
                    await self.dlq.send(d, refusal, business_key=str(env.key),
                                        correlation_id=env.correlation_id,
                                        platform_response=body_text)
                    self.failed += 1
            return
        crashpoint("erp.after_post")
        now = time.time()
        rows: list[PostingRow] = []
        rejected: list[tuple[Envelope, list[Delivery], wire.BulkItemResult]] = []
        for (env, entry, ds), res in zip(items, results, strict=True):
            if res.status == "rejected":
                rejected.append((env, ds, res))
                detail = f"{res.error.code if res.error else 'REJECTED'}"
                rows.append(PostingRow(entry.idempotency_key, entry.external_id, None,
                                       "dead_lettered", entry.amount, entry.currency,
                                       env.correlation_id, now, "dead_lettered", detail))
            else:
                rows.append(PostingRow(entry.idempotency_key, entry.external_id, res.id,
                                       "posted", entry.amount, entry.currency,
                                       env.correlation_id, now, res.status,
                                       f"erp_id={res.id}"))
        await self.ledger.record(rows)
        crashpoint("erp.after_commit")
        now_dt = datetime.now(UTC)
        for (env, _entry, ds), res in zip(items, results, strict=True):
            if res.status == "rejected":
                continue
            if res.status == "created":
                self.posted += 1
            else:
                self.replayed += 1
            self._latency_ms.append((now_dt - env.occurred_at).total_seconds() * 1000)
            for d in ds:
                await d.ack()
                self.processed += 1
        for env, ds, res in rejected:
            code = f"erp.{res.error.code.lower()}" if res.error else "erp.rejected"
            rejection = Permanent(res.error.message if res.error else "rejected by the ERP",
                                  code=code)
            for d in ds:
                await self.dlq.send(d, rejection, business_key=str(env.key),
                                    correlation_id=env.correlation_id,
                                    platform_response=res.error.message if res.error else None)
                self.failed += 1

    def statistics(self) -> dict[str, object]:
        return {
            **super().statistics(),
            "breaker": self.breaker.statistics() if self.breaker else None,
            "limiter": self.limiter.statistics() if self.limiter else None,
            "posted": self.posted,
            "replayed": self.replayed,
            "skipped_known": self.skipped_known,
            "requests": self.requests,
            "dead_lettered": self.dlq.count,
            "latency_ms": percentiles(self._latency_ms),
        }
