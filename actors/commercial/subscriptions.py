"""The subscription sync actor (flow 5): amended, renewed and cancelled subscriptions → the ERP
sales order and the revenue contract, version by version, in order.

Theory of operation: a ``BatchWorker`` on the durable consumer ``subscription-sync``
(commercial lane, ``subscription.>``; ``subscription.activated.v1`` is the saga's own and is
acked as is). A fetched batch is sorted by (subscription, version), so versions that arrived
shuffled within a batch are applied in order. Per message, the applied version ``a`` of the
subscription is read from the shared saga records (``actors.infra.state``, key
``subscription:<id>``, written as version 1 when the deal saga completed, by whichever gateway
process ran it), and ``lifecycle.decide(a, n)`` says:

- ``stale`` (n <= a): already reflected; ack;
- ``early`` (n > a + 1): a predecessor has not been applied yet: nak with backoff (it waits in
  the stream, parked, and comes back after the predecessor); after ``max_deliver`` deliveries
  it is dead-lettered ``retry.exhausted`` (replay it once the gap is filled);
- ``apply`` (n = a + 1): the new phases (``lifecycle.evolve``), then
  ``POST /erp/v1/sales-orders/{id}/revise`` at version n (the same version again is a replay), a
  close of the order for a cancellation (idempotent), ``PUT /revenue/v1/contracts/{deal}`` at
  version n (idempotent by version), then the new applied version stored (conditionally on the
  revision read: another process's write in between makes it a redelivery), then the ack. A
  crash anywhere redoes the same version's writes, which the platforms answer as replays.

A subscription the records do not know yet (its saga is still running) is nak'ed like an early
version. A change the phases cannot take, or a platform's permanent refusal, is dead-lettered
with its code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import msgspec

from contracts import (
    ContractError,
    Envelope,
    JsonCodec,
    MsgpackCodec,
    Permanent,
    Retryable,
    SubscriptionActivated,
    SubscriptionAmended,
    SubscriptionCancelled,
    SubscriptionRenewed,
)
from contracts.platforms.erp import SalesOrderClose

from ..crash import crashpoint
from ..deadletter import DeadLetterSink
from ..infra.bus import Delivery
from ..infra.state import SagaRecords
from ..platforms import PlatformGuard, segment
from ..worker import BatchWorker
from . import lifecycle

__all__ = ["SUBSCRIPTION_CONSUMER", "SubscriptionSync"]

log = logging.getLogger("erpgw.commercial.subscriptions")

SUBSCRIPTION_CONSUMER = "subscription-sync"

_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
_applied: JsonCodec[lifecycle.Applied] = JsonCodec(lifecycle.Applied)
_enc = msgspec.json.Encoder()


class NotYet(Retryable):
    """The version cannot be applied yet (a predecessor or the saga is missing)."""

    code = "subscription.not_yet"


def _order_key(d: Delivery) -> tuple[str, int, int]:
    try:
        env = _codec.decode(d.data)
    except ContractError:
        return ("", 0, d.stream_seq)
    return (env.key.object_id, env.key.version, d.stream_seq)


class SubscriptionSync(BatchWorker):
    """See the module docstring. ``statistics()`` counts versions applied, stale, early."""

    def __init__(self, name: str, *, erp: PlatformGuard, revenue: PlatformGuard,
                 sagas: SagaRecords, dlq: DeadLetterSink, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        # The ERP's and the revenue platform's endpoints for this flow (actors.platforms):
        # a breaker each and the accounts' budgets.
        self.erp = erp
        self.revenue = revenue
        self.sagas = sagas
        self.dlq = dlq
        self.counts = {"applied": 0, "stale": 0, "early": 0, "activations": 0}

    async def gate(self) -> None:
        """While either platform's breaker is open, wait (the changes stay in the stream)."""
        await self.erp.gate(self)
        await self.revenue.gate(self)

    async def handle(self, batch: Sequence[Delivery]) -> None:
        for d in sorted(batch, key=_order_key):
            try:
                env = _codec.decode(d.data)
            except ContractError as err:
                await self.dlq.send(d, err)
                self.failed += 1
                continue
            context = {"business_key": str(env.key), "correlation_id": env.correlation_id}
            self.sagas.begin()
            try:
                await self._one(env)
            except NotYet as err:
                self.counts["early"] += 1
                await self.fail(d, err, self.dlq, **context)
                continue
            except Retryable as err:
                self.last_error = f"[{err.code}] {err}"
                await self.fail(d, err, self.dlq, **context)
                continue
            except Permanent as err:
                await self.dlq.send(d, err, **context)
                self.failed += 1
                continue
            await d.ack()
            self.processed += 1

    async def _one(self, env: Envelope) -> None:
        """Apply one version (or skip it). Raises ``NotYet``, ``Retryable``, ``Permanent``."""
        change = env.payload
        if isinstance(change, SubscriptionActivated):
            self.counts["activations"] += 1  # version 1: the deal saga made it
            return
        if not isinstance(change, SubscriptionAmended | SubscriptionRenewed |
                          SubscriptionCancelled):
            raise ContractError(f"the subscription sync cannot handle {env.type}",
                                code="route.unexpected_type", path="$.payload.type")
        sub_id, version = change.subscription_id, env.key.version
        raw = await self.sagas.get(lifecycle.record_id(sub_id))
        if raw is None:
            raise NotYet(f"subscription {sub_id} is not known yet (its deal saga has not "
                         "completed)")
        applied = _applied.decode(raw)
        match lifecycle.decide(applied.version, version):
            case "stale":
                self.counts["stale"] += 1
                log.info("subscription %s v%d is stale (v%d applied): skipped", sub_id,
                         version, applied.version)
                return
            case "early":
                raise NotYet(f"subscription {sub_id} v{version} waits for v"
                             f"{applied.version + 1}")
        state = lifecycle.evolve(applied.state, change)
        revision = lifecycle.order_revision(state, version)
        order = segment(state.order_id)
        await self.erp.post(f"/erp/v1/sales-orders/{order}/revise", _enc.encode(revision))
        if state.cancelled:
            await self.erp.post(f"/erp/v1/sales-orders/{order}/close",
                                _enc.encode(SalesOrderClose(
                                    reason=f"subscription {sub_id} cancelled (v{version})")))
        await self.revenue.request(
            "PUT", f"/revenue/v1/contracts/{segment(state.deal_id)}",
            _enc.encode(lifecycle.contract_request(state, version, sub_id)))
        crashpoint("subscription.after_write")
        await self.sagas.save(
            lifecycle.record_id(sub_id), f"v{version}",
            _applied.encode(lifecycle.Applied(version, state)),
            correlation_id=env.correlation_id, now=time.time(),
            event=f"subscription.v{version}",
            detail=f"{env.type} value={lifecycle.value(state)} {state.currency}")
        self.counts["applied"] += 1

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), **self.counts, "dead_lettered": self.dlq.count,
                "erp": self.erp.statistics(), "revenue": self.revenue.statistics()}

