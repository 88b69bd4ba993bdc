"""Identifiers: time-ordered message ids and deterministic derived ids.

``new_id()`` makes UUIDv7-style ids (48-bit millisecond timestamp first), so ids sort by time.
``derive_id(*parts)`` is the only way we make ``Nats-Msg-Id`` values and idempotency keys: the
same inputs give the same id in every process and after every restart, which is what makes
reprocessing harmless.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid

__all__ = ["derive_id", "new_id"]


def new_id() -> str:
    """A fresh UUIDv7 (RFC 9562) string; sortable by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def derive_id(*parts: str) -> str:
    """A deterministic 32-hex-digit id from ``parts`` (joined unambiguously, then SHA-256)."""
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode()
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return h.hexdigest()[:32]
