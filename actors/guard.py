"""One platform endpoint behind its circuit breaker and its account's rate limiter.

Why it exists: every adapter that writes to a platform needs the same three moves around each
request (``actors.resilience`` has the pure cores): wait while the breaker is open instead of
fetching work (``gate``), take a permit before calling (fail closed: no permit, no request),
then feed the outcome back to both (``post``). This module is the one place those moves live;
the ERP poster and the revenue poster both delegate to it.

``post`` takes a ``before_send`` hook that runs after the breaker and the limiter said yes and
immediately before the request leaves: an adapter whose platform has no idempotency key records
its claim there (durably), so nothing but the HTTP write lies between the claim and the send.

Runs in the owning actor's task; not thread-safe (like the cores).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio

from .infra.http import HttpClient, HttpResponse, PlatformUnavailable
from .resilience import CircuitBreaker, RateLimiter, Transition
from .runtime import Actor

__all__ = ["PlatformGuard"]

log = logging.getLogger("erpgw.guard")


class PlatformGuard:
    """``http`` guarded by ``breaker`` and ``limiter`` (either may be None: unguarded).

    ``open_code`` is the code of the error ``post`` raises when the breaker refuses a call;
    ``on_transitions`` receives the breaker's state changes (to publish them).
    """

    def __init__(self, name: str, http: HttpClient, *, open_code: str,
                 breaker: CircuitBreaker | None = None, limiter: RateLimiter | None = None,
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

    async def _permit(self) -> None:
        if self.limiter is None:
            return
        while True:
            wait = self.limiter.acquire(1, self._clock())
            if wait <= 0:
                return
            await anyio.sleep(min(wait, 0.5))

    async def post(self, path: str, body: bytes, *,
                   before_send: Callable[[], Awaitable[None]] | None = None) -> HttpResponse:
        """One guarded POST: breaker, permit, ``before_send``, the request, and its outcome fed
        back to breaker and limiter.

        Raises ``PlatformUnavailable`` with ``open_code`` when the breaker refuses (nothing
        else has happened then: ``before_send`` did not run), whatever ``before_send`` raises
        (nothing sent; breaker and permit released without a verdict), and the ``HttpClient``
        errors (see ``actors.infra.http``).
        """
        now = self._clock()
        if self.breaker is not None and not self.breaker.allow(now):
            raise PlatformUnavailable(f"{self.name} circuit breaker is open",
                                      code=self.open_code, retry_after=self.breaker.retry_in(now))
        permitted = sent = False
        try:
            await self._permit()
            permitted = True
            if before_send is not None:
                await before_send()
            sent = True
            resp = await self.http.post(path, body)
        except Exception as exc:
            if not sent:
                self._release(permitted)
                raise
            now = self._clock()
            if self.breaker is not None:
                self.breaker.record_error(exc, now)
            if self.limiter is not None:
                self.limiter.release(1)
                if getattr(exc, "code", "") == "http.rate_limited":
                    self.limiter.on_throttled(getattr(exc, "retry_after", None), now)
            raise
        except BaseException:
            self._release(permitted)
            raise
        now = self._clock()
        if self.breaker is not None:
            self.breaker.record_success(now)
        if self.limiter is not None:
            self.limiter.release(1)
            self.limiter.on_success(now)
        return resp

    def _release(self, permitted: bool) -> None:
        """No verdict on the platform: give back the probe slot (and the permit, if taken)."""
        if self.breaker is not None:
            self.breaker.release()
        if self.limiter is not None and permitted:
            self.limiter.release(1)

    def statistics(self) -> dict[str, object]:
        return {"breaker": self.breaker.statistics() if self.breaker else None,
                "limiter": self.limiter.statistics() if self.limiter else None}
