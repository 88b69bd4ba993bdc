"""One platform endpoint behind its circuit breaker and its account's rate limiter.

Why it exists: every call to a platform needs the same three moves around each request
(``actors.resilience`` has the pure cores): wait while the breaker is open instead of fetching
work (``gate``), take a permit before calling (fail closed: no permit, no request), then feed
the outcome back to both (``post``/``get``/``request``). This module is the one place those
moves live; every flow reaches a platform through a ``PlatformGuard`` handed out by its
``Platform`` (``actors.platforms``).

``post`` takes a ``before_send`` hook that runs after the breaker and the limiter said yes and
immediately before the request leaves: an adapter whose platform has no idempotency key records
its claim there (durably), so nothing but the HTTP write lies between the claim and the send.

Runs in the owning actor's task; not thread-safe (like the cores).
"""

from __future__ import annotations

import logging
import math
import time
import urllib.parse
from collections.abc import Awaitable, Callable

import anyio

from contracts import ContractError

from ..infra.http import HttpClient, HttpResponse, PlatformUnavailable
from ..resilience import CircuitBreaker, Limiter, Transition
from ..runtime import Actor

__all__ = ["PlatformGuard", "guarded_call", "segment"]

# How often a call waiting for a half-open breaker's probe looks again.
_PROBE_POLL_S = 0.05


def segment(value: str) -> str:
    """``value`` escaped as one URL path segment: an id from a payload can never add a
    segment, climb with ``..`` or start a query (S11, S21). Raises ``ContractError``
    (``platform.bad_id``, permanent: the message is dead-lettered) for an empty id or a dot
    segment."""
    if value in ("", ".", ".."):
        raise ContractError(f"{value!r} cannot name a platform record in a URL path",
                            code="platform.bad_id")
    return urllib.parse.quote(value, safe="")

log = logging.getLogger("erpgw.guard")


class PlatformGuard:
    """``http`` guarded by ``breaker`` and ``limiter`` (either may be None: unguarded).

    ``open_code`` is the code of the error ``post`` raises when the breaker refuses a call;
    ``on_transitions`` receives the breaker's state changes (to publish them).
    """

    def __init__(self, name: str, http: HttpClient, *, open_code: str,
                 breaker: CircuitBreaker | None = None, limiter: Limiter | None = None,
                 on_transitions: Callable[[list[Transition]], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.http = http
        self.open_code = open_code
        self.breaker = breaker
        self.limiter = limiter
        self._on_transitions = on_transitions
        self._clock = clock

    async def gate(self, actor: Actor) -> None:
        """While the breaker is open, wait here (the actor's work stays in its stream); return
        at once when ``actor`` is asked to stop. Runs in the actor's task."""
        if self.breaker is None:
            return
        await self.publish_transitions()
        while not actor.stop_requested:
            wait = self.breaker.retry_in(self._clock())
            if wait <= 0:
                return
            with anyio.move_on_after(min(wait, 1.0)):
                await actor.wait_stop_requested()

    async def publish_transitions(self) -> None:
        """Log the breaker's state changes and hand them to ``on_transitions``."""
        if self.breaker is None:
            return
        moves = self.breaker.drain_transitions()
        for t in moves:
            log.warning("%s breaker %s: %s -> %s (%s)", self.name, t.breaker, t.source,
                        t.target, t.reason)
        if moves and self._on_transitions is not None:
            await self._on_transitions(moves)

    async def post(self, path: str, body: bytes, *,
                   before_send: Callable[[], Awaitable[None]] | None = None,
                   headers: dict[str, str] | None = None) -> HttpResponse:
        """One guarded POST: breaker, permit, ``before_send``, the request (with ``headers``,
        e.g. an ``Idempotency-Key``), and its outcome fed back to breaker and limiter.

        Raises ``PlatformUnavailable`` with ``open_code`` when the breaker refuses (nothing
        else has happened then: ``before_send`` did not run), whatever ``before_send`` raises
        (nothing sent; breaker and permit released without a verdict), and the ``HttpClient``
        errors (see ``actors.infra.http``).
        """
        return await self.request("POST", path, body, before_send=before_send,
                                  headers=headers)

    async def get(self, path: str, *, headers: dict[str, str] | None = None) -> HttpResponse:
        """One guarded GET; raises like ``post``."""
        return await self.request("GET", path, None, headers=headers)

    async def request(self, method: str, path: str, body: bytes | None, *,
                      before_send: Callable[[], Awaitable[None]] | None = None,
                      headers: dict[str, str] | None = None) -> HttpResponse:
        """One guarded request of any method; raises like ``post``."""
        def refuse(retry_after: float) -> PlatformUnavailable:
            return PlatformUnavailable(f"{self.name} circuit breaker is open",
                                       code=self.open_code, retry_after=retry_after)

        return await guarded_call(
            lambda: self.http.request(method, path, body, headers=headers),
            breaker=self.breaker, limiter=self.limiter, refuse=refuse,
            before_send=before_send, clock=self._clock)

    def statistics(self) -> dict[str, object]:
        return {"breaker": self.breaker.statistics() if self.breaker else None,
                "limiter": self.limiter.statistics() if self.limiter else None}


async def _permit(limiter: Limiter, clock: Callable[[], float]) -> None:
    """Wait for one permit (fail closed: no permit, no request). Cancellable."""
    while True:
        wait = limiter.acquire(1, clock())
        if wait <= 0:
            return
        await anyio.sleep(min(wait, 0.5))


async def guarded_call(send: Callable[[], Awaitable[HttpResponse]], *,
                       breaker: CircuitBreaker | None, limiter: Limiter | None,
                       refuse: Callable[[float], Exception],
                       before_send: Callable[[], Awaitable[None]] | None = None,
                       clock: Callable[[], float] = time.monotonic) -> HttpResponse:
    """``send()`` behind ``breaker`` and one permit of ``limiter`` (either may be None), its
    outcome fed back to both: an error to the breaker, a 429 to the limiter (``on_throttled``
    with the platform's Retry-After), a success to both. Runs in the caller's task.

    Raises ``refuse(retry_after)`` when the breaker refuses (nothing else happened then; a
    half-open breaker whose probe is out makes the call wait for the probe's verdict),
    whatever ``before_send`` raises (nothing sent; breaker and permit released without a
    verdict) and whatever ``send`` raises.
    """
    now = clock()
    while breaker is not None and not breaker.allow(now):
        wait = breaker.retry_in(now)
        if wait < math.inf:
            raise refuse(wait)
        # Half-open with every probe slot taken by a concurrent call: wait for that probe's
        # verdict (closed: go on; open again: refused with the open period) instead of
        # refusing with no known retry time (which would park the work for the longest delay).
        await anyio.sleep(_PROBE_POLL_S)
        now = clock()
    permitted = sent = False

    def release() -> None:  # no verdict on the platform: give back probe slot and permit
        if breaker is not None:
            breaker.release()
        if limiter is not None and permitted:
            limiter.release(1)

    try:
        if limiter is not None:
            await _permit(limiter, clock)
        permitted = True
        if before_send is not None:
            await before_send()
        sent = True
        resp = await send()
    except Exception as exc:
        if not sent:
            release()
            raise
        now = clock()
        if breaker is not None:
            breaker.record_error(exc, now)
        if limiter is not None:
            limiter.release(1)
            if getattr(exc, "code", "") == "http.rate_limited":
                limiter.on_throttled(getattr(exc, "retry_after", None), now)
        raise
    except BaseException:
        release()
        raise
    now = clock()
    if breaker is not None:
        breaker.record_success(now)
    if limiter is not None:
        limiter.release(1)
        limiter.on_success(now)
    return resp
