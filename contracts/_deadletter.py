"""A dead letter: a message the gateway gave up on, with what it takes to explain and replay it."""

from __future__ import annotations

from datetime import datetime

import msgspec

__all__ = ["DeadLetter"]


class DeadLetter(msgspec.Struct, frozen=True):
    """Published as JSON on ``<prefix>.dlq.<lane>.<code>`` so people and tools can read it.

    ``data`` is the original message bytes exactly as they arrived (base64 in JSON), so a replay
    re-sends what was received, not a re-encoding of it.
    """

    id: str
    failed_at: datetime
    lane: str
    subject: str
    stream_seq: int | None
    code: str
    reason: str
    attempts: int
    business_key: str | None
    correlation_id: str | None
    data: bytes
    path: str | None = None
    platform_response: str | None = None
