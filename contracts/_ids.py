"""Identifiers: time-ordered message ids and deterministic derived ids.

``new_id()`` makes UUIDv7-style ids (48-bit millisecond timestamp first), so ids sort by time.
``derive_id(*parts)`` is the only way we make ``Nats-Msg-Id`` values and idempotency keys: the
same inputs give the same id in every process and after every restart, which is what makes
reprocessing harmless.
"""

from __future__ import annotations

import hashlib
import os
import random
import time

__all__ = ["derive_id", "new_id"]


# The random part of new ids: unique, not secret (an id is never a credential), so a
# generator seeded from the OS once per process (again in a forked child) rather than a
# system call per id; the text is formatted here rather than through a ``uuid.UUID``. Both
# showed in the gateway's profile at peak load (an id per webhook and per atomic batch).
_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)


def new_id() -> str:
    """A fresh UUIDv7 (RFC 9562) string; sortable by creation time."""
    ms = time.time_ns() // 1_000_000
    value = (ms & ((1 << 48) - 1)) << 80 | _rng.getrandbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def derive_id(*parts: str) -> str:
    """A deterministic 32-hex-digit id from ``parts`` (joined unambiguously, then SHA-256)."""
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode()
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return h.hexdigest()[:32]
