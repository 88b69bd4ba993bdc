"""What a failed platform call says about the platform: the one place errors are sorted for
the breaker, the limiter and the retry policy.

The adapters (``actors.infra.http``) already turned every platform answer into our error tree;
this module only reads that tree, by class and by stable code, and never imports an adapter, so
the resilience cores stay free of aiohttp/nats. Two codes are named here because the tree alone
cannot tell them apart from their siblings:

- ``http.rate_limited`` (a 429): ``Retryable`` like a 5xx, but it means "you are too fast", not
  "I am broken". It feeds the rate limiter and must not open the circuit breaker.
- ``http.ambiguous`` (timeout or disconnect after the request was sent): ``Retryable``, but the
  platform may have applied the write. ``Broken`` (the peer broke the connection) means the
  same. Either is retried with the same idempotency key, never treated as "not done".

Pure: no I/O, no clock. Nothing here raises.
"""

from __future__ import annotations

import enum
import math

from contracts import Broken, Permanent, Retryable

__all__ = [
    "AMBIGUOUS_CODES",
    "THROTTLE_CODES",
    "UNCLASSIFIED",
    "Verdict",
    "clamp_retry_after",
    "classify",
    "error_code",
    "is_ambiguous",
    "retry_after_of",
]

# Kept in step with actors/infra/http.py by tests/resilience/test_classify.py.
THROTTLE_CODES: frozenset[str] = frozenset({"http.rate_limited"})
AMBIGUOUS_CODES: frozenset[str] = frozenset({"http.ambiguous"})

# Code reported for an exception outside our tree (a bug in an actor, not a platform answer).
UNCLASSIFIED = "internal.unclassified"


class Verdict(enum.StrEnum):
    """What one failed call says about the health of the platform endpoint it went to."""

    FAULT = "fault"
    """The platform's fault: 5xx, timeout, connection refused/reset, ambiguous outcome."""
    REJECTED = "rejected"
    """The platform answered and refused this request (a business 4xx): it is healthy."""
    THROTTLED = "throttled"
    """The platform is healthy but we are too fast (429): the rate limiter's business."""
    UNRELATED = "unrelated"
    """Nothing to do with the platform: we closed it (shutdown) or our own code failed."""


def classify(error: BaseException) -> Verdict:
    """Sort ``error`` (raised by one call to one platform endpoint) by what it says about the
    platform. Pass only errors of the guarded call: a broker or ledger failure around it would
    be read as a platform fault. Raises nothing."""
    if isinstance(error, Permanent):
        return Verdict.REJECTED
    if isinstance(error, Retryable):
        return Verdict.THROTTLED if error.code in THROTTLE_CODES else Verdict.FAULT
    return Verdict.UNRELATED


def is_ambiguous(error: BaseException) -> bool:
    """True when the failed call may nevertheless have taken effect on the platform.

    Such a call must be retried with the *same* idempotency key (or looked up by external id
    before re-posting); it is never evidence that the write did not happen. Raises nothing.
    """
    if isinstance(error, Broken):
        return True
    return isinstance(error, Retryable) and error.code in AMBIGUOUS_CODES


def error_code(error: BaseException) -> str:
    """The stable code of ``error``; ``internal.unclassified`` for one outside our tree."""
    code = getattr(error, "code", None)
    return code if isinstance(code, str) and code else UNCLASSIFIED


def clamp_retry_after(value: float | None, limit: float) -> float | None:
    """A platform's ``Retry-After`` made safe to schedule on: ``None`` when absent or NaN,
    ``0`` when negative, ``limit`` when larger (or infinite).

    The limit exists because a header such as ``Retry-After: inf`` parses as a float; a real
    platform asking for more than ``limit`` seconds is treated as asking for ``limit``.
    Raises nothing.
    """
    if value is None or math.isnan(value):
        return None
    return min(max(0.0, value), limit)


def retry_after_of(error: BaseException, limit: float) -> float | None:
    """The clamped ``retry_after`` of a ``Retryable`` error, else ``None``. Raises nothing."""
    if isinstance(error, Retryable):
        return clamp_retry_after(error.retry_after, limit)
    return None
