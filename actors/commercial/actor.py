"""The deal saga actor: ``deal.approved.v1`` → subscription, sales order, revenue contract.

Theory of operation: a ``BatchWorker`` on the durable consumer ``deal-saga`` (commercial lane,
filter ``deal.approved.v1``). For each deal in a fetched batch it loads the saga's state from
the shared saga records (``actors.infra.state``: the cluster's ``sagas`` bucket, so any gateway
process can carry on a saga another one started) and asks the pure planner
(``actors.commercial.saga``) what to do next, until the saga ends or a step must wait:

- a step is one platform call carrying ``step_key(deal, step)`` as its idempotency key (the
  revenue contract's ``PUT`` is idempotent by version), then its canonical events are published
  (``Nats-Msg-Id`` = ``derive_id(deal.approved id, step)``), then the new state is stored,
  conditionally on the revision the step started from (a process that wakes up from a freeze
  cannot overwrite a saga another process moved on: its write conflicts, the message is
  redelivered and decided again from a fresh read), and audited in the ledger. A crash anywhere
  in that sequence redoes the step: the platform answers with what it already holds and the
  stream drops the republished ids;
- a ``Retryable`` failure (timeout, 5xx, 429, broker, ledger) leaves the state as it is and
  naks the message with backoff (``BatchWorker.decide``); after ``max_deliver`` deliveries it
  is dead-lettered ``retry.exhausted`` and a replay resumes the saga where it stopped;
- a ``Permanent`` refusal of a step turns the saga to compensating (committed first), the done
  steps are reversed newest first (cancel the subscription, close the sales order), and the
  message is dead-lettered ``saga.compensated`` with the step and the platform's reason,
  announced on ``<prefix>.mon.events.saga``. A refused reversal ends the saga ``failed``
  (dead letter ``saga.compensation_failed``): a person must finish it.

The message is acked only when the saga completed and its state is committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import anyio
import msgspec

from contracts import (
    BusinessKey,
    ContractError,
    DealApproved,
    Envelope,
    GatewayError,
    JsonCodec,
    MsgpackCodec,
    Payload,
    Permanent,
    Retryable,
    Subjects,
    derive_id,
    make_envelope,
)
from contracts.platforms.billing import BillingSubscription
from contracts.platforms.cpq import PriceQuote
from contracts.platforms.erp import SalesOrderClose, SalesOrderRecord
from contracts.platforms.partner import PartnerDeal
from contracts.platforms.revenue import RevenueContract

from ..crash import crashpoint
from ..deadletter import DeadLetterSink
from ..infra.bus import Delivery, OutMsg
from ..infra.state import SagaRecords
from ..monitor import instance_id
from ..platforms import PlatformGuard, Platforms, segment
from ..resilience import BreakerConfig, CircuitBreaker, Transition
from ..worker import BatchWorker
from . import lifecycle, saga
from .saga import Complete, Do, SagaState, Settled, Undo

__all__ = ["SAGA_CONSUMER", "DealSaga", "SagaPlatforms"]

log = logging.getLogger("erpgw.commercial.saga")

SAGA_CONSUMER = "deal-saga"

_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
_state: JsonCodec[SagaState] = JsonCodec(SagaState)
_deal: JsonCodec[PartnerDeal] = JsonCodec(PartnerDeal)
_quote: JsonCodec[PriceQuote] = JsonCodec(PriceQuote)
_sub: JsonCodec[BillingSubscription] = JsonCodec(BillingSubscription)
_order: JsonCodec[SalesOrderRecord] = JsonCodec(SalesOrderRecord)
_contract: JsonCodec[RevenueContract] = JsonCodec(RevenueContract)
_applied: JsonCodec[lifecycle.Applied] = JsonCodec(lifecycle.Applied)
_json = msgspec.json.Encoder()
_generic = msgspec.json.Decoder()


def _refusal(platform: str, err: GatewayError) -> tuple[str, str]:
    """(code, reason) of a permanent refusal: the platform's own error code when its body
    names one (``erp.credit_hold``), else the error's."""
    body = getattr(err, "body", "") or ""
    code = err.code
    try:
        doc = _generic.decode(body) if body else None
    except msgspec.DecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("code"), str) and doc["code"]:
        code = f"{platform}.{doc['code'].lower()}"
    reason = f"{err.message}: {body[:500]}" if body else err.message
    return code, reason


@dataclass(frozen=True, slots=True)
class SagaPlatforms:
    """The saga's endpoint at each platform it calls (``actors.platforms``): a breaker per
    platform (``saga.<platform>``, outliving the actor's restarts: the platforms keep their
    endpoints) and the account budget every other adapter of that platform shares. A call is
    refused at once while its breaker is open (``saga.breaker_open``, retryable: the deal
    waits), else it waits for a permit (fail closed). ``retry_in`` is how long until every
    breaker lets calls through again: the saga stops fetching until then, so deals wait in the
    stream during an outage instead of being tried and dead-lettered one by one."""

    PLATFORMS: ClassVar[tuple[str, ...]] = ("partner", "cpq", "billing", "erp", "revenue")

    partner: PlatformGuard
    cpq: PlatformGuard
    billing: PlatformGuard
    erp: PlatformGuard
    revenue: PlatformGuard

    @classmethod
    def of(cls, platforms: Platforms, config: BreakerConfig | None = None) -> SagaPlatforms:
        """The ``saga`` endpoint of each platform, within each account's budget."""
        def guard(name: str) -> PlatformGuard:
            return getattr(platforms, name).endpoint(  # type: ignore[no-any-return]
                "saga", open_code="saga.breaker_open", label=f"{name} (deal saga)",
                breaker=CircuitBreaker(f"saga.{name}", config))
        return cls(**{p: guard(p) for p in cls.PLATFORMS})

    def guards(self) -> tuple[PlatformGuard, ...]:
        return (self.partner, self.cpq, self.billing, self.erp, self.revenue)

    def retry_in(self, now: float) -> float:
        return max(g.breaker.retry_in(now) for g in self.guards() if g.breaker is not None)

    def drain_transitions(self) -> list[Transition]:
        return [t for g in self.guards() if g.breaker is not None
                for t in g.breaker.drain_transitions()]

    def statistics(self) -> dict[str, object]:
        return {p: g.breaker.statistics() for p, g in zip(self.PLATFORMS, self.guards(),
                                                           strict=True)
                if g.breaker is not None}


class DealSaga(BatchWorker):
    """Runs the deal sagas of each fetched batch, one deal after another (see the module
    docstring). ``statistics()`` counts sagas completed, compensated and failed, steps done
    and reversals."""

    def __init__(self, name: str, *, platforms: SagaPlatforms, sagas: SagaRecords,
                 subjects: Subjects, dlq: DeadLetterSink,
                 clock: Callable[[], float] = time.monotonic, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.platforms = platforms
        self._clock = clock
        self.sagas = sagas
        self.subjects = subjects
        self.dlq = dlq
        self.counts: dict[str, int] = {"completed": 0, "compensated": 0, "failed": 0,
                                       "steps": 0, "undone": 0, "settled_again": 0}

    async def gate(self) -> None:
        """While a platform's breaker is open, do not fetch (the deals wait in the stream)."""
        await self._transitions()
        while not self.stop_requested:
            wait = self.platforms.retry_in(self._clock())
            if wait <= 0:
                return
            with anyio.move_on_after(min(wait, 1.0)):
                await self.wait_stop_requested()

    async def _transitions(self) -> None:
        for t in self.platforms.drain_transitions():
            log.warning("breaker %s: %s -> %s (%s)", t.breaker, t.source, t.target, t.reason)
            await self.bus.emit(self.subjects.mon_event("breaker"), _json.encode({
                "kind": "breaker", "event": str(t.event), "at": time.time(),
                "instance": instance_id(), "breaker": t.breaker, "source": str(t.source),
                "target": str(t.target), "reason": t.reason, "monotonic_at": t.at}))

    async def handle(self, batch: Sequence[Delivery]) -> None:
        for d in batch:
            try:
                env = _codec.decode(d.data)
                if not isinstance(env.payload, DealApproved):
                    raise ContractError(f"the deal saga cannot handle {env.type}",
                                        code="route.unexpected_type", path="$.payload.type")
            except ContractError as err:
                await self.dlq.send(d, err)
                self.failed += 1
                continue
            context = {"business_key": str(env.key), "correlation_id": env.correlation_id}
            self.sagas.begin()
            try:
                state = await self._run(env)
            except Retryable as err:
                self.last_error = f"[{err.code}] {err}"
                await self.fail(d, err, self.dlq, **context)
                continue
            if state.status == "completed":
                await d.ack()
                self.processed += 1
                continue
            code = "saga.compensated" if state.status == "compensated" else \
                "saga.compensation_failed"
            reason = (f"deal {state.deal_id}: step {state.failed_step} refused "
                      f"[{state.failure_code}] {state.failure_reason}; reversed: "
                      f"{', '.join(state.undone) or 'nothing to reverse'}")
            await self.dlq.send(d, Permanent(reason, code=code), **context)
            self.failed += 1

    async def _save(self, env: Envelope, state: SagaState, event: str, detail: str) -> None:
        await self.sagas.save(state.deal_id, state.status, _state.encode(state),
                                    correlation_id=env.correlation_id, now=time.time(),
                                    event=event, detail=detail)

    async def _publish(self, env: Envelope, step: str,
                       events: Sequence[tuple[Payload, BusinessKey, str]]) -> None:
        """Publish a step's canonical events (``Retryable`` when the broker cannot)."""
        outs = []
        for n, (payload, key, source) in enumerate(events):
            out = make_envelope(payload, source=source, key=key, caused_by=env,
                                msg_id=derive_id(env.id, step, str(n)))
            outs.append(OutMsg(subject=self.subjects.for_type(out.type),
                               data=_codec.encode(out), msg_id=out.id,
                               headers={"traceparent": out.traceparent or ""}))
        for result in await self.bus.publish_batch(outs):
            if result is not None:
                raise result

    async def _run(self, env: Envelope) -> SagaState:
        """Drive one deal's saga as far as it goes now; its final (or settled) state.

        Raises ``Retryable`` (platform, broker or ledger): the state stays as committed.
        """
        approval = env.payload
        assert isinstance(approval, DealApproved)
        raw = await self.sagas.get(approval.deal_id)
        state = _state.decode(raw) if raw is not None else SagaState(deal_id=approval.deal_id)
        while True:
            match saga.next_action(state):
                case Settled():
                    self.counts["settled_again"] += 1
                    return state
                case Do(step=step):
                    try:
                        state = await self._do(env, approval, state, step)
                    except Permanent as err:
                        code, reason = _refusal(_PLATFORM[step], err)
                        state = saga.after_rejection(state, step, code, reason)
                        log.warning("deal %s: step %s refused [%s]; compensating",
                                    state.deal_id, step, code)
                        await self._save(env, state, f"{step}.refused", f"[{code}] {reason}")
                case Undo(step=step):
                    try:
                        state = await self._undo(env, state, step)
                    except Permanent as err:
                        code, reason = _refusal(_PLATFORM[step], err)
                        state = saga.finish(msgspec.structs.replace(
                            state, failure_reason=f"{state.failure_reason}; reversing {step} "
                                                  f"refused [{code}] {reason}"[:1000]),
                            failed=True)
                        await self._save(env, state, "failed", f"undo {step}: [{code}]")
                        await self._announce(env, state)
                        self.counts["failed"] += 1
                        return state
                case Complete(compensated=compensated):
                    if not compensated:
                        await self._baseline(state)
                    state = saga.finish(state)
                    await self._save(env, state, state.status,
                                     ", ".join(f"{k}={v}" for k, v in state.done.items()))
                    await self._announce(env, state)
                    self.counts["compensated" if compensated else "completed"] += 1
                    return state

    async def _do(self, env: Envelope, approval: DealApproved, state: SagaState,
                  step: str) -> SagaState:
        """One step: the platform call, its events, then its state committed."""
        key = saga.step_key(state.deal_id, step)
        plan = state.plan
        events: list[tuple[Payload, BusinessKey, str]] = []
        if step == "enrich":
            p = self.platforms
            resp = await p.partner.get(f"/partner/v1/deals/{segment(approval.deal_id)}")
            deal = _deal.decode(resp.body)
            body = _json.encode(saga.price_request(deal))
            quote = _quote.decode((await p.cpq.post("/cpq/v1/price", body)).body)
            plan = saga.plan_deal(approval, deal, quote)
            result = f"total={plan.total} {plan.currency}"
            events.append((saga.order_booked(plan), BusinessKey(
                source="cpq", object_id=f"ord_{plan.deal_id}", version=1), "cpq"))
        else:
            assert plan is not None, "enrich is done before any other step"
            if step == "subscription":
                body = _json.encode(saga.subscription_request(plan))
                resp = await self.platforms.billing.post(
                    "/billing/v1/subscriptions", body, headers={"Idempotency-Key": key})
                sub = _sub.decode(resp.body)
                result = sub.id
                events.append((saga.subscription_activated(plan, sub), BusinessKey(
                    source="billing", object_id=sub.id, version=sub.version), "billing"))
            elif step == "sales_order":
                body = _json.encode(saga.sales_order_request(plan, state.done["subscription"]))
                resp = await self.platforms.erp.post(
                    "/erp/v1/sales-orders", body, headers={"Idempotency-Key": key})
                result = _order.decode(resp.body).id
            else:
                body = _json.encode(saga.revenue_contract_request(
                    plan, state.done["subscription"]))
                resp = await self.platforms.revenue.request(
                    "PUT", f"/revenue/v1/contracts/{segment(plan.deal_id)}", body)
                contract = _contract.decode(resp.body)
                result = f"{contract.id}:v{contract.version}"
                events += [(s, BusinessKey(source="revenue", object_id=s.schedule_id,
                                           version=contract.version), "revenue")
                           for s in saga.schedules(plan, contract)]
        crashpoint("saga.after_step")
        await self._publish(env, step, events)
        state = saga.after_step(state, step, result, plan)  # type: ignore[arg-type]
        await self._save(env, state, f"{step}.done", result)
        self.counts["steps"] += 1
        return state

    async def _undo(self, env: Envelope, state: SagaState, step: str) -> SagaState:
        """Reverse one done step (idempotent at the platform), publish, commit."""
        target = state.done[step]
        note = (f"deal {state.deal_id}: {state.failed_step} refused "
                f"[{state.failure_code}]")
        events: list[tuple[Payload, BusinessKey, str]] = []
        result: str
        if step == "subscription":
            key = saga.step_key(state.deal_id, f"undo.{step}")
            resp = await self.platforms.billing.post(
                f"/billing/v1/subscriptions/{segment(target)}/cancel", b"{}",
                headers={"Idempotency-Key": key})
            sub = _sub.decode(resp.body)
            result = sub.status
            events.append((saga.subscription_cancelled(sub, note), BusinessKey(
                source="billing", object_id=sub.id, version=sub.version), "billing"))
            # Flow 5 follows this subscription no further: its cancellation (published below,
            # at this version) is then stale for the subscription sync, not an unknown one.
            assert state.plan is not None
            ended = lifecycle.baseline(state.plan, state.done.get("sales_order", ""))
            await self.sagas.save(
                lifecycle.record_id(sub.id), f"v{sub.version}", _applied.encode(
                    lifecycle.Applied(sub.version, msgspec.structs.replace(ended,
                                                                           cancelled=True))),
                correlation_id=env.correlation_id, now=time.time(),
                event=f"subscription.v{sub.version}", detail="cancelled by the deal saga")
        else:
            key = saga.step_key(state.deal_id, f"undo.{step}")
            body = _json.encode(SalesOrderClose(reason=note))
            resp = await self.platforms.erp.post(
                f"/erp/v1/sales-orders/{segment(target)}/close", body,
                headers={"Idempotency-Key": key})
            result = _order.decode(resp.body).status
        crashpoint("saga.after_step")
        await self._publish(env, f"undo.{step}", events)
        state = saga.after_undo(state, step, result)
        await self._save(env, state, f"{step}.reversed", f"{target} {result}")
        self.counts["undone"] += 1
        return state

    async def _baseline(self, state: SagaState) -> None:
        """Version 1 of the deal's subscription as flow 5 starts from it (ledger row
        ``subscription:<id>``), committed before the saga is: a crash in between writes it
        again."""
        assert state.plan is not None
        sub_id = state.done["subscription"]
        if await self.sagas.get(lifecycle.record_id(sub_id)) is not None:
            return  # written before a crash (and maybe moved on by flow 5 since): keep it
        base = lifecycle.Applied(1, lifecycle.baseline(state.plan, state.done["sales_order"]))
        await self.sagas.save(lifecycle.record_id(sub_id), "v1", _applied.encode(base),
                                    correlation_id=None, now=time.time(),
                                    event="subscription.v1", detail=f"deal {state.deal_id}")

    async def _announce(self, env: Envelope, state: SagaState) -> None:
        """The saga's end on ``<prefix>.mon.events.saga`` (core NATS, JSON, at most once)."""
        await self.bus.emit(self.subjects.mon_event("saga"), _json.encode({
            "kind": "saga", "event": state.status, "at": time.time(),
            "instance": instance_id(), "saga": "deal_to_contract", "deal_id": state.deal_id,
            "correlation_id": env.correlation_id, "done": state.done,
            "undone": state.undone, "failed_step": state.failed_step,
            "code": state.failure_code, "reason": state.failure_reason}))

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), **self.counts, "dead_lettered": self.dlq.count,
                "breakers": self.platforms.statistics()}


# Which platform answers each step (for the dead letter's code).
_PLATFORM = {"enrich": "partner", "subscription": "billing", "sales_order": "erp",
             "revenue_contract": "revenue"}
