"""Actor tier: the supervisor over scripted probe actors (no I/O, milliseconds per test)."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import pytest

from actors.runtime import (
    Actor,
    Backoff,
    ChildSpec,
    RestartType,
    Supervisor,
    SupervisorEscalation,
    SupervisorEvent,
)

from .support import WAIT, Boom, Fatal, Harness, Step

FAST = Backoff(base=0.001, factor=2.0, cap=0.01)


class FakeClock:
    """The supervisor's clock (restart intensity, event times); the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass(frozen=True)
class RecordingBackoff(Backoff):
    """Records every (attempt, rand) the supervisor asks for and never waits."""

    calls: list[tuple[int, float]] = dataclasses.field(default_factory=list)

    def delay(self, attempt: int, rand: float) -> float:
        self.calls.append((attempt, rand))
        return 0.0


def make(h: Harness, children: Sequence[ChildSpec], **kwargs: Any) -> Supervisor:
    kwargs.setdefault("backoff", FAST)
    kwargs.setdefault("rng", random.Random(0))
    kwargs.setdefault("on_event", h.on_event)
    return Supervisor("sup", children, **kwargs)


@asynccontextmanager
async def supervised(sup: Supervisor) -> AsyncIterator[anyio.abc.TaskGroup]:
    """Run ``sup`` until the block ends, then request a stop and wait for ``run()``."""
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            yield tg
            sup.request_stop()


def children_of(sup: Supervisor) -> list[dict[str, Any]]:
    """The per-child entries of ``sup.statistics()``."""
    return cast(list[dict[str, Any]], sup.statistics()["children"])


def after(journal: list[str], marker: str) -> list[str]:
    """The journal entries after the last ``marker``."""
    last = len(journal) - 1 - journal[::-1].index(marker)
    return journal[last + 1 :]


STOP_ALL = ["C:stopping", "C:stopped", "B:stopping", "B:stopped", "A:stopping", "A:stopped"]


# -- starting and stopping -------------------------------------------------------------------


async def test_children_start_in_order_each_after_the_previous_is_ready() -> None:
    h = Harness()
    sup = make(h, [h.spec("A", Step(init="hold")), h.spec("B"), h.spec("C")])
    seen_when_started: list[str] = []
    sup_ready = anyio.Event()

    async def start(tg: anyio.abc.TaskGroup) -> None:
        await tg.start(sup.run)
        seen_when_started.extend(h.journal)
        sup_ready.set()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(start, tg)
            await h.wait_for("A:init")
            for _ in range(50):  # plenty of scheduling rounds for B to start if it could
                await anyio.lowlevel.checkpoint()
            assert h.journal == ["A:init"]
            assert not seen_when_started
            h.release("A")
            await sup_ready.wait()
            sup.request_stop()

    # the supervisor reported ready only after its last child was ready
    assert seen_when_started == ["A:init", "A:ready", "B:init", "B:ready", "C:init", "C:ready"]
    assert h.kinds()[:3] == [("A", "started"), ("B", "started"), ("C", "started")]


async def test_stop_goes_in_reverse_order_one_child_at_a_time() -> None:
    h = Harness()
    sup = make(h, h.specs("A", "B", "C"))
    async with supervised(sup):
        pass  # run() must return normally after request_stop()
    assert after(h.journal, "C:ready") == STOP_ALL
    assert h.kinds()[3:] == [("C", "stopped"), ("B", "stopped"), ("A", "stopped")]
    stats = sup.statistics()
    assert stats["state"] == "stopped"
    assert [c["state"] for c in children_of(sup)] == ["stopped"] * 3


async def test_a_stop_requested_before_run_starts_nothing() -> None:
    h = Harness()
    sup = make(h, h.specs("A", "B"))
    sup.request_stop()
    with anyio.fail_after(WAIT):
        await sup.run()
    assert h.journal == []
    assert h.events == []


async def test_a_stop_while_a_child_is_starting_stops_that_child_too() -> None:
    h = Harness()
    b = h.spec("B", Step(init="hold"), shutdown_timeout=0.02)
    sup = make(h, [h.spec("A"), b, h.spec("C")])
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            await h.wait_for("B:init")
            sup.request_stop()
    # B never became ready and ignored the request: cancelled after its timeout; C never ran
    assert h.latest("B").stop_requested
    assert h.journal == ["A:init", "A:ready", "B:init", "B:cancelled", "A:stopping", "A:stopped"]
    assert [(e.child, e.kind) for e in h.events] == [
        ("A", "started"),
        ("B", "stopped"),
        ("A", "stopped"),
    ]
    assert "shutdown timeout" in (h.events[1].error or "")


async def test_a_child_that_ignores_request_stop_is_cancelled_after_its_timeout() -> None:
    h = Harness()
    sup = make(
        h, [h.spec("A"), h.spec("B", Step(ignore_stop=True), shutdown_timeout=0.05), h.spec("C")]
    )
    async with supervised(sup):
        stop_began = anyio.current_time()
    elapsed = anyio.current_time() - stop_began
    assert after(h.journal, "C:ready") == [
        "C:stopping",
        "C:stopped",
        "B:cancelled",
        "A:stopping",
        "A:stopped",
    ]
    assert 0.04 <= elapsed < 1.0  # it waited for B's timeout, not for the default 5 s
    b_stopped = [e for e in h.events if e.child == "B" and e.kind == "stopped"]
    assert b_stopped[0].error == "cancelled after its 0.05s shutdown timeout"


async def test_cancelling_the_supervisor_still_stops_children_in_reverse_order() -> None:
    h = Harness()
    sup = make(h, h.specs("A", "B", "C"))
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            tg.cancel_scope.cancel()
    # each child was asked to stop and finished its work, last started first
    assert after(h.journal, "C:ready") == STOP_ALL
    assert h.kinds()[3:] == [("C", "stopped"), ("B", "stopped"), ("A", "stopped")]


async def test_cancelling_the_supervisor_cancels_a_stuck_child_after_its_timeout() -> None:
    h = Harness()
    sup = make(
        h, [h.spec("A"), h.spec("B", Step(ignore_stop=True), shutdown_timeout=0.02), h.spec("C")]
    )
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            tg.cancel_scope.cancel()
    assert after(h.journal, "C:ready") == [
        "C:stopping",
        "C:stopped",
        "B:cancelled",
        "A:stopping",
        "A:stopped",
    ]


async def test_cancelled_while_a_child_is_starting() -> None:
    h = Harness()
    sup = make(h, [h.spec("A"), h.spec("B", Step(init="hold")), h.spec("C")])
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            await h.wait_for("B:init")
            tg.cancel_scope.cancel()
    # the half-started child goes down with the start; the ready one is stopped properly
    assert h.journal == ["A:init", "A:ready", "B:init", "B:cancelled", "A:stopping", "A:stopped"]


@pytest.mark.timeout(10)  # the failure mode is a hang that no cancel scope can break
async def test_a_child_ready_only_after_the_start_was_cancelled_is_not_shielded() -> None:
    h = Harness()
    sup = make(h, [h.spec("A"), h.spec("B", Step(init="hold", shield_init=True))])
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            await h.wait_for("B:init")
            tg.cancel_scope.cancel()
            h.release("B")  # B reports ready after its start was cancelled
    # B was never counted as running: it went down with the cancelled start instead of
    # waiting (shielded) for a stop request that nobody would send
    assert h.journal == [
        "A:init",
        "A:ready",
        "B:init",
        "B:ready",
        "B:cancelled",
        "A:stopping",
        "A:stopped",
    ]


# -- restart strategies ----------------------------------------------------------------------


async def test_one_for_one_restarts_only_the_failed_child() -> None:
    h = Harness()
    sup = make(h, h.specs("A", "B", "C"))
    async with supervised(sup):
        h.latest("B").crash()
        await h.wait_event("B", "started", 2)
        assert [len(h.instances[n]) for n in "ABC"] == [1, 2, 1]
        assert h.instances["A"][0].entered == 1
        assert h.instances["C"][0].entered == 1
        assert h.only("A", "C") == ["A:init", "A:ready", "C:init", "C:ready"]
        assert h.kinds()[3:] == [("B", "failed"), ("B", "restarting"), ("B", "started")]


async def test_rest_for_one_restarts_the_failed_child_and_the_later_ones() -> None:
    h = Harness()
    sup = make(h, h.specs("A", "B", "C", "D"), strategy="rest_for_one")
    async with supervised(sup):
        h.latest("B").crash()
        await h.wait_event("D", "started", 2)
        assert h.journal[8:] == [
            "B:failed",
            "D:stopping",
            "D:stopped",
            "C:stopping",
            "C:stopped",
            "B:init",
            "B:ready",
            "C:init",
            "C:ready",
            "D:init",
            "D:ready",
        ]
        assert [len(h.instances[n]) for n in "ABCD"] == [1, 2, 2, 2]
        assert h.only("A") == ["A:init", "A:ready"]
        assert h.kinds()[4:] == [
            ("B", "failed"),
            ("B", "restarting"),
            ("D", "stopped"),
            ("C", "stopped"),
            ("B", "started"),
            ("C", "started"),
            ("D", "started"),
        ]
        stats = sup.statistics()
        assert stats["restarts"] == 1  # one restart decision, three children restarted
        assert [c["restarts"] for c in children_of(sup)] == [0, 1, 1, 1]


async def test_rest_for_one_does_not_restart_a_temporary_sibling() -> None:
    h = Harness()
    sup = make(
        h, [h.spec("A"), h.spec("B", restart="temporary"), h.spec("C")], strategy="rest_for_one"
    )
    async with supervised(sup):
        h.latest("A").crash()
        await h.wait_event("C", "started", 2)
        assert [len(h.instances[n]) for n in "ABC"] == [2, 1, 2]
        assert h.only("B") == ["B:init", "B:ready", "B:stopping", "B:stopped"]
        states = {c["name"]: c["state"] for c in children_of(sup)}
        assert states == {"A": "running", "B": "stopped", "C": "running"}


@pytest.mark.parametrize(
    ("restart", "how", "restarted"),
    [
        ("permanent", "fail", True),
        ("permanent", "return", True),
        ("transient", "fail", True),
        ("transient", "return", False),
        ("temporary", "fail", False),
        ("temporary", "return", False),
    ],
)
async def test_restart_types(restart: RestartType, how: str, restarted: bool) -> None:
    h = Harness()
    sup = make(h, [h.spec("A", restart=restart), h.spec("B")])
    async with supervised(sup):
        a = h.latest("A")
        if how == "fail":
            a.crash()
        else:
            a.finish()
        await h.wait_event("A", "failed" if how == "fail" else "exited")
        # A barrier: the supervisor handles exits in order, so once B's later crash has been
        # handled, any restart of A would have happened.
        h.latest("B").crash()
        await h.wait_event("B", "started", 2)
        assert len(h.instances["A"]) == (2 if restarted else 1)
        a_state = children_of(sup)[0]["state"]
        assert a_state == ("running" if restarted else "stopped")
        a_kinds = [k for c, k in h.kinds() if c == "A"]
        expected = ["started", "failed" if how == "fail" else "exited"]
        assert a_kinds == ([*expected, "restarting", "started"] if restarted else expected)


# -- failures at start, restart intensity and escalation ----------------------------------------


async def test_a_child_failing_at_init_is_retried_before_the_next_one_starts() -> None:
    h = Harness()
    fail = Step(init="fail")
    sup = make(h, [h.spec("A"), h.spec("B", fail, fail, Step()), h.spec("C")])
    async with supervised(sup):
        assert h.journal == [
            "A:init",
            "A:ready",
            "B:init",
            "B:failed",
            "B:init",
            "B:failed",
            "B:init",
            "B:ready",
            "C:init",
            "C:ready",
        ]
        b = children_of(sup)[1]
        assert b["restarts"] == 2
        assert b["last_error"] == "Boom: B init #1"
        assert b["state"] == "running"


async def test_a_temporary_child_failing_at_init_is_not_retried() -> None:
    h = Harness()
    sup = make(h, [h.spec("A", Step(init="fail"), restart="temporary"), h.spec("B")])
    async with supervised(sup):
        assert h.journal == ["A:init", "A:failed", "B:init", "B:ready"]
        assert h.kinds() == [("A", "failed"), ("B", "started")]


async def test_init_failures_beyond_the_intensity_escalate_with_the_childs_error() -> None:
    h = Harness()
    sup = make(h, [h.spec("A"), h.spec("B", Step(init="fail")), h.spec("C")], intensity=2)
    with anyio.fail_after(WAIT), pytest.raises(SupervisorEscalation) as info:
        await sup.run()
    escalation = info.value
    assert (escalation.supervisor, escalation.child) == ("sup", "B")
    assert isinstance(escalation.__cause__, Boom)
    assert escalation.cause is escalation.__cause__
    assert str(escalation.__cause__) == "B init #2"  # the third attempt is one too many
    assert len(h.instances["B"]) == 3
    assert "C:init" not in h.journal
    assert after(h.journal, "B:failed") == ["A:stopping", "A:stopped"]
    assert h.kinds() == [
        ("A", "started"),
        ("B", "failed"),
        ("B", "restarting"),
        ("B", "failed"),
        ("B", "restarting"),
        ("B", "failed"),
        ("A", "stopped"),
        ("B", "escalated"),
    ]


async def test_a_factory_that_raises_is_a_failed_start() -> None:
    h = Harness()

    def broken() -> Actor:
        raise ValueError("no config for B")

    sup = make(h, [h.spec("A"), ChildSpec("B", broken)], intensity=1)
    with anyio.fail_after(WAIT), pytest.raises(SupervisorEscalation) as info:
        await sup.run()
    assert isinstance(info.value.__cause__, ValueError)
    assert h.kinds() == [
        ("A", "started"),
        ("B", "failed"),
        ("B", "restarting"),
        ("B", "failed"),
        ("A", "stopped"),
        ("B", "escalated"),
    ]


async def test_escalation_stops_the_other_children_in_reverse_order() -> None:
    h = Harness()
    sup = make(h, h.specs("A", "B", "C", "D"), intensity=0)

    async def crash_c() -> None:
        await h.wait_event("D", "started")
        h.latest("C").crash()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(crash_c)
            with pytest.raises(SupervisorEscalation) as info:
                await sup.run()
    assert info.value.child == "C"
    assert str(info.value.__cause__) == "C crashed"
    assert after(h.journal, "C:failed") == [
        "D:stopping",
        "D:stopped",
        "B:stopping",
        "B:stopped",
        "A:stopping",
        "A:stopped",
    ]
    assert h.kinds()[4:] == [
        ("C", "failed"),
        ("D", "stopped"),
        ("B", "stopped"),
        ("A", "stopped"),
        ("C", "escalated"),
    ]


@pytest.mark.parametrize(("gap", "escalates"), [(0.0, True), (5.0, True), (5.01, False)])
async def test_intensity_window_runs_on_the_injected_clock(gap: float, escalates: bool) -> None:
    h = Harness()
    clock = FakeClock()
    sup = make(h, h.specs("A"), intensity=1, period=5.0, clock=clock)

    async def crash_twice() -> None:
        await h.wait_event("A", "started")
        h.latest("A").crash()
        await h.wait_event("A", "started", 2)
        clock.now += gap
        h.latest("A").crash()
        if not escalates:
            await h.wait_event("A", "started", 3)
            sup.request_stop()

    escalated = False
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(crash_twice)
            try:
                await sup.run()
            except SupervisorEscalation:
                escalated = True
    assert escalated is escalates
    assert len(h.instances["A"]) == (2 if escalates else 3)


# -- nesting -----------------------------------------------------------------------------------


async def test_a_child_supervisors_escalation_is_a_failure_the_parent_restarts() -> None:
    h = Harness()
    x = h.spec("X")
    inners: list[Supervisor] = []

    def inner() -> Supervisor:
        sup = Supervisor("inner", [x], intensity=0, backoff=FAST, on_event=h.on_event)
        inners.append(sup)
        return sup

    outer = make(h, [h.spec("P"), ChildSpec("inner", inner, shutdown_timeout=2.0), h.spec("Q")])

    def outer_kinds() -> list[tuple[str, str]]:
        return h.kinds(supervisor="sup")

    async with supervised(outer):
        h.latest("X").crash()
        await h.wait_until(lambda: outer_kinds().count(("inner", "started")) == 2)
        assert h.kinds(supervisor="inner") == [
            ("X", "started"),
            ("X", "failed"),
            ("X", "escalated"),
            ("X", "started"),  # the fresh inner supervisor started a fresh X
        ]
        assert outer_kinds() == [
            ("P", "started"),
            ("inner", "started"),
            ("Q", "started"),
            ("inner", "failed"),
            ("inner", "restarting"),
            ("inner", "started"),
        ]
        failed = next(e for e in h.events if e.child == "inner" and e.kind == "failed")
        assert (failed.error or "").startswith("SupervisorEscalation: supervisor 'inner'")
        assert len(inners) == 2 and inners[0] is not inners[1]
        assert [len(h.instances[n]) for n in ("P", "X", "Q")] == [1, 2, 1]
        inner_stats = children_of(outer)[1]
        assert inner_stats["restarts"] == 1
        assert inner_stats["actor"]["children"][0]["name"] == "X"
    # stopping the tree stops the inner supervisor's child too, in reverse order overall
    assert after(h.journal, "X:ready") == [
        "Q:stopping",
        "Q:stopped",
        "X:stopping",
        "X:stopped",
        "P:stopping",
        "P:stopped",
    ]


# -- events, statistics, logging -------------------------------------------------------------


async def test_on_event_receives_every_state_change_in_order() -> None:
    h = Harness()
    clock = FakeClock()
    sup = make(h, [h.spec("A"), h.spec("B", restart="transient")], clock=clock)
    async with supervised(sup):
        clock.now += 1
        h.latest("B").crash()
        await h.wait_event("B", "started", 2)
        clock.now += 1
        h.latest("B").finish()
        await h.wait_event("B", "exited")
    assert [(e.child, e.kind, e.restarts, e.error) for e in h.events] == [
        ("A", "started", 0, None),
        ("B", "started", 0, None),
        ("B", "failed", 0, "Boom: B crashed"),
        ("B", "restarting", 0, "Boom: B crashed"),
        ("B", "started", 1, None),
        ("B", "exited", 1, None),  # transient + normal exit: not restarted
        ("A", "stopped", 0, None),
    ]
    assert {e.supervisor for e in h.events} == {"sup"}
    assert [e.at for e in h.events] == [1000.0, 1000.0, 1001.0, 1001.0, 1001.0, 1002.0, 1002.0]
    assert all(isinstance(e, SupervisorEvent) for e in h.events)


async def test_a_failing_on_event_callback_does_not_break_supervision(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()

    def broken(event: SupervisorEvent) -> None:
        raise RuntimeError("monitor down")

    sup = make(h, h.specs("A"), on_event=broken)
    async with supervised(sup):
        h.latest("A").crash()
        await h.wait_for("A:ready", 2)
    assert h.journal[-2:] == ["A:stopping", "A:stopped"]
    complaints = [
        r
        for r in caplog.records
        if r.name == "erpgw.supervisor" and "on_event callback raised" in r.getMessage()
    ]
    assert complaints and all(r.levelno == logging.WARNING for r in complaints)


async def test_a_restart_is_one_warning_line_with_the_traceback_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="erpgw.supervisor")
    h = Harness()
    sup = make(h, h.specs("A"))
    async with supervised(sup):
        h.latest("A").crash()
        await h.wait_event("A", "started", 2)
    records = [r for r in caplog.records if r.name == "erpgw.supervisor"]
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].exc_info is None
    assert warnings[0].getMessage().startswith("sup: child 'A' failed: Boom: A crashed; restarting")
    tracebacks = [r for r in records if r.levelno == logging.DEBUG and r.exc_info]
    assert len(tracebacks) == 1
    exc_info = tracebacks[0].exc_info
    assert exc_info is not None and isinstance(exc_info[1], Boom)


async def test_escalation_is_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    sup = make(h, [h.spec("A", Step(init="fail"))], intensity=0)
    with anyio.fail_after(WAIT), pytest.raises(SupervisorEscalation):
        await sup.run()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "'A'" in errors[0].getMessage() and "escalating" in errors[0].getMessage()


async def test_statistics_reflect_restarts() -> None:
    h = Harness()
    sup = make(h, h.specs("A", "B"))
    assert sup.statistics()["restarts"] == 0
    async with supervised(sup):
        for n in (2, 3):
            h.latest("B").crash()
            await h.wait_event("B", "started", n)
        stats = sup.statistics()
        assert stats["name"] == "sup"
        assert stats["state"] == "running"
        assert stats["strategy"] == "one_for_one"
        assert stats["restarts"] == 2
        assert stats["children"] == [
            {
                "name": "A",
                "state": "running",
                "restarts": 0,
                "last_error": None,
                "actor": {"name": "A", "state": "running"},
            },
            {
                "name": "B",
                "state": "running",
                "restarts": 2,
                "last_error": "Boom: B crashed",
                "actor": {"name": "B", "state": "running"},
            },
        ]
    assert [(c["state"], c["actor"]["state"]) for c in children_of(sup)] == [
        ("stopped", "stopped"),
        ("stopped", "stopped"),
    ]


# -- backoff ------------------------------------------------------------------------------------


async def test_backoff_follows_consecutive_failures_and_resets_after_a_healthy_period() -> None:
    h = Harness()
    clock = FakeClock()
    backoff = RecordingBackoff()
    fail = Step(init="fail")
    sup = make(
        h,
        [h.spec("A", fail, fail, fail, Step())],
        intensity=5,
        period=5.0,
        clock=clock,
        backoff=backoff,
        rng=random.Random(7),
    )
    async with supervised(sup):
        h.latest("A").crash()  # right after a start: still the same streak
        await h.wait_event("A", "started", 2)
        clock.now += 6.0  # then it runs for longer than the period: the streak is over
        h.latest("A").crash()
        await h.wait_event("A", "started", 3)
    draws = random.Random(7)
    assert backoff.calls == [(n, draws.random()) for n in (0, 1, 2, 3, 0)]


async def test_a_stop_cuts_the_backoff_wait_short() -> None:
    h = Harness()
    sup = make(h, h.specs("A", "B"), backoff=Backoff(base=60.0, cap=60.0))
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            h.latest("B").crash()
            await h.wait_event("B", "restarting")
            sup.request_stop()
    assert len(h.instances["B"]) == 1
    assert h.kinds()[-2:] == [("B", "stopped"), ("A", "stopped")]


# -- the rules nobody may break ----------------------------------------------------------------


async def test_a_base_exception_from_a_child_is_never_swallowed() -> None:
    h = Harness()
    sup = make(h, h.specs("A", "B"))

    async def kill_b() -> None:
        await h.wait_event("B", "started")
        h.latest("B").crash(Fatal())

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(kill_b)
            with pytest.raises(BaseExceptionGroup) as info:
                await sup.run()
    assert info.value.subgroup(Fatal) is not None
    assert h.only("A")[-2:] == ["A:stopping", "A:stopped"]  # the survivor was still stopped


async def test_a_supervisor_runs_once() -> None:
    h = Harness()
    sup = make(h, h.specs("A"))
    async with supervised(sup):
        pass
    with pytest.raises(RuntimeError, match="already ran"):
        await sup.run()


def test_construction_refuses_nonsense() -> None:
    def factory() -> Actor:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="duplicate"):
        Supervisor("s", [ChildSpec("a", factory), ChildSpec("a", factory)])
    with pytest.raises(ValueError, match="strategy"):
        Supervisor("s", [], strategy="one_for_all")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Supervisor("s", [], intensity=-1)
    with pytest.raises(ValueError):
        ChildSpec("a", factory, restart="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ChildSpec("a", factory, shutdown_timeout=-1.0)
    with pytest.raises(ValueError):
        ChildSpec("", factory)


def test_events_encode_as_json_for_the_monitoring_lane() -> None:
    import msgspec

    event = SupervisorEvent("sup", "B", "failed", 1, "Boom: x", 12.5)
    raw = msgspec.json.encode(event)
    assert msgspec.json.decode(raw, type=SupervisorEvent) == event
    assert b'"kind":"failed"' in raw


def test_describe_names_the_real_failure_inside_a_group() -> None:
    from actors.runtime.supervisor import _describe

    inner = RuntimeError("disk on fire")
    assert _describe(ExceptionGroup("unhandled errors in a TaskGroup", [inner])) == (
        "RuntimeError: disk on fire")
    two = ExceptionGroup("g", [inner, ValueError("x")])
    assert _describe(two).startswith("ExceptionGroup")


async def test_stop_now_cancels_every_child_without_waiting_out_shutdown_timeouts() -> None:
    """A second stop signal: the first stop gives each child its shutdown timeout (10 min
    here, and the child ignores its stop); ``stop_now`` cancels every child at once, nested
    supervisors' children included, and says so."""
    h = Harness()
    stubborn = h.spec("X", Step(ignore_stop=True), shutdown_timeout=600.0)

    def inner() -> Supervisor:
        return Supervisor("inner", [stubborn], backoff=FAST, on_event=h.on_event)

    outer = make(h, [h.spec("P"), ChildSpec("inner", inner, shutdown_timeout=600.0)])
    with anyio.fail_after(WAIT):  # a guard against a hang: 600 s is what a drain would take
        async with anyio.create_task_group() as tg:
            await tg.start(outer.run)
            await h.wait_for("X:ready")
            outer.request_stop()  # draining: X ignores it, it has 600 s
            outer.stop_now()
    stopped = {e.child: e.error for e in h.events if e.kind == "stopped"}
    assert stopped["X"] == "cancelled: stopping at once"
    assert not any("shutdown timeout" in (e.error or "") for e in h.events)
