"""Pure tier: the one sorting of errors the breaker, limiter and retry policy share, pinned to
the codes the HTTP adapter really raises."""

from __future__ import annotations

import inspect
import math

import pytest

import actors.infra.http as http
import actors.resilience as resilience
from actors.infra.bus import BrokerUnavailable
from actors.infra.http import Ambiguous, PlatformRejected, PlatformUnavailable
from actors.resilience import (
    AMBIGUOUS_CODES,
    THROTTLE_CODES,
    UNCLASSIFIED,
    Verdict,
    clamp_retry_after,
    classify,
    error_code,
    is_ambiguous,
    retry_after_of,
)
from contracts import Broken, Closed, ContractError, GatewayError, Retryable, SignatureError


def test_codes_named_here_are_the_adapters_codes() -> None:
    assert Ambiguous.code in AMBIGUOUS_CODES
    source = inspect.getsource(http)
    for code in THROTTLE_CODES | AMBIGUOUS_CODES:
        assert f'"{code}"' in source, f"{code} is no longer raised by actors/infra/http.py"
    # the 429 branch is the one raising the throttle code
    assert 'if status == 429:\n            raise PlatformUnavailable(' in source
    assert source.index("status == 429") < source.index('"http.rate_limited"')


@pytest.mark.parametrize(("error", "verdict"), [
    (PlatformUnavailable("503", code="http.server_error"), Verdict.FAULT),
    (PlatformUnavailable("conn", code="http.connection"), Verdict.FAULT),
    (PlatformUnavailable("x"), Verdict.FAULT),
    (Ambiguous("timeout"), Verdict.FAULT),
    (Broken("reset"), Verdict.FAULT),
    (PlatformUnavailable("429", code="http.rate_limited", retry_after=1.0), Verdict.THROTTLED),
    (PlatformRejected("422", status=422, body=""), Verdict.REJECTED),
    (ContractError("bad"), Verdict.REJECTED),
    (SignatureError("bad"), Verdict.REJECTED),
    (Closed("bye"), Verdict.UNRELATED),
    (GatewayError("odd"), Verdict.UNRELATED),
    (RuntimeError("bug"), Verdict.UNRELATED),
    (BrokerUnavailable("not a platform error, but Retryable"), Verdict.FAULT),
])
def test_classify_table(error: BaseException, verdict: Verdict) -> None:
    assert classify(error) is verdict


@pytest.mark.parametrize(("error", "expected"), [
    (Ambiguous("x"), True), (Broken("x"), True), (Retryable("x", code="http.ambiguous"), True),
    (PlatformUnavailable("x", code="http.server_error"), False), (ContractError("x"), False),
    (ValueError("x"), False),
])
def test_is_ambiguous(error: BaseException, expected: bool) -> None:
    assert is_ambiguous(error) is expected


def test_error_code() -> None:
    assert error_code(ContractError("x", code="contract.missing_field")) == "contract.missing_field"
    assert error_code(Ambiguous("x")) == "http.ambiguous"
    assert error_code(KeyError("x")) == UNCLASSIFIED == "internal.unclassified"


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), (math.nan, None), (-1.0, 0.0), (0.0, 0.0), (2.5, 2.5), (10.0, 10.0),
    (10.5, 10.0), (math.inf, 10.0),
])
def test_clamp_retry_after(value: float | None, expected: float | None) -> None:
    assert clamp_retry_after(value, 10.0) == expected


def test_retry_after_of() -> None:
    assert retry_after_of(PlatformUnavailable("x", retry_after=3.0), 10.0) == 3.0
    assert retry_after_of(PlatformUnavailable("x", retry_after=30.0), 10.0) == 10.0
    assert retry_after_of(PlatformUnavailable("x"), 10.0) is None
    assert retry_after_of(ContractError("x"), 10.0) is None


def test_public_names() -> None:
    assert sorted(resilience.__all__) == sorted(set(resilience.__all__))
    for name in resilience.__all__:
        assert hasattr(resilience, name), name
    assert resilience.__doc__ and "Theory of operation" in resilience.__doc__
