"""OpenTelemetry tracing against the real stack: a gateway in this process on a real
nats-server, the simulator over real HTTP, spans caught by the SDK's in-memory exporter.

One invoice is one trace from the webhook to the ERP posting (and the revenue upload), each
hop the child of the one before; an incoming W3C ``traceparent`` is continued, on a webhook and
on a synchronous request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from gateway.broker import EmbeddedBroker

from .conftest import LiveGateway, billing_event, running_gateway, signed

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="needs the [otel] extra")
from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind  # noqa: E402

pytestmark = pytest.mark.integration

# A caller's W3C trace context (the spec's example ids).
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@asynccontextmanager
async def traced_gateway(broker: EmbeddedBroker, tmp_path: Path, sim_url: str
                         ) -> AsyncIterator[tuple[LiveGateway, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    async with running_gateway(broker, tmp_path, sim_url, span_exporter=exporter,
                               otel={"enabled": True, "service_name": "erpgw-test"}) as gw:
        yield gw, exporter


def _hex(n: int, width: int) -> str:
    return f"{n:0{width}x}"


def trace_of(spans: Sequence[ReadableSpan], trace_id: str) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None
            and _hex(s.context.trace_id, 32) == trace_id]


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.context is not None and parent.context is not None
    return (child.parent is not None and child.parent.span_id == parent.context.span_id
            and child.context.trace_id == parent.context.trace_id)


async def wait_for_spans(exporter: InMemorySpanExporter, trace_id: str,
                         names: set[str]) -> list[ReadableSpan]:
    """Until the trace holds a span of every name in ``names`` (the pipeline is
    asynchronous: the webhook is answered once the message is stored, before routing)."""
    with anyio.fail_after(60):  # a guard against a hang, not a speed target
        while True:
            spans = trace_of(exporter.get_finished_spans(), trace_id)
            if names <= {s.name for s in spans}:
                return spans
            await anyio.sleep(0.05)


def webhook_trace_id(exporter: InMemorySpanExporter) -> str:
    hooks = [s for s in exporter.get_finished_spans() if s.name == "webhook billing"]
    assert len(hooks) == 1, [s.name for s in exporter.get_finished_spans()]
    assert hooks[0].context is not None
    return _hex(hooks[0].context.trace_id, 32)


HOPS = {"webhook billing", "publish invoice.issued.v1", "route invoice-router", "erp post",
        "POST erp", "revenue upload", "POST revenue"}


async def test_one_invoice_is_one_trace_from_webhook_to_erp_posting(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    async with traced_gateway(broker, tmp_path, sim_url) as (gw, exporter):
        body = msgspec.json.encode(billing_event(1))
        status, doc = await gw.post(body, signed(body))
        assert status == 200 and doc["status"] == "accepted", doc
        trace_id = webhook_trace_id(exporter)
        spans = await wait_for_spans(exporter, trace_id, HOPS)
        await gw.wait_idle()
        assert await gw.erp_postings("in_000001")  # the trace ends where the posting is

        hook = one(spans, "webhook billing")
        publish = one(spans, "publish invoice.issued.v1")
        route = one(spans, "route invoice-router")
        post = one(spans, "erp post")
        erp_call = one(spans, "POST erp")
        upload = one(spans, "revenue upload")
        revenue_call = one(spans, "POST revenue")
        assert hook.parent is None  # a new trace: nothing came with the webhook
        assert hook.kind == SpanKind.SERVER and hook.attributes is not None
        assert hook.attributes["http.response.status_code"] == 200
        assert publish.kind == SpanKind.PRODUCER and is_child(publish, hook)
        assert route.kind == SpanKind.CONSUMER and is_child(route, publish)
        assert post.kind == SpanKind.CONSUMER and is_child(post, route)
        assert erp_call.kind == SpanKind.CLIENT and is_child(erp_call, post)
        assert is_child(upload, publish)  # the revenue poster reads the billing lane itself
        assert revenue_call.kind == SpanKind.CLIENT and is_child(revenue_call, upload)
        assert erp_call.attributes is not None
        assert erp_call.attributes["http.response.status_code"] in (200, 201, 207)
        # Every span of the trace is one of the hops, once, all from this service.
        assert sorted(s.name for s in spans) == sorted(HOPS)
        assert all(s.resource.attributes["service.name"] == "erpgw-test" for s in spans)

        # A second delivery of the same webhook is answered duplicate and traced apart: the
        # stored message (and so the ERP posting's trace) stays the first one's.
        exporter.clear()
        status, doc = await gw.post(body, signed(body))
        assert (status, doc["status"]) == (200, "duplicate")
        names = {s.name for s in exporter.get_finished_spans()}
        assert names == {"webhook billing", "publish invoice.issued.v1"}


async def test_an_incoming_traceparent_is_continued(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    async with traced_gateway(broker, tmp_path, sim_url) as (gw, exporter):
        body = msgspec.json.encode(billing_event(2))
        status, doc = await gw.post(body, {**signed(body), "traceparent": CALLER})
        assert status == 200 and doc["status"] == "accepted", doc
        assert webhook_trace_id(exporter) == CALLER_TRACE
        spans = await wait_for_spans(exporter, CALLER_TRACE, HOPS)
        hook = one(spans, "webhook billing")
        assert hook.parent is not None and hook.parent.is_remote
        assert _hex(hook.parent.span_id, 16) == CALLER_SPAN
        assert is_child(one(spans, "erp post"), one(spans, "route invoice-router"))

        # A malformed traceparent is ignored: a trace of its own, not an error.
        exporter.clear()
        body = msgspec.json.encode(billing_event(3))
        status, doc = await gw.post(body, {**signed(body), "traceparent": "00-zz-nope-01"})
        assert status == 200 and doc["status"] == "accepted", doc
        assert webhook_trace_id(exporter) != CALLER_TRACE
        assert one(exporter.get_finished_spans(), "webhook billing").parent is None


async def test_a_sync_request_continues_its_traceparent(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    async with traced_gateway(broker, tmp_path, sim_url) as (gw, exporter):
        base = gw.admin_url  # the synchronous lane's HTTP face is on the admin listener
        request: dict[str, Any] = {"currency": "JPY",
                                   "items": [{"product_id": "prod_api", "quantity": 3}]}
        async with aiohttp.ClientSession() as s, s.post(
                f"{base}/sync/v1/pricing/validate", data=msgspec.json.encode(request),
                headers={"traceparent": CALLER, "Content-Type": "application/json"}) as r:
            assert r.status == 200, await r.text()
            assert msgspec.json.decode(await r.read())["status"] == "accepted"
        spans = await wait_for_spans(exporter, CALLER_TRACE,
                                     {"sync pricing.validate", "POST cpq"})
        sync = one(spans, "sync pricing.validate")
        assert sync.kind == SpanKind.SERVER and sync.parent is not None
        assert _hex(sync.parent.span_id, 16) == CALLER_SPAN
        assert is_child(one(spans, "POST cpq"), sync)
