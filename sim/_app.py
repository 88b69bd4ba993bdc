"""One aiohttp application serving every simulated platform on one port.

=========================================  ================================================
``GET  /healthz``                          ``{"ok": true}`` (503 ``{"ok": false}`` if the
                                           billing host task has stopped)
``POST /billing/v1/bill-runs``             start a bill run → 202
``GET  /billing/v1/bill-runs/{id}``        its progress
``GET  /billing/v1/events/{id}``           one webhook's delivery record
``POST /erp/v1/journal-entries/bulk``      post journal entries
``GET  /erp/v1/journal-entries``           postings by ``?externalId=``
``GET|PUT|DELETE /sim/v1/faults``          fault hooks
``GET  /sim/v1/audit``                     the ground-truth ``AuditReport``
``POST /sim/v1/reset``                     forget all state (ids keep counting)
=========================================  ================================================
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

from ._audit import AuditReport, compute_audit
from ._billing import REQUEST_TIMEOUT_S, BillingService
from ._config import SimConfig
from ._erp import ErpService
from ._http import error_middleware, json_response

__all__ = ["SHUTDOWN_TIMEOUT_S", "create_app", "serve"]

log = logging.getLogger("sim")

# How long shutdown waits for in-flight requests; stalled fault requests are woken anyway.
SHUTDOWN_TIMEOUT_S = 2.0

CONFIG_KEY = web.AppKey("sim.config", SimConfig)
BILLING_KEY = web.AppKey("sim.billing", BillingService)
ERP_KEY = web.AppKey("sim.erp", ErpService)
HOST_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("sim.billing_host")


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
    http(s)).
    """
    cfg = config or SimConfig()
    billing = BillingService(cfg)
    erp = ErpService(cfg)
    # Big enough for a full bulk request; aiohttp's 1 MiB default is not.
    app = web.Application(
        middlewares=[error_middleware], client_max_size=max(1 << 20, cfg.erp_max_bulk * 16_384)
    )
    app[CONFIG_KEY] = cfg
    app[BILLING_KEY] = billing
    app[ERP_KEY] = erp
    app.cleanup_ctx.append(_billing_host)
    app.on_shutdown.append(erp.shutdown)

    r = app.router
    r.add_get("/healthz", _healthz)
    r.add_post("/billing/v1/bill-runs", billing.create_bill_run)
    r.add_get("/billing/v1/bill-runs/{id}", billing.get_bill_run)
    r.add_get("/billing/v1/events/{id}", billing.get_event)
    r.add_post("/erp/v1/journal-entries/bulk", erp.post_bulk)
    r.add_get("/erp/v1/journal-entries", erp.lookup)
    r.add_get("/sim/v1/faults", erp.get_faults)
    r.add_put("/sim/v1/faults", erp.put_faults)
    r.add_delete("/sim/v1/faults", erp.delete_faults)
    r.add_get("/sim/v1/audit", _audit)
    r.add_post("/sim/v1/reset", _reset)
    return app


async def _billing_host(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the webhook session and the billing host task, for the app's life.

    The host task is the one task the sim creates outside a task group: aiohttp's startup and
    cleanup hooks are not one scope, so a task group cannot span them. It is cancelled and
    awaited on cleanup, before the session closes; a crash of it is re-raised there.
    """
    cfg = app[CONFIG_KEY]
    connector = aiohttp.TCPConnector(limit=cfg.delivery_concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        host = asyncio.create_task(app[BILLING_KEY].run(session), name="sim.billing.host")
        host.add_done_callback(_log_crash)
        app[HOST_KEY] = host
        try:
            yield
        finally:
            host.cancel()
            await asyncio.wait([host])
            if not host.cancelled() and host.exception() is not None:
                raise RuntimeError("the billing host task crashed") from host.exception()


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("billing host task crashed", exc_info=task.exception())


async def _healthz(request: web.Request) -> web.Response:
    host = request.app.get(HOST_KEY)
    ok = host is not None and not host.done()
    return json_response(_Health(ok=ok), status=200 if ok else 503)


async def _audit(request: web.Request) -> web.Response:
    """``GET /sim/v1/audit``: ``AuditReport`` over everything since start or the last reset."""
    deliveries = request.app[BILLING_KEY].deliveries()
    report: AuditReport = compute_audit(
        [d.invoice for d in deliveries],
        {d.invoice.invoice_id for d in deliveries if d.accepted_at is not None},
        request.app[ERP_KEY].ledger.postings,
        time.time(),
    )
    return json_response(report)


async def _reset(request: web.Request) -> web.Response:
    """``POST /sim/v1/reset``: drop bill runs, deliveries, postings, keys and faults."""
    request.app[BILLING_KEY].reset()
    request.app[ERP_KEY].reset()
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
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"simulator cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
            ) from exc
        log.info("simulator listening on http://%s:%d", config.host, config.port)
        if ready is not None:
            ready.set()
        await anyio.sleep_forever()
    finally:
        with anyio.move_on_after(SHUTDOWN_TIMEOUT_S + 5.0, shield=True):
            await runner.cleanup()
