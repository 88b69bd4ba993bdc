"""Process wiring: broker, bus, ledger, HTTP clients and the supervision tree.

Start order (each step ready before the next): broker (embedded unless ``nats.url`` is set) →
streams and consumers provisioned on the broker's admin identity (that connection then closed)
→ one bus connection per broker role the actors run on (``gateway/identities.py``) → ledger
opened → actors: the rate limiter
(it opens the platform accounts' request budgets), then downstream first (ERP poster, invoice
router, revenue poster), the webhook ingress last, so the gateway accepts
traffic only when the whole path can carry it. Stop is the reverse: the ingress stops
accepting, the router and the posters finish their current batch and ack, the bus drains,
the ledger closes, the broker stops. A second SIGINT/SIGTERM cancels at once (safe: unacked
work is redelivered).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio
import anyio.abc
import msgspec

from actors import crash
from actors.advisories import MaxDeliveriesWorker
from actors.billing import BillingIngress, WebhookSource
from actors.commercial import (
    SAGA_CONSUMER,
    SUBSCRIPTION_CONSUMER,
    DealSaga,
    SagaBreakers,
    SagaUrls,
    SubscriptionSync,
)
from actors.deadletter import DeadLetterSink
from actors.erp import ErpPoster
from actors.guard import PlatformGuard
from actors.infra import HttpClient, Ledger, NatsBus
from actors.infra.bus import mask_url
from actors.limits import CrashOnce, LimiterHub, RateLimiterActor
from actors.monitor import LaneWatch, MetricsPublisher, Monitor, events_flushed, instance_id
from actors.partner import PARTNER_ROUTES
from actors.payments import AttributionClient, CommissionRouter, PaymentRouter, SettlementPoster
from actors.reconcile import Budgeted, Reconciler
from actors.resilience import CircuitBreaker, Transition
from actors.revenue import RevenuePoster
from actors.router import InvoiceRouter
from actors.router.credits import CreditMemoRouter
from actors.runtime import ChildSpec, Supervisor, SupervisorEvent
from actors.sync import SyncDoor, SyncLane
from actors.usage import UsageAggregator, UsageDoor, UsageIntake
from contracts import LANES, GatewayError, Subjects
from contracts.platforms.partner import DEAL_SIGNATURE_HEADER

from .broker import BrokerTls, EmbeddedBroker
from .config import Config
from .identities import ACTOR_ROLE, auth_for, identities_dir

__all__ = ["CONSUMERS", "REVENUE_CONSUMER", "provision", "run_gateway"]

log = logging.getLogger("erpgw.gateway")

# The durable consumer of flow 2's revenue half (the stack and the tests wait on it).
REVENUE_CONSUMER = "revenue-billing"

# The durable consumer of flow 4 (usage records → billing rating and revenue).
USAGE_CONSUMER = "usage-aggregator"

# Credit memos (flow 2) and flow 3's consumers (payment to settlement; docs/flows.md).
CREDIT_CONSUMER = "credit-router"
PAYMENT_CONSUMER = "payment-router"
COMMISSION_CONSUMER = "commission-router"
SETTLEMENT_CONSUMER = "partner-settlement"

# (lane, durable name, filter) of every durable consumer the gateway owns.
CONSUMERS: tuple[tuple[str, str, Callable[[Subjects], str]], ...] = (
    # Invoice events only: credit memos and payments have consumers of their own below.
    ("billing", "invoice-router", lambda s: s.event("billing", "invoice.>")),
    ("billing", "erp-journal", lambda s: s.billing_erp_commands),
    # Flow 2's revenue half: the same invoice events, to the revenue platform.
    ("billing", REVENUE_CONSUMER, lambda s: s.invoice_issued),
    # Flow 4: its own lane and stream, so a usage flood never queues in front of invoices.
    ("usage", USAGE_CONSUMER, lambda s: s.for_type("usage.recorded.v1")),
    # Flow 1: approved deals, to the deal saga (subscription, sales order, revenue contract).
    ("commercial", SAGA_CONSUMER, lambda s: s.for_type("deal.approved.v1")),
    # Flow 5: the saga's subscriptions amended, renewed, cancelled → ERP order and revenue.
    ("commercial", SUBSCRIPTION_CONSUMER, lambda s: s.event("commercial", "subscription.>")),
    # Flow 2's credit memos: reversing entries, to the ERP poster's command subject.
    ("billing", CREDIT_CONSUMER, lambda s: s.for_type("credit_memo.issued.v1")),
    # Flow 3: payments -> cash application (parked until the invoice is posted), and
    # payments -> partner commissions (revpartner lane) -> settlements (portal + ERP payable).
    ("billing", PAYMENT_CONSUMER, lambda s: s.for_type("payment.received.v1")),
    ("billing", COMMISSION_CONSUMER, lambda s: s.for_type("payment.received.v1")),
    ("revpartner", SETTLEMENT_CONSUMER,
     lambda s: s.for_type("partner.commission.accrued.v1")),
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

# The broker identities the gateway process connects as, one connection each (see
# gateway/identities.py and docs/security.md).
GATEWAY_ROLES: tuple[str, ...] = tuple(dict.fromkeys([*ACTOR_ROLE.values(), "telemetry"]))


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


def _server_tls(cfg: Config) -> BrokerTls | None:
    t = cfg.nats.server_tls
    if not t.cert:
        return None
    return BrokerTls(cert=Path(t.cert), key=Path(t.key), ca=Path(t.ca) if t.ca else None)


def _check_drills(cfg: Config) -> None:
    """Fault hooks act only in drill mode, and never off loopback (actors/crash.py)."""
    for var in crash.ignored_hooks():
        log.warning("%s is set but drill mode is off (%s=1): ignored", var, crash.DRILLS_VAR)
    crash.refuse_off_loopback([
        cfg.http.host, mask_url(cfg.nats.url), cfg.erp.base_url, cfg.revenue.base_url,
        cfg.cpq.base_url, cfg.partner.base_url, cfg.reconcile.billing_url,
        cfg.usage.billing_url, cfg.deals.billing_url])


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
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data, 0o700)  # the ledger and the broker's seeds live here (S28)
    _check_port(cfg.http.host, cfg.http.port)
    _check_drills(cfg)
    broker: EmbeddedBroker | None = None
    url = cfg.nats.url
    if not url:
        broker = EmbeddedBroker(data / "nats", port=cfg.nats.port,
                                sync_interval=cfg.nats.sync_interval,
                                identities_dir=identities_dir(cfg), prefix=cfg.nats.prefix,
                                encryption_key_file=Path(cfg.nats.encryption_key_file)
                                if cfg.nats.encryption_key_file else None,
                                tls=_server_tls(cfg))
        await broker.start()
        url = broker.url
        log.info("embedded nats-server on %s (store %s)", url, broker.store_dir)
    try:
        buses: dict[str, NatsBus] = {}
        try:
            # Provisioning is the admin identity's alone; the actors run on their roles'.
            admin = await NatsBus.connect(url, name="erpgw-gateway-admin",
                                          auth=auth_for(cfg, "admin", required=False))
            try:
                subjects = await provision(admin, cfg)
            finally:
                await admin.close()
            for role in GATEWAY_ROLES:
                buses[role] = await NatsBus.connect(url, name=f"erpgw-gateway-{role}",
                                                    auth=auth_for(cfg, role, required=False))
            ledger = await Ledger.open(data / "ledger.db")
            for path in data.glob("ledger.db*"):
                path.chmod(0o600)
            try:
                async with HttpClient(cfg.erp.base_url, timeout=cfg.erp.timeout_s,
                                      max_connections=cfg.erp.max_connections,
                                      platform="erp") as erp_http, \
                        HttpClient(cfg.reconcile.billing_url, timeout=30.0,
                                   max_connections=2, platform="billing") as billing_http, \
                        HttpClient(cfg.revenue.base_url, timeout=cfg.revenue.timeout_s,
                                   max_connections=cfg.revenue.max_connections,
                                   platform="revenue") as revenue_http, \
                        HttpClient(cfg.usage.billing_url or cfg.reconcile.billing_url,
                                   timeout=cfg.usage.timeout_s,
                                   max_connections=cfg.usage.max_connections,
                                   platform="billing") as usage_http, \
                        HttpClient(cfg.partner.base_url, timeout=cfg.partner.timeout_s,
                                   max_connections=cfg.payments.max_connections,
                                   platform="partner") as partner_http:
                    await _run_tree(cfg, buses, subjects, ledger, erp_http, billing_http,
                                    revenue_http, ready, handle_signals, usage_http=usage_http,
                                    partner_http=partner_http)
            finally:
                await ledger.close()
        finally:
            with anyio.CancelScope(shield=True):
                for bus in buses.values():
                    await bus.close()
    finally:
        if broker is not None:
            with anyio.CancelScope(shield=True):
                await broker.stop()


async def _run_tree(cfg: Config, buses: Mapping[str, NatsBus], subjects: Subjects,
                    ledger: Ledger,
                    erp_http: HttpClient, billing_http: HttpClient, revenue_http: HttpClient,
                    ready: anyio.Event | None, handle_signals: bool, *,
                    usage_http: HttpClient, partner_http: HttpClient) -> None:
    billing_stream = subjects.stream("billing")
    tree: Supervisor | None = None
    bus = buses["telemetry"]  # metrics, breaker and supervisor events (<prefix>.mon.>)

    def snapshot() -> dict[str, object]:
        return tree.statistics() if tree is not None else {}

    def health() -> dict[str, object]:
        return {"actors": snapshot()}

    # Breaker and limiter outlive restarts of the poster: a crash-looping adapter must not
    # reset the evidence that the ERP is down, nor its request budget (fail closed).
    breaker = CircuitBreaker("erp.journal_bulk", cfg.erp_breaker)
    # One request budget per platform ACCOUNT for the process (actors/limits.py), shared by
    # every adapter of that account, owned by the `rate-limiter` child below: while it is
    # down the handles grant nothing (F35). usage_limiter is the billing account's budget.
    limits = LimiterHub({"erp": cfg.erp_limiter, "revenue": cfg.revenue_limiter,
                         "billing": cfg.usage_limiter, "partner": cfg.partner_limiter})
    limiter = limits.account("erp")
    revenue_breaker = CircuitBreaker("revenue.batches", cfg.revenue_breaker)
    revenue_limiter = limits.account("revenue")
    usage_breaker = CircuitBreaker("billing.usage_bulk", cfg.usage_breaker)
    usage_limiter = limits.account("billing")

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
            if lane == "billing" and d not in (REVENUE_CONSUMER, CREDIT_CONSUMER,
                                               PAYMENT_CONSUMER, COMMISSION_CONSUMER))),
            LaneWatch("usage", intake=("usage-intake", "accepted"),
                      consumers=((subjects.stream("usage"), USAGE_CONSUMER),))],
        posting_child="erp-journal", breakers=[breaker, revenue_breaker],
        limiters=limits.accounts, sla=cfg.sla, tree=snapshot,
        revenue_child=REVENUE_CONSUMER if cfg.revenue.enabled else None)

    def on_event(ev: SupervisorEvent) -> None:
        _log_event(ev)
        monitor.note_supervisor(ev)

    def dlq_sink(lane: str, stream: str, role: str) -> DeadLetterSink:
        # On the connection of the actor that dead-letters (its role may publish letters).
        return DeadLetterSink(buses[role], subjects, lane, stream,
                              observer=lambda dl: monitor.note_dead_letter(dl.lane, dl.code))

    def billing_dlq(role: str) -> DeadLetterSink:
        return dlq_sink("billing", billing_stream, role)

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
    usage_door = UsageDoor()
    limiter_crash = CrashOnce.from_fault()  # F35's drill: GW_FAULT=limiter.crash_after:S
    children = [
        # First: it opens the budgets, so "ready" adapters can take permits.
        ChildSpec("rate-limiter", lambda: RateLimiterActor(
            "rate-limiter", limits, crash=limiter_crash)),
        ChildSpec("erp-journal", lambda: ErpPoster(
            "erp-journal", durable="erp-journal", batch=cfg.erp.batch, erp=erp_http,
            ledger=ledger, dlq=billing_dlq("erp"),
            breaker=breaker, limiter=limiter, on_transitions=breaker_events, bus=buses["erp"],
            stream=billing_stream, consumer=cfg.consumers)),
        ChildSpec("invoice-router", lambda: InvoiceRouter(
            "invoice-router", durable="invoice-router", batch=cfg.router.batch,
            subjects=subjects, accounts=cfg.accounts,
            dlq=billing_dlq("router"), bus=buses["router"],
            stream=billing_stream, consumer=cfg.consumers)),
    ]
    if cfg.revenue.enabled:
        # Flow 2's revenue half (docs/flows.md): its own consumer, client, breaker and budget.
        # Cancelling it mid-upload would leave that upload in doubt, so a graceful stop waits
        # longer than an upload may take.
        children.append(ChildSpec(REVENUE_CONSUMER, lambda: RevenuePoster(
            REVENUE_CONSUMER, durable=REVENUE_CONSUMER, batch=cfg.revenue.batch,
            revenue=revenue_http, ledger=ledger, dlq=billing_dlq("revenue"), subjects=subjects,
            max_batch_lines=cfg.revenue.max_batch_lines, breaker=revenue_breaker,
            limiter=revenue_limiter, on_transitions=revenue_breaker_events, bus=buses["revenue"],
            stream=billing_stream, consumer=cfg.consumers),
            shutdown_timeout=cfg.revenue.timeout_s + 5.0))
    if cfg.usage.enabled:
        # Flow 4 (docs/flows.md): the usage lane's aggregator, with its own consumer, billing
        # client, breaker and budget (revenue uploads share flow 2's breaker and budget: one
        # platform account). Stops like the revenue poster: never mid-request.
        children.append(ChildSpec(USAGE_CONSUMER, lambda: UsageAggregator(
            USAGE_CONSUMER, durable=USAGE_CONSUMER, batch=cfg.usage.batch,
            billing=usage_http, revenue=revenue_http, ledger=ledger,
            dlq=dlq_sink("usage", subjects.stream("usage"), "usage"), subjects=subjects,
            max_bulk_items=cfg.usage.max_bulk_items,
            max_batch_lines=cfg.revenue.max_batch_lines, billing_breaker=usage_breaker,
            billing_limiter=usage_limiter, revenue_breaker=revenue_breaker,
            revenue_limiter=revenue_limiter, on_transitions=revenue_breaker_events,
            bus=buses["usage"],
            stream=subjects.stream("usage"), consumer=cfg.consumers),
            shutdown_timeout=max(cfg.usage.timeout_s, cfg.revenue.timeout_s) * 2 + 5.0))
    # Flow 2's credit memos: reversing entries through the same ERP poster.
    children.append(ChildSpec(CREDIT_CONSUMER, lambda: CreditMemoRouter(
        CREDIT_CONSUMER, durable=CREDIT_CONSUMER, batch=cfg.router.batch, subjects=subjects,
        accounts=cfg.accounts, dlq=billing_dlq("router"), bus=buses["router"],
        stream=billing_stream,
        consumer=cfg.consumers)))
    if cfg.payments.enabled:
        # Flow 3 (docs/flows.md). The portal's breaker and budget, and the payables' breaker,
        # outlive restarts like the ERP's; vendor bills share the ERP account's budget.
        partner_breaker = CircuitBreaker("partner.settlements", cfg.partner_breaker)
        partner_limiter = limits.account("partner")
        payables_breaker = CircuitBreaker("erp.vendor_bills", cfg.erp_breaker)
        attribution = AttributionClient(partner_http, ttl_s=cfg.payments.attribution_ttl_s)
        revpartner_stream = subjects.stream("revpartner")
        children += [
            ChildSpec(PAYMENT_CONSUMER, lambda: PaymentRouter(
                PAYMENT_CONSUMER, durable=PAYMENT_CONSUMER, batch=cfg.payments.batch,
                subjects=subjects, ledger=ledger, accounts=cfg.accounts,
                dlq=billing_dlq("router"), recheck_s=cfg.payments.park_recheck_s,
                bus=buses["router"], stream=billing_stream,
                consumer=cfg.consumers)),
            ChildSpec(COMMISSION_CONSUMER, lambda: CommissionRouter(
                COMMISSION_CONSUMER, durable=COMMISSION_CONSUMER, batch=cfg.payments.batch,
                subjects=subjects, attribution=attribution, dlq=billing_dlq("router"),
                bus=buses["router"],
                stream=billing_stream, consumer=cfg.consumers)),
            ChildSpec(SETTLEMENT_CONSUMER, lambda: SettlementPoster(
                SETTLEMENT_CONSUMER, durable=SETTLEMENT_CONSUMER,
                batch=cfg.payments.settlement_batch, subjects=subjects, ledger=ledger,
                accounts=cfg.accounts, on_cycle=monitor.note_settlement_cycle,
                portal=PlatformGuard("partner portal", partner_http,
                                     open_code="partner.breaker_open", breaker=partner_breaker,
                                     limiter=partner_limiter,
                                     on_transitions=revenue_breaker_events),
                erp=PlatformGuard("ERP payables", erp_http, open_code="erp.breaker_open",
                                  breaker=payables_breaker, limiter=limiter,
                                  on_transitions=revenue_breaker_events),
                dlq=dlq_sink("revpartner", revpartner_stream, "partner"), bus=buses["partner"],
                stream=revpartner_stream, consumer=cfg.consumers),
                shutdown_timeout=cfg.partner.timeout_s + cfg.erp.timeout_s + 5.0),
        ]
    if cfg.deals.enabled:
        # Flow 1 (docs/flows.md): the deal saga, with its own clients to the five platforms it
        # calls and a breaker per platform (outliving its restarts). It stops between deals,
        # never in the middle of one's step.
        # Its calls take permits from the same account budgets as every other adapter (CPQ
        # has no budget: its reads are the sync lane's, bounded by its own concurrency).
        saga_breakers = SagaBreakers(cfg.deals_breaker, limiters={
            p: limits.account(p) for p in ("partner", "billing", "erp", "revenue")})
        children.append(ChildSpec(SAGA_CONSUMER, lambda: DealSaga(
            SAGA_CONSUMER, durable=SAGA_CONSUMER, batch=cfg.deals.batch, urls=SagaUrls(
                partner=cfg.partner.base_url, cpq=cfg.cpq.base_url,
                billing=cfg.deals.billing_url or cfg.reconcile.billing_url,
                erp=cfg.erp.base_url, revenue=cfg.revenue.base_url),
            timeout_s=cfg.deals.timeout_s, max_connections=cfg.deals.max_connections,
            breakers=saga_breakers, ledger=ledger, subjects=subjects,
            dlq=dlq_sink("commercial", subjects.stream("commercial"), "commercial"),
            bus=buses["commercial"],
            stream=subjects.stream("commercial"), consumer=cfg.consumers),
            shutdown_timeout=cfg.deals.timeout_s * 2 + 5.0))
        children.append(ChildSpec(SUBSCRIPTION_CONSUMER, lambda: SubscriptionSync(
            SUBSCRIPTION_CONSUMER, durable=SUBSCRIPTION_CONSUMER, batch=cfg.deals.batch,
            erp_url=cfg.erp.base_url, revenue_url=cfg.revenue.base_url,
            timeout_s=cfg.deals.timeout_s, max_connections=cfg.deals.max_connections,
            ledger=ledger, dlq=dlq_sink("commercial", subjects.stream("commercial"), "commercial"),
            bus=buses["commercial"],
            stream=subjects.stream("commercial"), consumer=cfg.consumers),
            shutdown_timeout=cfg.deals.timeout_s * 3 + 5.0))
    children += [
        # The usage intake (POST /usage/v1/records through its door on the webhook port): its
        # own group commit on the usage stream.
        ChildSpec("usage-intake", lambda: UsageIntake(
            "usage-intake", bus=buses["ingress"], subjects=subjects, door=usage_door,
            api_tokens=cfg.usage.api_tokens, max_records=cfg.usage.max_records,
            tenant=cfg.http.tenant)),
        # The synchronous lane (pricing validation, order acceptance): its own actor, CPQ
        # client and NATS service, no JetStream consumer; its HTTP routes are served on the
        # webhook port through a door that outlives the lane's restarts. It may finish
        # detached CPQ calls while stopping, so it gets longer than a CPQ call to stop.
        ChildSpec("sync-lane", lambda: SyncLane(
            "sync-lane", bus=buses["sync"], subjects=subjects, settings=cfg.cpq,
            door=sync_door),
            shutdown_timeout=cfg.cpq.timeout_s + 5.0),
        ChildSpec("billing-ingress", lambda: BillingIngress(
            "billing-ingress", bus=buses["ingress"], subjects=subjects, settings=cfg.http,
            secrets=cfg.billing.webhook_secrets, health=health,
            extra_routes={"/metrics": monitor.prometheus},
            extra_post_routes={**sync_door.routes(), **usage_door.routes()},
            # The partner portal's deal webhooks (flow 1) on the same port.
            sources=[WebhookSource(
                "partner", cfg.partner.webhook_path, tuple(cfg.partner.webhook_secrets),
                PARTNER_ROUTES, drift_prefixes=("deal.",),
                signature_header=DEAL_SIGNATURE_HEADER)])),
        # Messages the server gave up on without any handler's verdict → dead letters.
        ChildSpec(ADVISORY_CONSUMER, lambda: MaxDeliveriesWorker(
            ADVISORY_CONSUMER, subjects=subjects,
            sink_for=lambda lane, stream: dlq_sink(lane, stream, "deadletter"),
            bus=buses["deadletter"],
            stream=subjects.advisory_stream, durable=ADVISORY_CONSUMER,
            consumer=cfg.consumers)),
        ChildSpec("metrics", lambda: MetricsPublisher(
            "metrics", bus=bus, subjects=subjects, monitor=monitor, snapshot=snapshot)),
    ]
    if cfg.reconcile.interval_s > 0:
        # ERP vs billing every interval; repairs only postings proven missing.
        legs = cfg.reconcile.legs
        children.append(ChildSpec("reconciler", lambda: Reconciler(
            # Its reads take permits of the same account budgets as the adapters' writes.
            "reconciler", bus=buses["reconciler"], subjects=subjects,
            billing=Budgeted(billing_http, limits.account("billing")),
            erp=Budgeted(erp_http, limits.account("erp")),
            interval_s=cfg.reconcile.interval_s, grace_s=cfg.reconcile.grace_s,
            repair=cfg.reconcile.repair,
            revenue=Budgeted(revenue_http, limits.account("revenue"))
            if "revenue" in legs else None,
            # The ledger proves "never sent" only where the revenue poster runs.
            ledger=ledger if "revenue" in legs and cfg.revenue.enabled else None,
            partner=Budgeted(partner_http, limits.account("partner"))
            if "payables" in legs else None,
            accounts=msgspec.structs.asdict(cfg.accounts) if "gl" in legs else None)))
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
