"""Configuration: a TOML file, then ``ERPGW_<SECTION>_<KEY>`` environment variables, then flags.

Every setting has a sensible default, so ``erpgw up`` runs with no file at all. Unknown keys
and wrong types are refused with the dotted name of the setting (``http.port: Expected `int`,
got `str```), never a traceback. ``erpgw up --print-config`` shows the effective values, with
secrets masked.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from actors.infra import ConsumerSettings, StreamSettings
from actors.infra.bus import mask_url, server_list
from actors.infra.secret_file import SecretFileProblem, read_secret_file
from actors.ingress import AdminSettings, IngressSettings
from actors.lifecycle.fx import EntityMap
from actors.monitor import SlaConfig
from actors.otel import OtelSettings
from actors.platforms.auth import AuthSettings
from actors.resilience import BreakerConfig, LimiterConfig
from actors.router import AccountMap
from actors.sync import CpqSettings
from contracts import GatewayError
from contracts.platforms.stripe import STRIPE_API_VERSION

from .logs import LogConfig

__all__ = ["Config", "ConfigError", "load_config"]

_MASK = "***"


class ConfigError(GatewayError):
    code = "config.invalid"


class NatsTlsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """TLS to the broker: ``ca`` verifies the server (never switched off; empty: the system's
    trust store); ``cert`` + ``key`` are the client's certificate for mutual TLS."""

    ca: str = ""
    cert: str = ""
    key: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.ca or self.cert)


class NatsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Empty: start the embedded nats-server. Else the seed servers of an existing server or
    # cluster: a TOML list or one comma-separated string (kept here comma-joined).
    url: str = ""
    port: int = 4222  # the embedded server's client port
    prefix: str = "erpgw"
    sync_interval: str = "always"  # the embedded server's fsync policy; "2m" only to measure
    # A publish refused or unanswered for a retryable reason (a stream leader election in a
    # cluster) is sent again with the same message ids for up to this long (0: no retry).
    election_retry_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    # The client pings the server this often; three pings unanswered (a silent partition: the
    # link holds bytes and never closes) count the connection dead, and it reconnects.
    ping_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    # Credentials for an external broker (at most one kind; see docs/security.md). The embedded
    # broker needs none of them: its role seeds live in `identities_dir`.
    creds: str = ""  # a JWT + NKey credentials file
    nkey_seed_file: str = ""  # an NKey seed file
    user: str = ""
    password: str = ""  # prefer ERPGW_NATS_PASSWORD or password_file
    password_file: str = ""
    # One NKey seed per role (default <data_dir>/identities; the embedded broker writes them).
    identities_dir: str = ""
    # The embedded broker's JetStream store is encrypted with the key in this file (0600).
    encryption_key_file: str = ""
    # TLS for every connection to the broker (docs/security.md); off when empty.
    tls: NatsTlsConfig = msgspec.field(default_factory=NatsTlsConfig)
    # The embedded broker serves TLS only with this certificate; with `ca` set, clients must
    # present a certificate it signed (mutual TLS). Off when empty.
    server_tls: NatsTlsConfig = msgspec.field(default_factory=NatsTlsConfig)

    def __repr__(self) -> str:
        return (f"NatsConfig(url={mask_url(self.url)!r}, port={self.port}, "
                f"prefix={self.prefix!r}, creds={self.creds!r}, "
                f"nkey_seed_file={self.nkey_seed_file!r}, user={self.user!r}, "
                f"password={'***' if self.password else ''!r}, "
                f"identities_dir={self.identities_dir!r})")


class BillingConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Webhook signing secrets; several while a secret is being rotated. Prefer the environment
    # variable ERPGW_BILLING_WEBHOOK_SECRETS (comma-separated) over the file.
    webhook_secrets: list[str] = msgspec.field(default_factory=lambda: ["whsec_demo"])
    # Or a file of them, one per line, mode 0600 (refused when group or others may read it);
    # when set it replaces webhook_secrets.
    webhook_secrets_file: str | None = None
    # The billing platform's wire format: "erpgw" (the simulator's own, the default) or
    # "stripe" (Stripe's webhooks, ``Stripe-Signature``, invoices as invoice.issued.v3; the
    # reconciler reads Stripe's /v1/events with the secret key in billing.auth, a bearer).
    dialect: Literal["erpgw", "stripe"] = "erpgw"
    stripe_api_version: str = STRIPE_API_VERSION  # sent as Stripe-Version on every read
    # The billing platform's API (usage rating, subscriptions, the reconciler's reads): one
    # pool for the process. Empty: reconcile.billing_url.
    base_url: str = ""
    timeout_s: float = 10.0  # per request; a rating request unanswered in time is in doubt
    max_connections: int = 8
    # Credentials of every billing API request (actors/platforms/auth.py): for Stripe,
    # type = "bearer" with the secret key (token_env / token_file).
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)

    def __repr__(self) -> str:
        return (f"BillingConfig(dialect={self.dialect!r}, webhook_secrets="
                f"[{len(self.webhook_secrets)} hidden], base_url={self.base_url!r})")


class ErpConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    base_url: str = "http://127.0.0.1:8700"
    timeout_s: float = 10.0
    batch: int = 100  # journal entries per bulk request (= per fetched batch)
    max_connections: int = 8
    # The ERP's API (actors/platforms/erp): "erpgw" (the bulk API) or "netsuite" (SuiteTalk
    # REST: one upsert per entry, `concurrency` of them in flight).
    dialect: Literal["erpgw", "netsuite"] = "erpgw"
    account: str = ""  # NetSuite account id (e.g. 1234567_SB1): the TBA realm by default
    subsidiary: str = ""  # NetSuite subsidiary internal id of the journal entries ("": none)
    # NetSuite: upserts in flight at once, at most the account's concurrency limit (minus
    # what other integrations of the account use). Also caps the ERP account's budget.
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    # NetSuite internal ids: ISO currency -> currency record id, chart account -> account id.
    # Unmapped currencies go by refName (their ISO code), unmapped accounts by their number.
    currency_ids: dict[str, str] = msgspec.field(default_factory=dict)
    account_ids: dict[str, str] = msgspec.field(default_factory=dict)
    # NetSuite: entity (`[entities]`) -> subsidiary internal id; an unmapped entity is sent as is.
    subsidiary_ids: dict[str, str] = msgspec.field(default_factory=dict)
    # NetSuite: send each upsert as an asynchronous request (Prefer: respond-async) and poll
    # its job; a repeat is recognised by the idempotency key and answered "replayed".
    async_requests: bool = False
    # Credentials of every ERP request (actors/platforms/auth.py, docs/configuration.md).
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    # A posting dated in a period the ERP has closed (actors/erp/periods.py): "dead_letter"
    # (erp.period_closed; `erpgw dlq replay --repost-open` moves it) or "next_open" (posted on
    # the first day of the first open period after it, the original date in its memo).
    closed_period: Literal["next_open", "dead_letter"] = "dead_letter"


class RouterConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    batch: int = 256


class RevenueConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The revenue platform's batch upload API (flow 2, docs/flows.md). It has no idempotency
    # key: this process's ledger is the only guard, so run the adapter in one process only.
    enabled: bool = True
    base_url: str = "http://127.0.0.1:8700"
    timeout_s: float = 10.0  # per upload; no answer in time leaves its lines in doubt
    max_batch_lines: Annotated[int, msgspec.Meta(ge=1)] = 500  # the platform's upload limit
    batch: Annotated[int, msgspec.Meta(ge=1)] = 200  # invoices per fetch (~450 lines)
    max_connections: int = 4
    # Credentials of every revenue platform request (actors/platforms/auth.py).
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)


class UsageConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Flow 4 (docs/flows.md): usage records in, rated by billing and recorded at the revenue
    # platform, each once. Its own lane, consumer and budgets, so a flood waits in the usage
    # stream instead of in front of invoices or pricing. The guard is shared in the cluster's
    # uploads bucket (actors.infra.state), so every gateway process may run the aggregator.
    enabled: bool = True
    # Bearer tokens accepted by POST /usage/v1/records; several while one is being rotated.
    # Prefer ERPGW_USAGE_API_TOKENS (comma-separated) over the file.
    api_tokens: list[str] = msgspec.field(default_factory=lambda: ["usage_demo_token"])
    # Or a file of them, one per line, mode 0600; when set it replaces api_tokens.
    api_tokens_file: str | None = None
    max_records: Annotated[int, msgspec.Meta(ge=1)] = 1000  # records per request (else 413)
    batch: Annotated[int, msgspec.Meta(ge=1)] = 256  # records per fetch (<= max_ack_pending)
    max_bulk_items: Annotated[int, msgspec.Meta(ge=1)] = 500  # aggregates per rating request

    def __repr__(self) -> str:
        return (f"UsageConfig(enabled={self.enabled}, api_tokens=[{len(self.api_tokens)} "
                f"hidden], batch={self.batch})")


class PartnerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The partner portal: its deal webhooks (flow 1, docs/flows.md) and its API. Prefer
    # ERPGW_PARTNER_WEBHOOK_SECRETS (comma-separated) over the file for the secrets.
    webhook_path: str = "/webhooks/partner"
    webhook_secrets: list[str] = msgspec.field(default_factory=lambda: ["whsec_partner_demo"])
    # Or a file of them, one per line, mode 0600; when set it replaces webhook_secrets.
    webhook_secrets_file: str | None = None
    base_url: str = "http://127.0.0.1:8700"
    timeout_s: float = 10.0
    max_connections: int = 4
    # Credentials of every partner portal API request (actors/platforms/auth.py).
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)

    def __repr__(self) -> str:
        return (f"PartnerConfig(webhook_path={self.webhook_path!r}, webhook_secrets="
                f"[{len(self.webhook_secrets)} hidden], base_url={self.base_url!r})")


class PaymentsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Flow 3 (docs/flows.md): payments -> cash application in the ERP (parked until the
    # invoice is posted), partner commissions and their settlements (portal + ERP payable).
    # Like the revenue half, the parking is this process's ledger: enable it in one process.
    enabled: bool = True
    batch: Annotated[int, msgspec.Meta(ge=1)] = 100  # payments per fetch
    park_recheck_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0  # how often parked ones recheck
    attribution_ttl_s: float = 300.0  # how long a customer's partner (or none) is cached
    settlement_batch: Annotated[int, msgspec.Meta(ge=1)] = 50  # commissions per fetch


class DealsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Flow 1 (docs/flows.md): the deal saga (approved deal -> subscription, sales order,
    # revenue contract). Every write carries an idempotency key, so several processes may
    # run it; it calls the partner portal, CPQ, billing, the ERP and the revenue platform.
    enabled: bool = True
    batch: Annotated[int, msgspec.Meta(ge=1)] = 16  # deals per fetch, run one after another


class ReconcileConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # How often the reconciler compares billing with the ERP (0: only `erpgw reconcile`).
    interval_s: float = 300.0
    grace_s: float = 300.0  # younger invoices without a posting count as in flight
    repair: bool = True  # re-drive missing postings (safe: their original idempotency key)
    billing_url: str = "http://127.0.0.1:8700"  # billing's API unless billing.base_url is set
    # The legs compared besides billing vs the ERP's journal entries (which always runs):
    # revenue (billings report + ledger), gl (GL balances), payables (settlements vs bills).
    legs: list[Literal["revenue", "gl", "payables"]] = msgspec.field(
        default_factory=lambda: ["revenue", "gl", "payables"])


class CloseConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # How often the revenue-gl actor posts the month just ended's recognised revenue to the GL
    # (actors/close; 0: only `erpgw close run`). A run with nothing changed posts nothing.
    interval_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    # The legal entity the entries are posted for (until accounts map to entities).
    entity: Annotated[str, msgspec.Meta(min_length=1, max_length=50)] = "default"
    # How often the close-watch actor computes what blocks the close of the month just ended
    # and of the current one (`erpgw close status`), for the close.blocking KPI on
    # <prefix>.mon.kpi; the first pass after min(30 s, the interval). 0: not watched.
    status_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0


class DlqConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The dlq-expiry actor (actors/dlq_expiry.py) warns (a log line, dlq.expiring in the
    # metrics and KPIs) of unresolved dead letters older than this fraction of the DLQ
    # stream's max_age (streams.max_age_s), before the broker drops them.
    expiry_warn_fraction: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.75
    # How often it reads the DLQ stream (the first pass at start); 0: not watched.
    expiry_check_s: Annotated[float, msgspec.Meta(ge=0)] = 3600.0


class AuditConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The audit chain's HMAC key (docs/security.md, S19): the file (mode 0600, at least 32
    # characters), generated on first start when absent. Empty: <data_dir>/audit.key.
    key_file: str = ""
    # Or the key itself (prefer ERPGW_AUDIT_KEY or the file); wins over key_file when set.
    key: str = ""
    # How often the chain's head is anchored on the audit stream (when it moved), seconds.
    anchor_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0

    def __repr__(self) -> str:
        return (f"AuditConfig(key_file={self.key_file!r}, key={'***' if self.key else ''!r}, "
                f"anchor_interval_s={self.anchor_interval_s!r})")


class ScaleOutConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Seconds a lease (the reconciler's, the revenue-gl schedule's) and a process's membership
    # key live without a renewal (the `leases` bucket's max_age; renewed every third of it):
    # a dead holder's singleton moves to another process about this long after its last
    # renewal. Every process of a deployment must use the same value.
    lease_ttl_s: Annotated[float, msgspec.Meta(ge=1, le=300)] = 10.0
    # Split each platform account's budget (`*_limiter`) among the live processes (1/N each,
    # N renewing their membership key within `lease_ttl_s`) and pause every process when one
    # is answered 429 (docs/scale-out.md). One process alone keeps the full budget.
    shared_budgets: bool = True
    # The process roles this process runs (empty: all). Each role is a set of actors
    # (gateway/app.py, PROCESS_ROLES; docs/scale-out.md, "Process roles"): a deployment may
    # run `ingress,billing` in one process and the rest in another; every role must run in
    # at least one process, or its work waits at the broker. Not the broker identities.
    roles: list[Literal["ingress", "sync", "billing", "revenue", "usage", "commercial",
                        "close"]] = msgspec.field(default_factory=list)


class PlatformsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Every call to a platform over https verifies its certificate and host name (never
    # switched off) against the system's trust store plus this PEM CA bundle (a private CA).
    ca_file: str = ""


class RuntimeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Python's cyclic garbage collector in `erpgw up` (gateway/gc_tuning.py): its three
    # thresholds (Python's own are 700, 10, 10: at load that was ~350 collections a second
    # and a full one of ~45 ms every second or so, a tenth of the event loop's time), and
    # whether what exists once the gateway has started is frozen out of later collections.
    gc_threshold: Annotated[list[Annotated[int, msgspec.Meta(ge=1)]],
                            msgspec.Meta(min_length=3, max_length=3)] = msgspec.field(
        default_factory=lambda: [10_000, 20, 20])
    gc_freeze: bool = True


class SupervisorConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # More than `intensity` restarts within `period` seconds: stop everything and exit non-zero,
    # so the outer supervisor (systemd, Kubernetes) sees it instead of a hot restart loop.
    intensity: int = 5
    period_s: float = 30.0


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = "data"
    log_level: str = "info"
    log: LogConfig = msgspec.field(default_factory=LogConfig)  # [log] json = true
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    streams: StreamSettings = msgspec.field(default_factory=StreamSettings)
    consumers: ConsumerSettings = msgspec.field(default_factory=ConsumerSettings)
    http: IngressSettings = msgspec.field(default_factory=IngressSettings)
    # The admin listener (probes, metrics, status, the synchronous lane): loopback by default.
    admin: AdminSettings = msgspec.field(default_factory=AdminSettings)
    billing: BillingConfig = msgspec.field(default_factory=BillingConfig)
    erp: ErpConfig = msgspec.field(default_factory=ErpConfig)
    router: RouterConfig = msgspec.field(default_factory=RouterConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)  # the process's GC
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)  # keyed chain, anchors
    dlq: DlqConfig = msgspec.field(default_factory=DlqConfig)  # expiry warning (S28)
    # TLS of the outbound platform calls (actors/infra/http.py).
    platforms: PlatformsConfig = msgspec.field(default_factory=PlatformsConfig)
    reconcile: ReconcileConfig = msgspec.field(default_factory=ReconcileConfig)
    close: CloseConfig = msgspec.field(default_factory=CloseConfig)
    # Several gateway processes on one cluster: leases for singletons, shared budgets.
    scale_out: ScaleOutConfig = msgspec.field(default_factory=ScaleOutConfig)
    accounts: AccountMap = msgspec.field(default_factory=AccountMap)
    # Legal entities: which customers' postings go to which, each entity's functional currency.
    entities: EntityMap = msgspec.field(default_factory=EntityMap)
    # The ERP bulk endpoint's circuit breaker and the ERP account's request budget.
    erp_breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)
    erp_limiter: LimiterConfig = msgspec.field(
        default_factory=lambda: LimiterConfig(rate=50.0, burst=20))
    # The revenue platform: its adapter, its upload endpoint's breaker, its account's budget.
    revenue: RevenueConfig = msgspec.field(default_factory=RevenueConfig)
    revenue_breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)
    revenue_limiter: LimiterConfig = msgspec.field(
        default_factory=lambda: LimiterConfig(rate=10.0, burst=5))
    # Flow 4: usage records (intake, aggregator), the billing rating endpoint's breaker and the
    # billing account's budget for it (uploads share the revenue breaker and budget above).
    usage: UsageConfig = msgspec.field(default_factory=UsageConfig)
    usage_breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)
    usage_limiter: LimiterConfig = msgspec.field(
        default_factory=lambda: LimiterConfig(rate=20.0, burst=10))
    # Business KPI targets, checked on <prefix>.mon.kpi (docs/monitoring.md).
    sla: SlaConfig = msgspec.field(default_factory=SlaConfig)
    # CPQ and the synchronous lane that prices through it (docs/flows.md, sync lane).
    cpq: CpqSettings = msgspec.field(default_factory=CpqSettings)
    # The CPQ account's request budget (pricing calls of the sync lane and the deal saga).
    cpq_limiter: LimiterConfig = msgspec.field(
        default_factory=lambda: LimiterConfig(rate=200.0, burst=100))
    # Flow 1: the partner portal's deal webhooks and API, and the deal saga.
    partner: PartnerConfig = msgspec.field(default_factory=PartnerConfig)
    deals: DealsConfig = msgspec.field(default_factory=DealsConfig)
    # One breaker per platform the deal saga calls (partner, cpq, billing, erp, revenue).
    deals_breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)
    # Flow 3: payments, commissions, settlements; the portal's settlement endpoint's breaker
    # and the portal account's budget (vendor bills use the ERP's budget, their own breaker).
    payments: PaymentsConfig = msgspec.field(default_factory=PaymentsConfig)
    partner_breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)
    partner_limiter: LimiterConfig = msgspec.field(
        default_factory=lambda: LimiterConfig(rate=50.0, burst=20))
    # OpenTelemetry tracing, off by default; on, it needs the [otel] extra (docs/operations.md).
    otel: OtelSettings = msgspec.field(default_factory=OtelSettings)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def runs(self, role: str) -> bool:
        """Whether this process runs process role ``role`` (``scale_out.roles``; all when
        empty)."""
        return not self.scale_out.roles or role in self.scale_out.roles

    @property
    def billing_url(self) -> str:
        """The billing platform's API: ``billing.base_url``, else ``reconcile.billing_url``."""
        return self.billing.base_url or self.reconcile.billing_url

    def public(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets masked."""
        doc: dict[str, Any] = msgspec.to_builtins(self)
        doc["billing"]["webhook_secrets"] = ["***"] * len(self.billing.webhook_secrets)
        doc["usage"]["api_tokens"] = ["***"] * len(self.usage.api_tokens)
        doc["partner"]["webhook_secrets"] = ["***"] * len(self.partner.webhook_secrets)
        for section in ("erp", "billing", "revenue", "partner", "cpq"):
            doc[section]["auth"] = getattr(self, section).auth.public()
        doc["nats"]["url"] = mask_url(self.nats.url)
        if self.admin.token is not None:
            doc["admin"]["token"] = "***"  # noqa: S105 - the mask, not a token
        if self.nats.password:
            doc["nats"]["password"] = "***"  # noqa: S105 - the mask, not a password
        if self.audit.key:
            doc["audit"]["key"] = _MASK
        return doc


def _sections() -> dict[str, type[msgspec.Struct]]:
    out: dict[str, type[msgspec.Struct]] = {}
    for f in msgspec.structs.fields(Config):
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct):
            out[f.name] = f.type
    return out


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for f in msgspec.structs.fields(Config):
        var = f"ERPGW_{f.name}".upper()
        if var in env and f.name in ("data_dir", "log_level"):
            doc[f.name] = env[var]
    for section, typ in _sections().items():
        for f in msgspec.structs.fields(typ):
            var = f"ERPGW_{section}_{f.name}".upper()
            if var in env:
                raw = env[var]
                value: Any = [s for s in raw.split(",") if s] if "list" in str(f.type) else raw
                doc.setdefault(section, {})[f.name] = value
    return doc


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _normalise_nats_url(doc: dict[str, Any], where: str) -> None:
    """``nats.url`` as a list of URLs or a comma-separated string -> one comma-joined string
    of checked server URLs (``actors.infra.bus.server_list``); raises ``ConfigError``."""
    nats_doc = doc.get("nats")
    if not isinstance(nats_doc, dict) or "url" not in nats_doc:
        return
    url = nats_doc["url"]
    if isinstance(url, str) and not url.strip():
        nats_doc["url"] = ""
        return
    if not isinstance(url, str) and not (
            isinstance(url, list) and all(isinstance(u, str) for u in url)):
        raise ConfigError(f"{where}nats.url: Expected a URL or a list of URLs, got "
                          f"`{type(url).__name__}`")
    try:
        nats_doc["url"] = ",".join(server_list(url))
    except ValueError as exc:
        raise ConfigError(f"{where}nats.url: {exc}", code="config.nats_url") from None


def load_config(path: Path | None = None, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults ← TOML file ← environment ← ``overrides`` (from CLI flags, dotted by section).

    Raises ``ConfigError`` naming the file and the offending setting.
    """
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} not found", code="config.missing") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    doc = _merge(doc, _env_overrides(os.environ if env is None else env))
    if overrides:
        doc = _merge(doc, overrides)
    where = f"{path}: " if path else ""
    _normalise_nats_url(doc, where)
    try:
        cfg = msgspec.convert(doc, Config, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if " - at `$." in text:
            msg, _, field = text.rpartition(" - at `$.")
            text = f"{field.rstrip('`')}: {msg}"
        raise ConfigError(f"{where}{text}") from exc
    _secret_lists_from_files(cfg)
    return cfg


def _secret_file_error(kind: SecretFileProblem, message: str) -> ConfigError:
    return ConfigError(message, code="auth.file_mode" if kind == "mode"
                       else "auth.file_unreadable")


def _secret_lists_from_files(cfg: Config) -> None:
    """Webhook signing secrets and usage tokens from their ``*_file`` (one per line, mode
    0600), when one is set. Raises ``ConfigError`` (``auth.file_mode``,
    ``auth.file_unreadable``) naming the setting and the file."""
    for section, name in (("billing", "webhook_secrets"), ("partner", "webhook_secrets"),
                          ("usage", "api_tokens")):
        sub = getattr(cfg, section)
        if path := getattr(sub, f"{name}_file"):
            text = read_secret_file(path, f"{section}.{name}_file", _secret_file_error)
            setattr(sub, name, [line.strip() for line in text.splitlines() if line.strip()])
