"""Peer (cw): what a FastStream user would deploy for webhooks: a FastAPI endpoint served by
uvicorn in front of the FastStream pipeline of peer (c).

``POST /webhooks/billing`` reads the raw body, checks ``Billing-Signature`` with the gateway's
own check (``contracts.platforms.signing.verify``), validates the event with pydantic models,
publishes the invoice with ``broker.publish(..., stream=...)`` (waiting for its PubAck) and
answers 200; a bad signature or body is answered 400 with ``{"code","message","path"}``. The
router, the ERP adapter and the revenue subscriber are peer (c)'s
(``faststream_path.Pipeline``), under the same ERP and revenue budgets. The load comes from
``bench._loadgen``, the generator of the gateway and of the webhook baselines; an event's
clock starts at its first POST.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from contracts._errors import SignatureError
from contracts.platforms.signing import SIGNATURE_HEADER, verify
from gateway.broker import free_port

from .._probe import Probe
from .._raw import BaselineConfig
from .._webhook import WEBHOOK_PATH, _generate
from .faststream_path import PUBLISH_TIMEOUT_S, Pipeline, delete_streams, invoice_in

__all__ = ["run_webhook_peer"]


class LineModel(BaseModel):
    id: str
    product: str
    amount: int


class LinesModel(BaseModel):
    data: list[LineModel]


class InvoiceModel(BaseModel):
    id: str
    number: str
    customer: str
    currency: str
    created: int
    period_start: int
    period_end: int
    subtotal: int
    tax: int
    total: int
    lines: LinesModel


class EventDataModel(BaseModel):
    object: InvoiceModel


class EventModel(BaseModel):
    id: str
    type: str
    created: int
    data: EventDataModel


def _problem(status: int, code: str, message: str, path: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "path": path}, status_code=status)


def make_app(pipe: Pipeline, probe: Probe, secret: str) -> FastAPI:
    """The FastAPI app of the webhook endpoint, publishing through ``pipe``'s broker."""
    app = FastAPI()
    run_id = pipe.cfg.run_id

    @app.post(WEBHOOK_PATH)
    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            verify(request.headers.get(SIGNATURE_HEADER), body, [secret], now=time.time())
        except SignatureError as exc:
            return _problem(400, exc.code, str(exc), f"headers.{SIGNATURE_HEADER}")
        try:
            event = EventModel.model_validate_json(body)
        except ValidationError as exc:
            return _problem(400, "body.invalid", str(exc), "$")
        inv = event.data.object
        probe.arrive(inv.id)
        msg = invoice_in(inv)
        try:
            await pipe.broker.publish(msg, pipe.in_subject, stream=pipe.in_stream.name,
                                      headers={"Nats-Msg-Id": f"{run_id}:{inv.id}"},
                                      timeout=PUBLISH_TIMEOUT_S)
        except Exception:  # not durable: the sender retries
            return _problem(503, "ingress.unavailable", "the event is not stored; retry", "$")
        return JSONResponse({"received": True})

    return app


async def run_webhook_peer(cfg: BaselineConfig) -> dict[str, Any]:
    """Run the FastAPI + FastStream peer once; the figures dict (``Probe.figures`` plus
    ``generator``)."""
    probe = Probe(cfg.events, cfg.box_pids)
    pipe = Pipeline(cfg, probe)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(pipe, probe, cfg.webhook_secret),
                                           host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="off"))
    gen: dict[str, Any] = {}
    complete = False
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8),
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        pipe.http = session
        await pipe.broker.start()
        serving = asyncio.ensure_future(server.serve())
        sampler = asyncio.ensure_future(probe.sample())
        try:
            while not server.started:
                if serving.done():
                    serving.result()  # raises what serve raised
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.02)
            probe.start()
            gen_task = asyncio.ensure_future(
                _generate(f"http://127.0.0.1:{port}{WEBHOOK_PATH}", cfg))
            waiter = asyncio.ensure_future(probe.wait(cfg.stall_timeout))
            await asyncio.wait([gen_task, waiter], return_when=asyncio.FIRST_COMPLETED)
            if gen_task.done() and gen_task.result().get("errors"):
                waiter.cancel()
            else:
                complete = await waiter
            gen = await gen_task
            if complete and cfg.revenue_drain_s > 0:
                await pipe.revenue.drain(cfg.events, cfg.revenue_drain_s)
            pipe.revenue.end()
        finally:
            server.should_exit = True
            sampler.cancel()
            await asyncio.gather(serving, sampler, return_exceptions=True)
            await pipe.broker.stop()
            await delete_streams(cfg, [pipe.in_stream.name, pipe.out_stream.name])
    sent_at: dict[str, float] = gen.pop("sent_at", {}) or {}
    if sent_at:
        probe.arrived = dict(sent_at)
    out = probe.figures("peerw", cfg.rate, complete,
                        generator_cpu_s=float(gen.get("cpu_s") or 0.0))
    out["generator"] = gen
    out["latency_source"] = ("per-event (the generator's first POST of the webhook to the ERP "
                             "bulk answer at the adapter)")
    out["variant"] = ("FastAPI (uvicorn) webhook endpoint, pydantic models, FastStream "
                      "publisher and subscribers (+ the batch revenue subscriber)")
    out["revenue"] = pipe.revenue.figures()
    return out
