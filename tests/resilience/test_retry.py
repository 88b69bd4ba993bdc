"""Pure tier: the retry decision as tables and hypothesis properties. No event loop."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.infra.bus import BrokerRejected, BrokerUnavailable
from actors.infra.http import Ambiguous, PlatformRejected, PlatformUnavailable
from actors.infra.ledger import LedgerUnavailable
from actors.resilience import (
    DEFAULT_POLICY,
    EXHAUSTED,
    UNLIMITED,
    DeadLetter,
    Decision,
    Retry,
    RetryPolicy,
    decide,
)
from actors.runtime import Backoff
from contracts import (
    Broken,
    Closed,
    ContractError,
    GatewayError,
    Permanent,
    Retryable,
    SignatureError,
)

POLICY = RetryPolicy(backoff=Backoff(base=1.0, factor=2.0, cap=30.0), min_delay=0.5,
                     max_retry_after=600.0)

PERMANENT: list[Permanent] = [
    ContractError("bad amount", code="contract.invalid_type", path="$.payload.total"),
    SignatureError("no match", code="signature.mismatch"),
    PlatformRejected("422", status=422, body='{"code":"UNBALANCED"}'),
    PlatformRejected("short answer", status=200, body="", code="erp.bad_response"),
    BrokerRejected("too big", code="broker.payload_too_large"),
    Permanent("rejected by the ERP", code="erp.unbalanced"),
]
RETRYABLE: list[Exception] = [
    PlatformUnavailable("503", code="http.server_error"),
    PlatformUnavailable("429", code="http.rate_limited", retry_after=2.0),
    PlatformUnavailable("refused", code="http.connection"),
    Ambiguous("timeout after send"),
    Broken("reset"),
    BrokerUnavailable("no quorum"),
    LedgerUnavailable("disk full"),
    Retryable("generic"),
]
OTHER: list[Exception] = [Closed("shutting down"), GatewayError("odd"), KeyError("bug"),
                          ValueError("bug")]


# -- tables ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", PERMANENT, ids=lambda e: e.code)
@pytest.mark.parametrize("attempt", [1, 2, 8])
def test_permanent_dead_letters_at_once_with_its_own_code(error: Permanent, attempt: int) -> None:
    d = decide(error, attempt, 8, 0.5, POLICY)
    assert d == DeadLetter(code=error.code, reason=error.message, last_code=error.code,
                           attempts=attempt)
    assert d.as_error(error) is error  # its path / platform body travel with it


@pytest.mark.parametrize("error", RETRYABLE + OTHER, ids=lambda e: type(e).__name__)
def test_everything_else_is_retried_until_exhausted(error: Exception) -> None:
    for attempt in range(1, 8):
        assert isinstance(decide(error, attempt, 8, 0.5, POLICY), Retry)
    last = decide(error, 8, 8, 0.5, POLICY)
    assert isinstance(last, DeadLetter)
    assert last.code == EXHAUSTED and last.attempts == 8
    code = getattr(error, "code", "internal.unclassified")
    assert last.last_code == code
    assert f"[{code}]" in last.reason and "8 of 8 deliveries" in last.reason
    err = last.as_error(error)
    assert isinstance(err, Permanent) and err.code == EXHAUSTED and err.__cause__ is error
    assert err.message == last.reason


@pytest.mark.parametrize(("attempt", "rand", "retry_after", "delay"), [
    (1, 0.0, None, 0.5),  # jitter 0 -> the floor
    (1, 0.9, None, 0.9),
    (2, 0.5, None, 1.0),
    (3, 0.5, None, 2.0),
    (4, 0.99, None, 7.92),
    (10, 0.5, None, 15.0),  # ceiling capped at 30
    (10, 0.999, None, 29.97),
    (1, 0.1, 2.0, 2.0),  # never earlier than Retry-After
    (6, 0.9, 2.0, 27.0),  # later is fine (the ceiling is 30 from attempt 6)
    (1, 0.1, 0.0, 0.5),
    (1, 0.1, 599.0, 599.0),
    (1, 0.1, 5000.0, 600.0),  # an absurd Retry-After is taken as the limit
    (1, 0.1, math.inf, 600.0),
    (1, 0.1, math.nan, 0.5),  # unreadable: ignored
    (1, 0.1, -4.0, 0.5),
])
def test_delay_table(attempt: int, rand: float, retry_after: float | None, delay: float) -> None:
    err = PlatformUnavailable("x", code="http.server_error", retry_after=retry_after)
    d = decide(err, attempt, UNLIMITED, rand, POLICY)
    assert isinstance(d, Retry)
    assert d.delay == pytest.approx(delay)
    assert d.code == "http.server_error"


@pytest.mark.parametrize(("error", "ambiguous"), [
    (Ambiguous("timed out after sending"), True),
    (Retryable("custom adapter", code="http.ambiguous"), True),
    (Broken("peer reset"), True),
    (PlatformUnavailable("503", code="http.server_error"), False),
    (PlatformUnavailable("429", code="http.rate_limited"), False),
    (Closed("bye"), False),
])
def test_ambiguous_outcomes_are_retried_and_flagged(error: Exception, ambiguous: bool) -> None:
    d = decide(error, 1, 8, 0.5, POLICY)
    assert isinstance(d, Retry) and d.ambiguous is ambiguous
    last = decide(error, 8, 8, 0.5, POLICY)
    assert isinstance(last, DeadLetter) and last.ambiguous is ambiguous
    assert ("same idempotency key" in last.reason) is ambiguous


def test_the_default_policy_matches_the_batch_workers_schedule() -> None:
    assert DEFAULT_POLICY.backoff == Backoff(base=0.5, factor=2.0, cap=30.0)
    assert DEFAULT_POLICY.min_delay == 0.5
    d = decide(Retryable("x", retry_after=3.0), 1, 8, 0.5)
    assert isinstance(d, Retry) and d.delay == 3.0 and d.retry_after == 3.0


def test_single_delivery_consumer_never_retries() -> None:
    assert isinstance(decide(Retryable("x"), 1, 1, 0.5), DeadLetter)


def test_unlimited_never_exhausts() -> None:
    d = decide(Retryable("x"), 10**9, UNLIMITED, 0.5, POLICY)
    assert isinstance(d, Retry) and d.delay == 15.0


@pytest.mark.parametrize(("args", "exc"), [
    ((Retryable("x"), 0, 8, 0.5), ValueError),
    ((Retryable("x"), 1, 0, 0.5), ValueError),
    ((Retryable("x"), 1, -2, 0.5), ValueError),
    ((Retryable("x"), 1, 8, 1.0), ValueError),
    ((Retryable("x"), 1, 8, -0.1), ValueError),
    ((Retryable("x"), 1, 8, math.nan), ValueError),
    ((KeyboardInterrupt(), 1, 8, 0.5), TypeError),
])
def test_decide_refuses_nonsense(args: tuple[BaseException, int, int, float],
                                 exc: type[Exception]) -> None:
    with pytest.raises(exc):
        decide(*args)


@pytest.mark.parametrize("bad", [{"min_delay": -1.0}, {"min_delay": math.inf},
                                 {"max_retry_after": -1.0}, {"backoff": {"base": -1.0}}])
def test_policy_refuses_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, RetryPolicy)


def test_policy_loads_from_a_config_document() -> None:
    p = msgspec.convert({"backoff": {"base": 2, "factor": 3, "cap": 60}, "min_delay": 1},
                        RetryPolicy)
    assert p.backoff == Backoff(2.0, 3.0, 60.0) and p.min_delay == 1.0


def test_decisions_encode_as_tagged_json() -> None:
    dec = msgspec.json.Decoder(Decision)
    for d in (Retry(delay=1.5, code="http.server_error"),
              DeadLetter(code=EXHAUSTED, reason="r", last_code="http.server_error", attempts=8)):
        raw = msgspec.json.encode(d)
        assert dec.decode(raw) == d
    assert msgspec.json.decode(msgspec.json.encode(Retry(delay=1.0)))["type"] == "retry"


# -- properties ------------------------------------------------------------------------------------

RETRY_AFTER = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
POLICIES = st.builds(
    RetryPolicy,
    backoff=st.builds(Backoff, base=st.floats(0.0, 5.0), factor=st.floats(1.0, 4.0),
                      cap=st.floats(0.0, 120.0)),
    min_delay=st.floats(0.0, 2.0),
    max_retry_after=st.floats(0.0, 7200.0),
)


@given(policy=POLICIES, attempt=st.integers(1, 10_000), max_deliver=st.integers(1, 50),
       rand=st.floats(0.0, 1.0, exclude_max=True), retry_after=RETRY_AFTER,
       kind=st.sampled_from(["5xx", "429", "ambiguous", "broken", "closed", "bug"]))
def test_retry_delays_are_bounded_and_never_before_retry_after(
        policy: RetryPolicy, attempt: int, max_deliver: int, rand: float,
        retry_after: float | None, kind: str) -> None:
    error: Exception = {
        "5xx": PlatformUnavailable("x", code="http.server_error", retry_after=retry_after),
        "429": PlatformUnavailable("x", code="http.rate_limited", retry_after=retry_after),
        "ambiguous": Ambiguous("x"),
        "broken": Broken("x", retry_after=retry_after),
        "closed": Closed("x"),
        "bug": RuntimeError("x"),
    }[kind]
    d = decide(error, attempt, max_deliver, rand, policy)
    if attempt >= max_deliver:
        assert isinstance(d, DeadLetter) and d.code == EXHAUSTED
        return
    assert isinstance(d, Retry)
    ra = getattr(error, "retry_after", None)
    honoured = (None if ra is None or math.isnan(ra)
                else min(max(0.0, ra), policy.max_retry_after))
    assert d.retry_after == honoured
    upper = max(policy.min_delay, policy.backoff.ceiling(attempt - 1), honoured or 0.0)
    assert policy.min_delay <= d.delay <= upper
    assert math.isfinite(d.delay)
    if honoured is not None:
        assert d.delay >= honoured  # never earlier than Retry-After ...
        if ra is not None and ra <= policy.max_retry_after:
            assert d.delay >= ra  # ... as the platform stated it, up to the limit
    assert d == decide(error, attempt, max_deliver, rand, policy)  # pure


@given(error=st.sampled_from(PERMANENT), max_deliver=st.one_of(st.just(UNLIMITED),
                                                                st.integers(1, 100)),
       rand=st.floats(0.0, 1.0, exclude_max=True), policy=POLICIES)
def test_permanent_errors_always_dead_letter_at_attempt_one(
        error: Permanent, max_deliver: int, rand: float, policy: RetryPolicy) -> None:
    d = decide(error, 1, max_deliver, rand, policy)
    assert isinstance(d, DeadLetter)
    assert d.code == error.code and d.attempts == 1


@given(attempt=st.integers(1, 200), max_deliver=st.integers(1, 200),
       error=st.sampled_from(RETRYABLE + OTHER))
def test_exhaustion_is_exactly_at_max_deliver(attempt: int, max_deliver: int,
                                              error: Exception) -> None:
    d = decide(error, attempt, max_deliver, 0.3, POLICY)
    assert isinstance(d, DeadLetter) is (attempt >= max_deliver)
