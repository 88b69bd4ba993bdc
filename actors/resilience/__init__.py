"""Resilience controls: the pure cores of the circuit breaker, the rate limiter and the retry
policy, and the one classification of errors they share.

Theory of operation
-------------------
A call to a platform goes through three questions, each answered by a core here and acted on
by the actor shell (``actors.worker.BatchWorker`` and the adapters such as
``actors.erp.poster.ErpPoster``):

1. *Is the endpoint up?* ``CircuitBreaker.allow(now)``. While the breaker is open the adapter
   stops pulling from its stream: work waits there, nothing is failed. The shell sleeps until
   ``next_probe_at``, lets ``probes`` calls through, and publishes ``drain_transitions()`` on
   ``erpgw.mon.events.breaker``.
2. *May we call it now?* ``RateLimiter.acquire(n, now)`` or ``lease(max_n, now)``: one budget
   per platform account (rate, burst, concurrency), adaptive on 429: ``on_throttled(retry_after,
   now)`` holds and slows, ``on_success(now)`` recovers. Adapters hold a ``Limiter`` (the
   protocol): the account handle of the process's ``actors.limits.LimiterHub``, which the
   rate-limiter actor opens with fresh budgets and closes when it dies (no permit then: fail
   closed).
3. *The call failed: now what?* ``decide(error, attempt, max_deliver, rand, policy)`` returns
   ``Retry(delay)`` (nak with that delay) or ``DeadLetter(code, reason)`` (dead-letter, term).

The outcome of a call is fed back to all three: ``classify(error)`` says whether it was the
platform's fault (counts against the breaker), a business rejection (the platform is healthy;
dead-letter the message), a throttle (the limiter's business) or unrelated to the platform.

Everything here is synchronous and pure: ``now`` and random draws are passed in, nothing sleeps,
reads a clock, logs or performs I/O, so the policies are tested as tables and properties
(tests/resilience/). Each object belongs to one actor's task and is not thread-safe.
docs/errors.md lists every error code and what the gateway and an operator do about it.
"""

from __future__ import annotations

from .breaker import (
    TRANSITIONS,
    BreakerConfig,
    BreakerEvent,
    BreakerState,
    BreakerStats,
    BreakerTransitionError,
    CircuitBreaker,
    Transition,
    next_state,
)
from .classify import (
    AMBIGUOUS_CODES,
    THROTTLE_CODES,
    UNCLASSIFIED,
    Verdict,
    clamp_retry_after,
    classify,
    error_code,
    is_ambiguous,
    retry_after_of,
)
from .limiter import Lease, Limiter, LimiterConfig, RateLimiter
from .retry import (
    DEFAULT_POLICY,
    EXHAUSTED,
    UNLIMITED,
    DeadLetter,
    Decision,
    Retry,
    RetryPolicy,
    decide,
)

__all__ = [
    "AMBIGUOUS_CODES",
    "DEFAULT_POLICY",
    "EXHAUSTED",
    "THROTTLE_CODES",
    "TRANSITIONS",
    "UNCLASSIFIED",
    "UNLIMITED",
    "BreakerConfig",
    "BreakerEvent",
    "BreakerState",
    "BreakerStats",
    "BreakerTransitionError",
    "CircuitBreaker",
    "DeadLetter",
    "Decision",
    "Lease",
    "Limiter",
    "LimiterConfig",
    "RateLimiter",
    "Retry",
    "RetryPolicy",
    "Transition",
    "Verdict",
    "clamp_retry_after",
    "classify",
    "decide",
    "error_code",
    "is_ambiguous",
    "next_state",
    "retry_after_of",
]
