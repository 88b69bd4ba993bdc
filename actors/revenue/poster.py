"""Revenue poster: issued invoices → their billing lines at the revenue platform, each line
recorded there once, or flagged for a person — never twice.

The revenue platform (``contracts.platforms.revenue``) takes uploads of at most N lines,
all-or-nothing, and has **no idempotency key and no way to ask whether a line is there**: an
upload sent twice is recorded twice. So the gateway's ledger (``uploads`` table, one row per
line id) is the only guard, and the one thing it cannot know by itself is what happened to an
upload whose answer never came back.

Theory of operation, per fetched batch of ``invoice.issued.v1`` (or ``.v3``) and
``credit_memo.issued.v1`` envelopes:

1. decode (a contract violation is dead-lettered at once); one ``RevenueLineIn`` per invoice
   line, line id ``<invoice id>:<line id>`` (``plan.revenue_lines``). An amendment (version
   ``n >= 2``) is planned against the invoice's rows, the ledger's joined with the shared
   ``uploads`` rows of its line ids (``plan.merge_recorded``: any process plans any version), as
   its differences per line, ids ``<invoice id>:<line id>:v<n>`` (``plan.plan_version``), and
   waits (nak, ``revenue.version_waiting``; rarely ``revenue.amended_elsewhere`` when only
   another process's ledger can name or price a line of it) until version ``n - 1`` is
   applied; a version whose next version's lines are presumed recorded is superseded (sends
   nothing). A credit memo becomes negative corrections of its invoice, ids
   ``<credit memo id>:<line id>`` (``plan.credit_lines``). Lines in doubt count as recorded
   ("understate, never double"; docs/flows.md, Flow 6, "Revenue half");
2. read the lines' states from the ledger. ``uploaded`` and ``in_doubt`` lines are skipped.
   A ``pending`` line was claimed by an attempt that never finished (the process died, or the
   actor was restarted, between claiming it and recording the answer): it is moved to
   ``in_doubt`` and *not* sent again (see below);
3. pack the rest into uploads of at most ``max_batch_lines`` (``plan.pack``). For each upload:
   breaker and rate-limiter permit (any wait for budget is over before anything is claimed),
   then **claim** its lines in the shared ``uploads`` (below; crash point
   ``revenue.between_claims``), then ``pending`` in one ledger transaction (crash point
   ``revenue.before_upload``), then send it; on 201 (crash point ``revenue.after_upload``)
   record them ``uploaded`` with the platform's batch id, one transaction (crash point
   ``revenue.after_commit``);
4. settle: ack every invoice whose lines are all uploaded, in doubt or skipped; dead-letter an
   invoice the platform refused; nak (or, on the last delivery, dead-letter) the rest.

Answers: a 422 names the bad lines: their invoices are dead-lettered with the platform's error
(``revenue.<code>``), their lines recorded ``rejected``, and the other lines of the upload are
uploaded again at once, never dropped with them; a 422 that cannot be read, or a 413 (more
lines than the platform takes), is bisected between invoices. Another 4xx dead-letters the
upload's invoices. An error status (429, 5xx) or a connection that could not be opened records
nothing (``plan.never_recorded``): the lines are ``released`` and the invoices nak'ed (the
breaker opens on repeated faults: the poster then stops fetching and the work waits in the
stream). No answer after the request left (timeout, disconnect, reset): the lines go
``in_doubt`` and their invoices are acknowledged (unknown is not failed: no dead letter).

The crash window, and why ``in_doubt`` is never re-sent. Between the claim and the record of the
answer the ledger cannot tell "sent and recorded" from "never sent". Re-sending would double
revenue whenever the platform had the lines; not re-sending loses them whenever it did not. The
gateway presumes *recorded* and flags: only the time between the claim's commit and the whole
request being handed to the kernel (hundreds of microseconds on a LAN; longer for a large upload
over a slow link) can leave lines unsent — a process killed after that still has its request
delivered by the kernel — while the rest of the window (the platform's work, the answer, the
ledger commit) holds lines that *are* recorded; and an understated revenue line awaiting a
person is the conservative error, a doubled one is not. So duplicates are impossible by
construction (a line is sent only from a state that proves no earlier send of it can have been
recorded), and an in-doubt line is logged, counted (``in_doubt_lines``), announced on
``<prefix>.mon.events.revenue`` and kept in the ledger with its audit trail until a person checks
it at the platform (docs/errors.md, ``revenue.upload_in_doubt``; ``Ledger.resolve_in_doubt``).
If the platform ever offers a lookup by line id, step 2 should ask it instead of presuming.
docs/flows.md has the whole argument and what the crash-point tests prove.

Several gateway processes: the ledger is the authority on this process's own attempts (the
crash window above is judged there), and the broker's shared ``uploads`` bucket
(``actors.infra.state.SharedUploads``) tells every process which lines another one took: a
claim is stored in the bucket first, conditionally on the revision read (a line another
process took in between is not sent: what this attempt took is given back and the invoice
waits), then committed in the ledger, then sent, so the window above is the ledger commit and
the HTTP write only, never the cluster's round trip; every outcome is mirrored in the bucket
by its owner after the ledger. A process that dies between the two claims leaves a shared
claim its ledger does not hold, which proves nothing of it was sent: when it starts again
(``_left_behind``; its data directory's lock means no other incarnation runs then) it gives
those claims back (``released``, conditionally), and flags the ones its ledger holds
``pending`` in doubt. A line another process is still
sending (``pending`` there) is never sent here: its invoice is nak'ed with backoff
(``revenue.claimed_elsewhere``, counted ``waiting_lines``) until the owner records the answer;
a line uploaded or in doubt elsewhere is skipped. So a process frozen past ``ack_wait`` in the
middle of an upload, whose invoice is redelivered to another, never has its lines sent twice.
Limits: an invoice larger than one upload can be half recorded if a later part is refused
(``Ledger.find_uploads`` says which lines are); in-doubt lines are listed in the ledger of the
process that sent them. Everything runs in the worker's task; ``handle`` naks the batch on
``LedgerUnavailable`` and ``BrokerUnavailable`` and lets anything else reach the supervisor.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import msgspec
from anyio.abc import TaskStatus

from contracts import (
    ContractError,
    CreditMemoIssued,
    Envelope,
    GatewayError,
    InvoiceIssued,
    InvoiceIssuedV2,
    InvoiceIssuedV3,
    JsonCodec,
    MsgpackCodec,
    Permanent,
    Retryable,
    Subjects,
    new_id,
)
from contracts.platforms.revenue import RevenueBatch, RevenueLineIn

from .. import otel
from ..crash import crashpoint, fault
from ..deadletter import DeadLetterSink
from ..infra.bus import Delivery
from ..infra.ledger import Ledger, LedgerUnavailable, UploadRow
from ..infra.state import SharedLine, SharedUploads
from ..monitor import instance_id
from ..platforms import PlatformGuard, PlatformRejected
from ..resilience import DeadLetter, Retry
from ..stats import percentiles
from ..worker import BatchWorker
from .plan import (
    PRESUMED_RECORDED,
    Recorded,
    SharedRecorded,
    accepted_batch_id,
    credit_lines,
    guess_line_ids,
    halves,
    merge_recorded,
    never_recorded,
    pack,
    plan_version,
    refused_invoices,
    revenue_lines,
    version_line_id,
)

__all__ = ["PLATFORM", "UPLOAD_PATH", "AmendedElsewhere", "RevenuePoster", "VersionWaiting"]

log = logging.getLogger("erpgw.revenue")
_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
_batch: JsonCodec[RevenueBatch] = JsonCodec(RevenueBatch)
_json = msgspec.json.Encoder()

PLATFORM = "revenue"
UPLOAD_PATH = "/revenue/v1/batches"
BREAKER_OPEN = "revenue.breaker_open"
# Ledger states a line may be (re)sent from: never claimed, or proven not recorded.
_SENDABLE = (None, "released", "rejected")


# An invoice that waits for another process's claim is redelivered with the usual backoff
# for its first ``CLAIM_PATIENCE`` deliveries (the other process is usually just slow), then at
# least ``CLAIM_WAIT_S`` apart: that process may be restarting (its start flags or gives back
# what it left), which outlasts the backoff's first steps. With ``max_deliver`` 8 an invoice
# waits about 2.5 minutes before it is dead-lettered ``retry.exhausted``.
CLAIM_PATIENCE = 2
CLAIM_WAIT_S = 30.0


class ClaimedElsewhere(Retryable):
    """Another gateway process has taken a line and not finished it yet: its invoice waits
    (nak, at least ``CLAIM_WAIT_S`` apart) until that process records the outcome."""

    code = "revenue.claimed_elsewhere"

    def __init__(self, message: str, *, deliveries: int = 1) -> None:
        super().__init__(message,
                         retry_after=CLAIM_WAIT_S if deliveries > CLAIM_PATIENCE else None)


class VersionWaiting(Retryable):
    """An amended invoice's earlier version is not applied at the revenue platform yet (or
    another document of the invoice is being handled in the same batch): it waits (nak with
    backoff), since its lines are differences from that version's."""

    code = "revenue.version_waiting"


class AmendedElsewhere(Retryable):
    """An amended invoice's earlier versions were uploaded (partly) by another gateway
    process and the shared ``uploads`` cannot complete them here: a shared row without an
    amount (written before rows carried one), or a line of version ``n - 1`` whose id no line
    known here names. It waits (nak with backoff) for a delivery to a process whose ledger
    holds those lines."""

    code = "revenue.amended_elsewhere"


Invoice = InvoiceIssued | InvoiceIssuedV2 | InvoiceIssuedV3


def _same_document(a: Envelope, b: Envelope) -> bool:
    """Two deliveries of one document (same type, business key and version)."""
    return a.type == b.type and a.key == b.key


@dataclass
class _Invoice:
    """One invoice of the batch: its envelope, every delivery of it, and how it ends."""

    env: Envelope
    deliveries: list[Delivery]
    lines: list[RevenueLineIn]
    refusal: GatewayError | None = None  # dead-letter (permanent)
    platform_response: str | None = None
    retry: Exception | None = None  # nak / retry policy
    done: set[str] = field(default_factory=set)  # line ids settled: at the platform or in doubt
    # How many lines this version of an invoice writes (stored with each in the shared
    # uploads, so another process planning the next version knows whether it found them
    # all); None for a credit memo.
    version_lines: int | None = None

    @property
    def unfinished(self) -> bool:
        return any(ln.line_id not in self.done for ln in self.lines)


class RevenuePoster(BatchWorker):
    def __init__(self, name: str, *, revenue: PlatformGuard, ledger: Ledger,
                 uploads: SharedUploads, dlq: DeadLetterSink, subjects: Subjects,
                 max_batch_lines: int = 500, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        if max_batch_lines < 1:
            raise ValueError(f"max_batch_lines must be >= 1, got {max_batch_lines}")
        self.guard = revenue  # the revenue platform's batch endpoint (actors.platforms)
        self.ledger = ledger
        # Which lines every process took or finished (the guard across processes).
        self.uploads = uploads
        self.dlq = dlq
        self.subjects = subjects
        self.max_batch_lines = max_batch_lines
        self.waiting_lines = 0  # lines another process took and has not finished yet
        # Shared claims of an earlier incarnation that never reached the ledger, given back.
        self.released_claims = 0
        self.waiting_versions = 0  # amendments that waited for their earlier version
        self.requests = 0
        self.uploaded_lines = 0
        self.skipped_lines = 0
        self.in_doubt_lines = 0
        self.rejected_invoices = 0
        # Lines that should have been uploaded and will not be, for revenue event accuracy:
        # refused by the platform, or of invoices dead-lettered once retries gave up.
        self.rejected_lines = 0
        self.dead_lettered_lines = 0
        self._latency_ms: deque[float] = deque(maxlen=20_000)
        self._corrupt = fault("revenue.corrupt_line")

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        counts = await self.ledger.upload_counts(PLATFORM)
        if counts.get("in_doubt") or counts.get("pending"):
            log.error("revenue: %d line(s) in doubt and %d claimed by an unfinished attempt "
                      "in the ledger; see docs/errors.md (revenue.upload_in_doubt)",
                      counts.get("in_doubt", 0), counts.get("pending", 0))
        await self._left_behind()
        await super().run(task_status=task_status)

    async def _left_behind(self) -> None:
        """At start, settle what an earlier incarnation of this process (same data directory,
        so never running beside this one) left unfinished, rather than when its invoice comes
        back here (another process may be waiting for this one's outcome: it must not wait out
        its deliveries):

        * every line this process's ledger holds ``pending`` was claimed by an attempt that
          never recorded its answer: in doubt, here and in the shared ``uploads``;
        * every line the shared ``uploads`` holds ``pending`` for this process while the ledger
          does not: the attempt died between the two claims, so no request of it left. It is
          given back (``released``, conditionally on the revision read); where the ledger has
          an outcome the shared state missed (the process died between the two writes), that
          outcome is mirrored instead.

        Raises ``LedgerUnavailable`` and ``BrokerUnavailable`` (the actor restarts and tries
        again)."""
        rows = await self.ledger.find_uploads(PLATFORM, status="pending")
        if rows:
            now, attempt = time.time(), new_id()
            reason = ("claimed by an upload attempt that never recorded its answer (the "
                      "process or the actor stopped)")
            await self._record([UploadRow(PLATFORM, r.line_id, r.invoice_id, "in_doubt",
                                          attempt, None, r.amount, r.currency,
                                          r.correlation_id, now, reason) for r in rows])
            self.in_doubt_lines += len(rows)
            log.error("revenue: %d line(s) left claimed by an earlier attempt are in doubt, "
                      "not sent again (revenue.upload_in_doubt)", len(rows))
        released, _ = await self.uploads.left_behind(PLATFORM, self.ledger)
        self.released_claims += released

    async def gate(self) -> None:
        """While the revenue breaker is open, wait here (work stays in the stream)."""
        await self.guard.gate(self)

    # -- one batch -----------------------------------------------------------------------------

    async def handle(self, batch: Sequence[Delivery]) -> None:
        """LedgerUnavailable (retryable) propagates: the worker naks the batch. Safe: a line is
        only ever sent after its claim committed, and a claim left behind by this failure is
        read as "in doubt" next time, never sent again."""
        # Claims a broker outage kept this process from giving back: before anything else, so
        # another process waiting for those lines is not kept waiting.
        await self.uploads.give_back_stranded()
        invoices: dict[str, _Invoice] = {}  # by the invoice the lines are of
        amended: dict[str, tuple[Invoice, int]] = {}  # versions >= 2, planned below
        held: list[_Invoice] = []  # another document of an invoice already in the batch
        newer: dict[str, list[str]] = {}  # the next version's line ids, per invoice
        for d in batch:
            try:
                env = _codec.decode(d.data)
                doc = env.payload
                version = max(env.key.version, 1)
                if isinstance(doc, CreditMemoIssued):
                    lines, key = credit_lines(doc), doc.invoice_id
                elif isinstance(doc, InvoiceIssued | InvoiceIssuedV2 | InvoiceIssuedV3):
                    lines, key = self._lines(doc), doc.invoice_id  # checked in any version
                else:
                    raise ContractError(f"revenue poster cannot handle {env.type}",
                                        code="route.unexpected_type", path="$.payload.type")
            except ContractError as err:
                await self.dlq.send(d, err)
                self.failed += 1
                continue
            if key is None:  # a credit memo of no invoice: nothing to correct
                await d.ack()
                self.processed += 1
                continue
            item = invoices.get(key)
            if item is None:
                invoices[key] = _Invoice(env, [d], lines, version_lines=None if isinstance(
                    doc, CreditMemoIssued) else len(lines))
                if not isinstance(doc, CreditMemoIssued):
                    newer[key] = [version_line_id(key, ln.line_id, version + 1)
                                  for ln in doc.lines]
                if version > 1 and not isinstance(doc, CreditMemoIssued):
                    invoices[key].lines = []  # its differences: planned from the ledger
                    amended[key] = (doc, version)
            elif _same_document(item.env, env):  # the same document twice: its lines once
                item.deliveries.append(d)
            else:  # another version or memo of the invoice: after this one is applied
                held.append(_Invoice(env, [d], [], retry=VersionWaiting(
                    f"{env.key} waits for {item.env.key} of the same invoice in its batch")))
        if amended:
            await self._plan_versions({key: (invoices[key], inv, version)
                                       for key, (inv, version) in amended.items()})
        await self._settle(held)
        if not invoices:
            return
        ids = [ln.line_id for it in invoices.values() for ln in it.lines]
        later = [i for next_ids in newer.values() for i in next_ids]
        states = await self.ledger.upload_states(PLATFORM, ids + later)
        self.uploads.forget_seen()
        shared = await self.uploads.read(PLATFORM, ids + later)
        for key, next_ids in newer.items():
            if any(states.get(i) in PRESUMED_RECORDED or shared[i].status not in _SENDABLE
                   for i in next_ids):  # superseded: a later version is applied (or going)
                self.skipped_lines += len(invoices[key].lines)
                invoices[key].lines = []
        stale = [ln for it in invoices.values() for ln in it.lines
                 if states.get(ln.line_id) == "pending"]
        if stale:
            await self._in_doubt(stale, invoices, "claimed by an upload attempt that never "
                                 "recorded its answer (the process or the actor stopped)")
        groups = []
        for it in invoices.values():
            todo = []
            for ln in it.lines:
                line = shared[ln.line_id]
                mine = line.owner in (None, self.uploads.owner)
                if states.get(ln.line_id) in _SENDABLE and (mine or line.status in _SENDABLE):
                    todo.append(ln)
                elif states.get(ln.line_id) in _SENDABLE and line.status == "pending":
                    # another process is sending it: wait for its outcome, never send it too
                    it.retry = ClaimedElsewhere(
                        f"line {ln.line_id} is being uploaded by another gateway process",
                        deliveries=max(d.num_delivered for d in it.deliveries))
                    self.waiting_lines += 1
                elif ln.line_id not in it.done:  # uploaded or in doubt, here or elsewhere
                    it.done.add(ln.line_id)
                    self.skipped_lines += 1
            groups.append(todo)
        for lines in pack(groups, self.max_batch_lines):
            stop = await self._upload(lines, invoices)
            if stop is not None:  # the platform is failing: leave the rest to a redelivery
                for it in invoices.values():
                    if it.refusal is None and it.unfinished:
                        it.retry = stop
                break
        await self._settle(invoices.values())

    async def _plan_versions(self, amended: dict[str, tuple[_Invoice, Invoice, int]]) -> None:
        """Plan every amended invoice of the batch (``_plan_version``), from one read of the
        shared ``uploads`` for them all. Raises ``LedgerUnavailable``, ``BrokerUnavailable``."""
        own: dict[str, list[Recorded]] = {}
        guessed: dict[str, list[str]] = {}
        for key, (_, inv, version) in amended.items():
            own[key] = [Recorded(r.line_id, r.amount, r.status)
                        for r in await self.ledger.find_uploads(PLATFORM, invoice_id=key)]
            guessed[key] = guess_line_ids(inv, version, own[key])
        shared = await self.uploads.read(PLATFORM, [
            i for key, (_, inv, version) in amended.items()
            for i in guessed[key] + [version_line_id(key, ln.line_id, version)
                                     for ln in inv.lines]])
        for key, (item, inv, version) in amended.items():
            self._plan_version(item, inv, version, own[key], guessed[key], shared)

    def _plan_version(self, item: _Invoice, inv: Invoice, version: int, own: list[Recorded],
                      guessed: list[str], shared: dict[str, SharedLine]) -> None:
        """``item``'s lines: the differences version ``version`` (>= 2) of ``inv`` makes to
        what is presumed recorded (``plan.plan_version``), planned from this process's ledger
        rows of the invoice (``own``) joined with the shared ``uploads`` rows (``shared``) of
        every earlier version's line it can name (``guessed``; ``plan.merge_recorded``:
        whichever process uploaded the earlier versions). Always merged: once any process may
        plan a version from shared rows, no ledger alone holds every earlier version. While
        that cannot be planned, none, and the invoice waits: ``revenue.claimed_elsewhere``
        while another process is still sending a line of an earlier version;
        ``revenue.amended_elsewhere`` when a shared row has no amount (written before rows
        carried one) or version ``version - 1`` wrote lines no id known here names (only a
        ledger holding them can plan it); else ``revenue.version_waiting``."""
        iid = inv.invoice_id
        mine = [version_line_id(iid, ln.line_id, version) for ln in inv.lines]
        merged = merge_recorded(iid, version, own, [
            SharedRecorded(i, line.amount, line.status,
                           line.owner not in (None, self.uploads.owner), line.lines)
            for i in guessed if (line := shared[i]).status is not None])
        lines = plan_version(inv, version, merged.rows) if merged.plannable else None
        if lines is not None:
            item.lines, item.version_lines = lines, len(lines)
            return
        if any(shared[i].status in ("uploaded", "in_doubt") for i in mine):
            self.skipped_lines += len(mine)  # applied by another process (a replay): done
            return
        before = f"version {version - 1} of invoice {iid}"
        if merged.sending_elsewhere:
            item.retry = ClaimedElsewhere(
                f"line {merged.sending_elsewhere[0]} of an earlier version of invoice {iid} "
                f"is being uploaded by another gateway process: version {version} is planned "
                "once its outcome is recorded",
                deliveries=max(d.num_delivered for d in item.deliveries))
        elif merged.no_amount:
            item.retry = AmendedElsewhere(
                f"line {merged.no_amount[0]} of invoice {iid} was uploaded by another gateway "
                f"process without its amount in the shared uploads: version {version} waits "
                "for a process whose ledger holds it")
        elif merged.incomplete:
            item.retry = AmendedElsewhere(
                f"{before} wrote {merged.previous_count} line(s), {merged.previous_found} "
                f"of them are known here: version {version} waits for a process whose ledger "
                "holds the others (or for them to be uploaded)")
        else:
            item.retry = VersionWaiting(
                f"{before} is not at the revenue platform yet: version {version} is sent as "
                "its difference once it is")
        self.waiting_versions += 1

    def _lines(self, inv: InvoiceIssued | InvoiceIssuedV2 | InvoiceIssuedV3
               ) -> list[RevenueLineIn]:
        lines = revenue_lines(inv)
        if self._corrupt and inv.invoice_id == self._corrupt:  # drill: GW_FAULT
            first = lines[0]
            before = (inv.period_start - timedelta(days=1)).isoformat()
            lines[0] = msgspec.structs.replace(first, period_end=before)
        return lines

    def _rows(self, lines: Iterable[RevenueLineIn], invoices: dict[str, _Invoice], status: str,
              attempt: str, detail: str, batch_id: str | None = None) -> list[UploadRow]:
        now = time.time()
        return [UploadRow(PLATFORM, ln.line_id, ln.invoice_id, status, attempt, batch_id,
                          ln.amount, ln.currency, invoices[ln.invoice_id].env.correlation_id,
                          now, detail) for ln in lines]

    async def _upload(self, lines: list[RevenueLineIn],
                      invoices: dict[str, _Invoice]) -> Exception | None:
        """Send ``lines`` (one upload; a 422 may split it), recording every step in the ledger.
        Returns the error when the platform is failing (stop uploading this batch), else None.
        Raises ``LedgerUnavailable``."""
        queue = [lines]
        while queue:
            part = [ln for ln in queue.pop(0) if invoices[ln.invoice_id].refusal is None]
            if not part:
                continue
            attempt = new_id()
            claimed = False

            async def claim(part: list[RevenueLineIn] = part, attempt: str = attempt) -> None:
                # After the breaker and the permit (no wait for budget inside the window):
                # the shared claim, then the ledger's, then nothing but the request.
                nonlocal claimed
                await self._claim_shared(part, attempt, invoices)
                crashpoint("revenue.between_claims")
                try:
                    await self.ledger.record_uploads(self._rows(
                        part, invoices, "pending", attempt,
                        f"attempt {attempt}: {len(part)} lines"))
                except Exception as err:  # nothing was sent: give the shared claim back
                    await self.uploads.give_back(PLATFORM, [ln.line_id for ln in part],
                                                 attempt, err)
                    raise
                claimed = True
                crashpoint("revenue.before_upload")

            body = _batch.encode(RevenueBatch(lines=part))
            self.requests += 1
            try:
                # Traced: a ``revenue upload`` span per invoice of the upload (actors.otel).
                with otel.hops("revenue upload", [invoices[i].env.traceparent for i in
                                                  dict.fromkeys(ln.invoice_id for ln in part)],
                               kind="consumer", attributes={"erpgw.lines": len(part)}):
                    resp = await self.guard.post(UPLOAD_PATH, body, before_send=claim)
            except PlatformRejected as err:  # nothing of the upload was recorded
                if err.status in (413, 422):
                    queue[:0] = await self._refused(part, err, invoices, attempt)
                else:  # 400, 401, 404...: the upload itself is wrong, not a line
                    await self._refuse(part, invoices, attempt, err, err.body)
                continue
            except Permanent as err:
                await self._refuse(part, invoices, attempt, err, None)
                continue
            except LedgerUnavailable:
                raise  # the claim did not commit: nothing was sent (see handle)
            except Retryable as err:
                self.last_error = str(err)
                await self.guard.publish_transitions()
                if not claimed:  # refused by the breaker: nothing was claimed or sent
                    return err
                if never_recorded(err):
                    await self._record(self._rows(
                        part, invoices, "released", attempt,
                        f"not recorded by the platform ({err.code}): {err}"[:500]))
                    log.info("revenue upload of %d lines not recorded (%s): %s", len(part),
                             err.code, err)
                else:
                    await self._in_doubt(part, invoices,
                                         f"no answer after sending ({err.code}): {err}",
                                         attempt)
                return err
            crashpoint("revenue.after_upload")
            batch_id = accepted_batch_id(resp.body)
            await self._record(self._rows(
                part, invoices, "uploaded", attempt, f"batch {batch_id}", batch_id))
            crashpoint("revenue.after_commit")
            self.uploaded_lines += len(part)
            for ln in part:
                invoices[ln.invoice_id].done.add(ln.line_id)
            now = datetime.now(UTC)
            for inv_id in dict.fromkeys(ln.invoice_id for ln in part):
                occurred = invoices[inv_id].env.occurred_at
                latency_ms = (now - occurred).total_seconds() * 1000
                self._latency_ms.append(latency_ms)
                self.observe_latency(latency_ms)
        return None

    async def _claim_shared(self, part: list[RevenueLineIn], attempt: str,
                            invoices: dict[str, _Invoice]) -> None:
        """Take the lines in the shared ``uploads``, conditionally on the revisions read,
        before the ledger's claim, each with its amount and its version's line count (what
        another process plans the invoice's next version from). When another process took one
        meanwhile, or the broker cannot say, nothing is claimed in the ledger and nothing is
        sent: what this attempt took is given back and ``ClaimedElsewhere`` or
        ``BrokerUnavailable`` is raised (the invoices wait for a redelivery)."""
        counts = {ln.line_id: n for ln in part
                  if (n := invoices[ln.invoice_id].version_lines) is not None}
        lost = await self.uploads.take(PLATFORM, [ln.line_id for ln in part], attempt,
                                       amounts={ln.line_id: ln.amount for ln in part},
                                       counts=counts)
        if lost:
            raise ClaimedElsewhere(f"{len(lost)} line(s) of an upload were taken by another "
                                   "gateway process first")

    async def _record(self, rows: list[UploadRow]) -> None:
        """This process's outcome for its lines: the ledger, then the shared ``uploads``
        (``SharedUploads.record``)."""
        await self.uploads.record(self.ledger, rows)

    async def _refused(self, part: list[RevenueLineIn], err: PlatformRejected,
                       invoices: dict[str, _Invoice], attempt: str) -> list[list[RevenueLineIn]]:
        """A 422 (or a 413: more lines than the platform takes): dead-letter the refused
        invoices, release the other lines and return them as the uploads to send next; when
        the answer does not name the lines, send halves (split between invoices) until it
        does or one invoice is left, which is then the one refused."""
        refused = refused_invoices(part, err.body) if err.status == 422 else None
        if refused is None:
            parts = halves(part)
            if len(parts) == 1:
                await self._refuse(part, invoices, attempt, err, err.body)
                return []
            log.warning("revenue upload of %d lines refused with %d without naming the lines; "
                        "sending it in halves", len(part), err.status)
            await self._record(self._rows(
                part, invoices, "released", attempt,
                f"refused with {err.status} not naming the lines; sent again in halves"))
            return parts
        for inv_id, errors in refused.items():
            it = invoices[inv_id]
            it.refusal = Permanent(
                "; ".join(f"{line_id}: [{code}] {msg}" for line_id, code, msg in errors)[:1000],
                code=f"revenue.{errors[0][1].lower()}")
            it.platform_response = err.body
        rest = [ln for ln in part if ln.invoice_id not in refused]
        self.rejected_lines += len(part) - len(rest)
        await self._record(
            self._rows([ln for ln in part if ln.invoice_id in refused], invoices, "rejected",
                       attempt, f"422: {err.body}"[:500])
            + self._rows(rest, invoices, "released", attempt,
                         "upload refused for other invoices' lines; sent again without them"))
        log.warning("revenue upload refused for %d invoice(s) (%s); %d other line(s) sent "
                    "again", len(refused), ", ".join(sorted(refused)), len(rest))
        return [rest] if rest else []

    async def _refuse(self, part: list[RevenueLineIn], invoices: dict[str, _Invoice],
                      attempt: str, err: GatewayError, body: str | None) -> None:
        """The platform refused the whole upload: its invoices are dead-lettered."""
        await self._record(self._rows(part, invoices, "rejected", attempt,
                                                    f"[{err.code}] {err}"[:500]))
        self.rejected_lines += len(part)
        for inv_id in dict.fromkeys(ln.invoice_id for ln in part):
            invoices[inv_id].refusal = err
            invoices[inv_id].platform_response = body

    async def _in_doubt(self, lines: list[RevenueLineIn], invoices: dict[str, _Invoice],
                        reason: str, attempt: str | None = None) -> None:
        """Lines that may or may not be at the platform: flag them, never send them again."""
        await self._record(self._rows(
            lines, invoices, "in_doubt", attempt or new_id(), reason[:500]))
        for ln in lines:
            invoices[ln.invoice_id].done.add(ln.line_id)
        ids = sorted({ln.invoice_id for ln in lines})
        self.in_doubt_lines += len(lines)
        self.last_error = f"revenue.upload_in_doubt: {len(lines)} line(s): {reason}"
        log.error("revenue: %d line(s) of %d invoice(s) in doubt, not sent again "
                  "(revenue.upload_in_doubt): %s; invoices %s", len(lines), len(ids), reason,
                  ", ".join(ids[:20]) + (" ..." if len(ids) > 20 else ""))
        await self.bus.emit(self.subjects.mon_event("revenue"), _json.encode({
            "kind": "revenue", "event": "upload_in_doubt", "code": "revenue.upload_in_doubt",
            "at": time.time(), "instance": instance_id(), "reason": reason,
            "lines": [ln.line_id for ln in lines[:200]], "line_count": len(lines),
            "invoices": ids[:200]}))

    async def _settle(self, invoices: Iterable[_Invoice]) -> None:
        """Ack, dead-letter or nak every delivery, after the ledger has everything."""
        for it in invoices:
            key, corr = str(it.env.key), it.env.correlation_id
            if it.refusal is not None:
                self.rejected_invoices += 1
                for d in it.deliveries:
                    await self.dlq.send(d, it.refusal, business_key=key, correlation_id=corr,
                                        platform_response=it.platform_response)
                    self.failed += 1
            elif it.retry is not None:
                unsent = sum(1 for ln in it.lines if ln.line_id not in it.done)
                for d in it.deliveries:
                    match self.decide(d, it.retry):
                        case Retry(delay=delay):
                            await d.nak(delay=delay)
                            self.retried += 1
                        case DeadLetter() as verdict:
                            self.dead_lettered_lines += unsent
                            unsent = 0  # once per invoice, whatever its deliveries
                            await self.dlq.send(d, verdict.as_error(it.retry), business_key=key,
                                                correlation_id=corr,
                                                platform_response=str(it.retry))
                            self.failed += 1
            else:
                assert not it.unfinished, f"invoice {it.env.key} settled with lines to send"
                for d in it.deliveries:
                    await d.ack()
                    self.processed += 1

    def statistics(self) -> dict[str, object]:
        return {
            **super().statistics(),
            **self.guard.statistics(),
            "requests": self.requests,
            "uploaded_lines": self.uploaded_lines,
            "skipped_lines": self.skipped_lines,
            "in_doubt_lines": self.in_doubt_lines,
            "waiting_lines": self.waiting_lines,
            "released_claims": self.released_claims,
            "waiting_versions": self.waiting_versions,
            "rejected_invoices": self.rejected_invoices,
            "rejected_lines": self.rejected_lines,
            "dead_lettered_lines": self.dead_lettered_lines,
            "dead_lettered": self.dlq.count,
            "latency_ms": percentiles(self._latency_ms),
        }
