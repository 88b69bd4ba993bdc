"""Process wiring: broker, bus, ledger, HTTP clients and the supervision tree.

Start order (each step ready before the next): credentials, the admin token and the TLS files
read (a bad one refuses the start) → the admin listener (``actors/ingress/admin.py``: probes,
status, metrics, the synchronous lane; ``/readyz`` answers 503 naming what is not ready until
the end of this list) → broker (embedded unless ``nats.url`` is set) →
streams and consumers provisioned on the broker's admin identity (that connection then closed)
→ one bus connection per broker role the actors run on (``gateway/identities.py``) → ledger
opened → actors: the rate limiter
(it opens the platform accounts' request budgets), then downstream first (ERP poster, invoice
router, revenue poster), the webhook ingress last, so the gateway accepts
traffic only when the whole path can carry it. Stop is the reverse: the ingress stops
accepting, the router and the posters finish their current batch and ack, the bus drains,
the ledger closes, the broker stops, the admin listener closes last. A second SIGINT/SIGTERM
cancels at once (safe: unacked work is redelivered).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import msgspec

from actors import crash, otel
from actors.advisories import MaxDeliveriesWorker
from actors.audit import AuditActions, AuditAnchors, LetterAudit
from actors.close import CloseStatus, CloseWatch, RevenueToGl, close_status
from actors.commercial import (
    SAGA_CONSUMER,
    SUBSCRIPTION_CONSUMER,
    DealSaga,
    SagaPlatforms,
    SubscriptionSync,
)
from actors.deadletter import DeadLetterSink
from actors.dlq_expiry import DlqExpiryWatch
from actors.erp import ErpPoster
from actors.infra import Ledger, NatsBus
from actors.infra.bus import BrokerUnavailable, mask_url
from actors.infra.http import client_tls
from actors.infra.kv import KvBucket
from actors.infra.lease import KvLease, Members, leases_bucket, process_id
from actors.infra.state import (
    SagaRecords,
    SharedParking,
    SharedSagas,
    SharedUploads,
    SharedVersions,
    bucket_name,
    provision_state,
)
from actors.ingress import AdminListener, WebhookIngress, server_tls
from actors.limits import CrashOnce, LimiterHub, RateLimiterActor, SharedBudgets
from actors.monitor import LaneWatch, MetricsPublisher, Monitor, events_flushed, instance_id
from actors.payments import AttributionClient, CommissionRouter, PaymentRouter, SettlementPoster
from actors.platforms import Platform, PlatformGuard, Platforms, PlatformSpec, open_platforms
from actors.platforms.auth import Secret
from actors.platforms.billing import billing_source
from actors.platforms.billing.stripe import StripeReader, stripe_source
from actors.platforms.erp import (
    ErpBookedRates,
    ErpRates,
    JournalClient,
    NetSuiteQuery,
    build_journal_client,
)
from actors.platforms.partner import partner_source
from actors.reconcile import Reconciler
from actors.reconcile.matching import ErpPosting
from actors.reconcile.runner import BillingReadFn
from actors.reconcile.stripe import read_billing_stripe
from actors.resilience import Transition
from actors.revenue import RevenuePoster
from actors.router import InvoiceRouter
from actors.router.credits import CreditMemoRouter
from actors.runtime import ChildSpec, Supervisor, SupervisorEvent
from actors.sync import SyncDoor, SyncLane
from actors.usage import UsageAggregator, UsageDoor, UsageIntake
from contracts import LANES, GatewayError, Subjects, new_id

from . import __version__
from .audit import audit_key, identity_of
from .broker import BrokerTls, EmbeddedBroker
from .config import Config
from .credentials import admin_token, platform_credentials
from .datalock import data_dir_lock
from .identities import ACTOR_ROLE, auth_for, identities_dir
from .openapi import openapi_documents

__all__ = ["CONSUMERS", "PROCESS_ROLES", "REVENUE_CONSUMER", "erp_journal_client",
           "erp_postings_reader", "platform_specs", "provision", "run_gateway",
           "stripe_billing_read"]

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
CONSUMERS: tuple[tuple[str, str, Callable[[Subjects], str | tuple[str, ...]]], ...] = (
    # Invoice events only: credit memos and payments have consumers of their own below.
    ("billing", "invoice-router", lambda s: s.event("billing", "invoice.>")),
    ("billing", "erp-journal", lambda s: s.billing_erp_commands),
    # Flow 2's revenue half: the same invoice events (amendments as differences) and the
    # credit memos (negative lines of their invoice), to the revenue platform.
    ("billing", REVENUE_CONSUMER,
     lambda s: (s.invoice_issued, s.for_type("credit_memo.issued.v1"))),
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
        subject: str | tuple[str, ...] = filt(subjects)
        if durable == REVENUE_CONSUMER and cfg.billing.dialect == "stripe":
            # Stripe's invoices arrive as invoice.issued.v3 (actors.platforms.billing.stripe).
            subject = subjects.for_type("invoice.issued.v3")
        await bus.ensure_consumer(subjects.stream(lane), durable, subject, cfg.consumers)
    # The server's max-deliveries advisories, kept until turned into dead letters.
    advisories = [subjects.max_deliveries_advisories(lane) for lane in LANES]
    await bus.ensure_stream(subjects.advisory_stream, advisories, cfg.streams)
    await bus.ensure_consumer(subjects.advisory_stream, ADVISORY_CONSUMER, ">", cfg.consumers)
    # The guards every gateway process shares (actors.infra.state).
    await provision_state(bus, subjects, replicas=cfg.streams.replicas,
                          lease_ttl_s=cfg.scale_out.lease_ttl_s)
    # The audit chain's anchors and the audited actions: kept for good (no max_age).
    await bus.ensure_stream(subjects.audit_stream, [subjects.audit_wildcard],
                            msgspec.structs.replace(cfg.streams, max_age_s=0.0))
    await bus.ensure_consumer(subjects.audit_stream, AUDIT_CONSUMER, subjects.audit_actions,
                              cfg.consumers)
    # Every dead letter, once, as an audit row (the ledger outlives the DLQ's max_age).
    await bus.ensure_consumer(subjects.dlq_stream, LETTER_AUDIT_CONSUMER, subjects.dlq_letters,
                              cfg.consumers)
    return subjects


ADVISORY_CONSUMER = "dlq-advisories"

# How long start-up provisioning rides out a cluster that cannot answer (a stream leader being
# elected, a node restarting) before the gateway gives up with broker.unavailable.
PROVISION_PATIENCE_S = 60.0


async def _provision_through_elections(bus: NatsBus, cfg: Config) -> Subjects:
    """``provision``, tried again while the broker answers ``BrokerUnavailable`` (a timeout
    while a stream elects its leader) for up to ``PROVISION_PATIENCE_S``; every step is
    idempotent. Raises the last ``BrokerUnavailable`` after that, and anything else at once."""
    deadline = time.monotonic() + PROVISION_PATIENCE_S
    delay = 0.25
    while True:
        try:
            return await provision(bus, cfg)
        except BrokerUnavailable as err:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("provisioning the streams: %s; trying again in %.2g s", err, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)
AUDIT_CONSUMER = "audit-actions"
LETTER_AUDIT_CONSUMER = "audit-letters"


def _check_port(host: str, port: int, *, what: str = "webhooks",
                flag: str = "--http-port") -> None:
    """Fail fast, before anything starts, when a listener's port is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise GatewayError(
                f"cannot listen for {what} on {host}:{port}: {exc.strerror}; "
                f"choose another with {flag}", code="http.port_busy") from exc


# Process roles (``scale_out.roles``, ``erpgw up --roles``): which actors a process runs.
# Every actor not listed here (the audit chain's anchors and consumers, the rate limiter, the
# dead-letter advisories, metrics) runs in every process. docs/scale-out.md, "Process roles".
PROCESS_ROLES: dict[str, tuple[str, ...]] = {
    "ingress": ("billing-ingress", "usage-intake"),  # the webhook port
    "sync": ("sync-lane",),  # pricing validation, order acceptance (on the admin port)
    "billing": ("invoice-router", "erp-journal", CREDIT_CONSUMER, PAYMENT_CONSUMER,
                COMMISSION_CONSUMER, SETTLEMENT_CONSUMER),
    "revenue": (REVENUE_CONSUMER,),
    "usage": (USAGE_CONSUMER,),
    "commercial": (SAGA_CONSUMER, SUBSCRIPTION_CONSUMER),
    "close": ("revenue-gl", "close-watch", "reconciler", "dlq-expiry"),
}
_ROLE_OF = {child: role for role, children in PROCESS_ROLES.items() for child in children}


def runs_child(cfg: Config, child: str) -> bool:
    """Whether this process runs actor ``child`` under ``scale_out.roles``."""
    role = _ROLE_OF.get(child)
    return role is None or cfg.runs(role)


# The broker identities the gateway process connects as, one connection each (see
# gateway/identities.py and docs/security.md).
GATEWAY_ROLES: tuple[str, ...] = tuple(dict.fromkeys([*ACTOR_ROLE.values(), "telemetry"]))


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
        cfg.http.host, cfg.admin.host, mask_url(cfg.nats.url), cfg.erp.base_url,
        cfg.revenue.base_url, cfg.cpq.base_url, cfg.partner.base_url, cfg.billing_url])


def _public_url(url: str) -> str:
    """``url`` without credentials (``nats://user:secret@host`` -> ``nats://host``), for
    logs; several comma-separated servers each lose theirs."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        out.append(urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])))
    return ",".join(out)


def _tree_ready(tree: Supervisor | None) -> bool:
    """The supervision tree runs every child (each consumer bound) and is not draining."""
    if tree is None or tree.stop_requested:
        return False
    children = tree.statistics().get("children")
    return isinstance(children, list) and not any(
        c.get("state") in ("starting", "restarting") for c in children)


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
                tree.stop_now()  # the tree's stop is shielded: cancel its children now
                scope.cancel()


def stripe_billing_read(cfg: Config, billing: Platform) -> BillingReadFn | None:
    """The reconciler's read of billing in Stripe's dialect (``GET /v1/events`` through the
    billing platform's budgeted reader); ``None`` (billing's own event list) otherwise."""
    if cfg.billing.dialect != "stripe":
        return None
    return functools.partial(read_billing_stripe, StripeReader(
        billing.reader(), api_version=cfg.billing.stripe_api_version))


def erp_postings_reader(cfg: Config, erp: Platform
                        ) -> Callable[[], Awaitable[list[ErpPosting]]] | None:
    """The reconciler's read of the ERP's journal entries in the ERP's dialect: SuiteQL for
    ``netsuite`` (paged, signed by the ERP's pool, one permit of the ERP budget per page);
    ``None`` (the ``erpgw`` lookup) otherwise."""
    if cfg.erp.dialect != "netsuite":
        return None
    query = NetSuiteQuery(erp.reader())

    async def read() -> list[ErpPosting]:
        return [ErpPosting(eid, rid, cur, amount)
                for eid, rid, cur, amount in await query.postings()]

    return read


async def run_gateway(cfg: Config, *, ready: anyio.Event | None = None,
                      handle_signals: bool = True, span_exporter: object = None) -> None:
    """Run the gateway until a stop signal (or cancellation). See the module docstring.

    Raises ``GatewayError`` subclasses for start-up failures (``data_dir.locked``: another
    process runs on this data directory; busy port, no broker, bad configuration, ``auth.*``
    for a platform's credentials, ``config.otel_missing``) and ``SupervisorEscalation`` when
    an actor keeps failing. ``span_exporter``: with ``[otel]`` enabled, an OpenTelemetry
    ``SpanExporter`` that gets the spans instead of the OTLP endpoint (tests use the SDK's
    in-memory one).
    """
    _check_drills(cfg)
    specs = platform_specs(cfg)  # credentials first: refuse before listening
    token = admin_token(cfg)  # required off loopback (S26)
    admin_tls = server_tls(cfg.admin.tls, "admin.tls")
    server_tls(cfg.http.tls, "http.tls")  # the ingress loads it again; refuse a bad one now
    if otel.start(cfg.otel, exporter=span_exporter):
        log.info("OpenTelemetry tracing on: %s as %s, sampling %g of new traces",
                 cfg.otel.endpoint if span_exporter is None else "a given exporter",
                 cfg.otel.service_name, cfg.otel.sample_ratio)
    try:
        await _serve(cfg, specs, token, admin_tls, ready=ready, handle_signals=handle_signals)
    finally:
        otel.stop()  # flushes the spans still buffered


async def _serve(cfg: Config, specs: Mapping[str, PlatformSpec], token: Secret | None,
                 admin_tls: ssl.SSLContext | None, *, ready: anyio.Event | None,
                 handle_signals: bool) -> None:
    """The data directory's lock, then the admin listener around the gateway's whole life
    (``_run_gateway``)."""
    data = cfg.data_path
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data, 0o700)  # the ledger and the broker's seeds live here (S28)
    with data_dir_lock(data):  # before the ledger or the broker's store is touched
        await _run_locked(cfg, specs, token, admin_tls, ready=ready,
                          handle_signals=handle_signals)


async def _run_locked(cfg: Config, specs: Mapping[str, PlatformSpec], token: Secret | None,
                      admin_tls: ssl.SSLContext | None, *, ready: anyio.Event | None,
                      handle_signals: bool) -> None:
    chain_key = audit_key(cfg, create=True)  # the audit chain's HMAC key (S19)
    if cfg.runs("ingress"):
        _check_port(cfg.http.host, cfg.http.port)
    if cfg.runs("ingress") and (cfg.admin.host, cfg.admin.port) == (cfg.http.host,
                                                                    cfg.http.port):
        raise GatewayError(f"admin.port: {cfg.admin.port} is also http.port; the admin "
                           "listener needs a port of its own", code="config.invalid")
    _check_port(cfg.admin.host, cfg.admin.port, what="admin requests", flag="--admin-port")
    # The admin listener answers from now until the very end: /readyz says 503 (naming what
    # is missing) while the gateway starts and drains. The synchronous lane's door outlives
    # the lane's restarts, so its routes are known now.
    sync_door = SyncDoor()
    admin = AdminListener(cfg.admin, token=token.reveal() if token is not None else None,
                          ssl_context=admin_tls, post_routes=sync_door.routes(),
                          documents=openapi_documents(cfg),
                          max_body_bytes=cfg.http.max_body_bytes)
    buses: dict[str, NatsBus] = {}
    ledger_open = [False]
    admin.check("broker", lambda: bool(buses) and all(b.connected for b in buses.values()))
    admin.check("ledger", lambda: ledger_open[0])
    admin.check("consumers", lambda: False)  # until the supervision tree has started
    async with admin.serving():
        await _run_gateway(cfg, specs, admin, sync_door, buses, ledger_open, chain_key,
                           ready=ready, handle_signals=handle_signals)


async def _run_gateway(cfg: Config, specs: Mapping[str, PlatformSpec], admin: AdminListener,
                       sync_door: SyncDoor, buses: dict[str, NatsBus], ledger_open: list[bool],
                       chain_key: bytes, *, ready: anyio.Event | None,
                       handle_signals: bool) -> None:
    data = cfg.data_path
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
        try:
            # Provisioning is the admin identity's alone; the actors run on their roles'.
            provisioner = await NatsBus.connect(url, name="erpgw-gateway-admin",
                                                auth=auth_for(cfg, "admin", required=False))
            try:
                subjects = await _provision_through_elections(provisioner, cfg)
            finally:
                await provisioner.close()
            for role in GATEWAY_ROLES:
                buses[role] = await NatsBus.connect(
                    url, name=f"erpgw-gateway-{role}", auth=auth_for(cfg, role, required=False),
                    election_retry_s=cfg.nats.election_retry_s,
                    ping_interval=cfg.nats.ping_interval_s)
            ledger = await Ledger.open(data / "ledger.db")
            ledger_open[0] = True
            for path in data.glob("ledger.db*"):
                path.chmod(0o600)
            try:
                if await ledger.use_audit_key(chain_key, now=time.time()):
                    log.info("audit chain keyed from now on (audit.keyed row)")
                limits = _limits(cfg)
                async with open_platforms(specs, limiters={
                        name: limits.account(name) for name in LIMITED}) as platforms:
                    await _run_tree(cfg, buses, subjects, ledger, platforms, limits, ready,
                                    handle_signals, admin=admin, sync_door=sync_door,
                                    broker=f"{_public_url(url)} "
                                           f"({'embedded' if broker else 'external'})")
            finally:
                ledger_open[0] = False
                await ledger.close()
        finally:
            with anyio.CancelScope(shield=True):
                for bus in buses.values():
                    await bus.close()
    finally:
        if broker is not None:
            with anyio.CancelScope(shield=True):
                await broker.stop()


def gateway_identity(data: Path) -> str:
    """The stable identity of the gateway process that owns data directory ``data`` (a
    random id written once into ``<data>/gateway-id``, mode 0600): what the shared upload
    guard records as a line's owner, the same across restarts."""
    path = data / "gateway-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        ident = new_id()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(ident + "\n")
        return ident


# The platform accounts with a request budget: every platform.
LIMITED = ("erp", "revenue", "billing", "partner", "cpq")


def _limits(cfg: Config) -> LimiterHub:
    """One request budget per platform ACCOUNT for the process (actors/limits.py), shared by
    every flow that calls the account, owned by the `rate-limiter` child: while it is down
    the handles grant nothing (F35)."""
    erp_limits = cfg.erp_limiter
    if cfg.erp.dialect == "netsuite" and erp_limits.concurrency is None:
        # NetSuite governs concurrency per account: the budget never exceeds it either.
        erp_limits = msgspec.structs.replace(erp_limits, concurrency=cfg.erp.concurrency)
    return LimiterHub({"erp": erp_limits, "revenue": cfg.revenue_limiter,
                       "billing": cfg.usage_limiter, "partner": cfg.partner_limiter,
                       "cpq": cfg.cpq_limiter})


def platform_specs(cfg: Config, *, environ: Mapping[str, str] | None = None
                   ) -> dict[str, PlatformSpec]:
    """How to reach each platform, from the configuration alone: URL, pool, dialect and the
    credentials every request carries (read from env and files now).

    Raises ``AuthError`` (``auth.*``, docs/errors.md) naming the setting: a platform off this
    machine without credentials or with the simulator's demo ones, a secret file readable by
    others, a missing variable; ``ClientTlsError`` (``config.invalid``) naming
    ``platforms.ca_file`` when that file is not a readable PEM CA bundle."""
    signers = platform_credentials(cfg, environ=environ)
    client_tls(cfg.platforms.ca_file)  # a bad CA file stops the start here, naming the setting
    return {
        "erp": PlatformSpec(cfg.erp.base_url, timeout_s=cfg.erp.timeout_s,
                            max_connections=max(cfg.erp.max_connections, cfg.erp.concurrency),
                            dialect=cfg.erp.dialect, signer=signers["erp"],
                            ca_file=cfg.platforms.ca_file),
        "billing": PlatformSpec(cfg.billing_url, timeout_s=cfg.billing.timeout_s,
                                max_connections=cfg.billing.max_connections,
                                signer=signers["billing"], ca_file=cfg.platforms.ca_file),
        "revenue": PlatformSpec(cfg.revenue.base_url, timeout_s=cfg.revenue.timeout_s,
                                max_connections=cfg.revenue.max_connections,
                                signer=signers["revenue"], ca_file=cfg.platforms.ca_file),
        "partner": PlatformSpec(cfg.partner.base_url, timeout_s=cfg.partner.timeout_s,
                                max_connections=cfg.partner.max_connections,
                                signer=signers["partner"], ca_file=cfg.platforms.ca_file),
        "cpq": PlatformSpec(cfg.cpq.base_url, timeout_s=cfg.cpq.timeout_s,
                            max_connections=cfg.cpq.max_connections, signer=signers["cpq"],
                            ca_file=cfg.platforms.ca_file),
    }


def erp_journal_client(cfg: Config) -> Callable[[PlatformGuard], JournalClient]:
    """How the ERP poster builds its journal client: the configured dialect over the ERP's
    journal endpoint (whose pool signs every request with the ERP's credentials)."""
    erp = cfg.erp
    return lambda guard: build_journal_client(
        erp.dialect, guard, concurrency=erp.concurrency,
        subsidiary=erp.subsidiary or None, currency_ids=erp.currency_ids,
        account_ids=erp.account_ids, subsidiary_ids=erp.subsidiary_ids,
        async_requests=erp.async_requests)


async def _run_tree(cfg: Config, buses: Mapping[str, NatsBus], subjects: Subjects,
                    ledger: Ledger, platforms: Platforms, limits: LimiterHub,
                    ready: anyio.Event | None, handle_signals: bool, *,
                    admin: AdminListener, sync_door: SyncDoor, broker: str = "") -> None:
    bus = buses["telemetry"]  # metrics, breaker and supervisor events (<prefix>.mon.>)
    billing_stream = subjects.stream("billing")
    tree: Supervisor | None = None

    def snapshot() -> dict[str, object]:
        return tree.statistics() if tree is not None else {}

    def health() -> dict[str, object]:
        return {"actors": snapshot()}

    # -- the platforms' endpoints (actors/platforms) ---------------------------------------
    # Every flow reaches a platform through an endpoint of its Platform: a breaker per
    # endpoint and the account's budget, both outliving restarts of the actors (a
    # crash-looping adapter must not reset the evidence that its platform is down, nor its
    # request budget). The ERP journal's breaker changes feed the recovery KPI (note_breaker);
    # every other breaker's changes are published as plain events.
    async def breaker_events(moves: list[Transition]) -> None:
        for t in moves:
            await bus.emit(subjects.mon_event("breaker"), monitor.note_breaker(t))

    async def revenue_breaker_events(moves: list[Transition]) -> None:
        # Same event as the ERP breaker's, but not through note_breaker: the recovery KPI
        # measures ERP outages by ERP postings, which say nothing about other platforms.
        for t in moves:
            await bus.emit(subjects.mon_event("breaker"), msgspec.json.encode({
                "kind": "breaker", "event": str(t.event), "at": time.time(),
                "instance": instance_id(), "breaker": t.breaker, "source": str(t.source),
                "target": str(t.target), "reason": t.reason, "monotonic_at": t.at}))

    for p in platforms.all():
        p.on_transitions = revenue_breaker_events
    erp_journal = platforms.erp.endpoint("journal_bulk", open_code="erp.breaker_open",
                                         label="ERP", config=cfg.erp_breaker,
                                         on_transitions=breaker_events)
    revenue_batches = platforms.revenue.endpoint("batches", open_code="revenue.breaker_open",
                                                 label="revenue", config=cfg.revenue_breaker)
    usage_rating = platforms.billing.endpoint("usage_bulk", open_code="usage.breaker_open",
                                              label="billing.usage", config=cfg.usage_breaker)
    portal_settlements = platforms.partner.endpoint(
        "settlements", open_code="partner.breaker_open", label="partner portal",
        config=cfg.partner_breaker)
    portal_attributions = platforms.partner.endpoint(
        "attributions", open_code="partner.breaker_open", config=cfg.partner_breaker)
    erp_payables = platforms.erp.endpoint("vendor_bills", open_code="erp.breaker_open",
                                          label="ERP payables", config=cfg.erp_breaker)
    # The ERP's daily exchange rates, read by the invoice and payment routers for
    # foreign-currency documents of an entity with a functional currency, and the rate each
    # invoice was booked at, read by the payment router for the realized FX gain/loss
    # (docs/flows.md, "Entities and currencies"): one breaker for both reads.
    fx_guard = platforms.erp.endpoint(
        "exchange_rates", open_code="erp.breaker_open", label="ERP rates",
        config=cfg.erp_breaker) if cfg.entities.configured and cfg.erp.dialect == "erpgw" \
        else None
    erp_rates = ErpRates(fx_guard) if fx_guard is not None else None
    erp_booked = ErpBookedRates(fx_guard) if fx_guard is not None else None
    saga_platforms = SagaPlatforms.of(platforms, cfg.deals_breaker)
    erp_orders = platforms.erp.endpoint("sales_orders", open_code="erp.breaker_open",
                                        config=cfg.deals_breaker)
    revenue_contracts = platforms.revenue.endpoint(
        "contracts", open_code="revenue.breaker_open", config=cfg.deals_breaker)
    cpq_price = platforms.cpq.endpoint("price", open_code="cpq.breaker_open")

    # -- business monitoring (docs/monitoring.md) ------------------------------------------
    # One Monitor per process, outliving restarts of the metrics actor. It is fed by the tree's
    # statistics, the DLQ sinks, the breaker's transitions and the supervisor's events (queued,
    # so the supervisor never waits), and serves GET /metrics on the admin listener.
    # A LaneWatch is a pipeline (what its last consumer settles has left the lane), so the
    # billing lane is watched along the ERP half; the revenue half, credit memos, payments and
    # commissions are branches (parallel readers of the same events): reported, not "out".
    branches = (REVENUE_CONSUMER, CREDIT_CONSUMER, PAYMENT_CONSUMER, COMMISSION_CONSUMER)
    # The revenue poster runs here: its ledger holds the in-doubt lines the close and the
    # reconciler's revenue leg read.
    revenue_here = cfg.revenue.enabled and cfg.runs("revenue")
    monitor = Monitor(
        lanes=[LaneWatch("billing", intake=("billing-ingress", "accepted"), consumers=tuple(
            (subjects.stream(lane), d) for lane, d, _ in CONSUMERS
            if lane == "billing" and d not in branches), branches=tuple(
            (subjects.stream(lane), d) for lane, d, _ in CONSUMERS
            if lane == "billing" and d in branches)),
            LaneWatch("usage", intake=("usage-intake", "accepted"),
                      consumers=((subjects.stream("usage"), USAGE_CONSUMER),)),
            LaneWatch("commercial", intake=None, consumers=tuple(
                (subjects.stream(lane), d) for lane, d, _ in CONSUMERS if lane == "commercial")),
            LaneWatch("revpartner", intake=None, consumers=tuple(
                (subjects.stream(lane), d) for lane, d, _ in CONSUMERS if lane == "revpartner"))],
        posting_child="erp-journal", breakers=platforms.breakers,
        limiters=limits.accounts, sla=cfg.sla, tree=snapshot,
        ingress_child="billing-ingress" if cfg.runs("ingress") else None,
        revenue_child=REVENUE_CONSUMER if revenue_here else None)
    monitor.watch_http(*(p.http for p in platforms.all()))
    admin.metrics = monitor.prometheus
    admin.status = health

    def on_event(ev: SupervisorEvent) -> None:
        _log_event(ev)
        monitor.note_supervisor(ev)

    def dlq_sink(lane: str, stream: str, role: str) -> DeadLetterSink:
        # On the connection of the actor that dead-letters (its role may publish letters).
        return DeadLetterSink(buses[role], subjects, lane, stream,
                              observer=lambda dl: monitor.note_dead_letter(dl.lane, dl.code))

    def shared(bus: NatsBus, kind: str) -> KvBucket:
        # One of the guards every process shares (actors.infra.state), on the actor's role.
        return KvBucket.on(bus, bucket_name(subjects, kind))

    me = process_id()  # this process, in the `leases` bucket

    def lease(role: str, name: str) -> KvLease:
        # A singleton's lease (actors.infra.lease), on the actor's role.
        bucket = KvBucket.on(buses[role], leases_bucket(subjects))
        return KvLease(bucket, name, holder=me, ttl_s=cfg.scale_out.lease_ttl_s,
                       bucket_ttl_from=bucket)

    def shared_budgets() -> SharedBudgets | None:
        # Each account's budget split among the live processes; a 429 pauses them all.
        if not cfg.scale_out.shared_budgets:
            return None
        bucket = KvBucket.on(buses["limits"], leases_bucket(subjects))
        return SharedBudgets(limits, buses["limits"],
                             Members(bucket, holder=me, ttl_s=cfg.scale_out.lease_ttl_s,
                                     bucket_ttl_from=bucket),
                             prefix=subjects.prefix)

    def billing_dlq(role: str) -> DeadLetterSink:
        return dlq_sink("billing", billing_stream, role)

    usage_door = UsageDoor()
    limiter_crash = CrashOnce.from_fault()  # F35's drill: GW_FAULT=limiter.crash_after:S
    children = [
        # The audit chain's head anchored on the audit stream (actors/audit.py). First, so that
        # it stops last: its anchor at stop covers every row the others wrote.
        ChildSpec("audit-anchors", lambda: AuditAnchors(
            "audit-anchors", bus=buses["auditor"], subject=subjects.audit_anchor,
            ledger=ledger, key=audit_key(cfg), interval_s=cfg.audit.anchor_interval_s)),
        # Then this: it opens the budgets, so "ready" adapters can take permits.
        ChildSpec("rate-limiter", lambda: RateLimiterActor(
            "rate-limiter", limits, crash=limiter_crash, shared=shared_budgets())),
        ChildSpec("erp-journal", lambda: ErpPoster(
            "erp-journal", durable="erp-journal", batch=cfg.erp.batch, erp=erp_journal,
            ledger=ledger, versions=SharedVersions(shared(buses["erp"], "versions")),
            dlq=billing_dlq("erp"), bus=buses["erp"], stream=billing_stream,
            consumer=cfg.consumers, client=erp_journal_client(cfg),
            closed_period=cfg.erp.closed_period,
            latency_observer=monitor.posting_observer("erp"))),
        ChildSpec("invoice-router", lambda: InvoiceRouter(
            "invoice-router", durable="invoice-router", batch=cfg.router.batch,
            subjects=subjects, accounts=cfg.accounts, entities=cfg.entities,
            rate_source=erp_rates, dlq=billing_dlq("router"), bus=buses["router"],
            stream=billing_stream, consumer=cfg.consumers)),
    ]
    if cfg.revenue.enabled:
        # Flow 2's revenue half (docs/flows.md): its own consumer, client, breaker and budget.
        # Cancelling it mid-upload would leave that upload in doubt, so a graceful stop waits
        # longer than an upload may take.
        children.append(ChildSpec(REVENUE_CONSUMER, lambda: RevenuePoster(
            REVENUE_CONSUMER, durable=REVENUE_CONSUMER, batch=cfg.revenue.batch,
            revenue=revenue_batches, ledger=ledger, dlq=billing_dlq("revenue"),
            uploads=SharedUploads(shared(buses["revenue"], "uploads"),
                                  owner=gateway_identity(cfg.data_path)),
            subjects=subjects, max_batch_lines=cfg.revenue.max_batch_lines, bus=buses["revenue"],
            stream=billing_stream, consumer=cfg.consumers,
            latency_observer=monitor.posting_observer("revenue")),
            shutdown_timeout=cfg.revenue.timeout_s + 5.0))
    if cfg.usage.enabled:
        # Flow 4 (docs/flows.md): the usage lane's aggregator, with its own consumer, billing
        # client, breaker and budget (revenue uploads share flow 2's breaker and budget: one
        # platform account). Stops like the revenue poster: never mid-request.
        children.append(ChildSpec(USAGE_CONSUMER, lambda: UsageAggregator(
            USAGE_CONSUMER, durable=USAGE_CONSUMER, batch=cfg.usage.batch,
            billing=usage_rating, revenue=revenue_batches, ledger=ledger,
            uploads=SharedUploads(shared(buses["usage"], "uploads"),
                                  owner=gateway_identity(cfg.data_path)),
            dlq=dlq_sink("usage", subjects.stream("usage"), "usage"), subjects=subjects,
            max_bulk_items=cfg.usage.max_bulk_items,
            max_batch_lines=cfg.revenue.max_batch_lines, bus=buses["usage"],
            stream=subjects.stream("usage"), consumer=cfg.consumers),
            shutdown_timeout=max(cfg.billing.timeout_s, cfg.revenue.timeout_s) * 2 + 5.0))
    # Flow 2's credit memos: reversing entries through the same ERP poster.
    children.append(ChildSpec(CREDIT_CONSUMER, lambda: CreditMemoRouter(
        CREDIT_CONSUMER, durable=CREDIT_CONSUMER, batch=cfg.router.batch, subjects=subjects,
        accounts=cfg.accounts, entities=cfg.entities, rate_source=erp_rates,
        dlq=billing_dlq("router"), bus=buses["router"], stream=billing_stream,
        consumer=cfg.consumers)))
    if cfg.payments.enabled:
        # Flow 3 (docs/flows.md): the portal's endpoints and the ERP's payables endpoint
        # (vendor bills share the ERP account's budget).
        attribution = AttributionClient(portal_attributions,
                                        ttl_s=cfg.payments.attribution_ttl_s)
        revpartner_stream = subjects.stream("revpartner")
        children += [
            ChildSpec(PAYMENT_CONSUMER, lambda: PaymentRouter(
                PAYMENT_CONSUMER, durable=PAYMENT_CONSUMER, batch=cfg.payments.batch,
                subjects=subjects, ledger=ledger, accounts=cfg.accounts,
                versions=SharedVersions(shared(buses["router"], "versions")),
                parking=SharedParking(shared(buses["router"], "parked")),
                dlq=billing_dlq("router"), recheck_s=cfg.payments.park_recheck_s,
                entities=cfg.entities, rate_source=erp_rates, booked_source=erp_booked,
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
                portal=portal_settlements, erp=erp_payables,
                dlq=dlq_sink("revpartner", revpartner_stream, "partner"), bus=buses["partner"],
                stream=revpartner_stream, consumer=cfg.consumers),
                shutdown_timeout=cfg.partner.timeout_s + cfg.erp.timeout_s + 5.0),
        ]
    if cfg.deals.enabled:
        # A step's call may take as long as its platform's timeout: stopping waits for it.
        slowest = max(p.http.timeout_s for p in platforms.all())
        # Flow 1 (docs/flows.md): the deal saga, through its own endpoint at each of the five
        # platforms it calls (a breaker per platform, outliving its restarts; the accounts'
        # budgets). It stops between deals, never in the middle of one's step.
        children.append(ChildSpec(SAGA_CONSUMER, lambda: DealSaga(
            SAGA_CONSUMER, durable=SAGA_CONSUMER, batch=cfg.deals.batch,
            platforms=saga_platforms, subjects=subjects,
            sagas=SagaRecords(SharedSagas(shared(buses["commercial"], "sagas")), ledger),
            dlq=dlq_sink("commercial", subjects.stream("commercial"), "commercial"),
            bus=buses["commercial"],
            stream=subjects.stream("commercial"), consumer=cfg.consumers),
            shutdown_timeout=slowest * 2 + 5.0))
        children.append(ChildSpec(SUBSCRIPTION_CONSUMER, lambda: SubscriptionSync(
            SUBSCRIPTION_CONSUMER, durable=SUBSCRIPTION_CONSUMER, batch=cfg.deals.batch,
            erp=erp_orders, revenue=revenue_contracts,
            sagas=SagaRecords(SharedSagas(shared(buses["commercial"], "sagas")), ledger),
            dlq=dlq_sink("commercial", subjects.stream("commercial"), "commercial"),
            bus=buses["commercial"],
            stream=subjects.stream("commercial"), consumer=cfg.consumers),
            shutdown_timeout=slowest * 3 + 5.0))
    children += [
        # The usage intake (POST /usage/v1/records through its door on the webhook port): its
        # own group commit on the usage stream.
        ChildSpec("usage-intake", lambda: UsageIntake(
            "usage-intake", bus=buses["ingress"], subjects=subjects, door=usage_door,
            api_tokens=cfg.usage.api_tokens, max_records=cfg.usage.max_records,
            tenant=cfg.http.tenant)),
        # The synchronous lane (pricing validation, order acceptance): its own actor, CPQ
        # client and NATS service, no JetStream consumer; its HTTP routes are served on the
        # admin listener through a door that outlives the lane's restarts. It may finish
        # detached CPQ calls while stopping, so it gets longer than a CPQ call to stop.
        ChildSpec("sync-lane", lambda: SyncLane(
            "sync-lane", bus=buses["sync"], subjects=subjects, settings=cfg.cpq, cpq=cpq_price,
            door=sync_door),
            shutdown_timeout=cfg.cpq.timeout_s + 5.0),
        ChildSpec("billing-ingress", lambda: WebhookIngress(
            "billing-ingress", bus=buses["ingress"], subjects=subjects, settings=cfg.http,
            # The webhook port serves webhooks and the usage intake only (S26).
            extra_post_routes=usage_door.routes(),
            # The billing platform's webhooks, and the partner portal's deal webhooks (flow
            # 1), on the same port.
            # Billing's in its dialect: Stripe's events and Stripe-Signature, or its own.
            sources=[(stripe_source if cfg.billing.dialect == "stripe" else billing_source)(
                         cfg.http.path, cfg.billing.webhook_secrets),
                     partner_source(cfg.partner.webhook_path, cfg.partner.webhook_secrets)])),
        # Messages the server gave up on without any handler's verdict → dead letters.
        ChildSpec(ADVISORY_CONSUMER, lambda: MaxDeliveriesWorker(
            ADVISORY_CONSUMER, subjects=subjects,
            sink_for=lambda lane, stream: dlq_sink(lane, stream, "deadletter"),
            bus=buses["deadletter"],
            stream=subjects.advisory_stream, durable=ADVISORY_CONSUMER,
            consumer=cfg.consumers)),
        ChildSpec("metrics", lambda: MetricsPublisher(
            "metrics", bus=bus, subjects=subjects, monitor=monitor, snapshot=snapshot)),
        # The audit trail (actors/audit.py): actions of operators and the reconciler become
        # audit rows (its anchors: the first child).
        ChildSpec(AUDIT_CONSUMER, lambda: AuditActions(
            AUDIT_CONSUMER, bus=buses["auditor"], stream=subjects.audit_stream,
            durable=AUDIT_CONSUMER, consumer=cfg.consumers, ledger=ledger,
            prefix=subjects.prefix)),
        # Every dead letter as one audit row ``dlq.dead_lettered`` (actors/audit.py).
        ChildSpec(LETTER_AUDIT_CONSUMER, lambda: LetterAudit(
            LETTER_AUDIT_CONSUMER, bus=buses["auditor"], stream=subjects.dlq_stream,
            durable=LETTER_AUDIT_CONSUMER, consumer=cfg.consumers, ledger=ledger)),
    ]
    if cfg.close.interval_s > 0:
        # Revenue to the GL: the month just ended, every interval (actors/close).
        children.append(ChildSpec("revenue-gl", lambda: RevenueToGl(
            "revenue-gl", revenue=platforms.revenue.reader(),
            versions=SharedVersions(shared(buses["close"], "versions")),
            bus=buses["close"], subjects=subjects, accounts=cfg.accounts,
            entity=cfg.close.entity, interval_s=cfg.close.interval_s,
            lease=lease("close", "revenue-gl"), entities=cfg.entities)))
    if cfg.close.status_interval_s > 0:
        # What blocks the close (read-only, every process of role close): the close.blocking KPI.
        close_legs = cfg.reconcile.legs

        async def close_status_of(period: str) -> CloseStatus:
            return await close_status(
                buses["reconciler"], subjects, billing=platforms.billing.reader(),
                erp=platforms.erp.reader(), revenue=platforms.revenue.reader(),
                versions=SharedVersions(shared(buses["close"], "versions")),
                entity=cfg.close.entity, period=period, accounts=cfg.accounts,
                grace_s=cfg.reconcile.grace_s, revenue_leg="revenue" in close_legs,
                ledger=ledger if "revenue" in close_legs and revenue_here else None,
                entities=cfg.entities, postings=erp_postings_reader(cfg, platforms.erp),
                billing_read=stripe_billing_read(cfg, platforms.billing),
                scratch=cfg.data_path)

        children.append(ChildSpec("close-watch", lambda: CloseWatch(
            "close-watch", status=close_status_of, report=monitor.note_close,
            interval_s=cfg.close.status_interval_s)))
    if cfg.dlq.expiry_check_s > 0:
        # Unresolved dead letters nearing the DLQ's max_age: a warning and dlq.expiring (S28).
        children.append(ChildSpec("dlq-expiry", lambda: DlqExpiryWatch(
            "dlq-expiry", bus=buses["reconciler"], subjects=subjects,
            max_age_s=cfg.streams.max_age_s, fraction=cfg.dlq.expiry_warn_fraction,
            interval_s=cfg.dlq.expiry_check_s,
            report=lambda found: monitor.note_dlq_expiry(found.count))))
    if cfg.reconcile.interval_s > 0:
        # ERP vs billing every interval; repairs only postings proven missing.
        legs = cfg.reconcile.legs
        children.append(ChildSpec("reconciler", lambda: Reconciler(
            # Its reads take permits of the same account budgets as the adapters' writes.
            "reconciler", bus=buses["reconciler"], subjects=subjects,
            billing=platforms.billing.reader(), erp=platforms.erp.reader(),
            billing_read=stripe_billing_read(cfg, platforms.billing),
            interval_s=cfg.reconcile.interval_s, grace_s=cfg.reconcile.grace_s,
            repair=cfg.reconcile.repair,
            revenue=platforms.revenue.reader() if "revenue" in legs else None,
            # The ledger proves "never sent" only where the revenue poster runs.
            ledger=ledger if "revenue" in legs and revenue_here else None,
            partner=platforms.partner.reader() if "payables" in legs else None,
            postings=erp_postings_reader(cfg, platforms.erp),
            accounts=msgspec.structs.asdict(cfg.accounts) if "gl" in legs else None,
            audit_identity=identity_of(auth_for(cfg, "reconciler", required=False)),
            entities=cfg.entities,
            # One process runs it: whichever holds the `reconciler` lease.
            lease=lease("reconciler", "reconciler"))))
    if cfg.scale_out.roles:
        children = [c for c in children if runs_child(cfg, c.name)]
        log.info("process roles %s: runs %s; the other roles' work waits at the broker for a "
                 "process that runs them", ",".join(cfg.scale_out.roles),
                 ", ".join(c.name for c in children))
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
        # Every consumer is bound once the tree has started and while no child is starting or
        # restarting; draining is not ready.
        admin.check("consumers", lambda: _tree_ready(tree))
        base = f"{'https' if cfg.http.tls.enabled else 'http'}://{cfg.http.host}:{cfg.http.port}"
        hooks = (f"webhooks {base}{cfg.http.path} and {base}{cfg.partner.webhook_path}"
                 if cfg.runs("ingress") else "no webhooks here (role ingress elsewhere)")
        log.info("erpgw %s ready: %s, metrics %s/metrics, probes %s/livez %s/readyz; "
                 "broker %s", __version__, hooks, admin.url, admin.url, admin.url,
                 broker or "connected")
        if ready is not None:
            ready.set()
