"""Pure tier: the circuit breaker as tables (every transition, every forbidden one) and
hypothesis properties over random call sequences. No event loop, no clock."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.infra.http import Ambiguous, PlatformRejected, PlatformUnavailable
from actors.resilience import (
    TRANSITIONS,
    BreakerConfig,
    BreakerEvent,
    BreakerState,
    BreakerTransitionError,
    CircuitBreaker,
    Transition,
    Verdict,
    next_state,
)
from contracts import Broken, Closed, ContractError, Retryable

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
TRIP, COOLED = BreakerEvent.TRIP, BreakerEvent.COOLED
PROBE_OK, PROBE_FAILED = BreakerEvent.PROBE_SUCCEEDED, BreakerEvent.PROBE_FAILED

# Written out by hand (not derived from TRANSITIONS) so the test states the design.
ALLOWED = {
    (CLOSED, TRIP): OPEN,
    (OPEN, COOLED): HALF_OPEN,
    (HALF_OPEN, PROBE_OK): CLOSED,
    (HALF_OPEN, PROBE_FAILED): OPEN,
}
FORBIDDEN = [pair for pair in itertools.product(BreakerState, BreakerEvent) if pair not in ALLOWED]

CFG = BreakerConfig(consecutive_failures=3, window=10, failure_ratio=0.5, open_for=10.0,
                    open_for_factor=2.0, open_for_cap=40.0, probes=2, max_retry_after=100.0)


# -- the table itself ----------------------------------------------------------------------------


@pytest.mark.parametrize(("pair", "target"), list(ALLOWED.items()), ids=lambda v: str(v))
def test_every_allowed_transition(pair: tuple[BreakerState, BreakerEvent],
                                  target: BreakerState) -> None:
    assert next_state(*pair) is target


@pytest.mark.parametrize("pair", FORBIDDEN, ids=lambda p: f"{p[0]}-{p[1]}")
def test_every_forbidden_transition_raises(pair: tuple[BreakerState, BreakerEvent]) -> None:
    with pytest.raises(BreakerTransitionError) as info:
        next_state(*pair)
    assert (info.value.state, info.value.event) == pair
    assert pair[0].value in str(info.value) and pair[1].value in str(info.value)


def test_the_table_is_exactly_the_design_and_read_only() -> None:
    flat = {(s, e): t for s, edges in TRANSITIONS.items() for e, t in edges.items()}
    assert flat == ALLOWED
    with pytest.raises(TypeError):
        TRANSITIONS[CLOSED][COOLED] = OPEN  # type: ignore[index]


# -- driving the machine through its public API ------------------------------------------------


def opened(at: float = 0.0) -> CircuitBreaker:
    b = CircuitBreaker("erp", CFG)
    for _ in range(CFG.consecutive_failures):
        assert b.allow(at)
        b.record_failure(at)
    assert b.state is OPEN and b.next_probe_at == at + 10.0
    b.drain_transitions()
    return b


def half_open(at: float = 10.0) -> CircuitBreaker:
    b = opened(at - 10.0)
    assert b.allow(at)  # turns half_open and takes the first probe slot
    assert b.state is HALF_OPEN
    b.drain_transitions()
    return b


Action = Callable[[CircuitBreaker, float], object]
ACTIONS: dict[str, Action] = {
    "allow": lambda b, t: b.allow(t),
    "success": lambda b, t: b.record_success(t),
    "rejection": lambda b, t: b.record_rejection(t),
    "failure": lambda b, t: b.record_failure(t),
    "release": lambda b, t: b.release(),
    "error-4xx": lambda b, t: b.record_error(PlatformRejected("422", status=422, body=""), t),
    "error-429": lambda b, t: b.record_error(
        PlatformUnavailable("429", code="http.rate_limited", retry_after=5.0), t),
    "error-5xx": lambda b, t: b.record_error(
        PlatformUnavailable("503", code="http.server_error"), t),
}

# (start, action, at, result, end state, events logged, next_probe_at afterwards)
TABLE = [
    ("closed", "allow", 1.0, True, CLOSED, [], None),
    ("closed", "success", 1.0, None, CLOSED, [], None),
    ("closed", "rejection", 1.0, None, CLOSED, [], None),
    ("closed", "failure", 1.0, None, CLOSED, [], None),  # 1 of 3
    ("closed", "release", 1.0, None, CLOSED, [], None),
    ("closed", "error-4xx", 1.0, Verdict.REJECTED, CLOSED, [], None),
    ("closed", "error-429", 1.0, Verdict.THROTTLED, CLOSED, [], None),
    ("closed", "error-5xx", 1.0, Verdict.FAULT, CLOSED, [], None),
    ("open", "allow", 9.999, False, OPEN, [], 10.0),
    ("open", "allow", 10.0, True, HALF_OPEN, [COOLED], None),
    ("open", "allow", 25.0, True, HALF_OPEN, [COOLED], None),
    ("open", "success", 5.0, None, OPEN, [], 10.0),  # late: a call from before the trip
    ("open", "rejection", 5.0, None, OPEN, [], 10.0),
    ("open", "failure", 5.0, None, OPEN, [], 10.0),  # late: does not extend the open period
    ("open", "release", 5.0, None, OPEN, [], 10.0),
    ("open", "error-5xx", 5.0, Verdict.FAULT, OPEN, [], 10.0),
    ("half_open", "allow", 11.0, True, HALF_OPEN, [], None),  # probe 2 of 2
    ("half_open", "success", 11.0, None, CLOSED, [PROBE_OK], None),
    ("half_open", "rejection", 11.0, None, CLOSED, [PROBE_OK], None),  # a 4xx proves it is up
    ("half_open", "failure", 11.0, None, OPEN, [PROBE_FAILED], 31.0),  # re-open: 10 * 2
    ("half_open", "release", 11.0, None, HALF_OPEN, [], None),
    ("half_open", "error-4xx", 11.0, Verdict.REJECTED, CLOSED, [PROBE_OK], None),
    ("half_open", "error-429", 11.0, Verdict.THROTTLED, HALF_OPEN, [], None),
    ("half_open", "error-5xx", 11.0, Verdict.FAULT, OPEN, [PROBE_FAILED], 31.0),
]


@pytest.mark.parametrize(
    ("start", "action", "at", "result", "end", "events", "probe_at"), TABLE,
    ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in TABLE])
def test_transition_table_through_the_api(start: str, action: str, at: float, result: object,
                                          end: BreakerState, events: list[BreakerEvent],
                                          probe_at: float | None) -> None:
    b = {"closed": lambda: CircuitBreaker("erp", CFG), "open": opened, "half_open": half_open}[
        start]()
    assert ACTIONS[action](b, at) == result
    assert b.state is end
    logged = b.drain_transitions()
    assert [t.event for t in logged] == events
    for t in logged:
        assert (t.at, t.target, t.breaker) == (at, next_state(t.source, t.event), "erp")
    assert b.next_probe_at == probe_at


def test_consecutive_failures_trip() -> None:
    b = CircuitBreaker("erp", CFG)
    b.record_failure(0.0)
    b.record_failure(1.0)
    b.record_success(2.0)  # resets the run
    b.record_failure(3.0)
    b.record_failure(4.0)
    assert b.state is CLOSED
    b.record_failure(5.0, cause="http.server_error")
    assert b.state is OPEN and b.next_probe_at == 15.0
    [t] = b.drain_transitions()
    assert t == Transition(at=5.0, source=CLOSED, target=OPEN, event=TRIP, breaker="erp",
                           reason="3 consecutive failures; last: http.server_error; "
                                  "open for 10 s")


def test_failure_ratio_over_the_window_trips() -> None:
    b = CircuitBreaker("erp", BreakerConfig(consecutive_failures=0, window=4, failure_ratio=0.5))
    for ok in (True, False, True):  # window not full yet
        b.record_success(0.0) if ok else b.record_failure(0.0)
    assert b.state is CLOSED
    b.record_failure(1.0)  # 2 of the last 4
    assert b.state is OPEN
    assert "2 of the last 4 calls failed" in b.drain_transitions()[0].reason


def test_the_window_slides() -> None:
    b = CircuitBreaker("erp", BreakerConfig(consecutive_failures=0, window=4, failure_ratio=0.75))
    for ok in (False, False, True, True, True, False, True, False):
        b.record_success(0.0) if ok else b.record_failure(0.0)
        assert b.state is CLOSED  # never 3 failures among the last 4
    assert b.statistics()["window_failures"] == 2
    b.record_failure(0.0)  # the last 4 are now F T F F: 3 of 4
    assert b.state is OPEN


def test_business_rejections_never_open_the_breaker() -> None:
    b = CircuitBreaker("erp", BreakerConfig(consecutive_failures=1, window=2, failure_ratio=0.5))
    for i in range(1000):
        assert b.allow(float(i))
        b.record_error(PlatformRejected("422", status=422, body="{}"), float(i))
        b.record_error(ContractError("bad answer"), float(i))
        b.record_rejection(float(i))
    assert b.state is CLOSED and b.statistics()["rejections"] == 3000


def test_throttling_and_unrelated_errors_do_not_count() -> None:
    b = CircuitBreaker("erp", BreakerConfig(consecutive_failures=1, window=0))
    assert b.record_error(PlatformUnavailable("429", code="http.rate_limited"), 0.0) \
        is Verdict.THROTTLED
    assert b.record_error(Closed("shutting down"), 0.0) is Verdict.UNRELATED
    assert b.record_error(KeyError("bug"), 0.0) is Verdict.UNRELATED
    assert b.state is CLOSED and b.statistics()["released"] == 3


@pytest.mark.parametrize("error", [
    PlatformUnavailable("503", code="http.server_error"),
    PlatformUnavailable("refused", code="http.connection"),
    Ambiguous("timeout after send"),
    Broken("reset by peer"),
    Retryable("generic"),
], ids=lambda e: e.code)
def test_platform_faults_count(error: Exception) -> None:
    b = CircuitBreaker("erp", BreakerConfig(consecutive_failures=1, window=0))
    assert b.record_error(error, 0.0) is Verdict.FAULT
    assert b.state is OPEN
    assert b.drain_transitions()[0].reason.startswith(f"1 consecutive failures; last: "
                                                      f"{error.code}")  # type: ignore[attr-defined]


def test_reopen_periods_grow_and_are_capped_and_reset_on_close() -> None:
    b = opened(0.0)
    periods = []
    now = 0.0
    for _ in range(5):
        assert b.next_probe_at is not None
        now = b.next_probe_at
        assert not b.allow(now - 1e-6)
        assert b.allow(now)
        b.record_failure(now)
        assert b.next_probe_at is not None
        periods.append(b.next_probe_at - now)
    assert periods == [20.0, 40.0, 40.0, 40.0, 40.0]
    assert b.statistics()["reopen_level"] == 5
    assert b.next_probe_at is not None
    now = b.next_probe_at
    assert b.allow(now)
    b.record_success(now)
    assert b.state is CLOSED and b.statistics()["reopen_level"] == 0
    for _ in range(3):
        b.record_failure(now)
    assert b.next_probe_at == now + 10.0  # back to the first period


@pytest.mark.parametrize(("retry_after", "period"), [
    (None, 10.0), (3.0, 10.0), (25.0, 25.0), (1e9, 100.0), (math.inf, 100.0), (math.nan, 10.0),
    (-5.0, 10.0),
])
def test_retry_after_keeps_it_open_at_least_that_long(retry_after: float | None,
                                                      period: float) -> None:
    b = CircuitBreaker("erp", CFG)
    for _ in range(3):
        b.record_failure(0.0, retry_after=retry_after)
    assert b.next_probe_at == period


def test_half_open_lets_k_probes_through_and_release_gives_slots_back() -> None:
    b = half_open(10.0)  # probe 1 taken
    assert b.allow(10.0)  # probe 2
    assert not b.allow(10.0)
    assert b.retry_in(10.0) == math.inf
    b.release()
    assert b.retry_in(10.0) == 0.0
    assert b.allow(10.0)
    assert not b.allow(50.0)
    assert b.statistics()["probes_in_flight"] == 2


def test_other_probes_report_normally_after_the_first_closes_it() -> None:
    b = half_open(10.0)
    assert b.allow(10.0)
    b.record_success(11.0)
    assert b.state is CLOSED
    b.record_failure(12.0)  # the second probe, now an ordinary closed-state failure
    assert b.state is CLOSED and b.statistics()["consecutive_failures"] == 1


def test_late_outcomes_are_counted_and_ignored() -> None:
    b = opened(0.0)
    b.record_success(1.0)
    b.record_failure(2.0)
    assert b.allow(10.0)
    b.release()  # the probe gave up without a verdict: nothing in flight now
    b.record_failure(10.5)  # must be a call from before the trip
    assert b.state is HALF_OPEN
    assert b.statistics()["late"] == 3


def test_retry_in() -> None:
    b = CircuitBreaker("erp", CFG)
    assert b.retry_in(0.0) == 0.0
    b = opened(0.0)
    assert b.retry_in(4.0) == 6.0
    assert b.retry_in(12.0) == 0.0
    assert b.state is OPEN  # a query changes nothing


def test_transitions_accumulate_until_drained_and_are_json() -> None:
    b = opened(0.0)
    b.allow(10.0)
    b.record_success(10.5)
    assert [t.event for t in b.transitions] == [COOLED, PROBE_OK]
    assert b.transitions == tuple(b.transitions)  # a snapshot, not a live view
    msg = msgspec.json.decode(msgspec.json.encode(b.transitions[0]))
    assert msg == {"at": 10.0, "source": "open", "target": "half_open", "event": "cooled",
                   "breaker": "erp", "reason": "open for 10 s"}
    assert len(b.drain_transitions()) == 2 and b.transitions == ()


def test_pending_transitions_are_bounded() -> None:
    b = CircuitBreaker("erp", BreakerConfig(consecutive_failures=1, window=0, open_for=1.0,
                                            open_for_cap=1.0))
    now = 0.0
    for _ in range(200):  # 3 transitions per round: trip, cooled, probe_succeeded
        b.record_failure(now)
        now += 1.0
        assert b.allow(now)
        b.record_success(now)
    assert len(b.transitions) == 256
    assert b.statistics()["transitions_dropped"] == 600 - 256
    assert b.transitions[-1].event is PROBE_OK


def test_statistics_snapshot() -> None:
    b = opened(0.0)
    assert not b.allow(1.0)
    stats = b.statistics()
    assert msgspec.json.decode(msgspec.json.encode(stats)) == stats
    assert {k: stats[k] for k in ("name", "state", "next_probe_at", "trips", "refused",
                                  "failures", "allowed")} == {
        "name": "erp", "state": "open", "next_probe_at": 10.0, "trips": 1, "refused": 1,
        "failures": 3, "allowed": 3}


@pytest.mark.parametrize("bad", [
    {"consecutive_failures": -1}, {"window": -1}, {"consecutive_failures": 0, "window": 0},
    {"failure_ratio": 0.0}, {"failure_ratio": 1.5}, {"open_for": 0.0}, {"open_for": math.inf},
    {"open_for_factor": 0.5}, {"open_for": 10.0, "open_for_cap": 5.0}, {"probes": 0},
    {"max_retry_after": -1.0}, {"failure_ratio": math.nan},
])
def test_config_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, BreakerConfig)


def test_config_loads_from_a_config_document() -> None:
    cfg = msgspec.convert({"probes": 3, "open_for": 2}, BreakerConfig)
    assert cfg.probes == 3 and cfg.open_for == 2.0
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"prob": 3}, BreakerConfig)


# -- properties ---------------------------------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["allow", "allow", "allow", "success", "rejection", "failure",
                         "failure", "release"]),
        st.floats(0.0, 8.0),  # time step
        st.one_of(st.none(), st.floats(0.0, 200.0)),  # retry_after of a failure
    ),
    max_size=80,
)
CONFIGS = st.builds(
    BreakerConfig,
    consecutive_failures=st.integers(1, 5),
    window=st.integers(0, 8),
    failure_ratio=st.floats(0.1, 1.0),
    open_for=st.floats(0.5, 10.0),
    open_for_factor=st.floats(1.0, 3.0),
    open_for_cap=st.just(30.0),
    probes=st.integers(1, 4),
    max_retry_after=st.just(60.0),
)


@given(cfg=CONFIGS, ops=OPS)
def test_invariants_hold_for_any_call_sequence(cfg: BreakerConfig,
                                               ops: list[tuple[str, float, float | None]]) -> None:
    b = CircuitBreaker("p", cfg)
    now = 0.0
    through = 0  # calls allowed in the current half_open episode, less those released
    prev = b.state
    for op, step, retry_after in ops:
        now += step
        was = b.state
        if op == "allow":
            ok = b.allow(now)
            if b.state is HALF_OPEN:
                if was is not HALF_OPEN:
                    through = 0  # this call began a new half_open episode
                through += ok
        elif op == "success":
            b.record_success(now)
        elif op == "rejection":
            b.record_rejection(now)
        elif op == "failure":
            b.record_failure(now, retry_after=retry_after)
        else:
            if b.state is HALF_OPEN and through > 0:
                through -= 1
            b.release()
        if b.state is not HALF_OPEN:
            through = 0
        # the breaker never lets more than K probes through in half_open
        assert through <= cfg.probes
        probes = b.statistics()["probes_in_flight"]
        assert isinstance(probes, int) and 0 <= probes <= cfg.probes
        if b.state is not HALF_OPEN:
            assert probes == 0
        # next_probe_at is set exactly while open, within the configured bounds
        assert (b.state is OPEN) == (b.next_probe_at is not None)
        # every change follows the table and chains on from the previous one
        for t in b.drain_transitions():
            assert t.source is prev and next_state(t.source, t.event) is t.target
            assert t.at == now
            prev = t.target
            if t.target is OPEN:
                assert b.next_probe_at is not None or b.state is not OPEN
        assert prev is b.state
        if b.state is OPEN and was is not OPEN:
            assert b.next_probe_at is not None
            assert cfg.open_for - 1e-9 <= b.next_probe_at - now <= max(
                cfg.open_for_cap, cfg.max_retry_after) + 1e-9


@given(ops=st.lists(st.tuples(st.sampled_from(["allow", "success", "rejection", "release"]),
                              st.floats(0.0, 5.0)), max_size=100))
def test_without_platform_faults_the_breaker_stays_closed(ops: list[tuple[str, float]]) -> None:
    b = CircuitBreaker("p", BreakerConfig(consecutive_failures=1, window=1, failure_ratio=0.01))
    now = 0.0
    for op, step in ops:
        now += step
        ACTIONS[op](b, now)
        assert b.state is CLOSED
    assert b.transitions == ()


@given(k=st.integers(1, 6), attempts=st.integers(0, 30), step=st.floats(0.0, 1.0))
def test_half_open_admits_exactly_k_without_outcomes(k: int, attempts: int, step: float) -> None:
    b = CircuitBreaker("p", BreakerConfig(consecutive_failures=1, window=0, probes=k,
                                          open_for=1.0, open_for_cap=1.0))
    b.record_failure(0.0)
    now = 1.0
    admitted = 0
    for _ in range(attempts):
        admitted += b.allow(now)
        now += step
    assert admitted == min(k, attempts)
