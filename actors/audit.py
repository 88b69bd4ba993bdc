"""The audit trail's two broker-side helpers: anchors of the chain's head, and audited actions.

Theory of operation. The ledger's audit chain is keyed (HMAC-SHA256, ``Ledger.use_audit_key``),
so nobody without the key can edit a row and re-chain what follows. Two things the key alone
cannot show are caught here:

* *A truncated tail* (or a chain rebuilt by someone holding the key): ``AuditAnchors``
  publishes the chain's head ``(seq, hash)`` every ``interval_s`` when it moved, at start and at
  stop, to ``<prefix>.audit.anchor`` on the audit stream, which denies delete and purge. Each
  anchor carries an HMAC of its own, so a forged anchor is told apart from a changed ledger.
  ``erpgw audit verify`` checks every anchor against the ledger.
* *Who did it*: operator tools and the reconciler publish the actions that change money flows
  (a dead letter replayed or purged, a reconciler repair) to
  ``<prefix>.audit.action.<role>.<action>``; the broker lets only ``<role>`` publish there, so
  the role in the subject is the broker's word, not the publisher's. ``AuditActions`` (the
  gateway, which owns the ledger) turns each into an audit row, once.
* *A dead letter*: a message dead-lettered is a state change of the broker, not of the ledger
  (the letter on ``<prefix>.dlq.<lane>.<code>`` is its only record; no ledger write goes with
  it when the failure is a whole request refused, retries run out, a contract is broken or the
  server gave up on a message). ``LetterAudit`` turns each stored letter into one audit row
  ``dlq.dead_lettered``, once (the letter's DLQ sequence makes a redelivery a no-op), under the
  key its replay or purge is audited with, so the ledger, which outlives the DLQ's
  ``max_age``, holds every letter's failure and repair.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Sequence

import anyio
import msgspec
from anyio.abc import TaskStatus

from contracts import ContractError, DeadLetter, JsonCodec, Subjects

from .infra.bus import BrokerUnavailable, ConsumerSettings, Delivery, NatsBus, OutMsg
from .infra.ledger import Ledger
from .runtime import Actor
from .worker import BatchWorker

__all__ = ["Anchor", "AuditAction", "AuditActions", "AuditAnchors", "LetterAudit", "anchor_mac",
           "decode_anchor", "encode_action", "letter_audit_key", "publish_action"]

log = logging.getLogger("erpgw.audit")


class Anchor(msgspec.Struct, frozen=True, kw_only=True):
    """The audit chain's head at ``at``: row ``seq`` had hash ``hash``."""

    seq: int
    hash: str
    at: float
    mac: str = ""


def anchor_mac(key: bytes, seq: int, head: str, at: float) -> str:
    return hmac.new(key, f"anchor|{seq}|{head}|{at!r}".encode(), hashlib.sha256).hexdigest()


def decode_anchor(data: bytes) -> Anchor:
    """Raises ``msgspec.DecodeError``/``ValidationError`` for a record that is no anchor."""
    return msgspec.json.decode(data, type=Anchor)


class AuditAnchors(Actor):
    """Publishes the ledger's audit head to ``subject`` at start, every ``interval_s`` when it
    moved, and at stop. A broker outage is logged and retried at the next tick."""

    def __init__(self, name: str, *, bus: NatsBus, subject: str, ledger: Ledger, key: bytes,
                 interval_s: float) -> None:
        super().__init__(name)
        self.bus, self.subject, self.ledger, self.key = bus, subject, ledger, key
        self.interval_s = interval_s
        self.published = 0
        self.failures = 0
        self.last_seq = -1

    async def anchor(self) -> bool:
        """Publish the head if it moved since the last anchor; True when one was stored."""
        seq, head = await self.ledger.audit_head()
        if seq == self.last_seq:
            return False
        at = round(time.time(), 6)
        a = Anchor(seq=seq, hash=head, at=at, mac=anchor_mac(self.key, seq, head, at))
        try:
            await self.bus.publish(OutMsg(self.subject, msgspec.json.encode(a),
                                          msg_id=f"audit-anchor:{seq}:{head[:32]}"))
        except BrokerUnavailable as exc:
            self.failures += 1
            log.warning("audit anchor at row %d not stored: [%s] %s", seq, exc.code, exc.message)
            return False
        self.published += 1
        self.last_seq = seq
        return True

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.anchor()
        task_status.started()
        while not self.stop_requested:
            with anyio.move_on_after(self.interval_s):
                await self.wait_stop_requested()
            with anyio.CancelScope(shield=self.stop_requested):
                await self.anchor()  # the last one at stop: the tail is covered too

    def statistics(self) -> dict[str, object]:
        return {"name": self.name, "anchors": self.published, "failures": self.failures,
                "last_seq": self.last_seq}


class AuditAction(msgspec.Struct, frozen=True, kw_only=True):
    """An action to audit: ``key`` is what it acted on (``dlq:<seq>``, an idempotency key),
    ``identity`` the public key of the broker identity the publisher connected as."""

    action: str
    key: str
    detail: str = ""
    identity: str = ""
    at: float = 0.0


def encode_action(action: str, key: str, *, detail: str = "", identity: str = "",
                  at: float | None = None) -> bytes:
    return msgspec.json.encode(AuditAction(action=action, key=key, detail=detail[:300],
                                           identity=identity,
                                           at=time.time() if at is None else at))


async def publish_action(bus: NatsBus, subjects: Subjects, role: str, action: str, key: str,
                         *, msg_id: str, detail: str = "", identity: str = "") -> None:
    """Store an action to audit on ``<prefix>.audit.action.<role>.<action>`` (``role``: the
    broker identity ``bus`` is connected as; the broker refuses any other). ``msg_id`` makes a
    retry of the same action a duplicate. Raises ``BrokerUnavailable``/``BrokerRejected``."""
    await bus.publish(OutMsg(subjects.audit_action(role, action.replace(".", "_")),
                             encode_action(action, key, detail=detail, identity=identity),
                             msg_id=msg_id))


class AuditActions(BatchWorker):
    """Turns ``<prefix>.audit.action.<role>.<action>`` records into audit rows
    ``<action>`` (key: the record's key; detail: ``by <role> <identity>: ...``), once each
    (the record's stream sequence makes a redelivery a no-op)."""

    def __init__(self, name: str, *, bus: NatsBus, stream: str, durable: str,
                 consumer: ConsumerSettings, ledger: Ledger, prefix: str,
                 batch: int = 50) -> None:
        super().__init__(name, bus=bus, stream=stream, durable=durable, consumer=consumer,
                         batch=batch)
        self.ledger = ledger
        self._head = f"{prefix}.audit.action."
        self.recorded = 0
        self.refused = 0

    async def handle(self, batch: Sequence[Delivery]) -> None:
        rows: list[tuple[float, str, str, str, int]] = []
        refused: list[Delivery] = []
        for d in batch:
            try:
                rec = msgspec.json.decode(d.data, type=AuditAction)
            except (msgspec.DecodeError, msgspec.ValidationError):
                refused.append(d)
                continue
            role = d.subject.removeprefix(self._head).split(".", 1)[0]
            rows.append((rec.at or time.time(), rec.action[:60], rec.key[:200],
                         f"by {role} {rec.identity or '?'}: {rec.detail}"[:500], d.stream_seq))
        # LedgerUnavailable is Retryable: the worker naks the batch and it comes back.
        self.recorded += await self.ledger.append_audit_once(rows)
        for d in refused:
            self.refused += 1
            log.warning("audit action on %s is not a record; kept in the stream, not audited",
                        d.subject)
            await d.term()
        for d in batch:
            if not d.settled:
                await d.ack()

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "recorded": self.recorded, "refused": self.refused}



_letters: JsonCodec[DeadLetter] = JsonCodec(DeadLetter)


def letter_audit_key(seq: int, business_key: str | None) -> str:
    """The audit key of dead letter ``seq``: its business key, else ``dlq:<seq>`` (the same
    for its ``dlq.dead_lettered`` row and its ``dlq.replayed``/``dlq.purged`` row)."""
    return business_key or f"dlq:{seq}"


class LetterAudit(BatchWorker):
    """Turns every dead letter on the DLQ stream into one audit row ``dlq.dead_lettered``
    (key: ``letter_audit_key``; detail: the letter's DLQ sequence, lane, code, origin and
    attempts, never its reason or bytes), once each (``Ledger.append_audit_once`` keyed by
    the letter's DLQ sequence). A record that is no letter is audited too, under
    ``dlq:<seq>``: whatever sits on a letter subject is accounted for."""

    def __init__(self, name: str, *, bus: NatsBus, stream: str, durable: str,
                 consumer: ConsumerSettings, ledger: Ledger, batch: int = 50) -> None:
        super().__init__(name, bus=bus, stream=stream, durable=durable, consumer=consumer,
                         batch=batch)
        self.ledger = ledger
        self.recorded = 0

    async def handle(self, batch: Sequence[Delivery]) -> None:
        rows: list[tuple[float, str, str, str, int]] = []
        for d in batch:
            seq = d.stream_seq
            try:
                dl = _letters.decode(d.data)
            except ContractError:
                rows.append((time.time(), "dlq.dead_lettered", letter_audit_key(seq, None),
                             f"dead letter #{seq} on {d.subject}: not a dead letter record",
                             seq))
                continue
            rows.append((dl.failed_at.timestamp(), "dlq.dead_lettered",
                         letter_audit_key(seq, dl.business_key)[:200],
                         f"dead letter #{seq} ({dl.code}) of {dl.subject} #{dl.stream_seq} "
                         f"after {dl.attempts} attempt(s)"[:500], seq))
        # LedgerUnavailable is Retryable: the worker naks the batch and it comes back.
        self.recorded += await self.ledger.append_audit_once(rows, source="dlq")
        for d in batch:
            if not d.settled:
                await d.ack()

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "recorded": self.recorded}
