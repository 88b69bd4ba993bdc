"""The optional OpenTelemetry tracing (actors.otel): off by default and then inert (nothing of
OpenTelemetry imported, envelopes unchanged), its configuration, its spans with the SDK's
in-memory exporter, and the ``traceparent`` the platforms' HTTP client sends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from aiohttp import web

from actors import otel
from actors.infra.http import HttpClient, PlatformRejected
from contracts import BusinessKey, GatewayError, InvoiceIssued, InvoiceLine, make_envelope
from gateway.broker import free_port
from gateway.config import ConfigError, load_config

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="needs the [otel] extra")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
KEY = BusinessKey(source="billing", object_id="in_1", version=1)


def invoice() -> InvoiceIssued:
    return InvoiceIssued(
        invoice_id="in_1", number="INV-1", customer_id="cus_1", currency="USD",
        issued_at=datetime(2026, 11, 27, tzinfo=UTC), period_start=date(2026, 11, 1),
        period_end=date(2026, 11, 30),
        lines=[InvoiceLine(line_id="l1", product_id="p", description="seat", quantity=3,
                           unit_amount=1000, amount=3000)],
        subtotal=3000, tax=300, total=3300)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_off_by_default_imports_nothing_of_opentelemetry() -> None:
    """With ``[otel] enabled = false`` (the default) the gateway, its config and every hop run
    without OpenTelemetry in the process, and envelopes keep their derived traceparent."""
    done = _run("""
        import sys
        import gateway.app, gateway.cli
        from actors import otel
        from contracts import BusinessKey, make_envelope
        from gateway.config import load_config
        from datetime import UTC, date, datetime
        from contracts import InvoiceIssued, InvoiceLine
        def invoice():
            return InvoiceIssued(
                invoice_id="in_1", number="INV-1", customer_id="cus_1", currency="USD",
                issued_at=datetime(2026, 11, 27, tzinfo=UTC), period_start=date(2026, 11, 1),
                period_end=date(2026, 11, 30), subtotal=3000, tax=300, total=3300,
                lines=[InvoiceLine(line_id="l1", product_id="p", description="seat",
                                   quantity=3, unit_amount=1000, amount=3000)])
        cfg = load_config(env={})
        assert cfg.otel.enabled is False
        assert otel.start(cfg.otel) is False and not otel.enabled()
        with otel.hop("x", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                      kind="server") as span:
            assert span.traceparent is None
            env = make_envelope(invoice(), source="billing",
                                key=BusinessKey(source="billing", object_id="in_1", version=1))
        with otel.hops("y", [env.traceparent]) as spans:
            assert spans == ()
        assert env.traceparent.split("-")[1] != "4bf92f3577b34da6a3ce929d0e0e4736"
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        assert not loaded, loaded
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_enabled_without_the_extra_is_a_clear_error() -> None:
    done = _run("""
        import sys
        sys.modules["opentelemetry"] = None  # as if the [otel] extra were not installed
        from actors import otel
        from contracts import GatewayError
        try:
            otel.start(otel.OtelSettings(enabled=True))
        except GatewayError as err:
            print(err.code, "|", err.message)
        else:
            print("started")
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    code, _, message = done.stdout.partition(" | ")
    assert code == "config.otel_missing"
    assert "pip install 'erpgw[otel]'" in message and "enabled = false" in message


def test_config_keys_from_file_and_environment(tmp_path: Path) -> None:
    f = tmp_path / "erpgw.toml"
    f.write_text('[otel]\nenabled = true\nendpoint = "http://collector:4318/v1/traces"\n'
                 'service_name = "erpgw-eu"\nsample_ratio = 0.25\n')
    cfg = load_config(f, env={"ERPGW_OTEL_SAMPLE_RATIO": "0.5"})
    assert cfg.otel == otel.OtelSettings(enabled=True,
                                         endpoint="http://collector:4318/v1/traces",
                                         service_name="erpgw-eu", sample_ratio=0.5)
    assert load_config(env={"ERPGW_OTEL_ENABLED": "true"}).otel.enabled is True
    assert cfg.public()["otel"]["service_name"] == "erpgw-eu"  # shown by --print-config


@pytest.mark.parametrize(("text", "needle"), [
    ("[otel]\nsample_ratio = 1.5\n", "otel.sample_ratio"),
    ("[otel]\nenable = true\n", "enable"),
    ("[otel]\nenabled = 'sometimes'\n", "otel.enabled"),
])
def test_bad_otel_settings_name_the_setting(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "erpgw.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f, env={})
    assert needle in info.value.message and info.value.code == "config.invalid"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert otel.start(otel.OtelSettings(enabled=True, service_name="unit"), exporter=exporter)
    try:
        yield exporter
    finally:
        otel.stop()
    assert not otel.enabled()


def _ids(traceparent: str | None) -> tuple[str, str]:
    assert traceparent is not None
    _, trace_id, span_id, _ = traceparent.split("-")
    return trace_id, span_id


def test_a_hop_continues_its_parent_and_stamps_the_envelopes_made_inside(
        spans: InMemorySpanExporter) -> None:
    with otel.hop("webhook billing", CALLER, kind="server") as hook:
        env = make_envelope(invoice(), source="billing", key=KEY)
        caused = make_envelope(invoice(), source="gateway", key=KEY, caused_by=env)
    outside = make_envelope(invoice(), source="billing", key=KEY)
    assert env.traceparent == hook.traceparent == caused.traceparent
    assert _ids(hook.traceparent)[0] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert outside.traceparent is not None and outside.traceparent != hook.traceparent
    (span,) = spans.get_finished_spans()
    assert span.kind == SpanKind.SERVER and span.parent is not None
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert span.resource.attributes["service.name"] == "unit"


def test_a_failure_inside_a_hop_marks_it_and_propagates(spans: InMemorySpanExporter) -> None:
    with pytest.raises(GatewayError), otel.hop("erp post", kind="consumer"):
        raise GatewayError("boom", code="x.y")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR and span.parent is None
    assert [e.name for e in span.events] == ["exception"]


def test_hops_give_each_item_its_own_span_under_its_own_parent(
        spans: InMemorySpanExporter) -> None:
    parents = [make_envelope(invoice(), source="billing", key=KEY).traceparent
               for _ in range(3)]
    with otel.hops("erp post", parents, kind="consumer"), \
            otel.hop("POST erp", kind="client", only_in_trace=True):
        pass
    *posts, call = sorted(spans.get_finished_spans(), key=lambda s: s.name == "POST erp")
    assert [(_ids(p)[0], _ids(p)[1]) for p in parents] == [
        (f"{s.context.trace_id:032x}", f"{s.parent.span_id:016x}")  # type: ignore[union-attr]
        for s in posts]
    assert all(s.attributes is not None and s.attributes["erpgw.batch.size"] == 3
               for s in posts)
    assert call.parent is not None and posts[0].context is not None
    assert call.parent.span_id == posts[0].context.span_id  # the request: first item's child


def test_only_in_trace_makes_no_root_span(spans: InMemorySpanExporter) -> None:
    with otel.hop("GET billing", kind="client", only_in_trace=True) as span:
        assert span.traceparent is None
    assert spans.get_finished_spans() == ()


def test_sampling_keeps_the_context_and_drops_the_span() -> None:
    exporter = InMemorySpanExporter()
    otel.start(otel.OtelSettings(enabled=True, sample_ratio=0.0), exporter=exporter)
    try:
        with otel.hop("webhook billing", kind="server") as unsampled:
            env = make_envelope(invoice(), source="billing", key=KEY)
        with otel.hop("webhook billing", CALLER, kind="server"):
            pass  # the caller sampled it: continued and recorded
    finally:
        otel.stop()
    assert unsampled.traceparent is not None
    assert int(unsampled.traceparent.rsplit("-", 1)[1], 16) & 1 == 0  # the sampled bit
    assert env.traceparent == unsampled.traceparent  # downstream hops follow the decision
    (kept,) = exporter.get_finished_spans()
    assert f"{kept.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"  # type: ignore[union-attr]


async def test_platform_requests_in_a_trace_carry_their_span_as_traceparent(
        spans: InMemorySpanExporter) -> None:
    """The HTTP client's hook: a client span per request inside a trace, sent as the
    ``traceparent`` header (replacing one the caller passed); none outside a trace."""
    seen: list[str | None] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent"))
        return web.Response(status=int(request.query.get("status", "200")), body=b"{}")

    app = web.Application()
    app.router.add_get("/x", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with HttpClient(f"http://127.0.0.1:{port}", platform="erp") as client:
            with otel.hop("erp post", CALLER, kind="consumer"):
                await client.get("/x", headers={"traceparent": CALLER})
                with pytest.raises(PlatformRejected):
                    await client.get("/x?status=409")
            await client.get("/x")
    finally:
        await runner.cleanup()
    calls = [s for s in spans.get_finished_spans() if s.name == "GET erp"]
    post = next(s for s in spans.get_finished_spans() if s.name == "erp post")
    assert len(calls) == 2 and seen[2] is None
    for call, header in zip(calls, seen, strict=False):
        assert call.kind == SpanKind.CLIENT and call.context is not None
        assert header == (f"00-{call.context.trace_id:032x}-{call.context.span_id:016x}-"
                          f"{call.context.trace_flags:02x}")
        assert call.context.trace_flags.sampled
        assert call.parent is not None and post.context is not None
        assert call.parent.span_id == post.context.span_id
    assert [c.attributes["http.response.status_code"]  # type: ignore[index]
            for c in calls] == [200, 409]
    assert calls[1].status.status_code == StatusCode.ERROR
