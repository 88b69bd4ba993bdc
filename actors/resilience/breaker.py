"""Circuit breaker per platform endpoint: a pure state machine, the clock passed in.

Theory of operation
-------------------
A breaker watches the outcomes of calls to one platform endpoint (``erp POST /journal-entries/
bulk``) and answers one question for the adapter: *may a call start now?* While the platform is
down the answer is no, so the adapter stops pulling from its stream and the work waits there:
an open breaker never fails a message, it only stops new attempts.

The states and the only ways between them are written as data in ``TRANSITIONS``; an event
that has no entry for the current state is a bug and raises ``BreakerTransitionError``::

    closed    --trip-----------> open        N consecutive faults, or a fault ratio >= R over
                                             the last M calls
    open      --cooled---------> half_open   ``open_for`` elapsed (grows on every re-open:
                                             open_for * factor**k, capped; reset on close)
    half_open --probe_failed---> open        the first probe outcome decides
    half_open --probe_succeeded> closed

Only the platform's faults count against it. The caller says which outcome it saw:
``record_success`` (2xx), ``record_rejection`` (the platform answered and refused *this*
request: a business 4xx; the platform is healthy, so this counts as a success),
``record_failure`` (5xx, timeout, connection, ambiguous: the platform's fault) or ``release``
(no verdict: a 429 is the limiter's business, a shutdown or our own bug says nothing about
the platform). ``record_error(error, now)`` does that sorting from our error tree
(``classify.classify``). A 4xx can therefore never open the breaker.

Invariants (tests/resilience/test_breaker.py checks each):

* ``state`` changes only along an edge of ``TRANSITIONS``, and every change is logged once in
  ``transitions`` as ``Transition(at, source, target, reason)`` until drained;
* ``next_probe_at`` is set exactly while the state is open;
* in half_open at most ``probes`` calls are allowed through before an outcome decides;
* an outcome that arrives while open, or while half_open with no probe in flight, belongs to
  a call started before the breaker opened; it is counted as ``late`` and changes nothing.
  (``allow`` returns a bare bool, so while a probe is in flight a late outcome cannot be told
  from the probe's and is taken as the probe's: at worst one extra open period.)

Time is whatever monotonic clock the caller passes as ``now`` (seconds); the open→half_open
change happens lazily, in the first ``allow`` at or after ``next_probe_at``, so a shell sleeps
until ``next_probe_at`` (or ``retry_in(now)``) and then asks again. No method performs I/O,
reads a clock or logs; the shell publishes the drained transitions on
``erpgw.mon.events.breaker``.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import msgspec

from ..runtime.restart import Backoff
from .classify import Verdict, clamp_retry_after, classify, error_code

__all__ = [
    "TRANSITIONS",
    "BreakerConfig",
    "BreakerEvent",
    "BreakerState",
    "BreakerStats",
    "BreakerTransitionError",
    "CircuitBreaker",
    "Transition",
    "next_state",
]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerStats(msgspec.Struct, kw_only=True, frozen=True):
    """A breaker's ``statistics()``, typed: readers use the attributes, so renaming a counter
    is a type error rather than a figure silently missing."""

    name: str
    state: str  # a BreakerState value
    next_probe_at: float | None
    consecutive_failures: int
    window_calls: int
    window_failures: int
    failure_ratio: float
    probes_in_flight: int
    open_for: float
    reopen_level: int
    transitions_pending: int
    transitions_dropped: int
    allowed: int  # calls let through
    refused: int  # calls refused while open
    successes: int
    rejections: int  # business refusals (4xx): never open the breaker
    failures: int  # platform faults
    released: int
    late: int
    trips: int  # closed -> open
    reopens: int  # half_open -> open
    closes: int  # half_open -> closed


class BreakerEvent(enum.StrEnum):
    TRIP = "trip"
    COOLED = "cooled"
    PROBE_SUCCEEDED = "probe_succeeded"
    PROBE_FAILED = "probe_failed"


_S = BreakerState
_E = BreakerEvent

# {state: {event: next_state}}; anything not listed is forbidden.
TRANSITIONS: Final[Mapping[BreakerState, Mapping[BreakerEvent, BreakerState]]] = MappingProxyType({
    _S.CLOSED: MappingProxyType({_E.TRIP: _S.OPEN}),
    _S.OPEN: MappingProxyType({_E.COOLED: _S.HALF_OPEN}),
    _S.HALF_OPEN: MappingProxyType({_E.PROBE_SUCCEEDED: _S.CLOSED, _E.PROBE_FAILED: _S.OPEN}),
})


class BreakerTransitionError(RuntimeError):
    """``event`` is not allowed in ``state``: a bug in the breaker or its caller, never a
    platform condition (so not a ``GatewayError``)."""

    def __init__(self, state: BreakerState, event: BreakerEvent) -> None:
        super().__init__(f"circuit breaker: event {event.value!r} is forbidden in state "
                         f"{state.value!r}")
        self.state = state
        self.event = event


def next_state(state: BreakerState, event: BreakerEvent) -> BreakerState:
    """The state ``event`` leads to from ``state``; raises ``BreakerTransitionError`` when the
    pair is not in ``TRANSITIONS``."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise BreakerTransitionError(state, event) from None


class Transition(msgspec.Struct, frozen=True):
    """One state change, as published (JSON) on ``erpgw.mon.events.breaker``.

    ``at`` is the caller's clock (monotonic seconds), not wall time; the shell adds wall time
    when it publishes.
    """

    at: float
    source: BreakerState
    target: BreakerState
    reason: str
    event: BreakerEvent
    breaker: str


class BreakerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of one breaker; a msgspec Struct so it can sit in the gateway's TOML config.

    * ``consecutive_failures`` (N): trip after N platform faults in a row (0 disables);
    * ``window`` (M) and ``failure_ratio`` (R): trip when the last M calls are all in and at
      least R of them were faults (``window = 0`` disables);
    * ``open_for``: the first open period; each re-open from half_open multiplies it by
      ``open_for_factor`` up to ``open_for_cap``; closing resets it;
    * ``probes`` (K): calls let through in half_open before an outcome decides;
    * ``max_retry_after``: a fault carrying ``retry_after`` keeps the breaker open at least that
      long, up to this limit.

    Raises ``ValueError`` (``msgspec.ValidationError`` when converted from config) for a value
    out of range.
    """

    consecutive_failures: int = 5
    window: int = 20
    failure_ratio: float = 0.5
    open_for: float = 5.0
    open_for_factor: float = 2.0
    open_for_cap: float = 30.0
    probes: int = 1
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 0:
            raise ValueError(f"consecutive_failures must be >= 0, got {self.consecutive_failures}")
        if self.window < 0:
            raise ValueError(f"window must be >= 0, got {self.window}")
        if self.consecutive_failures == 0 and self.window == 0:
            raise ValueError("a breaker needs consecutive_failures > 0 or window > 0 to trip")
        if not 0 < self.failure_ratio <= 1:
            raise ValueError(f"failure_ratio must be in (0, 1], got {self.failure_ratio}")
        if not 0 < self.open_for < math.inf:
            raise ValueError(f"open_for must be finite and > 0, got {self.open_for}")
        if not 1 <= self.open_for_factor < math.inf:
            raise ValueError(f"open_for_factor must be finite and >= 1, got "
                             f"{self.open_for_factor}")
        if not self.open_for <= self.open_for_cap < math.inf:
            raise ValueError(f"open_for_cap must be finite and >= open_for, got "
                             f"{self.open_for_cap}")
        if self.probes < 1:
            raise ValueError(f"probes must be >= 1, got {self.probes}")
        if not 0 <= self.max_retry_after < math.inf:
            raise ValueError(f"max_retry_after must be finite and >= 0, got "
                             f"{self.max_retry_after}")


_MAX_PENDING_TRANSITIONS = 256


class CircuitBreaker:
    """The breaker of one platform endpoint. Not thread-safe; owned by one actor's task.

    Every call that ``allow`` let start must end in exactly one of ``record_success``,
    ``record_rejection``, ``record_failure``, ``release`` or ``record_error``; in half_open a
    call that never reports keeps its probe slot.
    """

    __slots__ = (
        "_backoff", "_config", "_consecutive", "_counts", "_dropped", "_name", "_open_until",
        "_opened_for", "_pending", "_probes", "_reopens", "_state", "_window",
        "_window_failures",
    )

    def __init__(self, name: str, config: BreakerConfig | None = None) -> None:
        """``name`` identifies the endpoint in transitions and statistics. Raises nothing."""
        self._name = name
        self._config = config or BreakerConfig()
        cfg = self._config
        self._backoff = Backoff(base=cfg.open_for, factor=cfg.open_for_factor,
                                cap=cfg.open_for_cap)
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._window: deque[bool] = deque(maxlen=cfg.window or None)
        self._window_failures = 0
        self._open_until: float | None = None
        self._opened_for = 0.0
        self._reopens = 0  # re-opens from half_open since the last close
        self._probes = 0  # probes in flight (half_open only)
        self._pending: deque[Transition] = deque(maxlen=_MAX_PENDING_TRANSITIONS)
        self._dropped = 0
        self._counts = dict.fromkeys(
            ("allowed", "refused", "successes", "rejections", "failures", "released", "late",
             "trips", "reopens", "closes"), 0)

    # -- queries ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The endpoint this breaker guards. Raises nothing."""
        return self._name

    @property
    def config(self) -> BreakerConfig:
        """The thresholds in force. Raises nothing."""
        return self._config

    @property
    def state(self) -> BreakerState:
        """The state as of the last call; an expired open turns half_open in ``allow``.
        Raises nothing."""
        return self._state

    @property
    def next_probe_at(self) -> float | None:
        """While open: when the first probe may start. ``None`` in any other state.
        Raises nothing."""
        return self._open_until

    @property
    def transitions(self) -> tuple[Transition, ...]:
        """State changes not yet drained, oldest first (at most 256 are kept; older ones are
        dropped and counted in ``statistics()['transitions_dropped']``). Raises nothing."""
        return tuple(self._pending)

    def drain_transitions(self) -> list[Transition]:
        """Return and forget the pending transitions, oldest first. Raises nothing."""
        out = list(self._pending)
        self._pending.clear()
        return out

    def retry_in(self, now: float) -> float:
        """Seconds until ``allow`` could say yes; changes nothing. Raises nothing.

        ``0`` when a call may start now; the rest of the open period while open; ``math.inf``
        in half_open with every probe slot taken (wait for a probe's outcome instead).
        """
        if self._state is BreakerState.CLOSED:
            return 0.0
        if self._state is BreakerState.OPEN:
            assert self._open_until is not None
            return max(0.0, self._open_until - now)
        return 0.0 if self._probes < self._config.probes else math.inf

    def stats(self) -> BreakerStats:
        """A typed snapshot for health and monitoring. Raises nothing."""
        calls = len(self._window)
        c = self._counts
        return BreakerStats(
            name=self._name, state=self._state.value, next_probe_at=self._open_until,
            consecutive_failures=self._consecutive, window_calls=calls,
            window_failures=self._window_failures,
            failure_ratio=self._window_failures / calls if calls else 0.0,
            probes_in_flight=self._probes, open_for=self._opened_for,
            reopen_level=self._reopens, transitions_pending=len(self._pending),
            transitions_dropped=self._dropped, allowed=c["allowed"], refused=c["refused"],
            successes=c["successes"], rejections=c["rejections"], failures=c["failures"],
            released=c["released"], late=c["late"], trips=c["trips"], reopens=c["reopens"],
            closes=c["closes"])

    def statistics(self) -> dict[str, object]:
        """``stats()`` as JSON-ready data for health and monitoring. Raises nothing."""
        return msgspec.structs.asdict(self.stats())

    # -- the call protocol -----------------------------------------------------------------

    def allow(self, now: float) -> bool:
        """May a call to the endpoint start at ``now``? Raises nothing.

        Closed: always. Open: no, until ``next_probe_at``, when the breaker turns half_open.
        Half_open: yes for up to ``probes`` calls in flight, each taking a probe slot that its
        outcome (or ``release``) gives back.
        """
        if self._state is BreakerState.OPEN:
            assert self._open_until is not None
            if now < self._open_until:
                self._counts["refused"] += 1
                return False
            self._fire(BreakerEvent.COOLED, now, f"open for {self._opened_for:g} s")
        if self._state is BreakerState.HALF_OPEN:
            if self._probes >= self._config.probes:
                self._counts["refused"] += 1
                return False
            self._probes += 1
        self._counts["allowed"] += 1
        return True

    def record_success(self, now: float) -> None:
        """The call succeeded (2xx). In half_open a probe's success closes the breaker.
        Raises nothing."""
        if self._is_late():
            return
        self._counts["successes"] += 1
        self._healthy(now, "probe succeeded")

    def record_rejection(self, now: float) -> None:
        """The platform answered and refused this request (a business 4xx, a contract error
        in its answer). That proves the endpoint is up, so it counts as a success: a 4xx never
        opens the breaker and a rejected probe closes it. Raises nothing."""
        if self._is_late():
            return
        self._counts["rejections"] += 1
        self._healthy(now, "probe answered (rejected the request: the endpoint is up)")

    def record_failure(self, now: float, *, retry_after: float | None = None,
                       cause: str | None = None) -> None:
        """The call failed through the platform's fault: a 5xx, a timeout, a refused or reset
        connection, an ambiguous outcome. Never call it for a 4xx or a 429.

        Closed: may trip the breaker open. Half_open: a probe's failure re-opens it for longer.
        A ``retry_after`` (seconds, clamped to ``max_retry_after``) keeps it open at least that
        long; ``cause`` (an error code) is quoted in the transition's reason. Raises nothing.
        """
        if self._is_late():
            return
        self._counts["failures"] += 1
        suffix = f"; last: {cause}" if cause else ""
        if self._state is BreakerState.HALF_OPEN:
            self._probes -= 1
            self._reopens += 1
            self._open(BreakerEvent.PROBE_FAILED, now, retry_after, "probe failed" + suffix)
            return
        self._consecutive += 1
        self._push(False)
        cfg = self._config
        if cfg.consecutive_failures and self._consecutive >= cfg.consecutive_failures:
            self._open(BreakerEvent.TRIP, now, retry_after,
                       f"{self._consecutive} consecutive failures{suffix}")
        elif (cfg.window and len(self._window) == cfg.window
              and self._window_failures >= cfg.failure_ratio * cfg.window):
            self._open(BreakerEvent.TRIP, now, retry_after,
                       f"{self._window_failures} of the last {cfg.window} calls failed "
                       f"(ratio >= {cfg.failure_ratio:g}){suffix}")

    def release(self) -> None:
        """The call ended without saying anything about the platform's health (a 429, our
        own shutdown, a bug in our code): give back its probe slot, count nothing else.
        Raises nothing."""
        self._counts["released"] += 1
        if self._state is BreakerState.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    def record_error(self, error: BaseException, now: float) -> Verdict:
        """Sort ``error`` with ``classify`` and record it: a fault as ``record_failure``
        (with its ``retry_after`` and code), a rejection as ``record_rejection``, a 429 or an
        unrelated error as ``release``. Returns the verdict. Raises nothing.

        Pass only an error raised by the guarded call itself.
        """
        verdict = classify(error)
        if verdict is Verdict.FAULT:
            self.record_failure(now, retry_after=getattr(error, "retry_after", None),
                                cause=error_code(error))
        elif verdict is Verdict.REJECTED:
            self.record_rejection(now)
        else:
            self.release()
        return verdict

    # -- internals -------------------------------------------------------------------------

    def _is_late(self) -> bool:
        """An outcome of a call that started before the breaker opened (see invariants)."""
        state = self._state
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._probes == 0):
            self._counts["late"] += 1
            return True
        return False

    def _healthy(self, now: float, probe_reason: str) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._fire(BreakerEvent.PROBE_SUCCEEDED, now, probe_reason)
            return
        self._consecutive = 0
        self._push(True)

    def _push(self, ok: bool) -> None:
        window = self._window
        if window.maxlen is None:  # the ratio rule is disabled
            return
        if len(window) == window.maxlen and not window[0]:
            self._window_failures -= 1
        window.append(ok)
        if not ok:
            self._window_failures += 1

    def _open(self, event: BreakerEvent, now: float, retry_after: float | None,
              reason: str) -> None:
        period = self._backoff.ceiling(self._reopens)
        held = clamp_retry_after(retry_after, self._config.max_retry_after)
        if held is not None and held > period:
            period = held
            reason += f"; Retry-After {held:g} s"
        self._opened_for = period
        self._fire(event, now, f"{reason}; open for {period:g} s", open_until=now + period)

    def _fire(self, event: BreakerEvent, now: float, reason: str, *,
              open_until: float | None = None) -> None:
        source = self._state
        target = next_state(source, event)
        self._state = target
        self._open_until = open_until if target is BreakerState.OPEN else None
        self._probes = 0
        if target is BreakerState.OPEN:
            self._counts["trips" if event is BreakerEvent.TRIP else "reopens"] += 1
        elif target is BreakerState.CLOSED:
            self._counts["closes"] += 1
            self._reopens = 0
            self._consecutive = 0
            self._window.clear()
            self._window_failures = 0
        if len(self._pending) == self._pending.maxlen:
            self._dropped += 1
        self._pending.append(Transition(at=now, source=source, target=target, reason=reason,
                                        event=event, breaker=self._name))

    def __repr__(self) -> str:
        return f"CircuitBreaker({self._name!r}, state={self._state.value})"
