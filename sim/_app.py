"""One aiohttp application serving every simulated platform on one port.

=========================================  ================================================
``GET  /healthz``                          ``{"ok": true}`` (503 ``{"ok": false}`` if the
                                           billing host task has stopped)
``POST /billing/v1/bill-runs``             start a bill run → 202 (``Idempotency-Key``)
``GET  /billing/v1/bill-runs/{id}``        its progress
``GET  /billing/v1/events``                the events list (``?after=&limit=``)
``GET  /billing/v1/events/{id}``           one webhook's delivery record
``GET  /billing/v1/customers[/{id}]``      customers (seeded; ``?starting_after=&limit=``)
``GET  /erp/v1/customers``                 customers named by the ERP's postings
``POST /erp/v1/journal-entries/bulk``      post journal entries
``POST /erp/v1/journal-entries``           post one journal entry
``GET  /erp/v1/journal-entries``           postings by ``?externalId=``
``GET  /erp/v1/gl/balances``               GL totals by ``?period=YYYY-MM``
``POST /erp/v1/periods/{YYYY-MM}/close``   close a period
``GET  /erp/v1/periods``                   the closed periods
``GET  /erp/v1/governance``                the account's limits and their use
``GET  /erp/v1/exchange-rates``            the daily rates by ``?date=YYYY-MM-DD&base=``
``POST /revenue/v1/batches``               upload billing lines (all-or-nothing)
``GET  /revenue/v1/batches/{id}``          one batch
``GET  /revenue/v1/reports/billings``      what was recorded per invoice (``?period=&after=``)
``POST /billing/v1/usage-records/bulk``    rate usage aggregates (``Idempotency-Key``)
``POST /sim/v1/usage-runs``                seeded usage records to send the gateway
``POST /erp/v1/vendor-bills``              record a vendor bill (``Idempotency-Key``)
``GET  /erp/v1/vendor-bills``              vendor bills (``?externalId=``)
``GET  /partner/v1/partners|tiers``        the partner programme
``GET  /partner/v1/attributions/{cust}``   who resells a customer (404: direct)
``POST /partner/v1/settlements``           record a settlement (``Idempotency-Key``)
``GET  /partner/v1/settlements``           commission statements (``?partner=``)
``POST /partner/v1/deal-runs``             start a deal run (webhooks to the gateway)
``GET  /partner/v1/deal-runs/{id}``        its progress
``GET  /partner/v1/deals/{id}``            a deal's latest version
``POST /billing/v1/subscriptions``         create a subscription (``Idempotency-Key``)
``GET  /billing/v1/subscriptions/{id}``    one subscription
``POST /billing/v1/subscriptions/{id}/cancel``  cancel it (idempotent)
``POST /billing/v1/subscription-changes``  amend/renew/cancel subscriptions (webhooks)
``GET  /billing/v1/subscription-changes/{id}``  that run's progress
``POST /erp/v1/sales-orders/{id}/revise``  restate an order's lines at a later version
``POST /erp/v1/sales-orders``              create a sales order (``Idempotency-Key``)
``GET  /erp/v1/sales-orders``              orders by ``?externalId=``
``POST /erp/v1/sales-orders/{id}/close``   close an order (a reversal; idempotent)
``PUT  /revenue/v1/contracts/{id}``        upsert a revenue contract by version
``GET  /revenue/v1/contracts/{id}``        one contract and its schedule
``GET  /revenue/v1/recognition``           recognised per currency by ``?period=YYYY-MM``
``GET  /revenue/v1/recognition/contracts`` recognised per contract and product (``?period=``)
``GET  /cpq/v1/products``                  the catalog
``GET  /cpq/v1/price-books``               list prices per currency (``?currency=``)
``POST /cpq/v1/price``                     price a quote (configurable latency)
``GET|PUT|DELETE /sim/v1/faults``          runtime fault settings
``GET  /sim/v1/scenario``                  the loaded scenario and its clock
``GET  /sim/v1/audit``                     the ground-truth ``AuditReport``
``POST /sim/v1/reset``                     forget all state (ids keep counting)
``GET  /openapi.json``                     OpenAPI 3.1 of everything (also per service:
                                           ``/billing/``, ``/erp/``, ``/sim/openapi.json``)
=========================================  ================================================

Every billing route is behind the request-rate limit and every ERP route but governance behind
the concurrency limit (both off by default); every platform route is behind the fault guard of
its endpoint (see ``sim._control``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import anyio
import msgspec
from aiohttp import web

from ._audit import AuditReport, FaultInputs, FollowUpReport, compute_audit
from ._billing import REQUEST_TIMEOUT_S, BillingService, BillRunOptions
from ._config import SimConfig
from ._control import FaultControl, Handler
from ._cpq import CpqService
from ._customers import CustomerService
from ._deals import DealService, deal_audit
from ._erp import ErpService
from ._erp_orders import SalesOrderService
from ._erp_payables import PayablesService
from ._http import SimHTTPError, error_middleware, json_response
from ._netsuite import NetSuiteService
from ._openapi import SERVICES, document
from ._partner import PartnerService, commissioned_invoices, settlement_audit
from ._revenue import RevenueService, revenue_audit
from ._revenue_contracts import RevenueContractService
from ._sub_changes import ChangeService, lifecycle_audit
from ._subscriptions import SubscriptionService
from ._tls import server_context, webhook_context
from ._usage import UsageService, usage_audit

__all__ = ["SHUTDOWN_TIMEOUT_S", "create_app", "serve"]

log = logging.getLogger("sim")

# How long shutdown waits for in-flight requests; stalled fault requests are woken anyway.
SHUTDOWN_TIMEOUT_S = 2.0

CONFIG_KEY = web.AppKey("sim.config", SimConfig)
BILLING_KEY = web.AppKey("sim.billing", BillingService)
ERP_KEY = web.AppKey("sim.erp", ErpService)
NETSUITE_KEY = web.AppKey("sim.netsuite", NetSuiteService)
CONTROL_KEY = web.AppKey("sim.control", FaultControl)
REVENUE_KEY = web.AppKey("sim.revenue", RevenueService)
HOST_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("sim.billing_host")
USAGE_KEY = web.AppKey("sim.usage", UsageService)
PARTNER_KEY = web.AppKey("sim.partner", PartnerService)
PAYABLES_KEY = web.AppKey("sim.payables", PayablesService)
DEALS_KEY = web.AppKey("sim.deals", DealService)
SUBSCRIPTIONS_KEY = web.AppKey("sim.subscriptions", SubscriptionService)
ORDERS_KEY = web.AppKey("sim.sales_orders", SalesOrderService)
CONTRACTS_KEY = web.AppKey("sim.revenue_contracts", RevenueContractService)
CHANGES_KEY = web.AppKey("sim.subscription_changes", ChangeService)


class _Health(msgspec.Struct, frozen=True):
    ok: bool


class _Reset(msgspec.Struct, frozen=True):
    reset: bool = True


def create_app(config: SimConfig | None = None) -> web.Application:
    """The simulator's ``web.Application`` for ``config`` (default ``SimConfig()``).

    Nothing runs until the app starts: the cleanup context then opens the webhook client
    session (``TCPConnector(limit=delivery_concurrency)``) and starts the billing host task,
    and closes both on cleanup. Raises ``ValueError`` for an unusable config
    (``delivery_concurrency`` or ``erp_max_bulk`` below 1, a ``webhook_url`` that is not
    http(s), TLS files that cannot be used: the message names the setting).
    """
    cfg = config or SimConfig()
    server_context(cfg)
    webhook_context(cfg)
    control = FaultControl(cfg.seed, cfg.scenario)
    billing = BillingService(cfg, control)
    erp = ErpService(cfg, control)
    revenue = RevenueService(cfg, control)
    cpq = CpqService(cfg, control)
    customers = CustomerService(cfg.seed, billing, erp)
    # Big enough for a full bulk request; aiohttp's 1 MiB default is not.
    app = web.Application(
        middlewares=[error_middleware], client_max_size=max(1 << 20, cfg.erp_max_bulk * 16_384)
    )
    app[CONFIG_KEY] = cfg
    app[BILLING_KEY] = billing
    app[ERP_KEY] = erp
    app[CONTROL_KEY] = control
    app[REVENUE_KEY] = revenue
    usage = app[USAGE_KEY] = UsageService()
    partner = app[PARTNER_KEY] = PartnerService(cfg.seed)
    payables = app[PAYABLES_KEY] = PayablesService()
    # Flow 1 (deal to contract): the deal engine decides which sales orders and revenue
    # contracts the ERP and the revenue platform refuse (its injected saga faults).
    deals = app[DEALS_KEY] = DealService(
        seed=cfg.seed, webhook_url=cfg.partner_webhook_url,
        webhook_secret=cfg.partner_webhook_secret, attribute=partner.portal.attribute)
    subscriptions = app[SUBSCRIPTIONS_KEY] = SubscriptionService()
    orders = app[ORDERS_KEY] = SalesOrderService(deals.rejects_order)
    contracts = app[CONTRACTS_KEY] = RevenueContractService(deals.rejects_contract)
    changes = app[CHANGES_KEY] = ChangeService(
        subscriptions.book, seed=cfg.seed, webhook_url=cfg.webhook_url,
        webhook_secret=cfg.webhook_secret, dialect=cfg.billing_dialect)
    app.cleanup_ctx.append(_billing_host)
    app.on_shutdown.append(control.shutdown)

    def bill(endpoint: str, handler: Handler) -> Handler:
        return billing.limited(control.guard("billing", endpoint, handler))

    def erp_route(endpoint: str, handler: Handler) -> Handler:
        return erp.gate(control.guard("erp", endpoint, handler))

    r = app.router
    r.add_get("/healthz", _healthz)
    r.add_post("/billing/v1/bill-runs", bill("bill-runs", billing.create_bill_run))
    r.add_get("/billing/v1/bill-runs/{id}", bill("bill-runs", billing.get_bill_run))
    r.add_get("/billing/v1/events", bill("events", billing.list_events))
    r.add_get("/billing/v1/events/{id}", bill("events", billing.get_event))
    r.add_get("/v1/events", bill("stripe.events", billing.stripe_events))
    r.add_get("/v1/invoices", bill("stripe.invoices", billing.stripe_invoices))
    r.add_get("/billing/v1/customers", bill("customers", customers.list_billing))
    r.add_get("/billing/v1/customers/{id}", bill("customers", customers.get_billing))
    r.add_get("/erp/v1/customers", erp_route("customers", customers.list_erp))
    if cfg.erp_dialect == "netsuite":
        # The journal entries speak NetSuite REST instead of the bulk API (sim/_netsuite.py).
        netsuite = app[NETSUITE_KEY] = NetSuiteService(
            erp, control, seed=cfg.seed, concurrency_limit=cfg.netsuite_concurrency_limit,
            latency_ms=cfg.netsuite_latency_ms)
        record = "/services/rest/record/v1/journalEntry/{ref}"
        r.add_put(record, netsuite.route("journalEntry", netsuite.upsert))
        r.add_get(record, netsuite.route("journalEntry", netsuite.get))
        r.add_post("/services/rest/query/v1/suiteql", netsuite.route("suiteql", netsuite.suiteql))
        job = "/services/rest/async/v1/job/{job}"
        r.add_get(job, netsuite.route("async", netsuite.get_job))
        r.add_get(job + "/task", netsuite.route("async", netsuite.get_tasks))
        r.add_get(job + "/task/{task}/result", netsuite.route("async", netsuite.get_task_result))
    else:
        r.add_post("/erp/v1/journal-entries/bulk",
                   erp_route("journal-entries.bulk", erp.post_bulk))
        r.add_post("/erp/v1/journal-entries", erp_route("journal-entries", erp.post_one))
    r.add_get("/erp/v1/journal-entries", erp_route("journal-entries", erp.lookup))
    r.add_get("/erp/v1/gl/balances", erp_route("gl.balances", erp.gl_balances))
    r.add_post("/erp/v1/periods/{period}/close", erp_route("periods", erp.close_period))
    r.add_get("/erp/v1/periods", erp_route("periods", erp.list_periods))
    r.add_get("/erp/v1/governance", control.guard("erp", "governance", erp.governance))
    r.add_get("/erp/v1/exchange-rates", erp_route("exchange-rates", erp.exchange_rates))
    r.add_post("/erp/v1/vendor-bills", erp_route("vendor-bills", payables.post_bill))
    r.add_get("/erp/v1/vendor-bills", erp_route("vendor-bills", payables.list_bills))
    r.add_get("/partner/v1/partners", control.guard("partner", "partners", partner.partners))
    r.add_get("/partner/v1/tiers", control.guard("partner", "tiers", partner.tiers))
    r.add_get("/partner/v1/attributions/{customer}",
              control.guard("partner", "attributions", partner.attribution))
    r.add_post("/partner/v1/settlements",
               control.guard("partner", "settlements", partner.post_settlement))
    r.add_get("/partner/v1/settlements",
              control.guard("partner", "settlements", partner.list_settlements))
    r.add_post("/billing/v1/usage-records/bulk",
               bill("usage-records.bulk", usage.post_bulk))
    r.add_post("/sim/v1/usage-runs", usage.create_run)
    r.add_post("/partner/v1/deal-runs", control.guard("partner", "deal-runs", deals.create_run))
    r.add_get("/partner/v1/deal-runs/{id}", control.guard("partner", "deal-runs", deals.get_run))
    r.add_get("/partner/v1/deals/{id}", control.guard("partner", "deals", deals.get_deal))
    r.add_post("/billing/v1/subscriptions", bill("subscriptions", subscriptions.create))
    r.add_get("/billing/v1/subscriptions/{id}", bill("subscriptions", subscriptions.get))
    r.add_post("/billing/v1/subscriptions/{id}/cancel",
               bill("subscriptions", subscriptions.cancel))
    r.add_post("/erp/v1/sales-orders", erp_route("sales-orders", orders.create))
    r.add_get("/erp/v1/sales-orders", erp_route("sales-orders", orders.lookup))
    r.add_post("/erp/v1/sales-orders/{id}/close", erp_route("sales-orders", orders.close))
    r.add_post("/erp/v1/sales-orders/{id}/revise", erp_route("sales-orders", orders.revise))
    r.add_post("/billing/v1/subscription-changes", bill("subscription-changes",
                                                       changes.create_run))
    r.add_get("/billing/v1/subscription-changes/{id}", bill("subscription-changes",
                                                           changes.get_run))
    r.add_put("/revenue/v1/contracts/{id}", control.guard("revenue", "contracts", contracts.put))
    r.add_get("/revenue/v1/contracts/{id}", control.guard("revenue", "contracts", contracts.get))
    r.add_get("/revenue/v1/recognition",
              control.guard("revenue", "recognition", contracts.recognition))
    r.add_get("/revenue/v1/recognition/contracts",
              control.guard("revenue", "recognition", contracts.recognition_detail))
    r.add_post("/revenue/v1/batches", control.guard("revenue", "batches", revenue.upload))
    r.add_get("/revenue/v1/batches/{id}", control.guard("revenue", "batches", revenue.get_batch))
    r.add_get("/revenue/v1/reports/billings",
              control.guard("revenue", "reports", revenue.billings_report))
    r.add_get("/cpq/v1/products", control.guard("cpq", "products", cpq.products))
    r.add_get("/cpq/v1/price-books", control.guard("cpq", "price-books", cpq.price_books))
    r.add_post("/cpq/v1/price", control.guard("cpq", "price", cpq.quote))
    r.add_get("/sim/v1/faults", control.get_faults)
    r.add_put("/sim/v1/faults", control.put_faults)
    r.add_delete("/sim/v1/faults", control.delete_faults)
    r.add_get("/sim/v1/scenario", control.get_scenario)
    r.add_get("/sim/v1/audit", _audit)
    r.add_post("/sim/v1/reset", _reset)
    for service in ("all", *SERVICES):
        prefix = "" if service == "all" else f"/{service}"
        r.add_get(f"{prefix}/openapi.json", _openapi(document(service)))
    return app


async def _billing_host(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the webhook session and the host task, for the app's life.

    The host task runs the billing host and the scenario driver in one task group. It is the
    one task the sim creates outside a task group: aiohttp's startup and cleanup hooks are not
    one scope, so a task group cannot span them. It is cancelled and awaited on cleanup,
    before the session closes; a crash of it is re-raised there.
    """
    cfg = app[CONFIG_KEY]
    control = app[CONTROL_KEY]
    control.start_clock()
    if cfg.scenario is not None:
        for line in cfg.scenario.describe():
            log.info("%s", line)
    connector = aiohttp.TCPConnector(limit=cfg.delivery_concurrency, ssl=webhook_context(cfg))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        host = asyncio.create_task(_host(app, session), name="sim.billing.host")
        host.add_done_callback(_log_crash)
        app[HOST_KEY] = host
        try:
            yield
        finally:
            host.cancel()
            await asyncio.wait([host])
            if not host.cancelled() and host.exception() is not None:
                raise RuntimeError("the billing host task crashed") from host.exception()


async def _host(app: web.Application, session: aiohttp.ClientSession) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(app[BILLING_KEY].run, session)
        tg.start_soon(app[DEALS_KEY].run, session)
        tg.start_soon(app[CHANGES_KEY].run, session)
        tg.start_soon(_drive_scenario, app)


async def _drive_scenario(app: web.Application) -> None:
    """Fire the scenario's bill runs at their times (seconds on the scenario clock)."""
    cfg = app[CONFIG_KEY]
    if cfg.scenario is None:
        return
    control = app[CONTROL_KEY]
    for run in sorted(cfg.scenario.bill_run, key=lambda r: r.at_s):
        wait = run.at_s - control.elapsed()
        if wait > 0:
            await anyio.sleep(wait)
        try:
            run_id = app[BILLING_KEY].start_bill_run(run.invoices, run.rate, BillRunOptions(
                amend_rate=run.amend_rate, reorder_amendments=run.reorder_amendments,
                credit_memo_rate=run.credit_memo_rate, payment_rate=run.payment_rate))
        except SimHTTPError as exc:
            log.warning("scenario bill run at %.1f s not started: %s", run.at_s, exc.message)
            continue
        control.bill_runs_started.append(run_id)
        log.info("scenario: bill run %s started (%d invoices, rate %g/s)", run_id,
                 run.invoices, run.rate)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("billing host task crashed", exc_info=task.exception())


async def _healthz(request: web.Request) -> web.Response:
    host = request.app.get(HOST_KEY)
    ok = host is not None and not host.done()
    return json_response(_Health(ok=ok), status=200 if ok else 503)


async def _audit(request: web.Request) -> web.Response:
    """``GET /sim/v1/audit``: ``AuditReport`` over everything since start or the last reset."""
    billing = request.app[BILLING_KEY]
    deliveries = billing.deliveries()
    notes, payments = billing.accepted_followups()
    stats, reordered = billing.fault_stats()
    faults = FaultInputs(
        webhook_statuses={mode: dict(s.statuses) for mode, s in stats.items()},
        reordered=reordered,
        http={k: dict(v) for k, v in request.app[CONTROL_KEY].injected.items()},
    )
    report: AuditReport = compute_audit(
        [d.invoice for d in deliveries],
        {d.invoice.invoice_id for d in deliveries if d.accepted_at is not None},
        request.app[ERP_KEY].ledger.postings,
        time.time(),
        faults=faults,
        rejected=request.app[ERP_KEY].ledger.rejections,
        altered=[(a.external_id, a.currency, a.recorded - a.sent)
                 for a in request.app[ERP_KEY].ledger.alterations],
        # A zero payment (an invoice fully credited) has nothing to post.
        followups={"credit_memos": [n.id for n in notes],
                   "payments": [p.id for p in payments if p.amount > 0]},
    )
    revenue = revenue_audit(request.app[REVENUE_KEY].book,
                            (d.invoice.invoice_id for d in deliveries))
    followups = billing.followup_counts()
    report = msgspec.structs.replace(
        report, revenue=revenue,
        credit_memos=FollowUpReport(*followups["credit_memos"]),
        payments=FollowUpReport(*followups["payments"]))
    partner = request.app[PARTNER_KEY].portal
    bills = request.app[PAYABLES_KEY].book.bills
    accepted_at = billing.followup_accepted_at()
    report = msgspec.structs.replace(report, settlements=settlement_audit(
        partner, (b.external_id for b in bills),
        commissioned_invoices(partner, payments, accepted_at),
        payables_at={b.external_id: b.accepted_at for b in reversed(bills)},
        paid_at={p.invoice: accepted_at[p.id] for p in payments if p.id in accepted_at}))
    report = msgspec.structs.replace(report, usage=usage_audit(
        request.app[USAGE_KEY].book, (line for _, line in request.app[REVENUE_KEY].book.lines)))
    report = msgspec.structs.replace(report, deals=deal_audit(
        request.app[DEALS_KEY].registry, request.app[SUBSCRIPTIONS_KEY].book,
        request.app[ORDERS_KEY].book, request.app[CONTRACTS_KEY].book),
        subscriptions=lifecycle_audit(
            request.app[SUBSCRIPTIONS_KEY].book, request.app[ORDERS_KEY].book,
            request.app[CONTRACTS_KEY].book, request.app[CHANGES_KEY]))
    return json_response(report)


def _openapi(doc: dict[str, object]) -> Handler:
    body = json_response(doc).body

    async def serve_document(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return serve_document


async def _reset(request: web.Request) -> web.Response:
    """``POST /sim/v1/reset``: drop bill runs, deliveries, postings, keys, periods, runtime
    faults and fault counters (the scenario and its clock go on)."""
    request.app[BILLING_KEY].reset()
    request.app[ERP_KEY].reset()
    if NETSUITE_KEY in request.app:
        request.app[NETSUITE_KEY].reset()
    request.app[CONTROL_KEY].reset()
    request.app[REVENUE_KEY].reset()
    request.app[USAGE_KEY].reset()
    request.app[PARTNER_KEY].reset()
    request.app[PAYABLES_KEY].reset()
    request.app[DEALS_KEY].reset()
    request.app[SUBSCRIPTIONS_KEY].reset()
    request.app[CHANGES_KEY].reset(request.app[SUBSCRIPTIONS_KEY].book)
    request.app[ORDERS_KEY].reset()
    request.app[CONTRACTS_KEY].reset()
    return json_response(_Reset())


async def serve(config: SimConfig, *, ready: anyio.Event | None = None) -> None:
    """Serve the simulator on ``config.host:config.port`` until cancelled.

    Sets ``ready`` once the socket listens. On cancellation, shuts down within about
    ``SHUTDOWN_TIMEOUT_S`` (shielded, so cleanup finishes) and re-raises. Raises ``OSError``
    naming ``host:port`` when it cannot listen there (port busy, bad address).
    """
    runner = web.AppRunner(create_app(config), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        tls = server_context(config)
        site = web.TCPSite(runner, config.host, config.port, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"simulator cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
            ) from exc
        log.info("simulator listening on %s://%s:%d", "https" if tls else "http",
                 config.host, config.port)
        if ready is not None:
            ready.set()
        await anyio.sleep_forever()
    finally:
        with anyio.move_on_after(SHUTDOWN_TIMEOUT_S + 5.0, shield=True):
            await runner.cleanup()
