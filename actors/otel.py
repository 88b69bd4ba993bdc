"""OpenTelemetry tracing, optional: a span per hop, joined by the envelopes' ``traceparent``.

This module is the whole surface the flows see, and it imports nothing of OpenTelemetry. While
tracing is off (the default: ``[otel] enabled = false``, or the ``[otel]`` extra not installed)
every call returns a shared no-op span at the cost of one global read; nothing of OpenTelemetry
is imported. ``start`` (called once by the gateway when ``enabled = true``) loads the SDK
backend (``actors._otel_sdk``), which keeps a tracer provider of its own (the process-global one
is left alone) exporting over OTLP/HTTP.

The hops (docs/operations.md, "Tracing"):

- ``webhook <source>`` (server): one per webhook request; it continues a W3C ``traceparent``
  header the platform sent, else starts a trace;
- ``publish <type>`` (producer): the message the webhook stored. The envelope made inside it
  carries *its* context as ``traceparent`` (``contracts.ambient_traceparent``), so every later
  hop is its descendant, in this process or another;
- ``route <actor>`` (consumer): a router's step for one delivery, child of the delivery's
  ``traceparent``; the message it publishes carries the routing span's context;
- ``erp post`` and ``revenue upload`` (consumer): one per posted command / uploaded invoice,
  child of its envelope; the platform request they make is a child of the first of a batch;
- ``<METHOD> <platform>`` (client): every platform request made inside a trace, its context
  sent as the request's ``traceparent`` header (``actors.infra.http``);
- ``sync <operation>`` (server): a synchronous-lane request, continuing its ``traceparent``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Annotated, Any, Literal, Protocol

import msgspec

from contracts import GatewayError

__all__ = ["NO_SPAN", "Attributes", "Backend", "Kind", "OtelSettings", "Span", "enabled", "hop",
           "hops", "span", "start", "stop"]

Kind = Literal["internal", "server", "client", "producer", "consumer"]
Attributes = Mapping[str, str | int | float | bool]


class OtelSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[otel]``: OpenTelemetry tracing (needs the ``[otel]`` extra when enabled)."""

    enabled: bool = False
    # The OTLP/HTTP traces endpoint of the collector (protobuf over HTTP).
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    service_name: str = "erpgw"  # the resource's service.name
    # The share of new traces recorded (a continued trace follows its caller's decision).
    sample_ratio: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 1.0


class Span(Protocol):
    """One hop's span, as the flows see it."""

    @property
    def traceparent(self) -> str | None:
        """The span's W3C ``traceparent`` (None while tracing is off)."""

    def activate(self) -> AbstractContextManager[None]:
        """Make the span current for the code inside: its children, and the envelopes made
        inside carry its context."""

    def set(self, key: str, value: str | int | float | bool) -> None: ...

    def fail(self, error: BaseException | str) -> None:
        """Mark the span failed (recorded on ``end``)."""

    def end(self) -> None: ...


class Backend(Protocol):
    def start(self, name: str, parent: str | None, kind: Kind, attributes: Attributes | None,
              only_in_trace: bool) -> Span: ...

    def shutdown(self) -> None: ...


_NULL: AbstractContextManager[None] = nullcontext()  # reusable: it holds no state


class _NoSpan:
    traceparent = None

    def activate(self) -> AbstractContextManager[None]:
        return _NULL

    def set(self, key: str, value: str | int | float | bool) -> None:
        pass

    def fail(self, error: BaseException | str) -> None:
        pass

    def end(self) -> None:
        pass


NO_SPAN: Span = _NoSpan()
_backend: Backend | None = None


def enabled() -> bool:
    return _backend is not None


def start(settings: OtelSettings, *, exporter: Any = None) -> bool:
    """Turn tracing on when ``settings.enabled``; returns whether it is on. ``exporter`` (an
    OpenTelemetry ``SpanExporter``, e.g. the SDK's in-memory one in tests) replaces the OTLP
    exporter and receives every span as it ends. Raises ``GatewayError``
    (``config.otel_missing``) when tracing is enabled but the ``[otel]`` extra is not
    installed."""
    global _backend
    stop()
    if not settings.enabled:
        return False
    try:
        from . import _otel_sdk
    except ImportError as exc:
        raise GatewayError(
            f"[otel] enabled = true needs the OpenTelemetry packages ({exc.name} is missing): "
            "pip install 'erpgw[otel]', or set [otel] enabled = false",
            code="config.otel_missing") from exc
    _backend = _otel_sdk.SdkBackend(settings, exporter=exporter)
    return True


def stop() -> None:
    """Flush and stop tracing (a no-op while it is off)."""
    global _backend
    backend, _backend = _backend, None
    if backend is not None:
        backend.shutdown()


def span(name: str, parent: str | None = None, *, kind: Kind = "internal",
         attributes: Attributes | None = None, only_in_trace: bool = False) -> Span:
    """A started span, not current (``activate`` it, ``end`` it). Its parent is ``parent`` (a
    W3C ``traceparent``) when that is valid, else the current span, else none (a new trace).
    ``only_in_trace``: no span (the no-op one) unless there is a parent."""
    if _backend is None:
        return NO_SPAN
    return _backend.start(name, parent, kind, attributes, only_in_trace)


@contextmanager
def hop(name: str, parent: str | None = None, *, kind: Kind = "internal",
        attributes: Attributes | None = None, only_in_trace: bool = False) -> Iterator[Span]:
    """A span around the code inside, current there; an exception escaping marks it failed."""
    if _backend is None:
        yield NO_SPAN
        return
    s = _backend.start(name, parent, kind, attributes, only_in_trace)
    try:
        with s.activate():
            yield s
    except Exception as exc:
        s.fail(exc)
        raise
    finally:
        s.end()


@contextmanager
def hops(name: str, parents: Sequence[str | None], *, kind: Kind = "internal",
         attributes: Attributes | None = None) -> Iterator[Sequence[Span]]:
    """One span per item of a batch, each the child of its item's ``traceparent``; the first
    is current inside (the batch's one platform request is its child). All end together; an
    exception escaping marks them all failed."""
    if _backend is None or not parents:
        yield ()
        return
    backend = _backend
    spans = [backend.start(name, p, kind, attributes, False) for p in parents]
    for s in spans:
        s.set("erpgw.batch.size", len(spans))
    try:
        with spans[0].activate():
            yield spans
    except Exception as exc:
        for s in spans:
            s.fail(exc)
        raise
    finally:
        for s in spans:
            s.end()
