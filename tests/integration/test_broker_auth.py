"""S12/S13: the embedded broker authenticates every client and holds each role to its lists.

A real nats-server with the gateway's streams and consumers provisioned (as admin); then each
identity tries what it must not do. A refused publish is reported by the server as a
``Permissions Violation`` error on the client's connection (the message is dropped); the test
waits for that error, then reads the stream back to show it is intact.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import nats.errors
import nats.js.errors
import nkeys
import pytest
import pytest_asyncio

from actors.infra import NatsBus
from actors.infra.bus import BrokerRejected, NatsAuth
from contracts import Subjects
from gateway.app import provision
from gateway.broker import EmbeddedBroker, free_port
from gateway.config import load_config
from gateway.identities import ROLES, IdentityError, ensure_seeds, public_key, seed_path

pytestmark = pytest.mark.integration

S = Subjects()
BILLING = S.stream("billing")


class Client:
    """A raw connection as ``role`` that records the server's asynchronous errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.changed = anyio.Event()
        self.nc: Any = None

    async def _error(self, exc: Exception) -> None:
        self.errors.append(str(exc))
        self.changed.set()

    async def violation(self, needle: str) -> str:
        """The first error naming a permissions violation on ``needle`` (waits for it)."""
        with anyio.fail_after(10):
            while True:
                for e in self.errors:
                    # (nats-py lower-cases the server's error text, subject included)
                    if "permissions violation" in e.lower() and needle.lower() in e.lower():
                        return e
                self.changed = anyio.Event()
                await self.changed.wait()


async def _provision(broker: EmbeddedBroker, data_dir: Path) -> EmbeddedBroker:
    cfg = load_config(env={}, overrides={"nats": {"url": broker.url},
                                         "data_dir": str(data_dir)})
    bus = await NatsBus.connect(broker.url, auth=broker.auth("admin"))
    try:
        await provision(bus, cfg)
    finally:
        await bus.close()
    return broker


@pytest.fixture
async def provisioned(broker: EmbeddedBroker, tmp_path: Path) -> EmbeddedBroker:
    return await _provision(broker, tmp_path / "gw")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def refusing(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedBroker]:
    """One provisioned broker for the tests that only try what must be refused: each checks
    that the stream is as it found it, so one role's slip fails that role's own test."""
    tmp = tmp_path_factory.mktemp("refusing")
    broker = EmbeddedBroker(tmp / "nats", port=free_port(),
                            identities_dir=tmp / "gw" / "identities")
    await broker.start()
    try:
        yield await _provision(broker, tmp / "gw")
    finally:
        await broker.stop()


async def connect(broker: EmbeddedBroker, role: str) -> Client:
    c = Client()
    c.nc = await nats.connect(broker.url, error_cb=c._error, allow_reconnect=False,
                              **broker.nats_options(role))
    return c


async def stream_config(broker: EmbeddedBroker) -> dict[str, Any]:
    nc = await nats.connect(broker.url, **broker.nats_options("admin"))
    try:
        info = await nc.jetstream().stream_info(BILLING)
        return {"max_age": info.config.max_age, "subjects": info.config.subjects,
                "deny_delete": info.config.deny_delete, "deny_purge": info.config.deny_purge,
                "messages": info.state.messages}
    finally:
        await nc.close()


async def test_anonymous_and_unknown_keys_are_refused(broker: EmbeddedBroker,
                                                      tmp_path: Path) -> None:
    with pytest.raises(BrokerRejected) as anon:
        await NatsBus.connect(broker.url, wait_for_server=10)
    assert anon.value.code == "broker.auth" and "Authorization Violation" in str(anon.value)
    # A well-formed NKey the server's config does not name.
    stranger = tmp_path / "stranger.nk"
    stranger.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    stranger.chmod(0o600)
    with pytest.raises(BrokerRejected):
        await NatsBus.connect(broker.url, wait_for_server=10,
                              auth=NatsAuth(seed_file=str(stranger)))
    # The raw client sees the server's own words.
    raw = nats.NATS()
    try:
        with pytest.raises(nats.errors.Error) as refused:
            await raw.connect(broker.url, allow_reconnect=False, connect_timeout=5)
        assert "authorization violation" in str(refused.value).lower()
    finally:
        await raw.close()
    # Every role's seed does get in.
    for role in ROLES:
        bus = await NatsBus.connect(broker.url, auth=broker.auth(role))
        await bus.close()


async def test_monitor_reads_mon_and_nothing_else(provisioned: EmbeddedBroker) -> None:
    broker = provisioned
    before = await stream_config(broker)
    mon = await connect(broker, "monitor")
    telemetry = await connect(broker, "telemetry")
    try:
        sub = await mon.nc.subscribe(f"{S.prefix}.mon.>")
        await mon.nc.flush()
        await telemetry.nc.publish(S.metrics, b'{"kind":"metrics"}')
        got = await sub.next_msg(timeout=10)
        assert got.subject == S.metrics
        # A forged invoice: refused, nothing stored.
        await mon.nc.publish(S.invoice_issued, b"forged")
        await mon.violation(S.invoice_issued)
        # Shrinking the stream's retention through the JetStream API: refused.
        update = f"$JS.API.STREAM.UPDATE.{BILLING}"
        with pytest.raises(nats.errors.Error):
            await mon.nc.request(update, msgspec.json.encode(
                {"name": BILLING, "subjects": [S.lane_wildcard("billing")], "max_age": 1}),
                timeout=2)
        await mon.violation(update)
        # Nor may it read another role's replies.
        await mon.nc.subscribe("_INBOX.erp.>")
        await mon.violation("_INBOX.erp.>")
    finally:
        await mon.nc.close()
        await telemetry.nc.close()
    assert await stream_config(broker) == before


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("role", [r for r in ROLES if r not in ("admin", "monitor")])
async def test_only_admin_changes_streams(refusing: EmbeddedBroker, role: str) -> None:
    broker = refusing
    before = await stream_config(broker)
    c = await connect(broker, role)
    subjects = [f"$JS.API.{api}" for api in (
        f"STREAM.UPDATE.{BILLING}", f"STREAM.DELETE.{BILLING}", f"STREAM.PURGE.{BILLING}",
        f"STREAM.MSG.DELETE.{BILLING}", f"CONSUMER.DELETE.{BILLING}.erp-journal")]

    async def refused(subject: str) -> None:
        with pytest.raises(nats.errors.Error):
            await c.nc.request(subject, msgspec.json.encode(
                {"name": BILLING, "subjects": [S.lane_wildcard("billing")], "max_age": 1,
                 "seq": 1}), timeout=1)

    try:
        # The five requests at once: each waits out its own unanswered second together.
        async with anyio.create_task_group() as tg:
            for subject in subjects:
                tg.start_soon(refused, subject)
        for subject in subjects:
            await c.violation(subject)
    finally:
        await c.nc.close()
    assert await stream_config(broker) == before


async def test_admin_changes_streams_but_delete_and_purge_stay_denied(
        provisioned: EmbeddedBroker) -> None:
    broker = provisioned
    nc = await nats.connect(broker.url, **broker.nats_options("admin"))
    try:
        js = nc.jetstream()
        await js.publish(S.invoice_issued, b"x", headers={"Nats-Msg-Id": "one"})
        info = await js.stream_info(BILLING)
        cfg = info.config
        cfg.max_age = cfg.max_age + 60  # a real change, accepted for the admin
        assert (await js.update_stream(cfg)).config.max_age == cfg.max_age
        # deny_purge / deny_delete hold even for the admin's API calls.
        with pytest.raises(nats.js.errors.APIError):
            await js.purge_stream(BILLING)
        with pytest.raises(nats.js.errors.APIError):
            await js.delete_msg(BILLING, 1)
        assert (await js.stream_info(BILLING)).state.messages == 1
    finally:
        await nc.close()


async def test_router_cannot_fetch_from_another_roles_consumer(
        provisioned: EmbeddedBroker) -> None:
    broker = provisioned
    admin = await connect(broker, "admin")
    router = await connect(broker, "router")
    erp = await connect(broker, "erp")
    try:
        await admin.nc.jetstream().publish(S.erp_journal, b"cmd", headers={"Nats-Msg-Id": "c1"})
        # The router may not pull the ERP poster's commands...
        sub = await router.nc.jetstream().pull_subscribe_bind(durable="erp-journal",
                                                              stream=BILLING)
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=1)
        await router.violation(f"$JS.API.CONSUMER.MSG.NEXT.{BILLING}.erp-journal")
        # ...nor subscribe outside its allow-list (the lane's raw events, another's inbox)...
        for subject in (S.lane_wildcard("billing"), "_INBOX.erp.>"):
            await router.nc.subscribe(subject)
            await router.violation(subject)
        # ...nor may the ERP adapter publish ERP commands (only the routers do).
        await erp.nc.publish(S.erp_journal, b"forged")
        await erp.violation(S.erp_journal)
        # The ERP poster's own identity fetches and acks its message.
        own = await erp.nc.jetstream().pull_subscribe_bind(durable="erp-journal",
                                                           stream=BILLING)
        (msg,) = await own.fetch(1, timeout=10)
        assert msg.data == b"cmd"
        await msg.ack_sync(timeout=5)
    finally:
        for c in (admin, router, erp):
            await c.nc.close()


def test_seeds_are_private(tmp_path: Path) -> None:
    d = tmp_path / "identities"
    keys = ensure_seeds(d, ["admin", "monitor"])
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for role, key in keys.items():
        path = seed_path(d, role)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert key.startswith("U") and key not in path.read_text()
    # Kept across starts: the same keys come back.
    assert ensure_seeds(d, ["admin", "monitor"]) == keys
    seed_path(d, "monitor").chmod(0o644)
    with pytest.raises(IdentityError) as err:
        public_key(seed_path(d, "monitor"))
    assert err.value.code == "broker.identity_mode"


async def test_the_gateway_with_its_embedded_broker_runs_on_role_identities(
        tmp_path: Path, sim_url: str) -> None:
    """`erpgw up` without nats.url: its own broker refuses anonymous clients, the monitor
    identity (seed from the data dir) reads what the gateway's telemetry publishes, and may
    publish nothing."""
    from gateway.app import run_gateway

    from .conftest import _start, _stop

    port = free_port()
    data = tmp_path / "data"
    cfg = load_config(env={}, overrides={
        "data_dir": str(data), "nats": {"port": port}, "http": {"port": free_port()},
        "admin": {"port": free_port()},
        "erp": {"base_url": sim_url}, "revenue": {"base_url": sim_url},
        "cpq": {"base_url": sim_url}, "partner": {"base_url": sim_url},
        "reconcile": {"billing_url": sim_url}})
    ready = anyio.Event()
    task = await _start(run_gateway(cfg, ready=ready, handle_signals=False), ready)
    url = f"nats://127.0.0.1:{port}"
    try:
        with pytest.raises(BrokerRejected):
            await NatsBus.connect(url, wait_for_server=10)
        mon = Client()
        mon.nc = await nats.connect(url, error_cb=mon._error, allow_reconnect=False,
                                    nkeys_seed=str(seed_path(data / "identities", "monitor")),
                                    inbox_prefix="_INBOX.monitor")
        try:
            sub = await mon.nc.subscribe(S.metrics)
            got = await sub.next_msg(timeout=30)  # the gateway's metrics, every few seconds
            assert msgspec.json.decode(got.data)
            await mon.nc.publish(S.invoice_issued, b"forged")
            await mon.violation(S.invoice_issued)
        finally:
            await mon.nc.close()
        # A caller of the synchronous lane gets its answer through its own identity.
        caller = await nats.connect(url, allow_reconnect=False, inbox_prefix="_INBOX.sync-client",
                                    nkeys_seed=str(seed_path(data / "identities", "sync-client")))
        try:
            reply = await caller.request(S.sync_pricing_validate, msgspec.json.encode(
                {"currency": "USD", "items": [{"product_id": "prod_x", "quantity": 1}]}),
                timeout=20)
            assert reply.data
        finally:
            await caller.close()
    finally:
        await _stop(task)
    conf = (data / "nats" / "nats-server.conf").read_text()
    assert "authorization {" in conf and "permissions" in conf
    assert all(seed_path(data / "identities", r).read_text().strip() not in conf for r in ROLES)
