"""S4: a webhook's signature and timestamp are checked before its body is parsed. A body no
parser would accept (not JSON, wrong types, not UTF-8, nested a hundred thousand deep), sent
with a timestamp outside the tolerance (either direction) or a wrong signature, is answered
with the signature's code, never a parse error, over the real listener."""

from __future__ import annotations

import time

import anyio
import pytest

from contracts.platforms.partner import DEAL_SIGNATURE_HEADER
from contracts.platforms.signing import SIGNATURE_HEADER, sign
from gateway.broker import EmbeddedBroker
from tests.integration.abuse_support import raw_exchange, request_bytes, webhook_listener
from tests.integration.conftest import SECRET

pytestmark = pytest.mark.integration

UNPARSEABLE = [b"{not json", b"", b"\xff\xfe\x00garbage", b'{"id": 1, "type": []}',
               b"[" * 100_000 + b"]" * 100_000, b'{"id": "evt_1"}']


async def test_the_signature_and_timestamp_are_checked_before_the_body_is_parsed(
        broker: EmbeddedBroker) -> None:
    now = int(time.time())
    async with webhook_listener(broker, max_body_bytes=512 * 1024) as front:
        for path, name in (("/webhooks/billing", SIGNATURE_HEADER),
                           ("/webhooks/partner", DEAL_SIGNATURE_HEADER)):
            for body in UNPARSEABLE:
                cases = {"signature.stale": [sign(SECRET, body, now - 3600),
                                             sign(SECRET, body, now + 3600)],
                         "signature.mismatch": [sign("whsec_other", body, now)],
                         "signature.malformed": [f"t={now};v1"]}
                for code, headers in cases.items():
                    for header in headers:
                        answer = await anyio.to_thread.run_sync(
                            raw_exchange, front.port,
                            request_bytes(path, body, [(name.encode(), header.encode())]))
                        assert (answer.status, answer.doc["code"]) == (
                            400 if code == "signature.malformed" else 401, code), (path, body[:20])
                # With a good signature the same body does reach the parser (and is refused
                # there): the codes above came from the check that ran first.
                ok = await anyio.to_thread.run_sync(raw_exchange, front.port, request_bytes(
                    path, body, [(name.encode(), sign(SECRET, body, now).encode())]))
                assert ok.status in (400, 422) and not ok.doc["code"].startswith("signature."), \
                    ok.doc
        assert await front.stored() == 0
