"""One platform account in this process: the only way a flow reaches a platform.

A ``Platform`` is built once per process per platform (ERP, billing, revenue, partner portal,
CPQ) and owns everything a call to that platform needs:

- the HTTP pool (``actors.infra.http.HttpClient``) to its configured base URL, never a URL
  taken from a payload;
- its credentials (a ``RequestSigner``: every request of the pool is signed just before it
  leaves, so no call can forget them);
- the account's request budget (``actors.limits``: one per account, shared by every flow that
  calls it, fail closed while the rate-limiter actor is down);
- one circuit breaker per endpoint, created on first use and kept for the life of the process,
  so a crash-looping adapter never resets the evidence that its endpoint is failing;
- its dialect (``erpgw``, or a vendor's: ``stripe``, ``netsuite``), for the flows whose wire
  format differs by vendor.

Flows ask it for an ``endpoint(...)`` (a ``PlatformGuard``: breaker + budget + the pool) and
call ``post``/``get``/``request`` on that; ``reader()`` is a budgeted guard without a breaker
for the reconciler's reads. ``open_platforms`` opens and closes the pools of a whole set.

Runs in the event loop's thread; not thread-safe (like the cores it holds).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from ..infra.http import HttpClient, RequestSigner
from ..resilience import BreakerConfig, CircuitBreaker, Limiter, Transition
from .guard import PlatformGuard

__all__ = ["PLATFORMS", "Platform", "PlatformSpec", "Platforms", "open_platforms"]

# Every platform the gateway talks to, in the order they are opened.
PLATFORMS = ("erp", "billing", "revenue", "partner", "cpq")


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    """How to reach one platform: from configuration only."""

    base_url: str
    timeout_s: float = 10.0
    max_connections: int = 8
    dialect: str = "erpgw"
    signer: RequestSigner | None = None
    ca_file: str = ""  # CAs trusted besides the system's for an https base URL


class Platform:
    """See the module docstring. ``limiter`` is the account's budget (None: unbudgeted, e.g.
    CPQ, whose calls are bounded by the synchronous lane's own concurrency)."""

    def __init__(self, name: str, http: HttpClient, *, dialect: str = "erpgw",
                 limiter: Limiter | None = None, breaker_config: BreakerConfig | None = None,
                 on_transitions: Callable[[list[Transition]], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.http = http
        self.dialect = dialect
        self.limiter = limiter
        self.breaker_config = breaker_config
        # Who hears of the breakers' state changes; set before the first ``endpoint`` call
        # (the process wiring sets it once the monitor exists).
        self.on_transitions = on_transitions
        self._clock = clock
        self._endpoints: dict[str, PlatformGuard] = {}
        self._reader: PlatformGuard | None = None

    def endpoint(self, endpoint: str, *, open_code: str, label: str | None = None,
                 config: BreakerConfig | None = None, breaker: CircuitBreaker | None = None,
                 budget: bool = True,
                 on_transitions: Callable[[list[Transition]], Awaitable[None]] | None = None
                 ) -> PlatformGuard:
        """The guard of ``endpoint`` (breaker ``<platform>.<endpoint>`` with ``config``, else
        the platform's breaker settings), created on first use and the same object ever
        after. ``breaker`` adopts a breaker built elsewhere; ``budget=False`` calls without
        the account's permits; ``on_transitions`` hears this endpoint's breaker instead of the
        platform's listener. Raises nothing."""
        guard = self._endpoints.get(endpoint)
        if guard is None:
            guard = PlatformGuard(
                label or f"{self.name}.{endpoint}", self.http, open_code=open_code,
                breaker=breaker or CircuitBreaker(f"{self.name}.{endpoint}",
                                                  config or self.breaker_config),
                limiter=self.limiter if budget else None,
                on_transitions=on_transitions or self.on_transitions, clock=self._clock)
            self._endpoints[endpoint] = guard
        return guard

    def reader(self) -> PlatformGuard:
        """Budgeted reads with no breaker (the reconciler's: a failed read fails that run and
        the next run tries again; it must not stop the adapters' writes)."""
        if self._reader is None:
            self._reader = PlatformGuard(f"{self.name}.reads", self.http,
                                         open_code=f"{self.name}.breaker_open",
                                         limiter=self.limiter, clock=self._clock)
        return self._reader

    @property
    def breakers(self) -> list[CircuitBreaker]:
        """Every endpoint's breaker created so far, in creation order."""
        return [g.breaker for g in self._endpoints.values() if g.breaker is not None]


@dataclass(frozen=True, slots=True)
class Platforms:
    """The process's platforms, one each."""

    erp: Platform
    billing: Platform
    revenue: Platform
    partner: Platform
    cpq: Platform

    def all(self) -> tuple[Platform, ...]:
        return (self.erp, self.billing, self.revenue, self.partner, self.cpq)

    @property
    def breakers(self) -> list[CircuitBreaker]:
        return [b for p in self.all() for b in p.breakers]


@asynccontextmanager
async def open_platforms(specs: Mapping[str, PlatformSpec], *,
                         limiters: Mapping[str, Limiter],
                         breaker_configs: Mapping[str, BreakerConfig] | None = None,
                         on_transitions: Callable[[list[Transition]], Awaitable[None]]
                         | None = None) -> AsyncIterator[Platforms]:
    """Open one pool per platform of ``specs`` (every name of ``PLATFORMS``), yield them as
    ``Platforms``, close them all on exit. Raises ``KeyError`` naming a missing platform."""
    configs = breaker_configs or {}
    async with AsyncExitStack() as stack:
        made: dict[str, Platform] = {}
        for name in PLATFORMS:
            spec = specs[name]
            http = await stack.enter_async_context(HttpClient(
                spec.base_url, timeout=spec.timeout_s, max_connections=spec.max_connections,
                platform=name, signer=spec.signer, ca_file=spec.ca_file))
            made[name] = Platform(name, http, dialect=spec.dialect, limiter=limiters.get(name),
                                  breaker_config=configs.get(name),
                                  on_transitions=on_transitions)
        yield Platforms(**made)
