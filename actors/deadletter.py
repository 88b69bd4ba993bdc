"""Dead-letter sink: publish a ``DeadLetter`` (JSON) to the DLQ stream, then the caller terms.

The DLQ message id is derived from (stream, stream sequence) so a crash between the DLQ publish
and the ``term()`` cannot dead-letter the same delivery twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from contracts import DeadLetter, GatewayError, JsonCodec, Subjects, derive_id, new_id

from .infra.bus import Delivery, NatsBus, OutMsg

__all__ = ["DeadLetterSink"]

log = logging.getLogger("erpgw.dlq")
_codec: JsonCodec[DeadLetter] = JsonCodec(DeadLetter)


class DeadLetterSink:
    def __init__(self, bus: NatsBus, subjects: Subjects, lane: str, stream: str) -> None:
        self._bus = bus
        self._subjects = subjects
        self._lane = lane
        self._stream = stream
        self.count = 0

    def letter(self, d: Delivery, err: GatewayError, *, business_key: str | None = None,
               correlation_id: str | None = None, platform_response: str | None = None,
               ) -> tuple[DeadLetter, OutMsg]:
        dl = DeadLetter(
            id=new_id(),
            failed_at=datetime.now(UTC),
            lane=self._lane,
            subject=d.subject,
            stream_seq=d.stream_seq,
            code=err.code,
            reason=err.message[:1000],
            attempts=d.num_delivered,
            business_key=business_key,
            correlation_id=correlation_id,
            data=d.data,
            path=getattr(err, "path", None),
            platform_response=platform_response,
        )
        out = OutMsg(
            subject=self._subjects.dlq(self._lane, err.code),
            data=_codec.encode(dl),
            msg_id=derive_id("dlq", self._stream, str(d.stream_seq)),
        )
        return dl, out

    async def send(self, d: Delivery, err: GatewayError, **context: str | None) -> None:
        """Store the dead letter durably, then ``term()`` the delivery.

        Raises ``BrokerUnavailable`` when the DLQ publish fails: the delivery is then left
        unsettled and will be redelivered, so nothing is dropped.
        """
        dl, out = self.letter(d, err, **context)
        await self._bus.publish(out)
        await d.term()
        self.count += 1
        log.warning("dead-lettered %s seq=%s code=%s key=%s: %s", d.subject, d.stream_seq,
                    dl.code, dl.business_key, dl.reason)
