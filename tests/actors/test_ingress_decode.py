"""A webhook is decoded once when its opening names a routed type, and every body, good or
bad, is answered exactly as the long way (the head, then the route) answers it.

The long way is forced by a leading space: still the same JSON, but not an opening
``routes.peek_type`` reads.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.infra.bus import NatsBus
from actors.ingress import server
from actors.ingress.routes import peek_type
from actors.ingress.server import IngressSettings, WebhookIngress
from actors.platforms.billing.erpgw import billing_source
from contracts import Subjects
from sim._billing import BillRunOptions, _updated_event, amended_invoice, followup_events

SOURCE = billing_source("/webhooks/billing", ["whsec_test"])


def _ingress() -> WebhookIngress:
    return WebhookIngress("ingress", bus=cast(NatsBus, object()), subjects=Subjects(),
                          settings=IngressSettings(), sources=[SOURCE])


def _events() -> list[dict[str, Any]]:
    v2 = amended_invoice(7, 3, 1_700_000_000)
    followups = followup_events(7, 3, v2, 1_700_000_100,
                                BillRunOptions(credit_memo_rate=1.0, payment_rate=1.0))
    return [msgspec.to_builtins(_updated_event(v2, 1_700_000_000)),
            *(msgspec.json.decode(body) for _, body in followups)]


EVENTS = _events()
assert {e["type"] for e in EVENTS} >= {"invoice.updated", "credit_note.created",
                                       "invoice.paid"}


def _answer(decoded: web.Response | tuple[str, Any, Any]) -> Any:
    if isinstance(decoded, web.Response):
        assert isinstance(decoded.body, bytes)
        return decoded.status, msgspec.json.decode(decoded.body)
    event_type, route, evt = decoded
    return event_type, id(route), evt


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**40), st.text(max_size=8),
                  st.sampled_from(["", "invoice.paid", "invoice.updated", "invoice.finalised",
                                   "customer.created", "deal.registered"]),
                  st.just([]), st.just({}))


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*at, i))
    return out


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A billing event, whole or broken in some of these ways: a value replaced or a key
    dropped, a duplicate ``type``/``id`` key appended, the bytes cut short (after a bad value,
    say: which error comes first then differs between a whole decode and a head's)."""
    doc = msgspec.json.decode(msgspec.json.encode(draw(st.sampled_from(EVENTS))))
    how = draw(st.sampled_from(["whole", "replace", "drop"]))
    if how != "whole":
        path = draw(st.sampled_from(_paths(doc)[1:]))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if how == "replace":
            parent[path[-1]] = draw(_leaf)
        else:
            parent.pop(path[-1])
    body = msgspec.json.encode(doc)
    if draw(st.booleans()):
        key = draw(st.sampled_from(["type", "id"]))
        body = body[:-1] + b',"' + key.encode() + b'":' + msgspec.json.encode(draw(_leaf)) + b"}"
    if draw(st.booleans()):
        body = body[:draw(st.integers(0, len(body) - 1))]
    return body


@settings(max_examples=400, derandomize=True)
@given(bodies())
def test_every_body_is_answered_as_the_long_way_answers_it(body: bytes) -> None:
    ing = _ingress()
    assert _answer(ing._decode(SOURCE, body)) == _answer(ing._decode(SOURCE, b" " + body))


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e["type"])
def test_a_routed_event_is_decoded_once(event: dict[str, Any],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    heads: list[bytes] = []

    class CountingHeads:
        def decode(self, body: bytes) -> Any:
            heads.append(body)
            return real.decode(body)
    real = server._heads
    monkeypatch.setattr(server, "_heads", CountingHeads())
    ing = _ingress()
    body = msgspec.json.encode(event)
    event_type, _, evt = ing._decode(SOURCE, body)  # type: ignore[misc]
    assert (event_type, evt.type, heads) == (event["type"], event["type"], [])
    ing._decode(SOURCE, b" " + body)  # the long way reads the head first
    assert heads == [b" " + body]


@settings(max_examples=300, derandomize=True)
@given(st.text(max_size=12), st.text(max_size=12))
def test_the_peek_reads_a_plain_type_and_nothing_else(event_id: str, event_type: str) -> None:
    body = msgspec.json.encode({"id": event_id, "type": event_type, "data": {"type": "x"}})
    plain = all(" " <= c <= "~" and c not in '"\\' for c in event_id + event_type)
    assert peek_type(body) == (event_type if plain else None)
    assert peek_type(b"[" + body + b"]") is None
    assert peek_type(msgspec.json.encode({"type": event_type, "id": event_id})) is None
