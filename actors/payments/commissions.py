"""Commission router: ``payment.received.v1`` → ``partner.commission.accrued.v1`` for the
partner that resells the paying customer (flow 3).

Per fetched batch: decode every payment, look up its customer's partner at the partner portal
(``AttributionClient``, cached per customer; a 404 is a direct customer: no commission),
compute each applied invoice's commission at the partner's rate (``plan.commissions_for_payment``)
and publish them on the revpartner lane, ``Nats-Msg-Id`` = derive(payment envelope id,
``commission``, invoice id); ack a payment once all of its commissions are stored. A payment
of a direct customer, or whose commissions round to zero, is acked with nothing published.

It is a consumer of its own on the payment subject, apart from the cash application
(``cash.PaymentRouter``): a partner portal outage delays commissions, never the ledger, and
a commission does not wait for the invoice's posting (it is owed once the customer paid).
Errors: a portal failure (429, 5xx, timeout) naks the payment with backoff
(``BatchWorker.decide``); a refusal (other 4xx) or an undecodable answer dead-letters it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from contracts import (
    BusinessKey,
    ContractError,
    Envelope,
    MsgpackCodec,
    PaymentReceived,
    Permanent,
    Retryable,
    Subjects,
    contract_error,
    derive_id,
    make_envelope,
)
from contracts.platforms.partner import Attribution

from ..deadletter import DeadLetterSink
from ..infra.bus import Delivery, OutMsg
from ..worker import BatchWorker
from .attribution import AttributionClient
from .plan import commissions_for_payment

__all__ = ["CommissionRouter", "plan_commissions"]

log = logging.getLogger("erpgw.payments.commissions")
_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)


def plan_commissions(env: Envelope, partner: Attribution | None,
                     subjects: Subjects) -> list[OutMsg]:
    """The ``CommissionAccrued`` messages of the payment in ``env`` (``[]`` for a direct
    customer). Raises ``ContractError`` for another payload or an invalid rate."""
    payment = env.payload
    if not isinstance(payment, PaymentReceived):
        raise ContractError(f"commission router cannot handle {env.type}",
                            code="route.unexpected_type", path="$.payload.type")
    try:
        commissions = commissions_for_payment(payment, partner)
    except ValueError as exc:
        raise contract_error(exc) from exc
    outs: list[OutMsg] = []
    for c in commissions:
        out = make_envelope(c, source="gateway",
                            key=BusinessKey(source="gateway", object_id=c.commission_id,
                                            version=1),
                            caused_by=env, msg_id=derive_id(env.id, "commission", c.invoice_id))
        outs.append(OutMsg(subject=subjects.for_type(out.type), data=_codec.encode(out),
                           msg_id=out.id, headers={"traceparent": out.traceparent or ""}))
    return outs


class CommissionRouter(BatchWorker):
    """The durable consumer ``commission-router``; see the module docstring."""

    def __init__(self, name: str, *, subjects: Subjects, dlq: DeadLetterSink,
                 attribution: AttributionClient, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.subjects = subjects
        self.dlq = dlq
        self.attribution = attribution
        self.accrued = 0
        self.direct = 0

    async def handle(self, batch: Sequence[Delivery]) -> None:
        planned: list[tuple[Delivery, list[OutMsg]]] = []
        for d in batch:
            try:
                env = _codec.decode(d.data)
                customer = env.payload.customer_id if isinstance(
                    env.payload, PaymentReceived) else ""
                partner = await self.attribution.lookup(customer) if customer else None
                outs = plan_commissions(env, partner, self.subjects)
            except Retryable as err:
                await self._settle_failed(d, err)
                continue
            except (Permanent, ContractError) as err:
                await self.dlq.send(d, err)
                self.failed += 1
                continue
            if not outs:
                self.direct += 1
                await d.ack()
                continue
            planned.append((d, outs))
        flat = [o for _, outs in planned for o in outs]
        results = iter(await self.bus.publish_batch(flat))
        for d, outs in planned:
            errors = [r for r in (next(results) for _ in outs) if r is not None]
            if not errors:
                await d.ack()
                self.accrued += len(outs)
                self.processed += 1
            else:
                await self._settle_failed(d, errors[0])

    async def _settle_failed(self, d: Delivery, err: Exception) -> None:
        await self.fail(d, err, self.dlq)

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "accrued": self.accrued, "direct": self.direct,
                "attribution": self.attribution.statistics(), "dead_lettered": self.dlq.count}
