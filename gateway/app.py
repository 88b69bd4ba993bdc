"""Process wiring: broker, bus, ledger, HTTP clients and the supervision tree.

Start order (each step ready before the next): broker (embedded unless ``nats.url`` is set) →
bus connection → streams and consumers provisioned → ledger opened → actors, downstream first
(ERP poster, invoice router, revenue poster), the webhook ingress last, so the gateway accepts
traffic only when the whole path can carry it. Stop is the reverse: the ingress stops
accepting, the router and the posters finish their current batch and ack, the bus drains,
the ledger closes, the broker stops. A second SIGINT/SIGTERM cancels at once (safe: unacked
work is redelivered).
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Callable

import anyio
import anyio.abc
import msgspec

from actors.advisories import MaxDeliveriesWorker
from actors.billing import BillingIngress
from actors.deadletter import DeadLetterSink
from actors.erp import ErpPoster
from actors.infra import HttpClient, Ledger, NatsBus
from actors.monitor import LaneWatch, MetricsPublisher, Monitor, events_flushed, instance_id
from actors.reconcile import Reconciler
from actors.resilience import CircuitBreaker, RateLimiter, Transition
from actors.revenue import RevenuePoster
from actors.router import InvoiceRouter
from actors.runtime import ChildSpec, Supervisor, SupervisorEvent
from actors.sync import SyncDoor, SyncLane
from contracts import LANES, GatewayError, Subjects

from .broker import EmbeddedBroker
from .config import Config

__all__ = ["CONSUMERS", "REVENUE_CONSUMER", "provision", "run_gateway"]

log = logging.getLogger("erpgw.gateway")

# The durable consumer of flow 2's revenue half (the stack and the tests wait on it).
REVENUE_CONSUMER = "revenue-billing"

# (lane, durable name, filter) of every durable consumer the gateway owns.
CONSUMERS: tuple[tuple[str, str, Callable[[Subjects], str]], ...] = (
    ("billing", "invoice-router", lambda s: s.billing_events),
    ("billing", "erp-journal", lambda s: s.billing_erp_commands),
    # Flow 2's revenue half: the same invoice events, to the revenue platform.
    ("billing", REVENUE_CONSUMER, lambda s: s.invoice_issued),
)


async def provision(bus: NatsBus, cfg: Config) -> Subjects:
    """Create or update every stream and durable consumer (idempotent)."""
    subjects = Subjects(prefix=cfg.nats.prefix)
    for lane in LANES:
        await bus.ensure_stream(subjects.stream(lane), [subjects.lane_wildcard(lane)],
                                cfg.streams)
    await bus.ensure_stream(subjects.dlq_stream, [subjects.dlq_wildcard], cfg.streams)
    for lane, durable, filt in CONSUMERS:
        await bus.ensure_consumer(subjects.stream(lane), durable, filt(subjects), cfg.consumers)
    # The server's max-deliveries advisories, kept until turned into dead letters.
    advisories = [subjects.max_deliveries_advisories(lane) for lane in LANES]
    await bus.ensure_stream(subjects.advisory_stream, advisories, cfg.streams)
    await bus.ensure_consumer(subjects.advisory_stream, ADVISORY_CONSUMER, ">", cfg.consumers)
    return subjects


ADVISORY_CONSUMER = "dlq-advisories"


def _check_port(host: str, port: int) -> None:
    """Fail fast, before anything starts, when the webhook port is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise GatewayError(
                f"cannot listen for webhooks on {host}:{port}: {exc.strerror}; "
                "choose another with --http-port", code="http.port_busy") from exc


def _log_event(ev: SupervisorEvent) -> None:
    if ev.kind in ("failed", "escalated"):
        log.warning("supervisor %s: child %s %s (%s)", ev.supervisor, ev.child, ev.kind,
                    ev.error)


async def _signals(tree: Supervisor, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for signum in signals:
            count += 1
            if count == 1:
                log.info("%s: draining (finish in-flight work, ack, close); "
                         "send again to stop at once", signal.Signals(signum).name)
                tree.request_stop()
            else:
                log.warning("second signal: stopping now; unacked work will be redelivered")
                scope.cancel()


async def run_gateway(cfg: Config, *, ready: anyio.Event | None = None,
                      handle_signals: bool = True) -> None:
    """Run the gateway until a stop signal (or cancellation). See the module docstring.

    Raises ``GatewayError`` subclasses for start-up failures (busy port, no broker, bad
    configuration) and ``SupervisorEscalation`` when an actor keeps failing.
    """
    data = cfg.data_path
    data.mkdir(parents=True, exist_ok=True)
    _check_port(cfg.http.host, cfg.http.port)
    broker: EmbeddedBroker | None = None
    url = cfg.nats.url
    if not url:
        broker = EmbeddedBroker(data / "nats", port=cfg.nats.port,
                                sync_interval=cfg.nats.sync_interval)
        await broker.start()
        url = broker.url
        log.info("embedded nats-server on %s (store %s)", url, broker.store_dir)
    try:
        bus = await NatsBus.connect(url, name="erpgw-gateway")
        try:
            subjects = await provision(bus, cfg)
            ledger = await Ledger.open(data / "ledger.db")
            try:
                async with HttpClient(cfg.erp.base_url, timeout=cfg.erp.timeout_s,
                                      max_connections=cfg.erp.max_connections,
                                      platform="erp") as erp_http, \
                        HttpClient(cfg.reconcile.billing_url, timeout=30.0,
                                   max_connections=2, platform="billing") as billing_http, \
                        HttpClient(cfg.revenue.base_url, timeout=cfg.revenue.timeout_s,
                                   max_connections=cfg.revenue.max_connections,
                                   platform="revenue") as revenue_http:
                    await _run_tree(cfg, bus, subjects, ledger, erp_http, billing_http,
                                    revenue_http, ready, handle_signals)
            finally:
                await ledger.close()
        finally:
            with anyio.CancelScope(shield=True):
                await bus.close()
    finally:
        if broker is not None:
            with anyio.CancelScope(shield=True):
                await broker.stop()


async def _run_tree(cfg: Config, bus: NatsBus, subjects: Subjects, ledger: Ledger,
                    erp_http: HttpClient, billing_http: HttpClient, revenue_http: HttpClient,
                    ready: anyio.Event | None, handle_signals: bool) -> None:
    billing_stream = subjects.stream("billing")
    tree: Supervisor | None = None

    def snapshot() -> dict[str, object]:
        return tree.statistics() if tree is not None else {}

    def health() -> dict[str, object]:
        return {"actors": snapshot()}

    # Breaker and limiter outlive restarts of the poster: a crash-looping adapter must not
    # reset the evidence that the ERP is down, nor its request budget (fail closed).
    breaker = CircuitBreaker("erp.journal_bulk", cfg.erp_breaker)
    limiter = RateLimiter("erp", cfg.erp_limiter)
    revenue_breaker = CircuitBreaker("revenue.batches", cfg.revenue_breaker)
    revenue_limiter = RateLimiter("revenue", cfg.revenue_limiter)

    # -- business monitoring (docs/monitoring.md) ------------------------------------------
    # One Monitor per process, outliving restarts of the metrics actor. It is fed by the tree's
    # statistics, the DLQ sinks, the breaker's transitions and the supervisor's events (queued,
    # so the supervisor never waits), and serves GET /metrics on the webhook port.
    # A LaneWatch is a pipeline (what its last consumer settles has left the lane), so the
    # billing lane is watched along the ERP half; the revenue half is a parallel branch of the
    # same events and reports through its actor's statistics (in the metrics' actor tree).
    monitor = Monitor(
        lanes=[LaneWatch("billing", intake=("billing-ingress", "accepted"), consumers=tuple(
            (subjects.stream(lane), d) for lane, d, _ in CONSUMERS
            if lane == "billing" and d != REVENUE_CONSUMER))],
        posting_child="erp-journal", breakers=[breaker, revenue_breaker],
        limiters=[limiter, revenue_limiter], sla=cfg.sla, tree=snapshot)

    def on_event(ev: SupervisorEvent) -> None:
        _log_event(ev)
        monitor.note_supervisor(ev)

    def dlq_sink(lane: str, stream: str) -> DeadLetterSink:
        return DeadLetterSink(bus, subjects, lane, stream,
                              observer=lambda dl: monitor.note_dead_letter(dl.lane, dl.code))

    def billing_dlq() -> DeadLetterSink:
        return dlq_sink("billing", billing_stream)

    async def breaker_events(moves: list[Transition]) -> None:
        for t in moves:
            await bus.emit(subjects.mon_event("breaker"), monitor.note_breaker(t))

    async def revenue_breaker_events(moves: list[Transition]) -> None:
        # Same event as the ERP breaker's, but not through note_breaker: the recovery KPI
        # measures ERP outages by ERP postings, which say nothing about the revenue platform.
        for t in moves:
            await bus.emit(subjects.mon_event("breaker"), msgspec.json.encode({
                "kind": "breaker", "event": str(t.event), "at": time.time(),
                "instance": instance_id(), "breaker": t.breaker, "source": str(t.source),
                "target": str(t.target), "reason": t.reason, "monotonic_at": t.at}))

    sync_door = SyncDoor()
    children = [
        ChildSpec("erp-journal", lambda: ErpPoster(
            "erp-journal", durable="erp-journal", batch=cfg.erp.batch, erp=erp_http,
            ledger=ledger, dlq=billing_dlq(),
            breaker=breaker, limiter=limiter, on_transitions=breaker_events, bus=bus,
            stream=billing_stream, consumer=cfg.consumers)),
        ChildSpec("invoice-router", lambda: InvoiceRouter(
            "invoice-router", durable="invoice-router", batch=cfg.router.batch,
            subjects=subjects, accounts=cfg.accounts,
            dlq=billing_dlq(), bus=bus,
            stream=billing_stream, consumer=cfg.consumers)),
    ]
    if cfg.revenue.enabled:
        # Flow 2's revenue half (docs/flows.md): its own consumer, client, breaker and budget.
        # Cancelling it mid-upload would leave that upload in doubt, so a graceful stop waits
        # longer than an upload may take.
        children.append(ChildSpec(REVENUE_CONSUMER, lambda: RevenuePoster(
            REVENUE_CONSUMER, durable=REVENUE_CONSUMER, batch=cfg.revenue.batch,
            revenue=revenue_http, ledger=ledger, dlq=billing_dlq(), subjects=subjects,
            max_batch_lines=cfg.revenue.max_batch_lines, breaker=revenue_breaker,
            limiter=revenue_limiter, on_transitions=revenue_breaker_events, bus=bus,
            stream=billing_stream, consumer=cfg.consumers),
            shutdown_timeout=cfg.revenue.timeout_s + 5.0))
    children += [
        # The synchronous lane (pricing validation, order acceptance): its own actor, CPQ
        # client and NATS service, no JetStream consumer; its HTTP routes are served on the
        # webhook port through a door that outlives the lane's restarts. It may finish
        # detached CPQ calls while stopping, so it gets longer than a CPQ call to stop.
        ChildSpec("sync-lane", lambda: SyncLane(
            "sync-lane", bus=bus, subjects=subjects, settings=cfg.cpq, door=sync_door),
            shutdown_timeout=cfg.cpq.timeout_s + 5.0),
        ChildSpec("billing-ingress", lambda: BillingIngress(
            "billing-ingress", bus=bus, subjects=subjects, settings=cfg.http,
            secrets=cfg.billing.webhook_secrets, health=health,
            extra_routes={"/metrics": monitor.prometheus},
            extra_post_routes=sync_door.routes())),
        # Messages the server gave up on without any handler's verdict → dead letters.
        ChildSpec(ADVISORY_CONSUMER, lambda: MaxDeliveriesWorker(
            ADVISORY_CONSUMER, subjects=subjects, sink_for=dlq_sink, bus=bus,
            stream=subjects.advisory_stream, durable=ADVISORY_CONSUMER,
            consumer=cfg.consumers)),
        ChildSpec("metrics", lambda: MetricsPublisher(
            "metrics", bus=bus, subjects=subjects, monitor=monitor, snapshot=snapshot)),
    ]
    if cfg.reconcile.interval_s > 0:
        # ERP vs billing every interval; repairs only postings proven missing.
        children.append(ChildSpec("reconciler", lambda: Reconciler(
            "reconciler", bus=bus, subjects=subjects, billing=billing_http, erp=erp_http,
            interval_s=cfg.reconcile.interval_s, grace_s=cfg.reconcile.grace_s,
            repair=cfg.reconcile.repair)))
    tree = Supervisor("gateway", children, strategy="one_for_one",
                      intensity=cfg.supervisor.intensity, period=cfg.supervisor.period_s,
                      on_event=on_event)
    async with events_flushed(bus, subjects, monitor), anyio.create_task_group() as tg:

        async def supervise(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            await tree.run(task_status=task_status)
            # The tree stopped cleanly: stop listening for signals. Not in a `finally`: a
            # cancelled scope would swallow an escalation raised during start-up.
            tg.cancel_scope.cancel()

        if handle_signals:
            tg.start_soon(_signals, tree, tg.cancel_scope)
        await tg.start(supervise)
        log.info("gateway ready: webhooks on http://%s:%d%s", cfg.http.host, cfg.http.port,
                 cfg.http.path)
        if ready is not None:
            ready.set()
