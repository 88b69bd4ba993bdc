"""guarded_call with concurrent calls through one half-open breaker: a call that finds the probe
slot taken waits for the probe's verdict instead of being refused with no known retry time."""

from __future__ import annotations

import anyio
import pytest

from actors.infra.http import HttpClient, HttpResponse, PlatformUnavailable
from actors.platforms import guarded_call, segment
from actors.resilience import BreakerConfig, CircuitBreaker
from contracts import ContractError


def _refuse(retry_after: float) -> PlatformUnavailable:
    return PlatformUnavailable("open", code="x.breaker_open", retry_after=retry_after)


def _half_open_breaker(now: list[float]) -> CircuitBreaker:
    b = CircuitBreaker("x.endpoint", BreakerConfig(consecutive_failures=1, open_for=5.0,
                                                  probes=1))
    assert b.allow(now[0])
    b.record_error(PlatformUnavailable("down", code="http.server_error"), now[0])
    now[0] += 6.0  # past the open period: the next call is the probe
    return b


@pytest.mark.parametrize("probe_succeeds", [True, False])
async def test_a_second_call_waits_for_the_probe(probe_succeeds: bool) -> None:
    now = [0.0]
    breaker = _half_open_breaker(now)
    release = anyio.Event()
    sent: list[str] = []
    outcomes: dict[str, object] = {}

    async def probe() -> HttpResponse:
        sent.append("probe")
        await release.wait()
        if not probe_succeeds:
            raise PlatformUnavailable("still down", code="http.server_error")
        return HttpResponse(200, b"{}")

    async def second() -> HttpResponse:
        sent.append("second")
        return HttpResponse(200, b"{}")

    async def run(name: str, send: object) -> None:
        try:
            outcomes[name] = await guarded_call(send, breaker=breaker,  # type: ignore[arg-type]
                                                limiter=None, refuse=_refuse,
                                                clock=lambda: now[0])
        except PlatformUnavailable as exc:
            outcomes[name] = exc

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "probe", probe)
            await anyio.sleep(0.01)
            tg.start_soon(run, "second", second)
            await anyio.sleep(0.2)  # the second call is waiting, not refused
            assert "second" not in outcomes and sent == ["probe"]
            release.set()
    if probe_succeeds:
        assert sent == ["probe", "second"]
        assert isinstance(outcomes["second"], HttpResponse)
    else:
        refused = outcomes["second"]
        assert isinstance(refused, PlatformUnavailable) and refused.code == "x.breaker_open"
        assert refused.retry_after is not None and 0 < refused.retry_after < float("inf")
        assert sent == ["probe"]


@pytest.mark.parametrize(("value", "escaped"), [
    ("in_000001", "in_000001"),
    ("../admin", "..%2Fadmin"),
    ("a/b?c=d#e", "a%2Fb%3Fc%3Dd%23e"),
    ("deal 1", "deal%201"),
])
def test_an_id_never_leaves_its_path_segment(value: str, escaped: str) -> None:
    assert segment(value) == escaped


@pytest.mark.parametrize("value", ["", ".", ".."])
def test_an_id_that_would_climb_is_refused(value: str) -> None:
    with pytest.raises(ContractError) as info:
        segment(value)
    assert info.value.code == "platform.bad_id"


@pytest.mark.parametrize("path", ["http://evil.example/x", "x/relative", "evil.example/x"])
async def test_a_platform_pool_never_dials_another_host(path: str) -> None:
    async with HttpClient("http://127.0.0.1:9", platform="erp") as http:
        with pytest.raises(ValueError):
            await http.get(path)
