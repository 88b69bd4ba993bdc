"""Settlement poster: each ``partner.commission.accrued.v1`` → one partner settlement, recorded
at the partner portal and owed in the ERP as a vendor bill (flow 3's last step).

Theory of operation, per commission of a fetched batch (settlements are few: one request at
a time, no bulk API on either side):

1. ``plan.settlement_for`` makes the ``PartnerSettlementIssued``: its id is derived from the
   commission id, so a redelivered or replayed commission makes the same settlement;
2. a settlement the ledger already holds (``settlements``) is not sent again: its event is
   republished (same ``Nats-Msg-Id``) and the commission acked;
3. ``POST /partner/v1/settlements`` with ``Idempotency-Key`` = derive(settlement id), then
   ``POST /erp/v1/vendor-bills`` with ``Idempotency-Key`` = derive(settlement id) and
   ``externalId`` = the settlement id, each behind its platform's breaker and rate limiter
   (``PlatformGuard``). A retry after any failure repeats the same keys and bodies, which both
   platforms answer as a replay, so neither records anything twice;
4. the ledger records the settlement (audited ``settlement.recorded``) in one durable
   transaction; then ``partner.settlement.issued.v1`` is published on the revpartner lane
   (``Nats-Msg-Id`` = derive(commission envelope id, ``settlement``)) and the commission acked.

The cycle time from the payment reaching the gateway (the time in its UUIDv7 envelope id, the
commission's ``causation_id``) to the payable's 201 is handed to ``on_cycle`` (the monitor's
``partner_settlement_cycle_ms``) for settlements sent, not for ones found in the ledger.

Errors: 429, 5xx, timeouts (``Retryable``) nak with backoff, never earlier than a
``Retry-After``; a refusal (other 4xx, ``Permanent``) dead-letters the commission with the
platform's answer as evidence (``http.rejected``; a settlement the portal recorded but the ERP
refused is at the portal only, and replaying the dead letter after a fix posts the payable
under the same key). While either breaker is open the poster stops fetching.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from contracts import (
    CommissionAccrued,
    ContractError,
    Envelope,
    JsonCodec,
    MsgpackCodec,
    PartnerSettlementIssued,
    Permanent,
    Retryable,
    Subjects,
    derive_id,
    make_envelope,
)
from contracts.platforms.erp import VendorBillIn, VendorBillRecord
from contracts.platforms.partner import SettlementIn

from ..deadletter import DeadLetterSink
from ..infra.bus import Delivery, OutMsg
from ..infra.ledger import Ledger, SettlementRow
from ..platforms import PlatformGuard, PlatformRejected
from ..router.invoices import AccountMap
from ..worker import BatchWorker
from .plan import (
    erp_payable_key,
    id_time,
    payable_to_wire,
    portal_settlement_key,
    settlement_for,
    settlement_to_wire,
)

__all__ = ["PAYABLES_PATH", "SETTLEMENTS_PATH", "SettlementPoster"]

log = logging.getLogger("erpgw.payments.settlement")
_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
_settlement_json: JsonCodec[SettlementIn] = JsonCodec(SettlementIn)
_bill_json: JsonCodec[VendorBillIn] = JsonCodec(VendorBillIn)
_bill_dec: JsonCodec[VendorBillRecord] = JsonCodec(VendorBillRecord)

SETTLEMENTS_PATH = "/partner/v1/settlements"
PAYABLES_PATH = "/erp/v1/vendor-bills"


class SettlementPoster(BatchWorker):
    """The durable consumer ``partner-settlement``; see the module docstring."""

    def __init__(self, name: str, *, subjects: Subjects, ledger: Ledger, dlq: DeadLetterSink,
                 portal: PlatformGuard, erp: PlatformGuard, accounts: AccountMap | None = None,
                 on_cycle: Callable[[float], None] | None = None,
                 wall: Callable[[], float] = time.time, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.subjects = subjects
        self.ledger = ledger
        self.dlq = dlq
        self.portal = portal
        self.erp = erp
        self.accounts = accounts or AccountMap()
        self._on_cycle = on_cycle
        self._wall = wall
        self.settled = 0
        self.replayed = 0
        self.known = 0

    async def gate(self) -> None:
        """While either platform's breaker is open, wait (commissions stay in the stream)."""
        await self.portal.gate(self)
        await self.erp.gate(self)

    async def handle(self, batch: Sequence[Delivery]) -> None:
        todo: list[tuple[Delivery, Envelope, CommissionAccrued, PartnerSettlementIssued]] = []
        for d in batch:
            try:
                env = _codec.decode(d.data)
                c = env.payload
                if not isinstance(c, CommissionAccrued):
                    raise ContractError(f"settlement poster cannot handle {env.type}",
                                        code="route.unexpected_type", path="$.payload.type")
                todo.append((d, env, c, settlement_for(c)))
            except (ContractError, ValueError) as exc:
                err = exc if isinstance(exc, ContractError) else ContractError(
                    str(exc), code="settlement.invalid", path="$.payload")
                await self.dlq.send(d, err)
                self.failed += 1
        if not todo:
            return
        # LedgerUnavailable (retryable) propagates: the worker naks the batch.
        known = await self.ledger.settled(s.settlement_id for _, _, _, s in todo)
        for d, env, c, s in todo:
            if s.settlement_id in known:
                self.known += 1
                await self._announce(d, env, s)
                continue
            await self._settle(d, env, c, s)

    async def _settle(self, d: Delivery, env: Envelope, c: CommissionAccrued,
                      s: PartnerSettlementIssued) -> None:
        portal_key = portal_settlement_key(s.settlement_id)
        erp_key = erp_payable_key(s.settlement_id)
        try:
            await self.portal.post(
                SETTLEMENTS_PATH, _settlement_json.encode(settlement_to_wire(s, c.invoice_id)),
                headers={"Idempotency-Key": portal_key})
            resp = await self.erp.post(
                PAYABLES_PATH,
                _bill_json.encode(payable_to_wire(s, self.accounts, c.invoice_id)),
                headers={"Idempotency-Key": erp_key})
            record = _bill_dec.decode(resp.body)
        except Retryable as err:
            await self.portal.publish_transitions()
            await self.erp.publish_transitions()
            self.last_error = f"[{err.code}] {err}"
            await self.fail(d, err, self.dlq, business_key=str(env.key),
                            correlation_id=env.correlation_id, platform_response=err.message)
            return
        except Permanent as err:
            self.last_error = f"[{err.code}] {err}"
            body = err.body if isinstance(err, PlatformRejected) else None
            await self.dlq.send(d, err, business_key=str(env.key),
                                correlation_id=env.correlation_id, platform_response=body)
            self.failed += 1
            return
        now = self._wall()
        await self.ledger.record_settlements([SettlementRow(
            s.settlement_id, c.commission_id, s.partner_id, portal_key, erp_key, record.id,
            s.total, s.currency, env.correlation_id, now)])
        if resp.status == 201:
            self.settled += 1
        else:
            self.replayed += 1
        received = id_time(env.causation_id)
        if received is not None and self._on_cycle is not None:
            self._on_cycle((now - received) * 1000.0)
        await self._announce(d, env, s)

    async def _announce(self, d: Delivery, env: Envelope, s: PartnerSettlementIssued) -> None:
        """Publish the settlement event (idempotent id), then ack the commission; nak it when
        the publish fails (the ledger already holds the settlement: no platform is called
        again)."""
        out = make_envelope(s, source="gateway", key=env.key, caused_by=env,
                            msg_id=derive_id(env.id, "settlement"))
        msg = OutMsg(subject=self.subjects.for_type(out.type), data=_codec.encode(out),
                     msg_id=out.id, headers={"traceparent": out.traceparent or ""})
        (outcome,) = await self.bus.publish_batch([msg])
        if outcome is None:
            await d.ack()
            self.processed += 1
            return
        await self.fail(d, outcome, self.dlq)

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "settled": self.settled, "replayed": self.replayed,
                "known": self.known, "portal": self.portal.statistics(),
                "erp": self.erp.statistics(), "dead_lettered": self.dlq.count}
