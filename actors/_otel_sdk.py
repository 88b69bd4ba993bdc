"""The OpenTelemetry SDK behind ``actors.otel``: imported only when tracing is enabled.

A tracer provider of its own (the process-global provider is left to the embedding program),
sampling new traces at ``sample_ratio`` and following the caller's decision in a continued one
(``ParentBased``), exporting in batches over OTLP/HTTP (protobuf), or synchronously to the
exporter a test hands in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode, format_span_id, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts import ambient_traceparent

from .otel import NO_SPAN, Attributes, Kind, OtelSettings, Span

__all__ = ["SdkBackend"]

_KINDS: dict[Kind, SpanKind] = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
_propagator = TraceContextTextMapPropagator()


class _SdkSpan:
    __slots__ = ("_span", "traceparent")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        ctx = span.get_span_context()
        self.traceparent: str | None = (f"00-{format_trace_id(ctx.trace_id)}-"
                                        f"{format_span_id(ctx.span_id)}-{ctx.trace_flags:02x}")

    @contextmanager
    def activate(self) -> Iterator[None]:
        token = otel_context.attach(trace.set_span_in_context(self._span))
        ambient = ambient_traceparent.set(self.traceparent)
        try:
            yield
        finally:
            ambient_traceparent.reset(ambient)
            otel_context.detach(token)

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def fail(self, error: BaseException | str) -> None:
        if isinstance(error, BaseException):
            self._span.record_exception(error)
        self._span.set_status(Status(StatusCode.ERROR, str(error)[:300]))

    def end(self) -> None:
        self._span.end()


class SdkBackend:
    def __init__(self, settings: OtelSettings, *, exporter: Any = None) -> None:
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
        if exporter is None:
            # Imported here: a test's own exporter needs no OTLP exporter installed.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self._provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint)))
        else:
            assert isinstance(exporter, SpanExporter), "exporter must be a SpanExporter"
            self._provider.add_span_processor(SimpleSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("erpgw")

    def start(self, name: str, parent: str | None, kind: Kind, attributes: Attributes | None,
              only_in_trace: bool) -> Span:
        ctx = None
        if parent:
            ctx = _propagator.extract({"traceparent": parent})
            if not trace.get_current_span(ctx).get_span_context().is_valid:
                ctx = None  # malformed: as if absent
        if (ctx is None and only_in_trace
                and not trace.get_current_span().get_span_context().is_valid):
            return NO_SPAN
        span = self._tracer.start_span(name, context=ctx, kind=_KINDS[kind],
                                       attributes=dict(attributes) if attributes else None)
        return _SdkSpan(span)

    def shutdown(self) -> None:
        self._provider.shutdown()
