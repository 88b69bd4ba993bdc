"""Abuse of the webhook listener (S3, S9, S24, S27): per-source limits, slow and oversized
requests, a connection cap, and no unauthenticated input reaching a 500 — against the real
aiohttp listener over a real broker."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import aiohttp
import anyio
import msgspec
import pytest

from gateway.broker import EmbeddedBroker

from .abuse_support import (
    TOKEN,
    Front,
    answered,
    raw_exchange,
    request_bytes,
    webhook_listener,
)
from .conftest import billing_event, signed

pytestmark = pytest.mark.integration


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


async def _post_from(source_ip: str, url: str, body: bytes,
                     headers: Mapping[str, str]) -> tuple[int, dict[str, str], dict[str, object]]:
    connector = aiohttp.TCPConnector(local_addr=(source_ip, 0))
    async with aiohttp.ClientSession(connector=connector) as s, \
            s.post(url, data=body, headers=headers) as r:
        return r.status, dict(r.headers), msgspec.json.decode(await r.read())


async def test_a_flooding_source_gets_429_and_other_sources_do_not(
        broker: EmbeddedBroker) -> None:
    limit = {"rate": 0.001, "burst": 3, "exempt": []}  # 3 requests, then one per 1000 s
    async with webhook_listener(broker, source_limit=limit) as front:
        webhook = f"{front.base}/webhooks/billing"
        body = msgspec.json.encode(billing_event(1))
        answers = [await _post_from("127.0.0.2", webhook, body, signed(body))
                   for _ in range(30)]  # a 10x burst from one source
        assert [a[0] for a in answers] == [200] * 3 + [429] * 27
        for _, headers, doc in answers[3:]:
            assert doc["code"] == "rate.limited"
            assert int(headers["Retry-After"]) >= 1
        # The usage intake on the same listener: the same source is still over its budget.
        status, _, doc = await _post_from("127.0.0.2", f"{front.base}/usage/v1/records", b"[]",
                                          {"Authorization": f"Bearer {TOKEN}"})
        assert (status, doc["code"]) == (429, "rate.limited")
        # Another source is unaffected, on both routes.
        body2 = msgspec.json.encode(billing_event(2))
        status, _, doc = await _post_from("127.0.0.3", webhook, body2, signed(body2))
        assert (status, doc["status"]) == (200, "accepted")
        status, _, doc = await _post_from("127.0.0.3", f"{front.base}/usage/v1/records", b"[]",
                                          {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200, doc
        assert front.ingress.statistics()["rejected"] == {"rate.limited": 28}
        assert await front.stored() == 2  # evt_1 once (then duplicates), evt_2


async def _slow_exchange(front: Front, first: bytes) -> bytes:
    """Send ``first`` and nothing more; read what the server sends until it closes, or until
    a whole answer is in (after answering a body it did not read to the end, the server keeps
    the connection open a while to drain it: only the answer is judged)."""
    got = b""
    async with await anyio.connect_tcp("127.0.0.1", front.port) as conn:
        await conn.send(first)
        with anyio.fail_after(60):  # a guard against a hang, not a speed target
            while not answered(got):
                try:
                    got += await conn.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
    return got


async def test_a_slow_body_gets_408_and_a_slow_head_is_closed(
        broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with webhook_listener(broker, body_timeout_s=0.3, header_timeout_s=0.3) as front:
        body = msgspec.json.encode(billing_event(3))
        head = request_bytes("/webhooks/billing", b"", [
            (b"Billing-Signature", signed(body)["Billing-Signature"].encode()),
            (b"Content-Length", str(len(body)).encode())])
        got = await _slow_exchange(front, head + body[:10])  # the rest never comes
        assert got.startswith(b"HTTP/1.1 408 ")
        assert b'"code":"body.timeout"' in got
        # A head that never ends: the connection is closed without an answer.
        assert await _slow_exchange(front, b"POST /webhooks/billing HTTP/1.1\r\nHost: x") == b""
        # Slow usage records too.
        head = request_bytes("/usage/v1/records", b"", [
            (b"Authorization", f"Bearer {TOKEN}".encode()), (b"Content-Length", b"100")])
        got = await _slow_exchange(front, head + b"[")
        assert got.startswith(b"HTTP/1.1 408 ") and b'"code":"body.timeout"' in got
        assert await front.stored() == 0
    _no_traceback(caplog)


async def test_connections_over_the_cap_get_503_until_one_closes(
        broker: EmbeddedBroker) -> None:
    async with webhook_listener(broker, max_connections=2, header_timeout_s=120) as front:
        idle = [await anyio.connect_tcp("127.0.0.1", front.port) for _ in range(2)]
        request = request_bytes("/webhooks/billing", b"{}", [])
        answer = await anyio.to_thread.run_sync(raw_exchange, front.port, request)
        assert (answer.status, answer.doc["code"]) == (503, "http.busy")
        assert answer.headers["retry-after"] == "1"
        await idle[0].aclose()
        with anyio.fail_after(30):  # until the server has seen the close
            while True:
                answer = await anyio.to_thread.run_sync(raw_exchange, front.port, request)
                if answer.status != 503:
                    break
                await anyio.sleep(0.05)
        assert (answer.status, answer.doc["code"]) == (401, "signature.missing")
        assert front.ingress.statistics()["connections_refused"] >= 1
        await idle[1].aclose()


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        # A non-ASCII v1= value (UTF-8 on the wire) and a non-UTF-8 one.
        ("/webhooks/billing", [(b"Billing-Signature", "t=1,v1=é".encode())], 400,
         "signature.malformed"),
        ("/webhooks/billing", [(b"Billing-Signature", b"t=1,v1=\xff\xfe")], 400,
         "signature.malformed"),
        ("/webhooks/billing", [(b"Billing-Signature", "t=²,v1=00".encode())], 400,
         "signature.malformed"),
        ("/webhooks/partner", [(b"Partner-Signature", "t=1,v1=ß".encode())], 400,
         "signature.malformed"),
        # A non-UTF-8 bearer token, and a non-ASCII one.
        ("/usage/v1/records", [(b"Authorization", b"Bearer \xff\xfe\x80")], 401,
         "usage.unauthorized"),
        ("/usage/v1/records", [(b"Authorization", "Bearer tökén".encode())], 401,
         "usage.unauthorized"),
        # A header 100 KiB long, on each route.
        ("/webhooks/billing", [(b"Billing-Signature", b"t=1,v1=" + b"a" * 102400)], 431,
         "header.too_large"),
        ("/usage/v1/records", [(b"Authorization", b"Bearer " + b"a" * 102400)], 431,
         "header.too_large"),
        ("/webhooks/billing", [(b"X-Pad", b"p" * 102400)], 431, "header.too_large"),
        # Framing the parser refuses (a bad length, a bad chunk); a route that is not there.
        ("/webhooks/billing", [(b"Content-Length", b"-1")], 400, "http.malformed"),
        ("/webhooks/billing", [(b"Transfer-Encoding", b"chunked")], 400, "http.malformed"),
        ("/nowhere", [], 404, "http.not_found"),
        # An Expect header that is not UTF-8, on a route and off one (aiohttp's own 500).
        ("/webhooks/billing", [(b"Expect", b"\xff")], 417, "http.expectation_failed"),
        ("/nowhere", [(b"Expect", b"\xff")], 417, "http.expectation_failed"),
    ],
)
async def test_unauthenticated_garbage_gets_a_4xx_with_a_code(
        broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture, path: str,
        headers: list[tuple[bytes, bytes]], status: int, code: str) -> None:
    caplog.set_level(logging.INFO)
    async with webhook_listener(broker) as front:
        request = request_bytes(path, b"zz\r\n{}", headers)
        answer = await anyio.to_thread.run_sync(raw_exchange, front.port, request)
        assert (answer.status, answer.doc["code"]) == (status, code), answer.doc
        assert answer.headers["content-type"].startswith("application/json")
        assert await front.stored() == 0
    _no_traceback(caplog)


async def test_an_internal_error_answers_only_a_correlation_id(
        broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture) -> None:
    """S24: a bug in a handler is a generic 500; its text stays in the log."""
    caplog.set_level(logging.INFO)

    async def boom(body: bytes, headers: Mapping[str, str]) -> tuple[int, str, bytes]:
        raise RuntimeError("canary-7f3a secret detail")

    async with webhook_listener(broker, extra_routes={"/boom": boom}) as front:
        answer = await anyio.to_thread.run_sync(
            raw_exchange, front.port, request_bytes("/boom", b"{}", []))
    assert answer.status == 500
    assert set(answer.doc) == {"code", "message", "correlation_id"}
    assert answer.doc["code"] == "internal.error"
    assert b"canary-7f3a" not in answer.body and b"Traceback" not in answer.body
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and str(answer.doc["correlation_id"]) in logged[0].getMessage()
