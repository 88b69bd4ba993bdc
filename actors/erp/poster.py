"""ERP poster: journal entry commands → one bulk ERP request per fetched batch.

Theory of operation, per batch:

1. decode every command (a contract violation is dead-lettered at once);
2. drop the ones whose idempotency key the ledger already holds (a redelivery after a crash
   or a lost ack): ack them, nothing goes to the ERP. A posting of a versioned document (an
   invoice and its amendments, flow 6) is judged by its aggregate's applied and claimed
   versions instead (``actors.erp.ordering.plan_order``): a redelivered, stale or superseded
   version is acked without posting (audited first), a newer one is sent with the reversal of
   the version it replaces, and the versions about to be sent are claimed in the shared
   ``versions`` bucket (one atomic batch of compare-and-set writes) before the request;
3. send the rest through the ERP's client (``actors.platforms.erp``, one per dialect: the
   simulator's bulk request, or NetSuite upserts with the account's concurrency in flight),
   each item with its idempotency key, so a retry after an ambiguous outcome (timeout after
   the ERP committed) is answered ``replayed`` and never posts twice; the client answers per
   entry or raises for the whole batch when any entry could not be made durable;
4. write the claims, the skips' audit notes, the outcomes (posted / dead-lettered), the
   aggregates' applied versions and their audit rows to the ledger in one transaction (a
   request that failed writes the claims and notes alone); then apply the versions in the
   shared bucket (one atomic batch); only then ack (or dead-letter and term) the inputs.

Batches in flight: step 4 of batch k (the ledger transaction, the shared apply, the acks)
runs in a task of its own (a "tail") while batch k+1 is fetched, ordered and sent, so the
next request never waits for the previous batch's fsyncs. Up to ``MAX_TAILS`` (2) tails run
at a time, as many as the consumer's ``max_ack_pending`` leaves room for whole batches
beside the one being fetched (``tails_for``: one with 256 and batches of 100, two with the
default 512), so at most three batches are unacknowledged; a batch whose tail would be one
too many waits for the oldest first. A batch that names a posting or an aggregate of any
running tail waits for that tail first (its ordering reads what the tail writes); tails of
batches that share nothing commit in any order (the audit chain is ordered by the ledger's
own lock). Each batch keeps its own order of effects: claim, request, ledger, apply, ack. A
tail that fails naks its unsettled commands (a passing failure) or, for anything else, fails
the actor as a failed batch does; a batch that fails lets the tails before it finish first.

A posting the ERP refuses for a closed period (``PERIOD_CLOSED``) is dead-lettered as
``erp.period_closed``, or, under the ``next_open`` policy (``erp.closed_period``, or a letter
replayed with ``--repost-open``), sent again dated into the first open period after its own
with the same idempotency key (``actors.erp.periods``).

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
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import NamedTuple

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

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
from contracts.platforms.erp import PERIOD_CLOSED

from .. import otel
from ..crash import crashpoint, fault
from ..deadletter import DeadLetterSink
from ..infra.bus import Delivery
from ..infra.kv import KvConflict
from ..infra.ledger import Ledger, PostingRow, VersionMark
from ..infra.state import ReadVersion, SharedVersions
from ..platforms import PlatformGuard
from ..platforms.erp import ErpgwJournalClient, JournalClient, entry_to_wire
from ..replay import REPAIR_HEADER
from ..stats import percentiles
from ..worker import BatchWorker
from .ordering import (
    REVERSAL_SUFFIX,
    Aggregate,
    Applied,
    Apply,
    Candidate,
    Claim,
    Skip,
    State,
    aggregate_of,
    plan_order,
)
from .periods import (
    KEY_REUSED,
    MAX_PROBES,
    POLICY_HEADER,
    ClosedPeriodPolicy,
    moved,
    probes,
)

__all__ = ["ErpPoster", "entry_to_wire"]

log = logging.getLogger("erpgw.erp")
_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
# The applied entry of an aggregate, and a claim's entries, as the ledger's ``versions`` keeps
# them.
_entry_codec: JsonCodec[PostJournalEntry] = JsonCodec(PostJournalEntry)


class _Entries(msgspec.Struct, frozen=True):
    entries: list[PostJournalEntry]


_entries_codec: JsonCodec[_Entries] = JsonCodec(_Entries)
# How many times a batch's lost claims are planned again before it is naked instead.
_REPLANS = 8
# How long a failing poster waits for the batches still finishing before it stops anyway.
_TAIL_GRACE_S = 30.0
# At most this many batches finish in the background at once (see "Batches in flight").
MAX_TAILS = 2


def tails_for(max_ack_pending: int, batch: int) -> int:
    """How many tails may run while the next batch is fetched whole: the batches the
    consumer's ``max_ack_pending`` holds beside that one, between 1 and ``MAX_TAILS``."""
    return max(1, min(MAX_TAILS, max_ack_pending // max(1, batch) - 1))

# One posting to make: the command, its deliveries, and what ordering decided (the entries to
# send: a reversal of the aggregate's applied version first, if any, then the command's own).
_Item = tuple[Envelope, PostJournalEntry, list[Delivery], Apply, Aggregate | None]


class _Audit(NamedTuple):
    """What a batch's ordering leaves for the ledger: the versions claimed, the audit notes of
    the skipped commands, and those commands (acked once the notes are durable); and each
    claim's revision in the shared ``versions`` (applying it after the ERP's answer needs no
    read first)."""

    claims: list[VersionMark]
    notes: list[tuple[float, str, str, str]]
    skipped: list[tuple[Skip, Envelope, list[Delivery]]]
    revisions: dict[Aggregate, int]



# A command the ERP answered: its envelope, its deliveries and the answer to its last entry.
_Done = tuple[Envelope, list[Delivery], wire.BulkItemResult]


class _Tail(NamedTuple):
    """A batch whose request is answered and whose ledger, apply and acks are under way: the
    postings and aggregates it holds, and when it is done."""

    keys: frozenset[str]
    aggregates: frozenset[Aggregate]
    done: anyio.Event


class ErpPoster(BatchWorker):
    def __init__(self, name: str, *, erp: PlatformGuard, ledger: Ledger,
                 versions: SharedVersions, dlq: DeadLetterSink,
                 client: Callable[[PlatformGuard], JournalClient] | None = None,
                 closed_period: ClosedPeriodPolicy = "dead_letter",
                 **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        # The ERP's journal endpoint (actors.platforms): its breaker and the account budget.
        self.guard = erp
        self.breaker = erp.breaker
        self.limiter = erp.limiter
        self.ledger = ledger
        # Which version of each aggregate the ERP holds or may hold: shared by every process.
        self.versions = versions
        self.dlq = dlq
        # The ERP's dialect (actors.platforms.erp): the simulator's bulk API by default.
        self.client: JournalClient = (client or ErpgwJournalClient)(self.guard)
        self.posted = 0
        self.replayed = 0
        self.skipped_known = 0
        self.stale = 0  # an older version than the applied one (flow 6): skipped
        self.superseded = 0  # a newer version of the same aggregate was in the batch
        self.reversals = 0  # applied versions reversed by an amendment
        self.replans = 0  # claims lost to another process's write, planned again
        # Postings dated in a closed period posted into a later open one (``.periods``).
        self.closed_period: ClosedPeriodPolicy = closed_period
        self.moved_to_open = 0
        self._latency_ms: deque[float] = deque(maxlen=20_000)
        # The batches finishing in the background (``_Tail``, oldest first), how many may,
        # and the task group they run in (``pipelined``); without one (a poster driven batch
        # by batch) a batch finishes inline.
        self._running: list[_Tail] = []
        self.max_tails = tails_for(self.consumer_settings.ack_pending_of(self.durable),
                                   self.batch)
        self._tails: TaskGroup | None = None
        self.overlapped = 0  # batches sent while an earlier batch was still finishing
        self.tail_waits = 0  # batches that waited for an earlier one (shared postings)
        self.tail_full = 0  # batches that waited for the oldest tail (as many as allowed ran)
        every = fault("erp.raise_every")
        self._raise_every = int(every) if every and every.isdigit() else 0
        self._since_raise = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if fault("erp.fail_start") is not None:
            raise RuntimeError("fault hook erp.fail_start: the ERP poster fails at start")
        async with self.pipelined():
            await super().run(task_status=task_status)

    @asynccontextmanager
    async def pipelined(self) -> AsyncIterator[None]:
        """Inside, a batch's last step runs in the background while the next batches go
        (see the module's "Batches in flight"); leaving waits for the running tails."""
        async with anyio.create_task_group() as tg:
            self._tails = tg
            try:
                yield
            except Exception:
                # A failure of the next batch (or of the loop) does not abort the batch still
                # finishing: its ledger commit, apply and acks complete first (bounded), so its
                # commands are not sent again for nothing and its counts stay exact.
                with anyio.move_on_after(_TAIL_GRACE_S, shield=True):
                    for tail in list(self._running):
                        await tail.done.wait()
                raise
            finally:
                self._tails = None

    async def _after(self, keys: Iterable[str], aggregates: Iterable[Aggregate | None]) -> None:
        """Wait for every running tail that holds any of these postings or aggregates."""
        running = [t for t in self._running if not t.done.is_set()]
        if not running:
            return
        keys = set(keys)
        held = {a for a in aggregates if a is not None}
        waits = [t for t in running
                 if not t.keys.isdisjoint(keys) or not t.aggregates.isdisjoint(held)]
        if waits:
            self.tail_waits += 1
        for tail in waits:
            await tail.done.wait()

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
        aggregates = {k: aggregate_of(env.key, entry) for k, (env, entry, _) in todo.items()}
        await self._after(todo, aggregates.values())
        # Postings outside any aggregate: skip the keys already posted. Ordered ones are judged
        # by their aggregate's applied version instead (a posted key whose amendment is not
        # complete yet, e.g. its reversal was refused, must be sent again to finish it).
        unordered = [k for k, agg in aggregates.items() if agg is None]
        known = await self.ledger.known(unordered) - repairs  # a proven-missing one goes again
        for key in known:
            for d in todo.pop(key)[2]:
                await d.ack()
                self.skipped_known += 1
        if not todo:
            return
        items, audit = await self._order(todo, aggregates, repairs)
        if not items:
            await self._settle(audit)
            return
        # Traced: an ``erp post`` span per posting, child of its command (actors.otel).
        with otel.hops("erp post", [env.traceparent for env, *_ in items], kind="consumer"):
            await self._post(items, audit, (frozenset(todo), frozenset(
                a for a in aggregates.values() if a is not None)))

    async def _order(self, todo: dict[str, tuple[Envelope, PostJournalEntry, list[Delivery]]],
                     aggregates: dict[str, Aggregate | None], repairs: set[str]
                     ) -> tuple[list[_Item], _Audit]:
        """Apply per-aggregate ordering (``plan_order``) to the batch: the versions about to
        be applied are claimed in the shared ``versions`` (before any ERP request), each
        conditionally on the revision it was planned from; a claim another process beat is
        planned again from a fresh read. Returns what to send, and the batch's ledger audit
        (claims, skips) with the skipped commands, which are acked once that audit is durable
        (``_settle``, or with the postings in ``_post``: one ledger transaction per batch).
        Raises ``LedgerUnavailable``/``BrokerUnavailable``, or ``KvConflict`` when the same
        aggregates keep moving (nothing acked)."""
        keys = list(todo)
        verdicts: dict[str, Apply | Skip] = {}
        pending = keys
        claims: list[VersionMark] = []
        claim_revisions: dict[Aggregate, int] = {}
        now = time.time()
        for _ in range(_REPLANS):
            seen = await self._states({agg for k in pending
                                       if (agg := aggregates[k]) is not None})
            planned = plan_order([Candidate(aggregates[k], todo[k][0].key.version, todo[k][1],
                                            k in repairs) for k in pending],
                                 {agg: state for agg, (state, _) in seen.items()})
            round_claims: list[tuple[VersionMark, ReadVersion]] = []
            for k, verdict in zip(pending, planned, strict=True):
                agg = aggregates[k]
                if isinstance(verdict, Apply) and agg is not None:
                    round_claims.append((VersionMark(
                        agg[0], agg[1], todo[k][0].key.version,
                        _entries_codec.encode(_Entries(list(verdict.entries))), now),
                        seen[agg][1]))
            # Claimed before the request: after a crash the ERP may hold the version without
            # anyone knowing, and an older version arriving then must not be posted after it.
            lost, stored = await self.versions.claim(round_claims)
            claim_revisions.update(stored)
            claims += [m for m, _ in round_claims if (m.source, m.object_id) not in lost]
            for k, verdict in zip(pending, planned, strict=True):
                if aggregates[k] not in lost:
                    verdicts[k] = verdict
            pending = [k for k in pending if aggregates[k] in lost]
            if not pending:
                break
            self.replans += len(pending)
        else:
            raise KvConflict(f"{len(pending)} posting(s) of aggregates other processes keep "
                             "claiming; planned again on redelivery")
        items: list[_Item] = []
        skipped: list[tuple[Skip, Envelope, list[Delivery]]] = []
        for k in keys:
            env, entry, ds = todo[k]
            verdict = verdicts[k]
            if isinstance(verdict, Skip):
                skipped.append((verdict, env, ds))
            else:
                items.append((env, entry, ds, verdict, aggregates[k]))
        notes = [(now, f"version.{v.reason}", str(env.key), f"applied=v{v.applied_version}")
                 for v, env, _ in skipped if v.reason != "applied"]
        return items, _Audit(claims, notes, skipped, claim_revisions)

    async def _settle(self, audit: _Audit) -> None:
        """Make the batch's claims and skips durable in the ledger (one transaction), then ack
        the skipped commands."""
        await self.ledger.claim_versions(audit.claims, notes=audit.notes)
        await self._ack_skipped(audit)

    async def _ack_skipped(self, audit: _Audit) -> None:
        for verdict, env, ds in audit.skipped:
            if verdict.reason != "applied":
                log.info("ERP posting %s skipped: %s (applied version %d)", env.key,
                         verdict.reason, verdict.applied_version)
            for d in ds:
                await d.ack()
                if verdict.reason == "stale":
                    self.stale += 1
                elif verdict.reason == "superseded":
                    self.superseded += 1
                else:
                    self.skipped_known += 1

    async def _states(self, aggregates: set[Aggregate]
                      ) -> dict[Aggregate, tuple[State, ReadVersion]]:
        """The ordering state of ``aggregates`` from the shared ``versions``, with the revision
        each was read at. Raises ``BrokerUnavailable`` or ``LedgerUnavailable``."""
        if not aggregates:
            return {}
        read = await self.versions.read(aggregates)
        rows = {agg: r.row for agg, r in read.items() if r.row is not None}
        claims = {agg: Claim(r.claimed, tuple(_entries_codec.decode(r.claimed_entry).entries))
                  for agg, r in rows.items()
                  if r.claimed is not None and r.claimed_entry is not None}
        # Which of a claim's entries the ERP refused (certainly not there): what this process
        # saw. Another process's refusals are unknown here and treated as maybe posted, which
        # only adds a posting and its reversal.
        posted = await self.ledger.posting_states(
            e.idempotency_key for c in claims.values() for e in c.entries)
        refused = frozenset(k for k, status in posted.items() if status == "dead_lettered")
        out: dict[Aggregate, tuple[State, ReadVersion]] = {}
        for agg, r in read.items():
            row = r.row
            if row is None:
                out[agg] = (State(), r)
                continue
            out[agg] = (State(
                applied=None if row.version is None or row.entry is None else Applied(
                    row.version, _entry_codec.decode(row.entry)),
                claimed=claims.get(agg), refused=refused), r)
        return out

    async def _post(self, items: list[_Item], audit: _Audit,
                    held: tuple[frozenset[str], frozenset[Aggregate]]) -> None:
        """Send the batch's entries, then finish it (``_finish``: inline, or in the
        background when ``pipelined``); ``held`` are its postings and aggregates."""
        flat = [e for _, _, _, plan, _ in items for e in plan.entries]
        # Entries whose delivery is not the first may have reached the ERP already.
        redelivered = {e.idempotency_key for _, _, ds, plan, _ in items
                       if any(getattr(d, "num_delivered", 1) > 1 for d in ds) for e in plan.entries}
        # Entries posted under ``next_open`` (the configured policy, or a letter replayed with
        # ``--repost-open``): a refusal for a closed period moves them (``.periods``).
        movable = {e.idempotency_key for _, _, ds, plan, _ in items
                   if self.closed_period == "next_open"
                   or any(d.headers.get(POLICY_HEADER) == "next_open" for d in ds)
                   for e in plan.entries}
        moved_to: dict[str, date] = {}
        try:
            results = await self.client.post_journal_entries(flat, redelivered=redelivered)
            if movable:
                results = await self._move_closed(flat, results, movable, redelivered,
                                                  moved_to)
        except Retryable as err:
            self.last_error = str(err)
            log.info("ERP bulk of %d not posted (%s): %s", len(flat), err.code, err)
            await self.guard.publish_transitions()
            await self._settle(audit)
            for env, _, ds, _, _ in items:
                for d in ds:
                    await self.fail(d, err, self.dlq, business_key=str(env.key),
                                    correlation_id=env.correlation_id,
                                    platform_response=err.message)
            return
        except (Permanent, ValueError) as exc:
            refusal = exc if isinstance(exc, GatewayError) else Permanent(
                f"ERP answer could not be read: {exc}", code="erp.bad_response")
            body_text = getattr(refusal, "body", None)
            await self._settle(audit)
            for env, _, ds, _, _ in items:
                for d in ds:
                    await self.dlq.send(d, refusal, business_key=str(env.key),
                                        correlation_id=env.correlation_id,
                                        platform_response=body_text)
                    self.failed += 1
            return
        crashpoint("erp.after_post")
        now = time.time()
        rows: list[PostingRow] = []
        versions: list[VersionMark] = []
        done: list[_Done] = []
        rejected: list[_Done] = []
        answers = iter(results)
        for env, entry, ds, plan, agg in items:
            # An amendment's reversal and new version stand or fall together: the aggregate
            # moves on only when the ERP holds both, so a refusal of either is dead-lettered
            # and its replay sends both again (the one already posted is answered replayed).
            group = [(e, next(answers)) for e in plan.entries]
            for e, res in group:
                if res.status == "rejected":
                    rows.append(PostingRow(e.idempotency_key, e.external_id, None,
                                           "dead_lettered", e.amount, e.currency,
                                           env.correlation_id, now, "dead_lettered",
                                           f"{res.error.code if res.error else 'REJECTED'}"))
                else:
                    into = moved_to.get(e.idempotency_key)
                    note = f"erp_id={res.id}" + (
                        f" moved_to={into.isoformat()}" if into is not None else "")
                    rows.append(PostingRow(e.idempotency_key, e.external_id, res.id, "posted",
                                           e.amount, e.currency, env.correlation_id, now,
                                           res.status, note))
            refused = next((res for _, res in group if res.status == "rejected"), None)
            if refused is not None:
                rejected.append((env, ds, refused))
                continue
            done.append((env, ds, group[-1][1]))
            if agg is not None:
                versions.append(VersionMark(agg[0], agg[1], env.key.version,
                                            _entry_codec.encode(entry), now))
            self.reversals += sum(1 for e, res in group if res.status == "created"
                                  and e.external_id.endswith(REVERSAL_SUFFIX))
        claimed = audit.revisions
        tail = (rows, versions, claimed, audit, done, rejected)
        if self._tails is None:  # driven batch by batch: finish inline
            await self._finish(*tail)
            return
        running = [t for t in self._running if not t.done.is_set()]
        if running:
            self.overlapped += 1
        if len(running) >= self.max_tails:  # as many as allowed: the oldest finishes first
            self.tail_full += 1
        while len(running) >= self.max_tails:
            await running[0].done.wait()
            running = [t for t in running if not t.done.is_set()]
        deliveries = [d for _, _, ds, _, _ in items for d in ds] + [
            d for _, _, ds in audit.skipped for d in ds]
        behind = _Tail(held[0], held[1], anyio.Event())
        self._running.append(behind)
        self._tails.start_soon(self._finish_behind, behind, deliveries, tail)

    async def _finish_behind(self, tail: _Tail, deliveries: list[Delivery],
                             work: tuple[list[PostingRow], list[VersionMark], dict[Aggregate, int],
                                         _Audit, list[_Done], list[_Done]]) -> None:
        """``_finish`` in the background, the commands kept alive meanwhile; a passing
        failure naks the unsettled ones (redelivered, answered replayed by the ERP), anything
        else naks them and fails the actor."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat, deliveries)
                await self._finish(*work)
                tg.cancel_scope.cancel()
        except Exception as exc:
            inner: BaseException = exc
            while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
                inner = inner.exceptions[0]
            if not isinstance(inner, Retryable):
                self.last_error = repr(exc)
                await self._nak_unsettled(deliveries)
                raise
            self.last_error = f"[{inner.code}] {inner}"
            log.error("%s: batch of %d will be redelivered: %s", self.name, len(deliveries),
                      self.last_error)
            await self._nak_unsettled(deliveries, inner)
        except BaseException:
            await self._nak_unsettled(deliveries)
            raise
        finally:
            tail.done.set()
            self._running = [t for t in self._running if t is not tail]

    async def _finish(self, rows: list[PostingRow], versions: list[VersionMark],
                      claimed: dict[Aggregate, int], audit: _Audit, done: list[_Done],
                      rejected: list[_Done]) -> None:
        """Step 4: the ledger transaction, the shared apply, then the acks and letters."""
        # One transaction: the batch's claims and skips, its postings and applied versions.
        await self.ledger.record(rows, versions=versions, notes=audit.notes,
                                 claims=audit.claims)
        # Then the shared guard: a crash before it leaves the claim, and the redelivery sends
        # the claim's entries again (answered replayed) and applies it then.
        await self.versions.apply(versions, claimed=claimed)
        crashpoint("erp.after_commit")
        await self._ack_skipped(audit)
        now_dt = datetime.now(UTC)
        for env, ds, res in done:
            if res.status == "created":
                self.posted += 1
            else:
                self.replayed += 1
            latency_ms = (now_dt - env.occurred_at).total_seconds() * 1000
            self._latency_ms.append(latency_ms)
            self.observe_latency(latency_ms)
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

    async def _move_closed(self, flat: list[PostJournalEntry],
                           results: list[wire.BulkItemResult], movable: set[str],
                           redelivered: set[str], moved_to: dict[str, date]
                           ) -> list[wire.BulkItemResult]:
        """``results`` with every ``movable`` entry refused for a closed period sent again
        into the following periods, one request per step, until the ERP takes it (or says it
        holds it) or ``periods.MAX_PROBES`` periods were tried; the dates taken go into
        ``moved_to``. An entry that never finds an open period keeps its first refusal.
        Raises what the client raises (the batch is then retried whole: the keys are the
        same, so nothing doubles)."""
        results = list(results)
        step = dict.fromkeys(range(len(flat)), 0)
        while True:
            todo = [i for i, res in enumerate(results)
                    if flat[i].idempotency_key in movable and res.status == "rejected"
                    and probes(res.error.code if res.error else None, step=step[i],
                               maybe_posted=flat[i].idempotency_key in redelivered)]
            if not todo:
                return results
            for i in todo:
                step[i] += 1
            tries = [moved(flat[i], step[i]) for i in todo]
            # A moved entry may be the one a lost answer left at the ERP: read back first.
            answers = await self.client.post_journal_entries(
                tries, redelivered={e.idempotency_key for e in tries})
            for i, entry, res in zip(todo, tries, answers, strict=True):
                if res.status != "rejected":
                    results[i] = res
                    moved_to[entry.idempotency_key] = entry.posting_date
                    self.moved_to_open += 1
                    log.info("ERP posting %s dated %s (closed period) posted on %s",
                             entry.external_id, flat[i].posting_date, entry.posting_date)
                elif step[i] >= MAX_PROBES or not probes(
                        res.error.code if res.error else None, step=step[i], maybe_posted=True):
                    # Keep the first refusal (the closed period) unless the ERP refused the
                    # moved entry for another reason: that one is the news.
                    code = res.error.code if res.error else None
                    if code not in (PERIOD_CLOSED, KEY_REUSED):
                        results[i] = res
                    step[i] = MAX_PROBES

    def statistics(self) -> dict[str, object]:
        return {
            **super().statistics(),
            "breaker": self.breaker.statistics() if self.breaker else None,
            "limiter": self.limiter.statistics() if self.limiter else None,
            "posted": self.posted,
            "replayed": self.replayed,
            "skipped_known": self.skipped_known,
            "stale": self.stale,
            "superseded": self.superseded,
            "reversals": self.reversals,
            "replans": self.replans,
            "moved_to_open": self.moved_to_open,
            "overlapped": self.overlapped,
            "tail_waits": self.tail_waits,
            "tail_full": self.tail_full,
            "requests": self.client.requests,
            "client": self.client.statistics(),
            "dead_lettered": self.dlq.count,
            "latency_ms": percentiles(self._latency_ms),
        }
