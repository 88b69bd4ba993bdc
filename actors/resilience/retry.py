"""The retry policy as one pure function: what to do with a message whose handling just failed.

Theory of operation
-------------------
A consuming actor that failed to handle delivery number ``attempt`` of a message (JetStream's
``num_delivered``, counting from 1) asks ``decide(error, attempt, max_deliver, rand, policy)``
and performs the answer:

* ``Retry(delay)``: ``nak(delay=delay)``; JetStream redelivers the same bytes after ``delay``;
* ``DeadLetter(code, reason)``: publish a dead letter with that code and reason, then
  ``term()`` (``DeadLetter.as_error(error)`` gives the error to hand to ``DeadLetterSink``).

The rules, in order:

1. ``Permanent`` (contract violation, business rejection, signature): dead-letter at once, on
   any attempt, with the error's own code. Retrying cannot help.
2. Exhausted (``attempt >= max_deliver``): dead-letter with code ``retry.exhausted``; the
   reason quotes the last error's code and message. The consumer would not deliver again, so a
   nak here would leave the message to the max-deliveries advisory alone.
3. Everything else is retried: ``Retryable`` (5xx, 429, timeouts, broker or ledger hiccups),
   ``Closed`` (we are shutting down) and errors outside our tree (a bug: retried until
   exhausted, so a poison message ends in the DLQ after ``max_deliver`` tries, F27). The delay
   is the capped exponential backoff with full jitter of ``actors.runtime.Backoff``
   (``policy.backoff.delay(attempt - 1, rand)``), raised to ``policy.min_delay`` (no hot loop)
   and to the error's ``retry_after`` (never earlier than the platform asked; a Retry-After
   above ``policy.max_retry_after`` is taken as that limit).

An *ambiguous* outcome (``actors.infra.http.Ambiguous``, code ``http.ambiguous``, or a
``Broken`` connection: the platform may have applied the write) is retried like any other
retryable error, and ``Retry.ambiguous`` says so. Nothing extra is needed to make that retry
safe: the idempotency key is a field of the message itself (``PostJournalEntry.
idempotency_key``, derived from the source document's business key), and a retry is a
redelivery of the same message bytes, so a retry always carries the same key and the platform
answers ``replayed`` instead of posting twice. ``decide`` never invents or changes a key. An
ambiguous error that exhausts the retries is dead-lettered with the ambiguity stated in the
reason: replaying that letter is safe for the same reason.

Pure: the random draw is passed in (``random.Random.random()``), nothing is read from a clock.
"""

from __future__ import annotations

import math
from typing import TypeAlias

import msgspec

from contracts import GatewayError, Permanent

from ..runtime.restart import Backoff
from .classify import error_code, is_ambiguous, retry_after_of

__all__ = [
    "DEFAULT_POLICY",
    "EXHAUSTED",
    "UNLIMITED",
    "DeadLetter",
    "Decision",
    "Retry",
    "RetryPolicy",
    "decide",
]

EXHAUSTED = "retry.exhausted"
UNLIMITED = -1  # JetStream's max_deliver for "redeliver forever"


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How long to wait before redelivery; a msgspec Struct so it can sit in TOML config.

    ``backoff`` is the jittered capped exponential (defaults as ``BatchWorker.retry``);
    ``min_delay`` the shortest delay ever returned; ``max_retry_after`` the longest
    ``Retry-After`` honoured. Raises ``ValueError`` (``msgspec.ValidationError`` when converted
    from config) for a negative or infinite limit.
    """

    backoff: Backoff = Backoff(base=0.5, factor=2.0, cap=30.0)
    min_delay: float = 0.5
    max_retry_after: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay < math.inf:
            raise ValueError(f"min_delay must be finite and >= 0, got {self.min_delay}")
        if not 0 <= self.max_retry_after < math.inf:
            raise ValueError(f"max_retry_after must be finite and >= 0, got "
                             f"{self.max_retry_after}")


DEFAULT_POLICY = RetryPolicy()


class Retry(msgspec.Struct, frozen=True, tag="retry"):
    """Nak the delivery with ``delay`` seconds; JetStream redelivers the same message.

    ``code`` is the error's code (for logs and metrics); ``retry_after`` the platform's
    deadline that was honoured, if any; ``ambiguous`` is true when the failed attempt may have
    taken effect (the redelivery carries the same idempotency key, so that is safe).
    """

    delay: float
    code: str = ""
    retry_after: float | None = None
    ambiguous: bool = False


class DeadLetter(msgspec.Struct, frozen=True, tag="dead_letter"):
    """Give up: dead-letter the delivery with ``code`` and ``reason``, then ``term()`` it.

    ``code`` is the error's own code for a permanent error, ``retry.exhausted`` after the last
    allowed delivery; ``last_code`` is always the code of the error that ended it.
    """

    code: str
    reason: str
    last_code: str = ""
    attempts: int = 0
    ambiguous: bool = False

    def as_error(self, cause: BaseException) -> GatewayError:
        """The error to hand to ``DeadLetterSink.send`` for this decision.

        ``cause`` itself when it was dead-lettered under its own code (its ``path`` or platform
        body travel with it); otherwise a ``Permanent`` with this code and reason, chained to
        ``cause``. Raises nothing.
        """
        if isinstance(cause, GatewayError) and cause.code == self.code:
            return cause
        err = Permanent(self.reason, code=self.code)
        err.__cause__ = cause
        return err


Decision: TypeAlias = Retry | DeadLetter


def decide(error: BaseException, attempt: int, max_deliver: int, rand: float,
           policy: RetryPolicy = DEFAULT_POLICY) -> Decision:
    """What to do after delivery ``attempt`` (1-based, JetStream's ``num_delivered``) of a
    message failed with ``error``, given the consumer's ``max_deliver`` (``UNLIMITED`` = -1 for
    no limit) and a uniform ``rand`` in ``[0, 1)``. See the module docstring for the rules.

    Raises ``TypeError`` when ``error`` is not an ``Exception`` (a cancellation or
    ``KeyboardInterrupt`` is never retried or dead-lettered: let it propagate), and
    ``ValueError`` when ``attempt < 1``, ``max_deliver`` is 0 or below -1, or ``rand`` is
    outside ``[0, 1)``.
    """
    if not isinstance(error, Exception):
        raise TypeError(f"decide() takes an Exception, got {type(error).__name__}")
    if attempt < 1:
        raise ValueError(f"attempt counts deliveries from 1, got {attempt}")
    if max_deliver == 0 or max_deliver < UNLIMITED:
        raise ValueError(f"max_deliver must be >= 1 or -1 (unlimited), got {max_deliver}")
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    code = error_code(error)
    message = str(error) or type(error).__name__
    ambiguous = is_ambiguous(error)
    if isinstance(error, Permanent):
        return DeadLetter(code=code, reason=message, last_code=code, attempts=attempt)
    if max_deliver != UNLIMITED and attempt >= max_deliver:
        reason = (f"gave up after {attempt} of {max_deliver} deliveries; "
                  f"last error [{code}]: {message}")
        if ambiguous:
            reason += (" (outcome unknown: the platform may have applied it; a replay carries "
                       "the same idempotency key)")
        return DeadLetter(code=EXHAUSTED, reason=reason, last_code=code, attempts=attempt,
                          ambiguous=ambiguous)
    delay = max(policy.min_delay, policy.backoff.delay(attempt - 1, rand))
    retry_after = retry_after_of(error, policy.max_retry_after)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return Retry(delay=delay, code=code, retry_after=retry_after, ambiguous=ambiguous)
