"""S10: a decompression bomb (``Content-Encoding: gzip``, a few bytes on the wire that inflate to
a gigabyte) sent to the webhook and usage routes of the real listener, over a real broker.

The listener never inflates a body (aiohttp's ``auto_decompress`` is off): any
``Content-Encoding`` but ``identity`` is refused with 415 ``body.encoding`` and a JSON body,
nothing is published, the process's memory does not grow by the inflated size, and the next
request on the same listener is served.
"""

from __future__ import annotations

import gzip
import resource
import zlib

import anyio
import msgspec
import pytest

from gateway.broker import EmbeddedBroker
from tests.integration.abuse_support import (
    TOKEN,
    RawAnswer,
    raw_exchange,
    request_bytes,
    webhook_listener,
)
from tests.integration.conftest import billing_event, signed

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def _zeros_member() -> bytes:
    """One gzip member of 1 MiB of zeros: about 1 KiB."""
    return gzip.compress(bytes(MIB), compresslevel=9)


def _chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
             for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _refused(answer: RawAnswer) -> None:
    assert answer.status == 415, answer
    assert answer.doc["code"] == "body.encoding", answer.doc
    assert answer.doc["path"] == "Content-Encoding"
    assert isinstance(answer.doc["message"], str) and answer.doc["message"]


async def test_a_gzip_bomb_is_refused_unread_and_the_listener_serves_on(
        broker: EmbeddedBroker) -> None:
    member = _zeros_member()
    assert len(member) < 2 * 1024 and zlib.decompress(member, wbits=31) == bytes(MIB)
    # 1024 members back to back: a valid gzip stream of about 1 MiB inflating to 1 GiB, sent
    # chunked so that no Content-Length stops it first.
    gib_bomb = _chunked(member * 1024)
    webhook_body = msgspec.json.encode(billing_event(1))
    rss_before = _max_rss_bytes()
    async with webhook_listener(broker) as front:
        requests = {
            # 1 KiB on the wire, 1 MiB inflated (16x the listener's 64 KiB limit)
            "webhook, 1 KiB": request_bytes(
                "/webhooks/billing", member,
                [(b"Content-Encoding", b"gzip"), (b"Billing-Signature",
                                                  signed(member)["Billing-Signature"].encode())]),
            "usage, 1 KiB": request_bytes(
                "/usage/v1/records", member,
                [(b"Content-Encoding", b"gzip"), (b"Authorization", b"Bearer " + TOKEN.encode())]),
            "webhook, 1 GiB": request_bytes(
                "/webhooks/billing", gib_bomb,
                [(b"Content-Encoding", b"GZIP"), (b"Transfer-Encoding", b"chunked")]),
            "usage, 1 GiB": request_bytes(
                "/usage/v1/records", gib_bomb,
                [(b"Content-Encoding", b"gzip"), (b"Transfer-Encoding", b"chunked"),
                 (b"Authorization", b"Bearer " + TOKEN.encode())]),
            # a valid signed event, compressed: refused too (the signature would have to be
            # over bytes the gateway never looks at)
            "webhook, deflate": request_bytes(
                "/webhooks/billing", zlib.compress(webhook_body),
                [(b"Content-Encoding", b"deflate"),
                 (b"Billing-Signature", signed(webhook_body)["Billing-Signature"].encode())]),
            "webhook, br": request_bytes("/webhooks/billing", b"\x0b\x02\x80",
                                         [(b"Content-Encoding", b"br")]),
        }
        for name, request in requests.items():
            answer = await anyio.to_thread.run_sync(raw_exchange, front.port, request)
            _refused(answer)
            assert answer.doc.get("status") is None, name
        assert await front.stored() == 0
        # Nothing was inflated: the process never held the gigabyte.
        assert _max_rss_bytes() - rss_before < 256 * MIB
        # The same listener serves the next requests.
        ok = await anyio.to_thread.run_sync(raw_exchange, front.port, request_bytes(
            "/webhooks/billing", webhook_body,
            [(b"Billing-Signature", signed(webhook_body)["Billing-Signature"].encode())]))
        assert (ok.status, ok.doc["status"]) == (200, "accepted")
        usage = await anyio.to_thread.run_sync(raw_exchange, front.port, request_bytes(
            "/usage/v1/records", b"[]", [(b"Authorization", b"Bearer " + TOKEN.encode())]))
        assert usage.status == 200, usage.doc
        assert await front.stored() == 1
        assert front.ingress.statistics()["rejected"] == {"body.encoding": 6}
