"""Usage aggregator: usage records → rated by billing and recorded at the revenue platform, each
record counted once on both, or flagged for a person — never twice.

Theory of operation, per fetched batch of ``usage.recorded.v1`` envelopes (msgpack, or JSON
from a client that published straight onto the stream):

1. decode (a contract violation is dead-lettered at once); a usage id seen twice in the batch
   (the stream keeps a record sent again after its duplicate window) is one record with two
   deliveries;
2. read each record's state in the ledger's ``uploads`` table and in the cluster's shared
   ``uploads`` bucket (below), once per effect: platform ``usage.billing`` and
   ``usage.revenue``, one row (key) per usage id. As in flow 2's revenue half
   (``actors.revenue.poster``, docs/flows.md "Revenue: the crash window"), a row left
   ``pending`` by an attempt that never recorded its answer is moved to ``in_doubt`` and its
   record is not sent to that platform again — except a billing claim whose whole aggregate
   is in this batch: billing keeps an idempotency key per item, so that item is sent again
   exactly as it was (``_resendable``) and answered ``replayed`` if it was rated;
3. billing: the records not yet rated are aggregated per (subscription, product, meter, month)
   (``plan.aggregate``) and sent in bulk requests of at most ``max_bulk_items`` items, each
   with a derived ``Idempotency-Key``; breaker and permit, then the records are claimed in the
   shared bucket and ``pending`` in the ledger (crash point ``usage.before_billing``), then
   sent. Per item: ``created`` or
   ``replayed`` → its records ``uploaded`` with the amount billing rated each at (unit price times
   quantity; the revenue line needs it); ``rejected`` → its records dead-lettered
   (``usage.<code>``);
4. revenue: the records billing has rated and the revenue platform has not recorded are
   aggregated again (per currency too) into usage lines (``kind: "usage"``, ``usageIds``), packed
   into uploads of at most ``max_batch_lines`` and sent exactly like flow 2's lines: claim
   (crash point ``usage.before_revenue``), send, ``uploaded``; a 422 naming lines dead-letters
   their records and sends the others again; a 413 or unreadable 422 is bisected;
5. settle: ack a record once both effects are durable (``uploaded``) or flagged (``in_doubt``);
   dead-letter refused ones; nak (with backoff, or dead-letter on the last delivery) the rest.

Why the guard is per record and not per aggregate: a redelivered record may land in another
batch with other records, so its aggregate (and the aggregate's id) may differ from the first
attempt's. Only the record id is stable, so that is what the ledger keys on; billing's item
idempotency then only protects the very same aggregate sent again.

Failures: an error status (429, 5xx) or a connection never opened releases the claimed records
(nothing was recorded: ``revenue.plan.never_recorded``), naks them, and stops this batch (the
breaker opens on repeated faults and the worker stops fetching). No answer after sending: a
billing request is sent once more as it was (same ``Idempotency-Key``, same body: billing
answers from its store if the first got there); still no answer, or no answer from revenue
(which has no key): the records go ``in_doubt`` for that platform and are acknowledged; a
record whose billing is in
doubt is not sent to revenue either (its amount is unknown), so it waits for a person with the
billing row (docs/errors.md ``usage.in_doubt``). ``LedgerUnavailable`` naks the batch.

Several gateway processes: each record's two guards are shared in the cluster's ``uploads``
bucket (``actors.infra.state.SharedUploads``, platforms ``usage.billing`` and ``usage.revenue``)
as in ``actors.revenue.poster``: the ledger judges this process's own attempts, the bucket tells
every process which records another one claimed or finished. A claim is stored in the bucket
first, conditionally on the revision read (crash points ``usage.between_billing_claims`` /
``usage.between_revenue_claims``), then committed ``pending`` in the ledger, then sent; a
record another process claimed meanwhile is not sent (``UsageClaimedElsewhere``: it waits) and
what this attempt took is given back. An outcome is committed in the ledger, then mirrored in the
bucket by its owner — billing's with the amount rated per record, so another process sends the
revenue line of a record it never rated. A billing claim names its aggregate: whichever process
holds every record of that aggregate sends the very same aggregate again (``_resendable``;
billing's item idempotency answers a repeat ``replayed``), taking the claim over with
``again`` — a claim that is never given back, since what it sends may have been rated before,
so those records are never aggregated afresh. Otherwise a record another process holds waits.
At start (``_left_behind``) a process flags its ledger's unfinished revenue claims in doubt
(here and in the bucket), keeps its unfinished billing claims (anyone may send their aggregate
again), gives back its shared claims its ledger never recorded and mirrors the outcomes the
bucket missed. Limit: a record whose billing claim another process holds waits until a batch
holds its whole aggregate or the owner records the outcome, and after ``max_deliver`` is
dead-lettered ``retry.exhausted`` (never sent as a new aggregate). docs/scale-out.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import msgspec
from anyio.abc import TaskStatus

from contracts import (
    ContractError,
    Envelope,
    GatewayError,
    JsonCodec,
    MsgpackCodec,
    Permanent,
    Retryable,
    Subjects,
    UsageRecorded,
    new_id,
)
from contracts.platforms.revenue import RevenueBatch, RevenueLineIn
from contracts.platforms.usage import UsageBulkRequest, UsageBulkResponse

from ..crash import crashpoint
from ..deadletter import DeadLetterSink
from ..infra.bus import Delivery
from ..infra.ledger import Ledger, LedgerUnavailable, UploadRow
from ..infra.state import SharedLine, SharedUploads
from ..monitor import instance_id
from ..platforms import PlatformGuard, PlatformRejected
from ..revenue.plan import accepted_batch_id, halves, never_recorded, pack, refused_invoices
from ..revenue.poster import ClaimedElsewhere
from ..worker import BatchWorker
from .plan import (
    Aggregate,
    aggregate,
    billing_item,
    bulk_key,
    chunks,
    record_amounts,
    revenue_line,
)

__all__ = ["BILLING", "BULK_PATH", "REVENUE", "UsageAggregator", "UsageClaimedElsewhere"]

log = logging.getLogger("erpgw.usage")
_msgpack: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
_jsonenv: JsonCodec[Envelope] = JsonCodec(Envelope)
_bulk_req: JsonCodec[UsageBulkRequest] = JsonCodec(UsageBulkRequest)
_bulk_resp: JsonCodec[UsageBulkResponse] = JsonCodec(UsageBulkResponse)
_batch: JsonCodec[RevenueBatch] = JsonCodec(RevenueBatch)
_json = msgspec.json.Encoder()

BILLING = "usage.billing"  # ledger platform of the billing half
REVENUE = "usage.revenue"  # ledger platform of the revenue half
BULK_PATH = "/billing/v1/usage-records/bulk"
UPLOAD_PATH = "/revenue/v1/batches"
_SENDABLE = (None, "released", "rejected")
_DONE = ("uploaded", "in_doubt")
# A record's state for a platform when another process's claim holds it (billing: or a claim
# to send its aggregate again, whoever made it): never sent here but as that aggregate.
_HELD = "held"


class UsageClaimedElsewhere(ClaimedElsewhere):
    """Another gateway process has claimed a usage record and not recorded the outcome yet
    (and, for billing, this batch cannot send the very same aggregate again): the record
    waits (nak, at least ``CLAIM_WAIT_S`` apart after the first deliveries)."""

    code = "usage.claimed_elsewhere"


@dataclass
class _Record:
    """One usage record of the batch: every delivery of it, and how it ends."""

    rec: UsageRecorded
    env: Envelope
    deliveries: list[Delivery]
    refusal: GatewayError | None = None
    platform_response: str | None = None
    retry: Exception | None = None
    amount: tuple[int, str] | None = None  # what billing rated it at
    states: dict[str, str | None] = field(default_factory=dict)  # platform → state (_state)
    group: str = ""  # the aggregate a billing claim of it rates (another process's claim)


def _decode(data: bytes) -> Envelope:
    """msgpack (the gateway's own publishes) or JSON (another client's). Raises
    ``ContractError``."""
    return _jsonenv.decode(data) if data[:1] == b"{" else _msgpack.decode(data)


class UsageAggregator(BatchWorker):
    def __init__(self, name: str, *, billing: PlatformGuard, revenue: PlatformGuard,
                 ledger: Ledger, uploads: SharedUploads, dlq: DeadLetterSink,
                 subjects: Subjects, max_bulk_items: int = 500, max_batch_lines: int = 500,
                 **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        if max_bulk_items < 1 or max_batch_lines < 1:
            raise ValueError("max_bulk_items and max_batch_lines must be >= 1")
        # Billing's usage rating endpoint and the revenue platform's batch endpoint
        # (actors.platforms: their breakers and account budgets).
        self.billing = billing
        self.revenue = revenue
        self.ledger = ledger
        # Which records every process claimed or finished, per platform (the guard across
        # processes; the ledger judges this process's own attempts).
        self.uploads = uploads
        self.dlq = dlq
        self.subjects = subjects
        self.max_bulk_items = max_bulk_items
        self.max_batch_lines = max_batch_lines
        self.records = 0
        self.aggregates = 0
        self.billing_requests = 0
        self.revenue_uploads = 0
        self.in_doubt = 0
        self.rejected = 0
        self.waiting_records = 0  # records another process holds, left for a redelivery
        self.released_claims = 0  # shared claims of an earlier incarnation given back
        self.resent_aggregates = 0  # claimed aggregates sent again as they were
        self._started = time.monotonic()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        for platform in (BILLING, REVENUE):
            counts = await self.ledger.upload_counts(platform)
            if counts.get("in_doubt") or counts.get("pending"):
                log.error("%s: %d record(s) in doubt and %d claimed by an unfinished attempt "
                          "in the ledger; see docs/errors.md (usage.in_doubt)", platform,
                          counts.get("in_doubt", 0), counts.get("pending", 0))
        await self._left_behind()
        await super().run(task_status=task_status)

    async def _left_behind(self) -> None:
        """At start, settle what an earlier incarnation of this process (same data directory,
        so never running beside this one) left, so that another process holding the records
        need not wait for them to come back here:

        * revenue: every record the ledger holds ``pending`` is in doubt, here and in the
          shared ``uploads`` (as in ``actors.revenue.poster``);
        * billing: a record the ledger holds ``pending`` stays claimed (its shared claim names
          the aggregate: whichever process gets all its records sends that very aggregate
          again, ``_resendable``);
        * both: a shared claim this process made that never reached its ledger is given back
          (nothing of it was sent), an outcome the shared state missed is mirrored, with the
          rated amount for billing (``SharedUploads.left_behind``).

        Raises ``LedgerUnavailable`` and ``BrokerUnavailable`` (the actor restarts)."""
        rows = await self.ledger.find_uploads(REVENUE, status="pending")
        if rows:
            now, attempt = time.time(), new_id()
            await self.uploads.record(self.ledger, [
                UploadRow(REVENUE, r.line_id, r.invoice_id, "in_doubt", attempt, None, r.amount,
                          r.currency, r.correlation_id, now, "claimed by an attempt that "
                          "never recorded its answer (the process stopped)") for r in rows])
            self.in_doubt += len(rows)
            log.error("%s: %d record(s) left claimed by an earlier attempt are in doubt, not "
                      "sent again (usage.in_doubt)", REVENUE, len(rows))
        for platform in (BILLING, REVENUE):
            released, _ = await self.uploads.left_behind(platform, self.ledger,
                                                         amounts=platform == BILLING)
            self.released_claims += released

    async def gate(self) -> None:
        """While either platform's breaker is open, wait (the records stay in the stream)."""
        await self.billing.gate(self)
        await self.revenue.gate(self)

    # -- one batch -----------------------------------------------------------------------------

    async def handle(self, batch: Sequence[Delivery]) -> None:
        """Raises ``LedgerUnavailable`` and ``BrokerUnavailable`` (the worker naks the batch;
        a ledger claim it left behind is read as in doubt next time, or sent again as the same
        aggregate for billing, never anything new)."""
        await self.uploads.give_back_stranded()  # what a broker outage left claimed here
        recs: dict[str, _Record] = {}
        for n, d in enumerate(batch):
            if n % 64 == 63:
                await anyio.lowlevel.checkpoint()  # share the loop with the sync lane
            try:
                env = _decode(d.data)
                if not isinstance(env.payload, UsageRecorded):
                    raise ContractError(f"usage aggregator cannot handle {env.type}",
                                        code="route.unexpected_type", path="$.payload.type")
            except ContractError as err:
                await self.dlq.send(d, err)
                self.failed += 1
                continue
            rec = recs.get(env.payload.usage_id)
            if rec is None:
                recs[env.payload.usage_id] = _Record(env.payload, env, [d])
            else:
                rec.deliveries.append(d)
        if not recs:
            return
        resend: list[Aggregate] = []
        self.uploads.forget_seen()
        for platform in (BILLING, REVENUE):
            states = await self.ledger.upload_states(platform, recs)
            shared = await self.uploads.read(platform, recs)
            for uid, r in recs.items():
                r.states[platform] = self._state(platform, r, states.get(uid), shared[uid])
            stale = [r for r in recs.values() if r.states[platform] == "pending"]
            held = [r for r in recs.values() if r.states[platform] == _HELD]
            if platform == BILLING and (stale or held):
                stale, resend, held = await self._resendable(stale + held, recs)
            if stale:
                await self._in_doubt(platform, stale, "claimed by an attempt that never "
                                     "recorded its answer (the process or the actor stopped)")
            for r in held:
                r.retry = UsageClaimedElsewhere(
                    f"usage record {r.rec.usage_id} is claimed for {platform} by another "
                    "gateway process", deliveries=max(d.num_delivered for d in r.deliveries))
            self.waiting_records += len(held)
        stop = None
        if resend:  # claimed already: the very same items again, never a new aggregate
            stop = await self._bill(resend, {r.rec.usage_id: r for a in resend
                                             for r in (recs[u] for u in a.usage_ids)},
                                    again=True)
        if stop is None:
            todo = {r.rec.usage_id: r for r in recs.values()
                    if r.states[BILLING] in _SENDABLE}
            stop = await self._bill(aggregate(r.rec for r in todo.values()), todo)
        if stop is None:
            await self._record_revenue(recs)
        elif isinstance(stop, Exception):
            for r in recs.values():
                if r.refusal is None and not self._finished(r):
                    r.retry = stop
        await self._settle(recs.values())

    def _state(self, platform: str, r: _Record, own: str | None,
               line: SharedLine) -> str | None:
        """What ``r`` needs at ``platform``, from this process's ledger (``own``: the authority
        on its own attempts) and the shared ``uploads`` (``line``: every process's): an
        outcome of either is final (billing's rated amount comes with the shared one); a claim
        of this process's ledger is ``pending`` (an attempt that never recorded its answer);
        another process's claim, or for billing any claim to send an aggregate again, is
        ``_HELD``; otherwise the ledger's state (None, ``released``, ``rejected``: sendable).
        A shared claim of this process that its ledger lacks proves nothing of it was sent
        (its ledger claim failed): sendable."""
        if own in _DONE:
            return own
        if line.status in _DONE:
            if platform == BILLING and line.status == "uploaded" and line.amount is not None:
                r.amount = (line.amount, line.currency)
            return line.status
        if own == "pending":
            return own
        if line.status == "pending" and (line.owner != self.uploads.owner or line.again):
            r.group = line.group if platform == BILLING else ""
            return _HELD
        return own

    def _finished(self, r: _Record) -> bool:
        if r.states[BILLING] == "in_doubt":
            return True  # revenue cannot be sent without the rated amount: flagged
        return r.states[BILLING] in _DONE and r.states[REVENUE] in _DONE

    def _rows(self, platform: str, recs: Iterable[_Record], agg_of: dict[str, str],
              status: str, attempt: str, detail: str) -> list[UploadRow]:
        now = time.time()
        out = []
        for r in recs:
            amount, currency = r.amount if r.amount is not None else (r.rec.quantity, "")
            out.append(UploadRow(platform, r.rec.usage_id, agg_of.get(r.rec.usage_id, "-"),
                                 status, attempt, None, amount, currency,
                                 r.env.correlation_id, now, detail[:500]))
        return out

    # -- billing -------------------------------------------------------------------------------

    async def _resendable(self, claimed: list[_Record], recs: dict[str, _Record]
                          ) -> tuple[list[_Record], list[Aggregate], list[_Record]]:
        """Split billing claims (this process's left ``pending``, and ``_HELD`` ones: another
        process's, or a claim to send again) into those in doubt, the aggregates that can be
        sent again as they were, and those that wait. Billing keeps an idempotency key per
        item (its id, derived from exactly its records), so the very same item again is
        answered ``replayed`` if it was rated and rated now if it was not — never twice,
        whichever process sends it. That needs every record of the claimed aggregate in this
        batch, rebuilding to the same id; otherwise this process's own claim stays in doubt
        and another's waits for its owner (or for a batch holding the whole aggregate).
        Raises ``LedgerUnavailable``."""
        agg_of = {r.rec.usage_id: r.group for r in claimed if r.states[BILLING] == _HELD}
        if len(agg_of) < len(claimed):  # this process's claims: the ledger names the aggregate
            for row in await self.ledger.find_uploads(BILLING, status="pending"):
                if row.line_id in recs and row.line_id not in agg_of:
                    agg_of[row.line_id] = row.invoice_id
        groups: dict[str, list[_Record]] = {}
        for r in claimed:
            groups.setdefault(agg_of.get(r.rec.usage_id, ""), []).append(r)
        resend: list[Aggregate] = []
        doubt: list[_Record] = []
        held: list[_Record] = []
        for agg_id, members in groups.items():
            rebuilt = aggregate(m.rec for m in members) if agg_id else []
            if len(rebuilt) == 1 and rebuilt[0].id == agg_id:
                resend.append(rebuilt[0])
                continue
            doubt += [m for m in members if m.states[BILLING] == "pending"]
            held += [m for m in members if m.states[BILLING] == _HELD]
        if resend:
            self.resent_aggregates += len(resend)
            log.info("usage: %d aggregate(s) claimed by an unfinished attempt sent again "
                     "as they were (billing answers a repeat 'replayed')", len(resend))
        return doubt, resend, held

    async def _bill(self, aggs: list[Aggregate], by_id: dict[str, _Record], *,
                    again: bool = False) -> Exception | None:
        """Rate ``aggs`` in bulk requests, claiming their records first (``again``: a resend
        of claimed aggregates, whose claims are never given back). Returns the error that
        stopped it (the platform is failing, or another process claimed a record first), else
        None. Raises ``LedgerUnavailable``, ``BrokerUnavailable``."""
        if not aggs:
            return None
        self.aggregates += len(aggs)
        for part in chunks(aggs, self.max_bulk_items):
            items = [billing_item(a) for a in part]
            agg_of = {uid: a.id for a in part for uid in a.usage_ids}
            mine = [by_id[uid] for a in part for uid in a.usage_ids]
            attempt = new_id()
            claimed = False

            async def claim(mine: list[_Record] = mine, agg_of: dict[str, str] = agg_of,
                            attempt: str = attempt, n: int = len(part)) -> None:
                nonlocal claimed
                await self._claim(BILLING, mine, agg_of, attempt, f"{n} items", again=again)
                claimed = True
                crashpoint("usage.before_billing")

            body = _bulk_req.encode(UsageBulkRequest(items=items))
            resent = False
            while True:
                self.billing_requests += 1
                try:
                    resp = await self.billing.post(
                        BULK_PATH, body, before_send=None if claimed else claim,
                        headers={"Idempotency-Key": bulk_key(items)})
                    answer = _bulk_resp.decode(resp.body)
                    if len(answer.results) != len(items):
                        raise ContractError(f"billing answered {len(answer.results)} results "
                                            f"for {len(items)} items", code="usage.bad_answer")
                except PlatformRejected as err:  # the whole request refused: nothing rated
                    await self._refuse(BILLING, mine, agg_of, attempt, err, err.body)
                    answer = None
                except (Permanent, ContractError) as err:
                    if not claimed:
                        raise
                    await self._in_doubt(BILLING, mine, f"unreadable answer: {err}", attempt)
                    answer = None
                except LedgerUnavailable:
                    raise
                except Retryable as err:
                    if claimed and err.code == self.billing.open_code:
                        return err  # not sent: the claims stay pending, sent again next time
                    if claimed and not never_recorded(err) and not resent:
                        # No answer: the very same request again (same key, same body) is
                        # answered from billing's store if it got there. Once.
                        resent = True
                        log.info("usage: no answer from billing (%s); sending the same "
                                 "request again", err.code)
                        continue
                    return await self._failed(BILLING, mine, agg_of, attempt, err, claimed,
                                              again=again)
                break
            if answer is None:
                continue
            crashpoint("usage.after_billing")
            await self._rated(part, answer, by_id, attempt)
        return None

    async def _rated(self, part: list[Aggregate], answer: UsageBulkResponse,
                     by_id: dict[str, _Record], attempt: str) -> None:
        rows: list[UploadRow] = []
        for agg, res in zip(part, answer.results, strict=True):
            recs = [by_id[uid] for uid in agg.usage_ids]
            agg_of = dict.fromkeys(agg.usage_ids, agg.id)
            if res.status == "rejected" or res.unit_amount is None or not res.currency:
                code = (res.error.code if res.error else "INVALID").lower()
                refusal = Permanent(f"billing refused usage item {agg.id}: "
                                    f"{res.error.message if res.error else res.status}",
                                    code=f"usage.{code}")
                for r in recs:
                    r.refusal = refusal
                    r.platform_response = _json.encode(res).decode()
                rows += self._rows(BILLING, recs, agg_of, "rejected", attempt,
                                   f"[{refusal.code}] {refusal}")
                self.rejected += len(recs)
                continue
            for uid, amt in record_amounts(agg, res).items():
                by_id[uid].amount = amt
                by_id[uid].states[BILLING] = "uploaded"
            rows += self._rows(BILLING, recs, agg_of, "uploaded", attempt,
                               f"item {agg.id} {res.status}")
        await self._record(rows)
        crashpoint("usage.after_billing_commit")

    # -- revenue -------------------------------------------------------------------------------

    async def _record_revenue(self, recs: dict[str, _Record]) -> None:
        todo = [r for r in recs.values() if r.refusal is None
                and r.states[BILLING] == "uploaded" and r.states[REVENUE] in _SENDABLE]
        if not todo:
            return
        unknown = [r.rec.usage_id for r in todo if r.amount is None]
        if unknown:  # rated in an earlier delivery here: the ledger kept the amount
            for uid, amt in (await self.ledger.upload_amounts(BILLING, unknown)).items():
                recs[uid].amount = amt
        # (a rated amount neither the ledger nor the shared state knows: left unfinished)
        todo = [r for r in todo if r.amount is not None and r.amount[1]]
        aggs = aggregate((r.rec for r in todo),
                         {r.rec.usage_id: r.amount[1] for r in todo if r.amount is not None})
        amounts = {r.rec.usage_id: r.amount for r in todo if r.amount is not None}
        lines = [revenue_line(a, amounts) for a in aggs]
        for upload in pack([[ln] for ln in lines], self.max_batch_lines):
            stop = await self._upload(upload, recs)
            if stop is not None:
                for r in todo:
                    if r.refusal is None and r.states[REVENUE] not in _DONE:
                        r.retry = stop
                return

    async def _upload(self, lines: list[RevenueLineIn],
                      recs: dict[str, _Record]) -> Exception | None:
        queue = [lines]
        while queue:
            part = queue.pop(0)
            mine = [recs[uid] for ln in part for uid in ln.usage_ids]
            agg_of = {uid: ln.invoice_id for ln in part for uid in ln.usage_ids}
            attempt = new_id()
            claimed = False

            async def claim(mine: list[_Record] = mine, agg_of: dict[str, str] = agg_of,
                            attempt: str = attempt, n: int = len(part)) -> None:
                nonlocal claimed
                await self._claim(REVENUE, mine, agg_of, attempt, f"{n} usage lines")
                claimed = True
                crashpoint("usage.before_revenue")

            self.revenue_uploads += 1
            try:
                resp = await self.revenue.post(UPLOAD_PATH,
                                               _batch.encode(RevenueBatch(lines=part)),
                                               before_send=claim)
            except PlatformRejected as err:
                if err.status in (413, 422):
                    queue[:0] = await self._revenue_refused(part, err, recs, agg_of, attempt)
                else:
                    await self._refuse(REVENUE, mine, agg_of, attempt, err, err.body)
                continue
            except Permanent as err:
                await self._refuse(REVENUE, mine, agg_of, attempt, err, None)
                continue
            except LedgerUnavailable:
                raise
            except Retryable as err:
                return await self._failed(REVENUE, mine, agg_of, attempt, err, claimed)
            crashpoint("usage.after_revenue")
            batch_id = accepted_batch_id(resp.body)
            await self._record(self._rows(
                REVENUE, mine, agg_of, "uploaded", attempt, f"batch {batch_id}"))
            for r in mine:
                r.states[REVENUE] = "uploaded"
            self.records += len(mine)
        return None

    async def _revenue_refused(self, part: list[RevenueLineIn], err: PlatformRejected,
                               recs: dict[str, _Record], agg_of: dict[str, str],
                               attempt: str) -> list[list[RevenueLineIn]]:
        """A 422 (or 413): dead-letter the records of the refused lines, release the others
        and return what to send next (halves when the answer does not name lines)."""
        refused = refused_invoices(part, err.body) if err.status == 422 else None
        mine = [recs[uid] for ln in part for uid in ln.usage_ids]
        if refused is None:
            parts = halves(part)
            if len(parts) == 1:
                await self._refuse(REVENUE, mine, agg_of, attempt, err, err.body)
                return []
            await self._record(self._rows(
                REVENUE, mine, agg_of, "released", attempt,
                f"refused with {err.status} not naming the lines; sent again in halves"))
            for r in mine:
                r.states[REVENUE] = "released"
            return parts
        bad = [ln for ln in part if ln.invoice_id in refused]
        rest = [ln for ln in part if ln.invoice_id not in refused]
        for ln in bad:
            errors = refused[ln.invoice_id]
            refusal = Permanent("; ".join(f"{c}: {m}" for _, c, m in errors)[:1000],
                                code=f"revenue.{errors[0][1].lower()}")
            for uid in ln.usage_ids:
                recs[uid].refusal = refusal
                recs[uid].platform_response = err.body
        bad_recs = [recs[uid] for ln in bad for uid in ln.usage_ids]
        rest_recs = [recs[uid] for ln in rest for uid in ln.usage_ids]
        await self._record(
            self._rows(REVENUE, bad_recs, agg_of, "rejected", attempt, f"422: {err.body}")
            + self._rows(REVENUE, rest_recs, agg_of, "released", attempt,
                         "upload refused for other lines; sent again without them"))
        self.rejected += len(bad_recs)
        for r in rest_recs:
            r.states[REVENUE] = "released"
        return [rest] if rest else []

    # -- claims and outcomes shared by both halves ---------------------------------------------

    async def _claim(self, platform: str, mine: list[_Record], agg_of: dict[str, str],
                     attempt: str, what: str, *, again: bool = False) -> None:
        """Claim ``mine`` for ``platform`` (after the breaker and the permit): in the shared
        ``uploads`` first, conditionally on the revisions read (a record another process
        claimed meanwhile is not sent: ``UsageClaimedElsewhere``, and what this attempt took is
        given back unless ``again``), then ``pending`` in the ledger (records this process's
        ledger holds ``pending`` already are a resend of its own claim), then nothing but the
        request. Raises ``UsageClaimedElsewhere``, ``BrokerUnavailable``, ``LedgerUnavailable``
        (nothing sent)."""
        ids = [r.rec.usage_id for r in mine]
        if again:  # never given back: an earlier attempt may have sent the aggregate
            lost = await self.uploads.claim(platform, ids, attempt, time.time(), groups=agg_of,
                                            again=True)
        else:
            lost = await self.uploads.take(platform, ids, attempt, groups=agg_of)
        if lost:
            raise UsageClaimedElsewhere(
                f"{len(lost)} usage record(s) of a {platform} request were claimed by another "
                "gateway process first",
                deliveries=max(d.num_delivered for r in mine for d in r.deliveries))
        crashpoint("usage.between_billing_claims" if platform == BILLING
                   else "usage.between_revenue_claims")
        fresh = [r for r in mine if r.states[platform] != "pending"]
        try:
            await self.ledger.record_uploads(self._rows(
                platform, fresh, agg_of, "pending", attempt,
                f"attempt {attempt}: {len(mine)} records in {what}"))
        except Exception as err:  # nothing was sent
            if not again:
                await self.uploads.give_back(platform, ids, attempt, err)
            raise
        for r in fresh:
            r.states[platform] = "pending"

    async def _record(self, rows: list[UploadRow]) -> None:
        """This process's outcome for its records: the ledger, then the shared ``uploads``
        (with the amount billing rated each at, for another process to go on from)."""
        await self.uploads.record(self.ledger, rows)

    # -- outcomes shared by both halves --------------------------------------------------------

    async def _refuse(self, platform: str, mine: list[_Record], agg_of: dict[str, str],
                      attempt: str, err: GatewayError, body: str | None) -> None:
        """The platform refused the whole request: its records are dead-lettered."""
        await self._record(self._rows(platform, mine, agg_of, "rejected", attempt,
                                      f"[{err.code}] {err}"))
        self.rejected += len(mine)
        for r in mine:
            r.refusal = err
            r.platform_response = body

    async def _failed(self, platform: str, mine: list[_Record], agg_of: dict[str, str],
                      attempt: str, err: Retryable, claimed: bool, *,
                      again: bool = False) -> Exception:
        """A retryable failure: release what certainly was not recorded, flag the rest. A
        resend (``again``) that was not recorded keeps its claims: an earlier attempt of the
        same aggregate may have been, so it is only ever sent again as it was."""
        self.last_error = f"[{err.code}] {err}"
        guard = self.billing if platform == BILLING else self.revenue
        await guard.publish_transitions()
        if not claimed:  # refused by the breaker or by another's claim: nothing was sent
            return err
        if never_recorded(err) and again:
            return err
        if never_recorded(err):
            await self._record(self._rows(
                platform, mine, agg_of, "released", attempt,
                f"not recorded by the platform ({err.code}): {err}"))
            for r in mine:
                r.states[platform] = "released"
        else:
            await self._in_doubt(platform, mine, f"no answer after sending ({err.code}): "
                                 f"{err}", attempt, agg_of)
        return err

    async def _in_doubt(self, platform: str, mine: list[_Record], reason: str,
                        attempt: str | None = None,
                        agg_of: dict[str, str] | None = None) -> None:
        """Records that may or may not be at ``platform``: flag them, never send them again."""
        await self._record(self._rows(platform, mine, agg_of or {}, "in_doubt",
                                      attempt or new_id(), reason))
        for r in mine:
            r.states[platform] = "in_doubt"
        self.in_doubt += len(mine)
        self.last_error = f"usage.in_doubt: {len(mine)} record(s) at {platform}: {reason}"
        log.error("%s: %d usage record(s) in doubt, not sent again (usage.in_doubt): %s",
                  platform, len(mine), reason)
        await self.bus.emit(self.subjects.mon_event("usage"), _json.encode({
            "kind": "usage", "event": "in_doubt", "code": "usage.in_doubt", "at": time.time(),
            "instance": instance_id(), "platform": platform, "reason": reason,
            "records": [r.rec.usage_id for r in mine[:200]], "record_count": len(mine)}))

    async def _settle(self, recs: Iterable[_Record]) -> None:
        """Ack, dead-letter or nak every delivery, after the ledger has everything."""
        for r in recs:
            key, corr = str(r.env.key), r.env.correlation_id
            if r.refusal is not None:
                for d in r.deliveries:
                    await self.dlq.send(d, r.refusal, business_key=key, correlation_id=corr,
                                        platform_response=r.platform_response)
                    self.failed += 1
            elif r.retry is not None or not self._finished(r):
                err = r.retry or Retryable("usage record not finished", code="usage.unfinished")
                for d in r.deliveries:
                    await self.fail(d, err, self.dlq, business_key=key, correlation_id=corr,
                                    platform_response=str(err))
            else:
                for d in r.deliveries:
                    await d.ack()
                    self.processed += 1

    def statistics(self) -> dict[str, object]:
        return {
            **super().statistics(),
            "billing": self.billing.statistics(),
            "revenue": self.revenue.statistics(),
            "records": self.records,
            "aggregates": self.aggregates,
            "billing_requests": self.billing_requests,
            "revenue_uploads": self.revenue_uploads,
            "in_doubt_records": self.in_doubt,
            "rejected_records": self.rejected,
            "waiting_records": self.waiting_records,
            "resent_aggregates": self.resent_aggregates,
            "released_claims": self.released_claims,
            "dead_lettered": self.dlq.count,
        }
