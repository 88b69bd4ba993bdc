"""Re-drive history: republish a lane's events from its stream, safely.

Why it is safe: every step downstream derives its output ids and its platform idempotency keys
from the business key of the event, and the ERP poster's ledger skips keys already posted. So
a replayed event that was fully processed changes nothing, and one whose processing was lost
(for example a dead letter purged by mistake) is processed now, exactly once.

Each replay run has its own id (``Erpgw-Replay`` header), so its republished events are not
mistaken for the originals by the stream's dedupe window, while republishing the same event
twice within one run is still deduplicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts import ContractError, Envelope, MsgpackCodec, Subjects, derive_id, new_id

from .infra import NatsBus, OutMsg

__all__ = ["REPAIR_HEADER", "ReplayItem", "replay_lane", "select_events"]

_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)


@dataclass(frozen=True)
class ReplayItem:
    seq: int
    subject: str
    key: str | None
    correlation_id: str | None
    stored_at: float
    data: bytes


async def select_events(bus: NatsBus, subjects: Subjects, lane: str, *, since: datetime,
                        key: str | None = None, subject: str | None = None,
                        limit: int = 100_000) -> list[ReplayItem]:
    """The lane's events (or the messages on ``subject``) stored since ``since``; with
    ``key``, only those whose business key contains it or whose correlation id equals it.
    Raises ``BrokerUnavailable``."""
    stream = subjects.stream(lane)
    cutoff = since.timestamp()
    out: list[ReplayItem] = []
    for m in await bus.scan(stream, subject=subject or subjects.lane_events(lane), limit=limit):
        if m.time < cutoff:
            continue
        k: str | None
        corr: str | None
        try:
            env = _codec.decode(m.data)
            k, corr = str(env.key), env.correlation_id
        except ContractError:
            k = corr = None  # undecodable: replayable (to the DLQ again), not key-matchable
        if key and not (k and key in k) and key != corr:
            continue
        out.append(ReplayItem(m.seq, m.subject, k, corr, m.time, m.data))
    return out


REPAIR_HEADER = "Erpgw-Repair"


async def replay_lane(bus: NatsBus, subjects: Subjects, lane: str, items: list[ReplayItem],
                      *, repair: bool = False) -> str:
    """Republish ``items`` to their subjects; returns the replay run id.

    ``repair`` marks them (``Erpgw-Repair`` header) so that a platform adapter posts them
    again even though its ledger records them as done: the reconciler uses it only for a
    posting it has just proven missing at the platform, and the message's own idempotency
    key still guards the platform against a double posting. Raises ``BrokerUnavailable``
    (a rerun is safe).
    """
    run = new_id()
    stream = subjects.stream(lane)
    headers = {"Erpgw-Replay": run} | ({REPAIR_HEADER: run} if repair else {})
    for it in items:
        await bus.publish(OutMsg(subject=it.subject, data=it.data,
                                 msg_id=derive_id("replay", run, stream, str(it.seq)),
                                 headers=headers))
    return run
