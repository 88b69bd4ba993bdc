"""Integration fixtures: a gateway in this process against a real broker, and helpers to
build signed billing webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

import sim
from actors.infra import NatsBus
from actors.infra.state import provision_state
from contracts import Subjects
from contracts.platforms.billing import (
    BillingEvent,
    BillingInvoice,
    BillingInvoiceLine,
    EventData,
    LineList,
)
from contracts.platforms.signing import SIGNATURE_HEADER, sign
from gateway.app import run_gateway
from gateway.broker import EmbeddedBroker, EmbeddedCluster, free_port
from gateway.config import Config, load_config
from gateway.identities import gateway_consumers

SECRET = "whsec_test"

pytestmark = pytest.mark.integration


def billing_event(n: int, *, total_delta: int = 0, currency: str = "usd") -> BillingEvent:
    line = BillingInvoiceLine(id=f"il_{n}", product="prod_seat", description="seat",
                              quantity=2, unit_amount=1500, amount=3000)
    now = int(time.time())
    inv = BillingInvoice(id=f"in_{n:06d}", number=f"INV-{n}", customer="cus_1",
                         currency=currency, created=now, period_start=now - 86400 * 30,
                         period_end=now, lines=LineList(data=[line]), subtotal=3000, tax=300,
                         total=3300 + total_delta)
    return BillingEvent(id=f"evt_{n}", type="invoice.finalized", created=now,
                        data=EventData(object=inv))


def find_child(tree: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The statistics of the actor ``name`` in a supervision tree's statistics."""
    for child in tree.get("children", ()):
        if child["name"] == name:
            found: dict[str, Any] = child["actor"]
            return found
        deeper = find_child(child.get("actor") or {}, name)
        if deeper is not None:
            return deeper
    return None


async def actor_stats(admin_url: str, name: str) -> dict[str, Any]:
    """The statistics of the actor ``name``, from the status tree (``/status``) of the
    gateway's admin listener at ``admin_url``."""
    async with aiohttp.ClientSession() as s, s.get(f"{admin_url}/status") as r:
        doc = msgspec.json.decode(await r.read())
    stats = find_child(doc["actors"], name)
    assert stats is not None, f"no actor {name} in /status"
    return stats


def signed(body: bytes, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(secret, body, int(time.time()) if at is None else at),
            "Content-Type": "application/json"}


@dataclass
class LiveGateway:
    cfg: Config
    bus: NatsBus
    url: str
    subjects: Subjects
    sim_url: str

    @property
    def admin_url(self) -> str:
        """The admin listener (probes, ``/status``, ``/metrics``, the synchronous lane)."""
        return f"http://127.0.0.1:{self.cfg.admin.port}"

    def nats_options(self, role: str = "admin") -> dict[str, Any]:
        """``nats.connect`` keyword arguments of broker identity ``role``."""
        from gateway.identities import auth_for

        auth = auth_for(self.cfg, role)
        return auth.options() if auth is not None else {}

    async def erp_postings(self, external_id: str) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.get(
                f"{self.sim_url}/erp/v1/journal-entries",
                params={"externalId": external_id}) as r:
            assert r.status == 200
            doc = msgspec.json.decode(await r.read())
            items: list[dict[str, Any]] = doc["items"]
            return items

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
        async with aiohttp.ClientSession() as s, s.post(self.url, data=body,
                                                        headers=headers) as r:
            return r.status, msgspec.json.decode(await r.read())

    async def wait_idle(self, timeout: float = 60.0) -> None:
        """Until every durable consumer of the gateway (the lanes', the dead letters' and the
        audit trail's) has nothing pending nor unacknowledged in two reads in a row (no
        redelivery can be due): the moment to count."""
        idle_reads = 0
        with anyio.fail_after(timeout):  # a guard against a hang, not a speed target
            while idle_reads < 2:
                states = [await self.bus.consumer_pending(stream, durable)
                          for stream, durable in gateway_consumers(self.subjects)]
                idle_reads = idle_reads + 1 if all(s == (0, 0) for s in states) else 0
                await anyio.sleep(0.1)

    async def billing_messages(self) -> int:
        """Invoice events stored in the billing lane (what the ingress published)."""
        return await self.bus.stream_messages(self.subjects.stream("billing"),
                                              self.subjects.invoice_issued)


async def _start(coro: Any, ready: anyio.Event) -> asyncio.Task[None]:
    # A plain task, not a task group: pytest-asyncio runs fixture setup and teardown in
    # different tasks, and a cancel scope must be exited in the task that entered it.
    task = asyncio.create_task(coro)
    with anyio.fail_after(20):
        while not ready.is_set():
            if task.done():
                task.result()  # raises the start-up error
            await anyio.sleep(0.01)
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmbeddedCluster]:
    """A 3-node JetStream cluster on loopback, its role seeds in ``tmp_path/identities``."""
    c = EmbeddedCluster(tmp_path / "cluster", size=3, identities_dir=tmp_path / "identities")
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


@pytest.fixture
async def sim_url() -> AsyncIterator[str]:
    """The simulator (billing + ERP) in this process, on a free port."""
    cfg = sim.SimConfig(port=free_port(), seed=3)
    ready = anyio.Event()
    task = await _start(sim.serve(cfg, ready=ready), ready)
    try:
        yield f"http://127.0.0.1:{cfg.port}"
    finally:
        await _stop(task)


@contextlib.asynccontextmanager
async def running_gateway(broker: EmbeddedBroker, tmp_path: Path, sim_url: str,
                          span_exporter: object = None,
                          **overrides: Any) -> AsyncIterator[LiveGateway]:
    """A gateway in this process on a free port, every platform pointed at the in-process
    simulator; ``overrides`` are config sections merged over that (e.g. ``sla={...}``);
    ``span_exporter`` gets the spans when ``otel={"enabled": True}`` is among them."""
    port = free_port()
    doc: dict[str, Any] = {
        "data_dir": str(tmp_path / "gw"),
        "nats": {"url": broker.url},
        "http": {"port": port, "max_body_bytes": 64 * 1024},
        "admin": {"port": free_port()},
        "billing": {"webhook_secrets": [SECRET]},
        "erp": {"base_url": sim_url, "timeout_s": 5.0},
        "revenue": {"base_url": sim_url},
        "cpq": {"base_url": sim_url},
        "partner": {"base_url": sim_url},
        "reconcile": {"billing_url": sim_url},
    }
    cfg = load_config(env={}, overrides={**doc, **overrides})
    bus = await NatsBus.connect(broker.url, auth=broker.auth())
    ready = anyio.Event()
    task = await _start(run_gateway(cfg, ready=ready, handle_signals=False,
                                     span_exporter=span_exporter), ready)
    try:
        yield LiveGateway(cfg, bus, f"http://127.0.0.1:{port}/webhooks/billing",
                          Subjects(prefix=cfg.nats.prefix), sim_url)
    finally:
        await _stop(task)
        await bus.close()


@pytest.fixture
async def live_gateway(broker: EmbeddedBroker, tmp_path: Path,
                       sim_url: str) -> AsyncIterator[LiveGateway]:
    async with running_gateway(broker, tmp_path, sim_url) as gw:
        yield gw


@contextlib.asynccontextmanager
async def role_buses(broker: EmbeddedBroker, subjects: Subjects, *, lease_ttl_s: float = 10.0
                     ) -> AsyncIterator[Callable[[str], Awaitable[NatsBus]]]:
    """Provisions the shared buckets (as admin), then opens connections of a role on demand,
    each closed at the end."""
    opened: list[NatsBus] = []

    async def connect(role: str) -> NatsBus:
        bus = await NatsBus.connect(broker.url, auth=broker.auth(role), name=f"test-{role}")
        opened.append(bus)
        return bus

    try:
        await provision_state(await connect("admin"), subjects, lease_ttl_s=lease_ttl_s)
        yield connect
    finally:
        for bus in opened:
            await bus.close()
