"""Fuzzing the webhook listener (billing and partner webhooks, the usage intake) with
hypothesis: mutated headers, mutated bodies signed or not, bad framing — sent as raw bytes to
the real aiohttp listener over a real broker. Every answer is a 2xx or a 4xx with a JSON body
(a ``code`` on every refusal), never a 5xx; nothing is logged with a traceback; and what is
stored on the broker is exactly what was answered ``accepted`` (S3, S9, S24).

Seeded: the suite's hypothesis profile is derandomized (tests/conftest.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import anyio.from_thread
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.platforms.signing import sign
from gateway.broker import EmbeddedBroker, free_port

from .abuse_support import TOKEN, raw_exchange, request_bytes, webhook_listener
from .conftest import SECRET, billing_event

pytestmark = pytest.mark.integration

_SIGNATURE = {"/webhooks/billing": b"Billing-Signature", "/webhooks/partner": b"Partner-Signature"}


def _base_body(path: str, n: int) -> bytes:
    if path == "/usage/v1/records":
        return msgspec.json.encode([{
            "id": f"u_{n}", "subscription": "sub_1", "customer": "cus_1", "product": "prod_api",
            "meter": "api_calls", "quantity": n, "windowStart": "2026-01-01T00:00:00Z",
            "windowEnd": "2026-01-01T01:00:00Z"}])
    return msgspec.json.encode(billing_event(n))


header_bytes = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=6)


def _replace_leaf(doc: Any, path: list[int], value: Any) -> Any:
    """``doc`` with the leaf picked by ``path`` (indices into keys/items) set to ``value``."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    if isinstance(doc, dict):
        key = sorted(doc)[path[0] % len(doc)]
        return {**doc, key: _replace_leaf(doc[key], path[1:], value)}
    i = path[0] % len(doc)
    return [*doc[:i], _replace_leaf(doc[i], path[1:], value), *doc[i + 1:]]


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    path = draw(st.sampled_from([*_SIGNATURE, "/usage/v1/records"]))
    body = _base_body(path, draw(st.integers(1, 5)))
    mutation = draw(st.sampled_from(["none", "leaf", "bytes", "truncate"]))
    if mutation == "leaf":
        doc = _replace_leaf(msgspec.json.decode(body),
                            draw(st.lists(st.integers(0, 20), max_size=5)), draw(json_values))
        body = msgspec.json.encode(doc)
    elif mutation == "bytes":
        data = bytearray(body)
        for pos, byte in draw(st.lists(st.tuples(st.integers(0, len(data) - 1),
                                                 st.integers(0, 255)), min_size=1, max_size=8)):
            data[pos] = byte
        body = bytes(data)
    elif mutation == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    headers: list[tuple[bytes, bytes]] = []
    auth = draw(st.sampled_from(["good", "mutated", "absent", "long"]))
    if path in _SIGNATURE:
        # signed when drawn: a module-level "now" goes stale when the file runs late (xdist)
        good = sign(SECRET, body, int(time.time())).encode()
        value = {"good": good, "mutated": draw(header_bytes), "absent": None,
                 "long": good + b",v1=" + b"f" * draw(st.sampled_from([100, 9000, 102400]))
                 }[auth]
        if value is not None:
            headers.append((_SIGNATURE[path], value))
    else:
        value = {"good": f"Bearer {TOKEN}".encode(), "absent": None,
                 "mutated": b"Bearer " + draw(header_bytes),
                 "long": b"Bearer " + b"t" * draw(st.sampled_from([100, 9000, 102400]))}[auth]
        if value is not None:
            headers.append((b"Authorization", value))
    for name, value in draw(st.lists(st.tuples(
            st.sampled_from([b"Content-Type", b"Content-Encoding", b"X-Any", b"Expect",
                             b"traceparent", b"Transfer-Encoding"]),
            header_bytes), max_size=3)):
        headers.append((name, value))
    length = draw(st.sampled_from(["right", "right", "more", "less", "junk"]))
    if length != "right":
        headers.append((b"Content-Length", {"more": str(len(body) + 7).encode(),
                                            "less": str(max(0, len(body) - 3)).encode(),
                                            "junk": b"12x"}[length]))
    return request_bytes(path, body, headers)


@pytest.mark.timeout(900)  # a bounded fuzz on a shared machine: a guard against a hang
def test_fuzzed_requests_get_2xx_or_4xx_with_a_code_and_publish_only_what_is_accepted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    broker = EmbeddedBroker(tmp_path / "nats", port=free_port(),
                            identities_dir=tmp_path / "gw" / "identities")
    accepted_ids: set[str] = set()
    usage_accepted = 0
    statuses: dict[int, int] = {}
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        portal.call(broker.start)
        try:
            with portal.wrap_async_context_manager(webhook_listener(
                    broker, body_timeout_s=0.3, header_timeout_s=5.0)) as front:

                @settings(max_examples=150, database=None)
                @given(request=requests())
                def exchange(request: bytes) -> None:
                    nonlocal usage_accepted
                    # (not waiting for the server's lingering close: only the answer counts)
                    answer = raw_exchange(front.port, request, until_answered=True)
                    statuses[answer.status] = statuses.get(answer.status, 0) + 1
                    assert 200 <= answer.status < 300 or 400 <= answer.status < 500, answer.doc
                    if answer.status >= 400:
                        assert isinstance(answer.doc.get("code"), str), answer.doc
                        return
                    if answer.doc.get("status") != "accepted":
                        return
                    if "id" in answer.doc:
                        accepted_ids.add(str(answer.doc["id"]))
                    else:
                        usage_accepted += int(answer.doc["accepted"])

                exchange()
                stored = portal.call(front.stored)
        finally:
            portal.call(broker.stop)
    assert stored == len(accepted_ids) + usage_accepted
    # The fuzz reached past the signature check, and was refused in several ways.
    assert accepted_ids and usage_accepted
    assert len([s for s in statuses if s >= 400]) >= 4, statuses
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]
