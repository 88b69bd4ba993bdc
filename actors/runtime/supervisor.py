"""Supervisors: Erlang/OTP supervision on anyio task groups.

Theory of operation
-------------------
A ``Supervisor`` is an ``Actor`` whose ``run()`` owns one task group. Its own task (the *host*)
is the only place where decisions are made; every child runs in a task of that group, wrapped
by ``_child_main``, which turns whatever ``actor.run()`` does into a ``_Run`` record: started or
not, returned or raised (``Exception`` only; ``BaseException`` is never swallowed).

* **Start** children in order with ``task_group.start``: child i+1 starts only once child i
  called ``task_status.started()``. A child that exits before that is a start failure and gets
  the same treatment as a crash. The supervisor reports ``started()`` after the last child.
* **Exits** of running children reach the host through a small inbox (a deque plus a wake-up
  event), so crashes are handled one at a time and in order. The restart policy then decides:
  permanent children restart after any exit, transient ones after a failure, temporary ones
  never. Each restart is recorded in the ``RestartIntensity``; when it refuses, the supervisor
  stops its children and raises ``SupervisorEscalation``, which its parent sees as a failure of
  this supervisor. A restart waits a jittered ``Backoff`` first (cut short by a stop request).
* **one_for_one** restarts the failed child alone. **rest_for_one** first stops the children
  started after it (last first), then starts it and them again, in order.
* **Stop** goes in reverse start order, one child at a time: ``request_stop()``, wait up to the
  child's ``shutdown_timeout`` for ``run()`` to return, then cancel it (a deadline set on the
  child's own cancel scope, so the waiting costs nothing). Once a child is ready its cancel
  scope is shielded: cancelling the supervisor does not tear its children down at random but
  lets the host's shielded cleanup stop them in order, within a bounded time (the sum of the
  children's shutdown timeouts plus a grace).

Invariants: every child task lives in the supervisor's task group (no orphans); only the host
mutates the slots; events (``on_event``) are emitted by the host only, so their order is the
order of the decisions.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn

import anyio
import anyio.abc
import msgspec

from .actor import Actor
from .restart import Backoff, RestartIntensity

__all__ = [
    "DEFAULT_BACKOFF",
    "ChildSpec",
    "ChildState",
    "RestartType",
    "Strategy",
    "Supervisor",
    "SupervisorEscalation",
    "SupervisorEvent",
]

logger = logging.getLogger("erpgw.supervisor")

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "rest_for_one"]
ChildState = Literal["starting", "running", "restarting", "stopped"]

DEFAULT_BACKOFF = Backoff()

# Added to the sum of the children's shutdown timeouts to bound a supervisor's whole stop.
# A child only outlives that if it survives cancellation itself (it shields or swallows it).
_SHUTDOWN_GRACE = 1.0
_MAX_ERROR_CHARS = 200


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How a supervisor starts, restarts and stops one child.

    ``factory`` builds a fresh actor for every start, so a restarted child starts from clean
    state (as in OTP). ``shutdown_timeout`` is how long a stopping child may take to finish its
    in-flight work before it is cancelled; for a child supervisor, make it larger than the sum
    of its own children's timeouts.
    """

    name: str
    factory: Callable[[], Actor]
    restart: RestartType = "permanent"
    shutdown_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a child needs a name")
        if self.restart not in ("permanent", "transient", "temporary"):
            raise ValueError(f"unknown restart type {self.restart!r} for child {self.name!r}")
        if not 0 <= self.shutdown_timeout < math.inf:
            raise ValueError(
                f"shutdown_timeout must be finite and >= 0, got {self.shutdown_timeout}"
            )


class SupervisorEscalation(Exception):
    """A supervisor exceeded its restart intensity and gave up; raised out of its ``run()``.

    ``child`` is the child whose exit was one restart too many; the exception is raised
    ``from`` that child's error (``cause``, ``None`` if it returned normally). All children
    have been stopped by the time this is raised. A parent supervisor treats it like any other
    child failure.
    """

    def __init__(
        self,
        supervisor: str,
        child: str,
        cause: BaseException | None = None,
        message: str | None = None,
    ) -> None:
        super().__init__(message or f"supervisor {supervisor!r} gave up on child {child!r}")
        self.supervisor = supervisor
        self.child = child
        self.cause = cause


class SupervisorEvent(msgspec.Struct, frozen=True):
    """One state change of one child, for monitoring (published as JSON on the mon lane).

    ``kind`` is one of "started", "exited" (returned by itself), "failed" (raised, also before
    it was ready), "restarting" (a restart was decided; the backoff wait starts), "escalated"
    (the supervisor gives up because of this child) and "stopped" (stopped by the supervisor).
    ``restarts`` is how often the child had been restarted at that moment; ``at`` is the
    supervisor's clock (monotonic).
    """

    supervisor: str
    child: str
    kind: str
    restarts: int
    error: str | None
    at: float


class _Slot:
    """The supervisor's record of one child spec across restarts (host task only)."""

    __slots__ = (
        "actor",
        "consecutive",
        "current",
        "index",
        "last_error",
        "spec",
        "starts",
        "state",
    )

    def __init__(self, index: int, spec: ChildSpec) -> None:
        self.index = index
        self.spec = spec
        self.state: ChildState = "stopped"
        self.starts = 0
        # Exits since the child last ran for a whole intensity period; the backoff exponent.
        self.consecutive = 0
        self.last_error: str | None = None
        self.current: _Run | None = None
        self.actor: Actor | None = None  # latest instance, kept for statistics()

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)


class _Run:
    """One start of one child: what its task did, filled in by ``_child_main``."""

    __slots__ = (
        "actor",
        "cancelled",
        "done",
        "error",
        "reported",
        "scope",
        "slot",
        "started",
        "started_at",
        "stopping",
    )

    def __init__(self, slot: _Slot, actor: Actor | None) -> None:
        self.slot = slot
        self.actor = actor
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.error: Exception | None = None
        self.started = False
        self.started_at: float | None = None
        self.stopping = False  # the supervisor asked it to stop: its exit is not a crash
        self.cancelled = False  # it had to be cancelled after its shutdown timeout
        self.reported = False  # its exit has been handled (events emitted, policy applied)


class _StartGate(anyio.abc.TaskStatus[None]):
    """The ``task_status`` a child sees: records readiness, then passes it on to anyio."""

    def __init__(
        self, run: _Run, inner: anyio.abc.TaskStatus[None], clock: Callable[[], float]
    ) -> None:
        self._run = run
        self._inner = inner
        self._clock = clock

    def started(self, value: object = None) -> None:
        run = self._run
        if run.started:
            raise RuntimeError("task_status.started() called twice")
        run.started = True
        run.started_at = self._clock()
        if run.actor is not None:
            run.actor._lifecycle = "running"
        # From now on only the supervisor stops this child: shielding it from the enclosing
        # scopes lets a cancelled supervisor still stop its children one by one, in reverse
        # order, request_stop() first. Not if the start itself is being cancelled (effective
        # deadline -inf): a child that was never counted as running goes down with it.
        if anyio.current_effective_deadline() != -math.inf:
            run.scope.shield = True
        self._inner.started()


class _Escalate(Exception):
    """Internal: restart intensity exceeded; unwinds the host to its cleanup."""

    def __init__(self, slot: _Slot, cause: Exception | None) -> None:
        super().__init__(slot.spec.name)
        self.slot = slot
        self.cause = cause


def _describe(error: BaseException) -> str:
    # A child's own task group wraps its one real failure in a group: name the failure.
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 3] + "..."
    return text


def _wants_restart(restart: RestartType, error: Exception | None) -> bool:
    if restart == "permanent":
        return True
    if restart == "transient":
        return error is not None
    return False


class Supervisor(Actor):
    """Runs child actors, restarts them by policy and escalates when restarts pile up.

    ``run()`` returns normally after ``request_stop()`` (children stopped in reverse order)
    and raises ``SupervisorEscalation`` when the restart intensity (``intensity`` restarts
    within ``period`` seconds) is exceeded. If the stop is requested before every child
    started, ``run()`` returns without calling ``task_status.started()``. A supervisor
    instance runs once; give its parent a factory that builds a fresh one.

    ``run()`` executes in the task that awaits it (the host); every decision, log line and
    ``on_event`` call happens there. The other methods are synchronous and, like all of
    anyio, belong to the event loop's thread.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = "one_for_one",
        intensity: int = 3,
        period: float = 5.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_event: Callable[[SupervisorEvent], None] | None = None,
    ) -> None:
        """Raises ``ValueError`` for an unknown strategy, duplicate child names or a bad
        intensity/period."""
        super().__init__(name)
        if strategy not in ("one_for_one", "rest_for_one"):
            raise ValueError(f"unknown strategy {strategy!r}")
        names = [spec.name for spec in children]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate child names in supervisor {name!r}: {duplicates}")
        self._strategy: Strategy = strategy
        self._intensity = RestartIntensity(intensity, period)
        self._backoff = backoff
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._on_event = on_event
        self._slots = [_Slot(i, spec) for i, spec in enumerate(children)]
        self._restarts = 0
        self._ran = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._exits: deque[_Run] = deque()
        self._wakeup: anyio.Event | None = None
        self._starting: _Run | None = None
        self._stop_now = False  # stop_now(): no shutdown timeouts, cancel every child

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def children(self) -> tuple[ChildSpec, ...]:
        return tuple(slot.spec for slot in self._slots)

    # -- the actor interface -------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the children, supervise them until a stop is requested, stop them.

        Raises ``SupervisorEscalation`` when the restart intensity is exceeded (after stopping
        every child) and ``RuntimeError`` if this instance already ran.
        """
        if self._ran:
            raise RuntimeError(
                f"supervisor {self.name!r} already ran; build a fresh one for each start"
            )
        self._ran = True
        self._lifecycle = "starting"
        escalation: _Escalate | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                try:
                    await self._start_initial()
                    if not self.stop_requested:
                        self._lifecycle = "running"
                        task_status.started()
                        await self._supervise()
                except _Escalate as exc:
                    escalation = exc
                finally:
                    await self._shutdown()
        finally:
            self._tg = None
            self._exits.clear()
            self._lifecycle = "stopped"
        if escalation is not None:
            self._raise_escalation(escalation)

    def request_stop(self) -> None:
        """Stop the children in reverse start order and return from ``run()``.

        A child that is starting at this moment is asked to stop at once (its shutdown
        timeout runs from now), so a start that hangs cannot hold the stop up.
        """
        if self.stop_requested:
            return
        super().request_stop()
        if self._wakeup is not None:
            self._wakeup.set()
        if self._starting is not None:
            self._begin_stop(self._starting)

    def stop_now(self) -> None:
        """Stop at once (a second stop signal): as ``request_stop``, but every child, nested
        supervisors' children included, is cancelled now instead of being given its shutdown
        timeout. Safe for consumers: what they had not acknowledged is redelivered."""
        self._stop_now = True
        self.request_stop()
        for slot in self._slots:
            run = slot.current
            if run is None or run.done.is_set():
                continue
            if isinstance(run.actor, Supervisor):
                run.actor.stop_now()
            self._begin_stop(run)
            run.scope.cancel()  # also one already given its timeout by request_stop

    def statistics(self) -> dict[str, object]:
        """Name, state, strategy, total restarts, intensity and one entry per child."""
        stats = super().statistics()
        stats["strategy"] = self._strategy
        stats["restarts"] = self._restarts
        stats["intensity"] = {
            "max_restarts": self._intensity.max_restarts,
            "period": self._intensity.period,
            "recent": self._intensity.recent(self._clock()),
        }
        stats["children"] = [
            {
                "name": slot.spec.name,
                "state": slot.state,
                "restarts": slot.restarts,
                "last_error": slot.last_error,
                "actor": _actor_statistics(slot.actor),
            }
            for slot in self._slots
        ]
        return stats

    # -- the host's decisions --------------------------------------------------------------

    async def _start_initial(self) -> None:
        index, count = 0, len(self._slots)
        while index < count:
            failed = await self._start_range(index, count)
            if failed is None:
                return
            index, run = failed
            # Nothing after ``index`` runs yet, so restarting it alone suits both strategies.
            await self._recover(index, run, upto=index + 1)
            index += 1

    async def _supervise(self) -> None:
        while (run := await self._next_exit()) is not None:
            index = run.slot.index
            upto = index + 1 if self._strategy == "one_for_one" else len(self._slots)
            await self._recover(index, run, upto=upto)

    async def _next_exit(self) -> _Run | None:
        """The next unhandled exit of a running child, or ``None`` once a stop is requested."""
        while not self.stop_requested:
            while self._exits:
                run = self._exits.popleft()
                # Stale entries: children we stopped on purpose or replaced meanwhile.
                if run.slot.current is run and not run.reported and not run.stopping:
                    return run
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        return None

    async def _recover(self, index: int, run: _Run, *, upto: int) -> None:
        """Apply the restart policy to ``run``'s exit; restart children ``index..upto-1``.

        Loops while restarted children fail before they are ready. Raises ``_Escalate`` when
        the restart intensity refuses a restart; returns early once a stop is requested.
        """
        while True:
            slot = self._slots[index]
            self._note_exit(slot, run)
            if self.stop_requested:
                return
            if not _wants_restart(slot.spec.restart, run.error):
                self._log_exit(slot, run, f"not restarted ({slot.spec.restart})")
                return
            if not self._intensity.record(self._clock()):
                raise _Escalate(slot, run.error)
            self._restarts += 1
            delay = self._backoff.delay(slot.consecutive - 1, self._rng.random())
            slot.state = "restarting"
            self._log_exit(slot, run, f"restarting in {delay:.3f}s")
            self._emit(slot, "restarting", slot.last_error if run.error is not None else None)
            if self._strategy == "rest_for_one":
                # The later children depend on this one: they go down now, not after the
                # backoff, so none of them works against a dependency that is not there.
                await self._stop_range(index + 1, len(self._slots))
            with anyio.move_on_after(delay):
                await self.wait_stop_requested()
            if self.stop_requested:
                return
            failed = await self._start_range(index, upto)
            if failed is None:
                return
            index, run = failed

    def _note_exit(self, slot: _Slot, run: _Run) -> None:
        run.reported = True
        slot.state = "stopped"
        now = self._clock()
        # A child that ran for a whole intensity period has proven itself: its backoff
        # starts from the beginning again.
        if run.started_at is not None and now - run.started_at >= self._intensity.period:
            slot.consecutive = 0
        slot.consecutive += 1
        if run.error is not None:
            slot.last_error = _describe(run.error)
            self._emit(slot, "failed", slot.last_error)
        else:
            self._emit(slot, "exited")

    # -- starting and stopping children ----------------------------------------------------

    async def _start_range(self, first: int, upto: int) -> tuple[int, _Run] | None:
        """Start children ``first..upto-1`` in order, each after the previous one is ready.

        Returns the index and run of the first child that exited before it was ready, or
        ``None`` when all started (or a stop was requested). Temporary children are started
        once in a supervisor's life, never again (OTP).
        """
        for index in range(first, upto):
            if self.stop_requested:
                return None
            slot = self._slots[index]
            if slot.spec.restart == "temporary" and slot.starts > 0:
                continue
            run = await self._start_child(slot)
            if run is not None:
                if self.stop_requested:
                    return None  # it exited because we are stopping; _shutdown reports it
                return index, run
        return None

    async def _start_child(self, slot: _Slot) -> _Run | None:
        """Start one child; ``None`` once it is ready, else its run (exited before ready)."""
        slot.starts += 1
        slot.state = "starting"
        try:
            actor = slot.spec.factory()
        except Exception as exc:
            run = _Run(slot, None)
            run.error = exc
            run.done.set()
            slot.current = run
            return run
        run = _Run(slot, actor)
        slot.current = run
        slot.actor = actor
        assert self._tg is not None
        self._starting = run
        try:
            await self._tg.start(self._child_main, run, name=f"{self.name}/{slot.spec.name}")
        finally:
            self._starting = None
        if not run.started:
            return run
        slot.state = "running"
        logger.debug("%s: child %r started", self.name, slot.spec.name)
        self._emit(slot, "started")
        return None

    async def _child_main(
        self, run: _Run, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The task of one child run, in the supervisor's task group.

        Never raises ``Exception`` (a failure is recorded in ``run``); cancellation and other
        ``BaseException`` propagate. Always answers ``task_group.start`` even when the child
        exits before it is ready, so the host learns the outcome from ``run``.
        """
        actor = run.actor
        assert actor is not None
        actor._lifecycle = "starting"
        try:
            with run.scope:
                try:
                    await actor.run(task_status=_StartGate(run, task_status, self._clock))
                except Exception as exc:
                    run.error = exc
            run.cancelled = run.scope.cancelled_caught
        finally:
            actor._lifecycle = "stopped"
            run.done.set()
        if run.started:
            self._exits.append(run)
            if self._wakeup is not None:
                self._wakeup.set()
        else:
            task_status.started()

    def _begin_stop(self, run: _Run) -> None:
        """Ask a child to stop and arm its cancellation deadline (does not wait)."""
        if run.stopping or run.done.is_set():
            return
        run.stopping = True
        timeout = 0.0 if self._stop_now else run.slot.spec.shutdown_timeout
        if run.actor is not None:
            try:
                run.actor.request_stop()
            except Exception:
                logger.warning(
                    "%s: request_stop() of child %r raised; cancelling it now",
                    self.name,
                    run.slot.spec.name,
                    exc_info=True,
                )
                timeout = 0.0
        run.scope.deadline = min(run.scope.deadline, anyio.current_time() + timeout)

    async def _stop_child(self, slot: _Slot) -> None:
        if slot.state == "stopped":
            return
        run = slot.current
        error: str | None = None
        if run is not None:
            if not run.done.is_set():
                self._begin_stop(run)
                await run.done.wait()
            if run.cancelled and self._stop_now:
                error = "cancelled: stopping at once"
            elif run.cancelled:
                error = f"cancelled after its {slot.spec.shutdown_timeout:g}s shutdown timeout"
                logger.warning("%s: child %r %s", self.name, slot.spec.name, error)
            elif run.error is not None and not run.reported:
                error = slot.last_error = _describe(run.error)
                logger.warning(
                    "%s: child %r raised while stopping: %s", self.name, slot.spec.name, error
                )
                logger.debug(
                    "%s: traceback of child %r", self.name, slot.spec.name, exc_info=run.error
                )
            run.reported = True
        slot.state = "stopped"
        self._emit(slot, "stopped", error)

    async def _stop_range(self, first: int, upto: int) -> None:
        """Stop children ``first..upto-1``, last started first, one at a time."""
        for index in reversed(range(first, upto)):
            await self._stop_child(self._slots[index])

    async def _shutdown(self) -> None:
        """Stop every child in reverse order; shielded, so it also runs when cancelled."""
        budget = sum(slot.spec.shutdown_timeout for slot in self._slots) + _SHUTDOWN_GRACE
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(budget):
                await self._stop_range(0, len(self._slots))
            for slot in self._slots:
                run = slot.current
                if run is not None and not run.done.is_set():
                    # Only a child that survives cancellation gets here; the task group
                    # still waits for it, but at least it has been told.
                    logger.error(
                        "%s: child %r ignored its stop and its cancellation",
                        self.name,
                        slot.spec.name,
                    )
                    run.scope.cancel()

    # -- reporting ---------------------------------------------------------------------------

    def _emit(self, slot: _Slot, kind: str, error: str | None = None) -> None:
        callback = self._on_event
        if callback is None:
            return
        event = SupervisorEvent(
            supervisor=self.name,
            child=slot.spec.name,
            kind=kind,
            restarts=slot.restarts,
            error=error,
            at=self._clock(),
        )
        try:
            callback(event)
        except Exception:
            logger.warning(
                "%s: on_event callback raised on %s/%s; supervision goes on",
                self.name,
                slot.spec.name,
                kind,
                exc_info=True,
            )

    def _log_exit(self, slot: _Slot, run: _Run, outcome: str) -> None:
        # One line per exit: a restart is expected operation, its traceback is DEBUG detail.
        if run.error is None:
            logger.info("%s: child %r exited; %s", self.name, slot.spec.name, outcome)
            return
        logger.warning(
            "%s: child %r failed: %s; %s", self.name, slot.spec.name, slot.last_error, outcome
        )
        logger.debug("%s: traceback of child %r", self.name, slot.spec.name, exc_info=run.error)

    def _raise_escalation(self, escalation: _Escalate) -> NoReturn:
        slot, cause = escalation.slot, escalation.cause
        what = f"failed: {_describe(cause)}" if cause is not None else "exited"
        message = (
            f"supervisor {self.name!r}: child {slot.spec.name!r} {what}; more than "
            f"{self._intensity.max_restarts} restarts within {self._intensity.period:g}s"
        )
        self._emit(slot, "escalated", _describe(cause) if cause is not None else None)
        logger.error("%s; escalating", message)
        if cause is not None:
            logger.debug("%s: traceback of child %r", self.name, slot.spec.name, exc_info=cause)
        raise SupervisorEscalation(self.name, slot.spec.name, cause, message) from cause


def _actor_statistics(actor: Actor | None) -> dict[str, object] | None:
    if actor is None:
        return None
    try:
        return actor.statistics()
    except Exception as exc:
        return {"name": actor.name, "error": _describe(exc)}
