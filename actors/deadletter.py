"""Dead-letter sink: publish a ``DeadLetter`` (JSON) to the DLQ stream, then the caller terms.

The DLQ message id is derived from (stream, stream sequence) so a crash between the DLQ publish
and the ``term()`` cannot dead-letter the same delivery twice.

Every dead letter is also announced on ``<prefix>.mon.events.dlq`` (core NATS, JSON): a summary
without the payload bytes, for dashboards and alerts (docs/monitoring.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from contracts import DeadLetter, GatewayError, JsonCodec, Subjects, derive_id, new_id

from .infra.bus import Delivery, NatsBus, OutMsg, StoredMsg
from .monitor import instance_id

__all__ = ["DeadLetterSink"]

log = logging.getLogger("erpgw.dlq")
_codec: JsonCodec[DeadLetter] = JsonCodec(DeadLetter)
_json = msgspec.json.Encoder()


def dlq_event(dl: DeadLetter, dlq_subject: str) -> bytes:
    """The ``mon.events.dlq`` summary of a dead letter (JSON, without the payload bytes)."""
    return _json.encode({
        "kind": "dlq", "event": "dead_lettered", "at": dl.failed_at.timestamp(),
        "instance": instance_id(), "id": dl.id, "lane": dl.lane, "code": dl.code,
        "reason": dl.reason, "subject": dl.subject, "stream_seq": dl.stream_seq,
        "attempts": dl.attempts, "business_key": dl.business_key,
        "correlation_id": dl.correlation_id, "path": dl.path, "dlq_subject": dlq_subject,
        "bytes": len(dl.data)})


class DeadLetterSink:
    """``observer`` (optional) is told of every dead letter once it is stored (the monitor
    counts them); it runs in the sending actor's task and must not block."""

    def __init__(self, bus: NatsBus, subjects: Subjects, lane: str, stream: str, *,
                 observer: Callable[[DeadLetter], None] | None = None) -> None:
        self._bus = bus
        self._subjects = subjects
        self._lane = lane
        self._stream = stream
        self._observer = observer
        self.count = 0

    def letter(self, d: Delivery, err: GatewayError, *, business_key: str | None = None,
               correlation_id: str | None = None, platform_response: str | None = None,
               ) -> tuple[DeadLetter, OutMsg]:
        return self._letter(d.subject, d.stream_seq, d.data, d.num_delivered, err,
                            business_key, correlation_id, platform_response)

    def _letter(self, subject: str, seq: int, data: bytes, attempts: int, err: GatewayError,
                business_key: str | None, correlation_id: str | None,
                platform_response: str | None) -> tuple[DeadLetter, OutMsg]:
        dl = DeadLetter(
            id=new_id(),
            failed_at=datetime.now(UTC),
            lane=self._lane,
            subject=subject,
            stream_seq=seq,
            code=err.code,
            reason=err.message[:1000],
            attempts=attempts,
            business_key=business_key,
            correlation_id=correlation_id,
            data=data,
            path=getattr(err, "path", None),
            platform_response=platform_response,
        )
        out = OutMsg(
            subject=self._subjects.dlq(self._lane, err.code),
            data=_codec.encode(dl),
            msg_id=derive_id("dlq", self._stream, str(seq)),
        )
        return dl, out

    async def send(self, d: Delivery, err: GatewayError, **context: str | None) -> None:
        """Store the dead letter durably, then ``term()`` the delivery.

        Raises ``BrokerUnavailable`` when the DLQ publish fails: the delivery is then left
        unsettled and will be redelivered, so nothing is dropped.
        """
        dl, out = self.letter(d, err, **context)
        stored = not await self._bus.publish(out)
        await d.term()
        if stored:
            await self._announce(dl, out)

    async def send_stored(self, m: StoredMsg, err: GatewayError, *, attempts: int,
                          business_key: str | None = None,
                          correlation_id: str | None = None) -> bool:
        """Dead-letter a message no consumer will deliver again (the server gave up on it),
        read back from its stream. The DLQ id is the same as a handler's would have been, so
        a message the handler did dead-letter is not dead-lettered twice. Returns True when
        the letter is new. Raises ``BrokerUnavailable``."""
        dl, out = self._letter(m.subject, m.seq, m.data, attempts, err, business_key,
                               correlation_id, None)
        if await self._bus.publish(out):
            return False  # the handler got there first
        await self._announce(dl, out)
        return True

    async def _announce(self, dl: DeadLetter, out: OutMsg) -> None:
        self.count += 1
        log.warning("dead-lettered %s seq=%s code=%s key=%s: %s", dl.subject, dl.stream_seq,
                    dl.code, dl.business_key, dl.reason,
                    extra={"code": dl.code, "business_key": dl.business_key,
                           "correlation_id": dl.correlation_id})
        if self._observer is not None:
            self._observer(dl)
        await self._bus.emit(self._subjects.mon_event("dlq"), dlq_event(dl, out.subject))
