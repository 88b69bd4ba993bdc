"""The simulator's fault control: runtime settings, the scenario clock, and the request guard.

Theory of operation. One ``FaultControl`` per app holds the runtime ``Faults`` (``PUT
/sim/v1/faults``), the scenario ``Schedule`` and its clock (seconds since the app started), one
seeded generator per endpoint, and counters of every fault it injected. A service wraps each
handler with ``guard(service, endpoint, handler)``: the guard plans the request from the
runtime faults (the ``erp`` section applies to the journal-entry bulk endpoint only, as it
always has; the ``revenue`` and ``cpq`` sections to every route of their platform) plus the
scenario windows covering the endpoint now, then delays, fails, or resets the request before
the handler runs, or stalls or resets it after the handler committed.

Sleeps for injected latency and stalls go through ``pause``, so shutdown can wake them all.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence

import anyio
import msgspec
from aiohttp import web

from ._faults import (
    BillingFaults,
    Faults,
    HttpFaults,
    RequestPlan,
    combine_plans,
    describe,
    plan_request,
)
from ._http import SimHTTPError, decode_body, json_response
from ._scenario import Scenario, Schedule

__all__ = [
    "STALL_S",
    "FaultControl",
    "ScenarioState",
    "current_plan",
    "describe_faults",
    "fault_error",
    "require",
    "reset_connection",
]

log = logging.getLogger("sim")

# How long a commit-then-timeout request stalls: longer than any sane client timeout.
STALL_S = 30.0

_FAULTS_DECODER = msgspec.json.Decoder(Faults)
_HEALTHY = RequestPlan()
_HEALTHY_ERP = Faults().erp
_HEALTHY_REVENUE = Faults().revenue
_HEALTHY_CPQ = Faults().cpq

# The plan of the request being handled (set by the guard, in the request's own task).
current_plan: contextvars.ContextVar[RequestPlan] = contextvars.ContextVar(
    "sim_current_plan", default=_HEALTHY
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ScenarioState(msgspec.Struct, frozen=True):
    """Body of ``GET /sim/v1/scenario``: the loaded scenario and where the run is in it."""

    scenario: Scenario
    elapsed_s: float
    active_http: list[int]
    active_webhooks: list[int]
    bill_runs_started: list[str]


def reset_connection(request: web.Request) -> None:
    """Abort ``request``'s TCP connection with a RST (``SO_LINGER`` 0), not a clean close."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError, TypeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# The ERP's journal-entry endpoints: the runtime ``erp`` faults and the scenario windows naming
# either apply to both (the bulk API and NetSuite's ``journalEntry`` record).
JOURNAL_ENDPOINTS = ("journal-entries.bulk", "journalEntry")


def fault_error(service: str, plan: RequestPlan) -> SimHTTPError:
    """The JSON error a failing plan answers (``<service>.rate_limited`` with ``Retry-After``
    for 429, ``<service>.unavailable`` for 503, ``<service>.injected_error`` otherwise)."""
    status = plan.fail_status or 503
    if status == 429:
        return SimHTTPError(429, f"{service}.rate_limited", "injected fault: too many requests",
                            headers={"Retry-After": str(plan.retry_after_s)})
    if status == 503:
        return SimHTTPError(503, f"{service}.unavailable", "injected fault: service unavailable")
    return SimHTTPError(status, f"{service}.injected_error", f"injected fault: HTTP {status}")


class FaultControl:
    """Runtime faults, the scenario schedule and clock, per-endpoint generators, counters."""

    def __init__(self, seed: int, scenario: Scenario | None = None) -> None:
        self._seed = seed
        self.schedule = Schedule(scenario)
        self.faults = self.schedule.scenario.faults
        self._rngs: dict[str, random.Random] = {}
        self._t0: float | None = None
        self._pauses: set[anyio.CancelScope] = set()
        self.injected: dict[str, dict[str, int]] = {}
        self.bill_runs_started: list[str] = []

    # -- clock and state --------------------------------------------------------------------

    def start_clock(self) -> None:
        """Start the scenario clock (at app start; call from inside the event loop)."""
        if self._t0 is None:
            self._t0 = anyio.current_time()

    def elapsed(self) -> float:
        """Seconds since the clock started (0 before)."""
        return 0.0 if self._t0 is None else anyio.current_time() - self._t0

    def reset(self) -> None:
        """Clear the runtime faults, the counters and the generators; the scenario and its
        clock go on (scheduled windows still apply)."""
        self.faults = Faults()
        self._rngs.clear()
        self.injected = {}

    def count(self, where: str, what: str, n: int = 1) -> None:
        bucket = self.injected.setdefault(where, {})
        bucket[what] = bucket.get(what, 0) + n

    # -- planning -----------------------------------------------------------------------------

    def _rng(self, key: str) -> random.Random:
        rng = self._rngs.get(key)
        if rng is None:
            rng = self._rngs[key] = random.Random(f"{self._seed}/http/{key}")
        return rng

    def _runtime(self, service: str, endpoint: str) -> HttpFaults | None:
        """The runtime section that applies to ``service``'s ``endpoint``, unless healthy."""
        # The journal-entry endpoint of either ERP dialect (bulk, or NetSuite's record).
        if service == "erp" and endpoint in JOURNAL_ENDPOINTS and (
                self.faults.erp != _HEALTHY_ERP):
            return self.faults.erp
        if service == "revenue" and self.faults.revenue != _HEALTHY_REVENUE:
            return self.faults.revenue
        if service == "cpq" and self.faults.cpq != _HEALTHY_CPQ:
            return self.faults.cpq
        return None

    def plan(self, service: str, endpoint: str) -> RequestPlan:
        """The plan for one request to ``service``'s ``endpoint`` now; counts what fired."""
        sources = list(self.schedule.http(service, endpoint, self.elapsed()))
        runtime = self._runtime(service, endpoint)
        if runtime is not None:
            sources.insert(0, runtime)
        if not sources:
            return _HEALTHY
        key = f"{service}/{endpoint}"
        rng = self._rng(key)
        plan = combine_plans([plan_request(s, rng) for s in sources])
        if plan.fault:
            self.count(key, plan.fault)
        return plan

    def webhook_sources(self) -> Sequence[BillingFaults]:
        """The webhook fault settings in force now: the runtime ones, then active windows."""
        return [self.faults.billing, *self.schedule.webhooks(self.elapsed())]

    # -- sleeping -----------------------------------------------------------------------------

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or until ``shutdown`` wakes every pause."""
        with anyio.CancelScope() as scope:
            self._pauses.add(scope)
            try:
                await anyio.sleep(seconds)
            finally:
                self._pauses.discard(scope)

    async def shutdown(self, app: web.Application) -> None:
        for scope in list(self._pauses):
            scope.cancel()

    # -- the guard ----------------------------------------------------------------------------

    def guard(self, service: str, endpoint: str, handler: Handler) -> Handler:
        """``handler`` with the faults of ``service``'s ``endpoint`` applied around it.

        The plan is in ``current_plan`` for handlers that need it (silent drops).
        """

        async def guarded(request: web.Request) -> web.StreamResponse:
            plan = self.plan(service, endpoint)
            if plan is _HEALTHY:
                return await handler(request)
            if plan.delay_s > 0:
                await self.pause(plan.delay_s)
            if plan.fail_status is not None:
                raise fault_error(service, plan)
            if plan.reset:
                reset_connection(request)
                return web.Response(status=500)  # never reaches the client
            token = current_plan.set(plan)
            try:
                response = await handler(request)
            finally:
                current_plan.reset(token)
            if plan.commit_then_timeout:
                await self.pause(STALL_S)
            elif plan.commit_then_reset:
                reset_connection(request)
            return response

        return guarded

    # -- HTTP handlers ------------------------------------------------------------------------

    async def get_faults(self, request: web.Request) -> web.Response:
        return json_response(self.faults)

    async def put_faults(self, request: web.Request) -> web.Response:
        """Replace the fault settings; 400 naming the field for an invalid or unknown one.
        The new settings are logged (the runtime part of the fault schedule)."""
        self.faults = await decode_body(request, _FAULTS_DECODER)
        log.info("runtime faults: %s", describe_faults(self.faults))
        return json_response(self.faults)

    async def delete_faults(self, request: web.Request) -> web.Response:
        self.faults = Faults()
        return json_response(self.faults)

    async def get_scenario(self, request: web.Request) -> web.Response:
        """``GET /sim/v1/scenario``: the scenario, the clock and the active windows."""
        t = self.elapsed()
        http, hooks = self.schedule.active(t)
        return json_response(ScenarioState(
            scenario=self.schedule.scenario, elapsed_s=t, active_http=http,
            active_webhooks=hooks, bill_runs_started=list(self.bill_runs_started)))


def describe_faults(faults: Faults) -> str:
    """``faults`` as one log line, section by section (``erp [healthy], revenue [outage=True]``)."""
    return ", ".join(f"{name} [{describe(getattr(faults, name))}]"
                     for name in ("erp", "billing", "revenue", "cpq"))


def require(request: web.Request, name: str) -> str:
    """The query parameter ``name``; 400 naming it when absent or empty."""
    value = request.query.get(name)
    if not value:
        raise SimHTTPError(400, "request.invalid", f"query parameter {name} is required",
                           path=name)
    return value
