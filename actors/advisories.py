"""Max-deliveries advisories → dead letters, so that DLQ_EXACT holds even when no handler
could write the letter.

Theory of operation: a handler dead-letters a message itself on its last allowed delivery.
But a message can also run out of deliveries without any handler reaching a verdict (the actor
crashed on it every time, or hung past ``ack_wait`` each time). The server then announces it on
``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`` — a core NATS subject, at
most once — and never delivers it again. The advisories stream keeps those announcements, and
this worker turns each into a dead letter of the original message (read back by sequence).
The letter's id is the one a handler would have used, so a message already dead-lettered by
its handler is not dead-lettered twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import msgspec

from contracts import (
    LANES,
    ContractError,
    Envelope,
    MsgpackCodec,
    Permanent,
    Subjects,
)

from .deadletter import DeadLetterSink
from .infra.bus import Delivery
from .worker import BatchWorker

__all__ = ["MaxDeliveriesWorker"]

log = logging.getLogger("erpgw.advisories")
_envelopes: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)


class MaxDeliveriesAdvisory(msgspec.Struct):
    stream: str
    consumer: str
    stream_seq: int
    deliveries: int = 0


_advisory = msgspec.json.Decoder(MaxDeliveriesAdvisory)


class MaxDeliveriesWorker(BatchWorker):
    def __init__(self, name: str, *, subjects: Subjects,
                 sink_for: Callable[[str, str], DeadLetterSink], **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.subjects = subjects
        self._sink_for = sink_for  # (lane, stream) -> sink
        self._lanes = {subjects.stream(lane): lane for lane in LANES}
        self.letters = 0

    async def handle(self, batch: Sequence[Delivery]) -> None:
        for d in batch:
            try:
                adv = _advisory.decode(d.data)
            except msgspec.DecodeError:
                log.warning("unreadable advisory at seq %s skipped", d.stream_seq)
                await d.term()
                continue
            lane = self._lanes.get(adv.stream)
            stored = await self.bus.get_stored(adv.stream, adv.stream_seq) if lane else None
            if lane is None or stored is None:
                log.warning("max deliveries on %s/%s seq %s: message not found",
                            adv.stream, adv.consumer, adv.stream_seq)
                await d.ack()
                continue
            key = corr = None
            try:
                env = _envelopes.decode(stored.data)
                key, corr = str(env.key), env.correlation_id
            except ContractError:
                pass
            err = Permanent(f"consumer {adv.consumer} gave up after {adv.deliveries} "
                            "deliveries without a verdict (server advisory)",
                            code="retry.max_deliveries")
            if await self._sink_for(lane, adv.stream).send_stored(
                    stored, err, attempts=adv.deliveries, business_key=key,
                    correlation_id=corr):
                self.letters += 1
            await d.ack()
            self.processed += 1

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "letters": self.letters}
