"""Test actors for the supervisor tests: scripted probes that write what they do to a journal.

A ``Probe`` appends ``"<name>:<what>"`` to the shared journal at every step of its life (init,
ready, stopping, stopped, failed, cancelled), so a test asserts ordering on one list. Each
start of a child consumes the next ``Step`` of its plan (the last one repeats), which scripts
"fail at init twice, then work" without any timing.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from typing import Literal

import anyio
import anyio.abc
import anyio.lowlevel

from actors.runtime import Actor, ChildSpec, RestartType, SupervisorEvent

WAIT = 5.0  # upper bound for any wait in a test; normally reached in milliseconds


class Boom(Exception):
    """The failure the probes raise."""


class Fatal(BaseException):
    """Stands for a KeyboardInterrupt/SystemExit: must never be swallowed by a supervisor."""


@dataclasses.dataclass(frozen=True)
class Step:
    """What one start of a probe does.

    ``init``: "ok" (become ready), "fail" (raise before ready), "return" (return before
    ready), "hold" (wait for ``Harness.release(name)`` first, then become ready).
    ``after``: "wait" (run until stopped or ordered), "fail" / "return" (right after ready).
    """

    init: Literal["ok", "fail", "return", "hold"] = "ok"
    after: Literal["wait", "fail", "return"] = "wait"
    ignore_stop: bool = False
    shield_init: bool = False  # the "hold" wait cannot be cancelled (a commit in progress)


OK = Step()


class Probe(Actor):
    def __init__(self, name: str, harness: Harness, step: Step, generation: int) -> None:
        super().__init__(name)
        self.harness = harness
        self.step = step
        self.generation = generation
        self.entered = 0
        self._wake: anyio.Event | None = None
        self._order: BaseException | Literal["return"] | None = None

    def _note(self, what: str) -> None:
        self.harness.note(f"{self.name}:{what}")

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.entered += 1
        self._wake = anyio.Event()
        self._note("init")
        step = self.step
        try:
            if step.init == "hold":
                with anyio.CancelScope(shield=step.shield_init):
                    await self.harness.held(self.name).wait()
            else:
                await anyio.lowlevel.checkpoint()
            if step.init == "fail":
                self._note("failed")
                raise Boom(f"{self.name} init #{self.generation}")
            if step.init == "return":
                self._note("returned")
                return
            task_status.started()
            self._note("ready")
            if step.after == "fail":
                self._note("failed")
                raise Boom(f"{self.name} run #{self.generation}")
            if step.after == "return":
                self._note("returned")
                return
            while True:
                order = self._order
                if isinstance(order, BaseException):
                    self._note("failed")
                    raise order
                if order == "return":
                    self._note("returned")
                    return
                if self.stop_requested and not step.ignore_stop:
                    break
                await self._wake.wait()
                self._wake = anyio.Event()
            self._note("stopping")
            await anyio.lowlevel.checkpoint()  # "in-flight work"
            self._note("stopped")
        except anyio.get_cancelled_exc_class():
            self._note("cancelled")
            raise

    def request_stop(self) -> None:
        super().request_stop()
        self._poke()

    def crash(self, error: BaseException | None = None) -> None:
        """Make the running probe raise ``error`` (a ``Boom`` by default)."""
        self._order = error if error is not None else Boom(f"{self.name} crashed")
        self._poke()

    def finish(self) -> None:
        """Make the running probe return normally."""
        self._order = "return"
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()


class Harness:
    """Builds child specs of probes and records the journal and the supervisor's events.

    Create it inside the test (it makes anyio events).
    """

    def __init__(self) -> None:
        self.journal: list[str] = []
        self.events: list[SupervisorEvent] = []
        self.instances: dict[str, list[Probe]] = defaultdict(list)
        self._plans: dict[str, list[Step]] = {}
        self._holds: dict[str, anyio.Event] = {}
        self._changed = anyio.Event()

    # -- recording -----------------------------------------------------------------------

    def note(self, entry: str) -> None:
        self.journal.append(entry)
        self._notify()

    def on_event(self, event: SupervisorEvent) -> None:
        self.events.append(event)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds after some journal entry or event."""
        with anyio.fail_after(WAIT):
            while not predicate():
                await self._changed.wait()

    async def wait_for(self, entry: str, count: int = 1) -> None:
        """Wait until the journal holds ``entry`` (``"B:ready"``) ``count`` times."""
        await self.wait_until(lambda: self.journal.count(entry) >= count)

    async def wait_event(self, child: str, kind: str, count: int = 1) -> None:
        """Wait until the supervisor(s) reported ``(child, kind)`` ``count`` times."""
        await self.wait_until(lambda: self.kinds().count((child, kind)) >= count)

    # -- building children -------------------------------------------------------------------

    def spec(
        self,
        name: str,
        *plan: Step,
        restart: RestartType = "permanent",
        shutdown_timeout: float = 1.0,
    ) -> ChildSpec:
        self._plans[name] = list(plan) or [OK]

        def factory() -> Probe:
            generation = len(self.instances[name])
            plan = self._plans[name]
            step = plan[min(generation, len(plan) - 1)]
            probe = Probe(name, self, step, generation)
            self.instances[name].append(probe)
            return probe

        return ChildSpec(name, factory, restart=restart, shutdown_timeout=shutdown_timeout)

    def specs(self, *names: str) -> list[ChildSpec]:
        return [self.spec(name) for name in names]

    def held(self, name: str) -> anyio.Event:
        return self._holds.setdefault(name, anyio.Event())

    def release(self, name: str) -> None:
        self.held(name).set()

    def latest(self, name: str) -> Probe:
        return self.instances[name][-1]

    # -- reading ---------------------------------------------------------------------------

    def kinds(self, *, supervisor: str | None = None) -> list[tuple[str, str]]:
        """``(child, kind)`` of every event so far, optionally of one supervisor only."""
        return [
            (e.child, e.kind)
            for e in self.events
            if supervisor is None or e.supervisor == supervisor
        ]

    def only(self, *prefixes: str) -> list[str]:
        """The journal entries of the named probes, in order."""
        return [e for e in self.journal if e.split(":", 1)[0] in prefixes]
