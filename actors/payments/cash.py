"""Cash application: ``payment.received.v1`` → the ERP journal command that applies it, once
every invoice it pays is in the ERP (flow 3, and the ordering rule of flow 6).

Theory of operation, per fetched batch:

1. decode every payment (a contract violation is dead-lettered at once);
2. ask the shared ``versions`` (``actors.infra.state``, kept in the cluster and written by
   every process's ERP poster) which of the invoices they apply to the ERP holds a version of;
3. a payment with an invoice not posted yet is **parked**, not failed: its envelope, subject
   and stream sequence go into the shared ``parked`` bucket (and the process's audit,
   ``payment.parked``), then it is acked;
4. the others are planned (``plan_cash``: Dr cash, Cr receivable, ``externalId`` = payment id,
   idempotency key derived from the payment's business key), published as one atomic batch on
   the ``erp.journal`` subject the existing ERP poster consumes, and acked once stored.

Resuming: every ``recheck_s`` (between batches, in ``gate``) the router of every process reads
the parked payments, and those whose invoices are now posted (by any process) are planned and
published exactly like a fresh delivery (same envelope, hence the same ``Nats-Msg-Id`` and
idempotency key), then released from ``parked`` (audited ``payment.resumed``). Two processes
resuming the same payment, or a crash between the publish and the release, publish the same ids
again (the stream drops them; past its window the ERP poster's shared versions and the ERP's
key do). A parked payment is never dropped: it waits until its invoice is posted, or until a
person replays or resolves it (docs/errors.md, ``payment.parked``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from contracts import (
    ContractError,
    Envelope,
    GatewayError,
    MsgpackCodec,
    PaymentReceived,
    Retryable,
    Subjects,
    contract_error,
)

from ..deadletter import DeadLetterSink
from ..infra.bus import Delivery, OutMsg, StoredMsg
from ..infra.ledger import Ledger, ParkedPayment
from ..infra.state import SharedParking, SharedVersions
from ..router.invoices import AccountMap, erp_idempotency_key, journal_command
from ..worker import BatchWorker
from .plan import journal_for_payment

__all__ = ["PaymentRouter", "plan_cash"]

log = logging.getLogger("erpgw.payments.cash")
_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
# The source of the invoices payments apply to (their aggregates in the shared versions).
_INVOICES = "billing"


def _payment(env: Envelope) -> PaymentReceived:
    if not isinstance(env.payload, PaymentReceived):
        raise ContractError(f"payment router cannot handle {env.type}",
                            code="route.unexpected_type", path="$.payload.type")
    return env.payload


def plan_cash(env: Envelope, subjects: Subjects, accounts: AccountMap) -> OutMsg | None:
    """The ``erp.journal`` command applying the payment in ``env``; ``None`` for a zero payment
    (nothing to post). Raises ``ContractError`` for another payload type."""
    payment = _payment(env)
    if payment.amount == 0:
        return None
    try:
        entry = journal_for_payment(payment, erp_idempotency_key(env), accounts)
    except ValueError as exc:
        raise contract_error(exc) from exc
    return journal_command(env, entry, subjects)


class PaymentRouter(BatchWorker):
    """The durable consumer ``payment-router``; see the module docstring."""

    def __init__(self, name: str, *, subjects: Subjects, ledger: Ledger,
                 versions: SharedVersions, parking: SharedParking, dlq: DeadLetterSink,
                 accounts: AccountMap | None = None, recheck_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.subjects = subjects
        self.ledger = ledger
        self.versions = versions
        self.parking = parking
        self.dlq = dlq
        self.accounts = accounts or AccountMap()
        self.recheck_s = recheck_s
        self._clock = clock
        self._next_recheck = 0.0
        self.applied = 0
        self.skipped = 0
        self.parked = 0
        self.resumed = 0
        self.waiting = 0  # parked payments still waiting at the last recheck

    async def gate(self) -> None:
        """Between batches: every ``recheck_s``, resume the parked payments whose invoices
        are posted now. A ledger or broker hiccup only postpones that to the next recheck."""
        now = self._clock()
        if now < self._next_recheck:
            return
        self._next_recheck = now + self.recheck_s
        try:
            await self.resume_parked()
        except Retryable as err:
            self.last_error = f"[{err.code}] {err}"
            log.warning("%s: parked payments not rechecked: %s", self.name, self.last_error)

    async def handle(self, batch: Sequence[Delivery]) -> None:
        items: list[tuple[Delivery, Envelope, PaymentReceived]] = []
        for d in batch:
            try:
                env = _codec.decode(d.data)
                items.append((d, env, _payment(env)))
            except ContractError as err:
                await self.dlq.send(d, err)
                self.failed += 1
        if not items:
            return
        # BrokerUnavailable/LedgerUnavailable (retryable) propagate: the worker naks the batch.
        posted = await self.versions.applied(
            _INVOICES, (a.invoice_id for _, _, p in items for a in p.applications))
        now = time.time()
        park = [(d, env, p) for d, env, p in items
                if any(a.invoice_id not in posted for a in p.applications)]
        if park:
            rows = [ParkedPayment(p.payment_id, tuple(a.invoice_id for a in p.applications),
                                  d.data, d.subject, d.stream_seq, now) for d, _, p in park]
            await self.parking.park(rows)
            await self.ledger.park_payments(rows)
            for d, _, p in park:
                log.info("payment %s parked until its invoice(s) are posted", p.payment_id)
                await d.ack()
                self.parked += 1
        parked_ids = {id(d) for d, _, _ in park}
        ready = [(d, env) for d, env, _ in items if id(d) not in parked_ids]
        await self._apply(ready)

    async def _apply(self, ready: Sequence[tuple[Delivery, Envelope]]) -> None:
        envs = {id(d): env for d, env in ready}
        applied, skipped = await self.route(
            [d for d, _ in ready],
            lambda d: plan_cash(envs[id(d)], self.subjects, self.accounts), self.dlq)
        self.applied += applied
        self.skipped += skipped

    async def resume_parked(self) -> int:
        """Publish the cash application of every parked payment whose invoices the ERP now
        holds, then mark them resumed; returns how many were resumed. A parked payment that
        cannot be planned is dead-lettered (from its stored copy) and marked resumed too.

        Raises ``LedgerUnavailable`` and, for a publish that failed, nothing: those payments
        stay parked for the next recheck.
        """
        parked = await self.parking.held()
        self.waiting = len(parked)
        if not parked:
            return 0
        posted = await self.versions.applied(_INVOICES,
                                             (i for row in parked for i in row.invoice_ids))
        due = [row for row in parked if all(i in posted for i in row.invoice_ids)]
        if not due:
            return 0
        outs: list[OutMsg] = []
        owners: list[ParkedPayment] = []
        done: list[str] = []
        dead: list[str] = []
        for row in due:
            try:
                out = plan_cash(_codec.decode(row.envelope), self.subjects, self.accounts)
            except ContractError as err:
                await self._dead_letter(row, err)
                dead.append(row.payment_id)
                continue
            if out is None:
                done.append(row.payment_id)
                continue
            outs.append(out)
            owners.append(row)
        results = await self.bus.publish_atomic(outs)
        for row, outcome in zip(owners, results, strict=True):
            if isinstance(outcome, Exception):
                self.last_error = str(outcome)
                log.info("parked payment %s not resumed yet: %s", row.payment_id, outcome)
            else:
                done.append(row.payment_id)
        now = time.time()
        await self.parking.release([*done, *dead])
        await self.ledger.resume_payments(done, now)
        await self.ledger.resume_payments(dead, now, "dead-lettered")
        self.resumed += len(done)
        self.applied += len(done)
        self.waiting -= len(done) + len(dead)
        if done:
            log.info("%s: resumed %d parked payment(s)", self.name, len(done))
        return len(done)

    async def _dead_letter(self, row: ParkedPayment, err: GatewayError) -> None:
        stored = StoredMsg(seq=row.stream_seq, subject=row.subject, data=row.envelope,
                           headers={}, time=row.parked_at)
        await self.dlq.send_stored(stored, err, attempts=1,
                                   business_key=f"billing:{row.payment_id}:v1")
        self.failed += 1

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "applied": self.applied, "skipped": self.skipped,
                "parked": self.parked, "resumed": self.resumed, "waiting": self.waiting,
                "dead_lettered": self.dlq.count}
