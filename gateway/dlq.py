"""Dead-letter operations: list, show, replay, purge — for ``erpgw dlq`` and tests.

Theory of operation: dead letters live in the ``<PREFIX>_DLQ`` stream, one JSON ``DeadLetter``
per message on ``<prefix>.dlq.<lane>.<code>``. The stream denies deletes and purges (money
history must stay complete), so "purge" and "replay" *resolve* a letter by appending a marker
on ``<prefix>.dlq.resolved.<action>.<seq>``; listings hide resolved letters unless asked.

A replay republishes the letter's original bytes to its original subject with
``Nats-Msg-Id = derive(replay, dlq seq)`` (replaying the same letter twice inside the dedupe
window is a no-op) and a ``Erpgw-Replay-Of`` header. Nothing else is needed for safety: the
consumers' ledger and the platforms' idempotency keys decide again, before any money moves,
whether the work was already done.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from actors.audit import letter_audit_key, publish_action
from actors.erp.periods import POLICY_HEADER
from actors.infra import NatsBus, OutMsg
from contracts import DeadLetter, GatewayError, JsonCodec, Subjects, derive_id

__all__ = ["LetterRecord", "Resolution", "list_letters", "parse_since", "resolve_letters"]

_letters: JsonCodec[DeadLetter] = JsonCodec(DeadLetter)


class Resolution(msgspec.Struct, frozen=True):
    seq: int
    action: str  # "replayed" | "purged"
    at: datetime
    by: str
    note: str = ""


_resolutions: JsonCodec[Resolution] = JsonCodec(Resolution)


@dataclass(frozen=True)
class LetterRecord:
    seq: int
    letter: DeadLetter
    resolution: Resolution | None


def parse_since(text: str, *, now: float | None = None) -> datetime:
    """``"30m"``, ``"2h"``, ``"1d"`` ago, or an ISO-8601 time. Raises ``GatewayError``."""
    now = time.time() if now is None else now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return datetime.fromtimestamp(now - int(text[:-1]) * units[text[-1]], UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise GatewayError(f"--since {text!r}: use 30m, 2h, 1d or an ISO time",
                           code="cli.bad_since") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def list_letters(bus: NatsBus, subjects: Subjects, *, lane: str | None = None,
                       code: str | None = None, key: str | None = None,
                       since: datetime | None = None, include_resolved: bool = False,
                       limit: int = 10_000) -> list[LetterRecord]:
    """Dead letters matching every given filter, oldest first. Raises ``BrokerUnavailable``."""
    stream = subjects.dlq_stream
    resolved: dict[int, Resolution] = {}
    for m in await bus.scan(stream, subject=subjects.dlq_resolutions, limit=limit):
        r = _resolutions.decode(m.data)
        resolved.setdefault(r.seq, r)
    out: list[LetterRecord] = []
    for m in await bus.scan(stream, subject=subjects.dlq_letters, limit=limit):
        letter = _letters.decode(m.data)
        res = resolved.get(m.seq)
        if res is not None and not include_resolved:
            continue
        if lane and letter.lane != lane:
            continue
        if code and not letter.code.startswith(code):
            continue
        if key and key not in (letter.business_key or ""):
            continue
        if since and letter.failed_at < since:
            continue
        out.append(LetterRecord(m.seq, letter, res))
    return out


async def resolve_letters(bus: NatsBus, subjects: Subjects, records: list[LetterRecord], *,
                          action: str, note: str = "", repost_open: bool = False,
                          role: str = "operator", identity: str = "") -> int:
    """Replay (republish, then mark) or purge (mark only) ``records``; returns how many.
    Each is also an audited action (``dlq.replayed``/``dlq.purged``) of broker identity
    ``role`` (the one ``bus`` is connected as) with public key ``identity``.

    ``repost_open`` marks each replayed message so that the ERP poster posts it under the
    ``next_open`` closed-period policy whatever ``erp.closed_period`` says (a posting dated in a
    closed period goes to the first open period after it; ``actors.erp.periods``).

    Raises ``BrokerUnavailable`` (nothing after the failing letter is touched; a rerun is
    safe because every publish carries a deterministic id).
    """
    if action not in ("replayed", "purged"):
        raise ValueError(f"unknown action {action!r}")
    who = _whoami()
    done = 0
    for rec in records:
        if rec.resolution is not None:
            continue
        if action == "replayed":
            await bus.publish(OutMsg(
                subject=rec.letter.subject, data=rec.letter.data,
                msg_id=derive_id("replay", subjects.dlq_stream, str(rec.seq)),
                headers={"Erpgw-Replay-Of": str(rec.seq)}
                | ({POLICY_HEADER: "next_open"} if repost_open else {})))
        marker = Resolution(seq=rec.seq, action=action, at=datetime.now(UTC), by=who,
                            note=note)
        await bus.publish(OutMsg(
            subject=subjects.dlq_resolved(action, rec.seq), data=_resolutions.encode(marker),
            msg_id=derive_id("dlq.resolved", subjects.dlq_stream, str(rec.seq))))
        await publish_action(
            bus, subjects, role, f"dlq.{action}",
            letter_audit_key(rec.seq, rec.letter.business_key),
            msg_id=derive_id("audit.dlq", subjects.dlq_stream, str(rec.seq)),
            detail=f"dead letter #{rec.seq} ({rec.letter.code}) by {who}"
                   + (f": {note}" if note else ""), identity=identity)
        done += 1
    return done


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
