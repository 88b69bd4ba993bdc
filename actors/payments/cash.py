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

Entities and currencies (``[entities]``): the cash application names the entity of the
payment's customer; a payment in another currency than that entity's functional one is posted
in the functional currency with its realized exchange gain or loss
(``journal_for_payment_in_entity``). Before planning, the router reads what those payments
need, once each: the ERP's daily rate of the payment's day (``rate_source``) and the rate each
invoice it applies to was booked at (``booked_source``: the ERP's posting of the invoice's
version the shared ``versions`` name).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import date

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
from ..erp.ordering import versioned_external_id
from ..infra.bus import Delivery, OutMsg, StoredMsg
from ..infra.ledger import Ledger, ParkedPayment
from ..infra.state import SharedParking, SharedVersions
from ..lifecycle.fx import EntityMap, RateTable
from ..router.invoices import (
    AccountMap,
    RateSource,
    erp_idempotency_key,
    journal_command,
    load_rates,
)
from ..worker import BatchWorker
from .plan import journal_for_payment_in_entity

__all__ = ["BookedRateSource", "PaymentRouter", "fx_needs", "plan_cash"]

# The rate the ERP booked a document at: its external id → the rate, or None (no rate).
BookedRateSource = Callable[[str], Awaitable[str | None]]
# Booked rates kept between batches (they never change); the cache starts over beyond this.
_BOOKED_CACHE = 10_000

log = logging.getLogger("erpgw.payments.cash")
_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
# The source of the invoices payments apply to (their aggregates in the shared versions).
_INVOICES = "billing"


def _payment(env: Envelope) -> PaymentReceived:
    if not isinstance(env.payload, PaymentReceived):
        raise ContractError(f"payment router cannot handle {env.type}",
                            code="route.unexpected_type", path="$.payload.type")
    return env.payload


def plan_cash(env: Envelope, subjects: Subjects, accounts: AccountMap, *,
              entities: EntityMap | None = None, rates: RateTable | None = None,
              booked: Mapping[str, str] | None = None) -> OutMsg | None:
    """The ``erp.journal`` command applying the payment in ``env``; ``None`` for a zero payment
    (nothing to post). ``entities``/``rates``/``booked``: see
    ``journal_for_payment_in_entity`` (default: no entities, as before). Raises
    ``ContractError`` for another payload type, and ``fx.missing_rate`` for a foreign-currency
    payment whose day's rate or invoice's booked rate is unknown."""
    payment = _payment(env)
    if payment.amount == 0:
        return None
    try:
        entry = journal_for_payment_in_entity(payment, erp_idempotency_key(env), accounts,
                                              entities or EntityMap(), rates, booked or {})
    except ValueError as exc:
        raise contract_error(exc) from exc
    return journal_command(env, entry, subjects)


def fx_needs(payments: Iterable[PaymentReceived], entities: EntityMap
             ) -> tuple[set[tuple[date, str]], set[str]]:
    """What the foreign-currency payments among ``payments`` need to be planned: the (day,
    functional currency) pairs of their daily rates, and the invoices whose booked rates the
    ERP holds. Empty while ``entities`` is not configured. Raises nothing."""
    days: set[tuple[date, str]] = set()
    invoices: set[str] = set()
    if not entities.configured:
        return days, invoices
    for p in payments:
        functional = entities.functional(entities.entity_for(p.customer_id))
        if p.amount and functional is not None and functional != p.currency:
            days.add((p.received_at.date(), functional))
            invoices.update(a.invoice_id for a in p.applications if a.amount)
    return days, invoices


class PaymentRouter(BatchWorker):
    """The durable consumer ``payment-router``; see the module docstring."""

    def __init__(self, name: str, *, subjects: Subjects, ledger: Ledger,
                 versions: SharedVersions, parking: SharedParking, dlq: DeadLetterSink,
                 accounts: AccountMap | None = None, recheck_s: float = 2.0,
                 entities: EntityMap | None = None, rate_source: RateSource | None = None,
                 booked_source: BookedRateSource | None = None,
                 clock: Callable[[], float] = time.monotonic, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.subjects = subjects
        self.ledger = ledger
        self.versions = versions
        self.parking = parking
        self.dlq = dlq
        self.accounts = accounts or AccountMap()
        self.entities = entities or EntityMap()
        self.rate_source = rate_source
        self.booked_source = booked_source
        self.rates = RateTable()
        self.booked: dict[str, str] = {}  # invoice id -> its posted version's booked rate
        self._by_posting: dict[str, str] = {}  # posting external id -> its rate (cache)
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

    def _plan(self, env: Envelope) -> OutMsg | None:
        return plan_cash(env, self.subjects, self.accounts, entities=self.entities,
                         rates=self.rates, booked=self.booked)

    async def _load_fx(self, payments: Iterable[PaymentReceived]) -> None:
        """Read the daily rates and the invoices' booked rates the foreign-currency payments
        among ``payments`` need (once each: neither ever changes). A retryable failure
        propagates (the batch comes back); a refusal is logged, and the payments needing
        it dead-letter with ``fx.missing_rate`` when planned."""
        if self.rate_source is None or self.booked_source is None:
            return
        days, invoices = fx_needs(payments, self.entities)
        try:
            await load_rates(days, self.rates, self.rate_source)
            if invoices:
                await self._load_booked(invoices, self.booked_source)
        except Retryable:
            raise
        except GatewayError as exc:
            log.error("%s: exchange rates refused: [%s] %s", self.name, exc.code, exc)

    async def _load_booked(self, invoices: set[str], source: BookedRateSource) -> None:
        """``self.booked[invoice]``: the rate of the posting of the invoice's version the ERP
        holds (the shared versions say which), read once per posting."""
        if len(self._by_posting) + len(invoices) > _BOOKED_CACHE:
            self._by_posting.clear()
            self.booked.clear()
        rows = await self.versions.read((_INVOICES, i) for i in sorted(invoices))
        for (_, invoice_id), r in rows.items():
            version = r.row.version if r.row is not None and r.row.version else 1
            external_id = versioned_external_id(invoice_id, version)
            if external_id not in self._by_posting:
                rate = await source(external_id)
                if rate is None:
                    continue
                self._by_posting[external_id] = rate
            self.booked[invoice_id] = self._by_posting[external_id]

    async def _apply(self, ready: Sequence[tuple[Delivery, Envelope]]) -> None:
        envs = {id(d): env for d, env in ready}
        await self._load_fx(env.payload for _, env in ready
                            if isinstance(env.payload, PaymentReceived))
        applied, skipped = await self.route(
            [d for d, _ in ready], lambda d: self._plan(envs[id(d)]), self.dlq)
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
        envs: dict[str, Envelope | ContractError] = {}
        for row in due:
            try:
                envs[row.payment_id] = _codec.decode(row.envelope)
            except ContractError as err:
                envs[row.payment_id] = err
        await self._load_fx(e.payload for e in envs.values()
                            if isinstance(e, Envelope) and isinstance(e.payload, PaymentReceived))
        for row in due:
            try:
                env = envs[row.payment_id]
                if isinstance(env, ContractError):
                    raise env
                out = self._plan(env)
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
