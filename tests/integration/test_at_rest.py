"""S28 (data at rest) and S22's drill gate: private files, an encrypted broker store, and fault
hooks that act only in drill mode and only on loopback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from gateway.broker import BrokerError, EmbeddedBroker, free_port

from .conftest import LiveGateway

pytestmark = pytest.mark.integration

CANARY = b"canary-iban-DE89370400440532013000"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_data_dir_ledger_and_seeds_are_private(live_gateway: LiveGateway) -> None:
    data = live_gateway.cfg.data_path
    assert mode(data) == 0o700
    ledger = sorted(data.glob("ledger.db*"))
    assert ledger and all(mode(p) == 0o600 for p in ledger), [(p, oct(mode(p))) for p in ledger]
    ids = data / "identities"
    assert mode(ids) == 0o700 and all(mode(p) == 0o600 for p in ids.iterdir())


def _store_holds(store: Path, needle: bytes) -> bool:
    return any(needle in p.read_bytes() for p in store.rglob("*") if p.is_file())


async def _store_canary(broker: EmbeddedBroker) -> None:
    nc = await nats.connect(broker.url, **broker.nats_options())
    try:
        js = nc.jetstream()
        await js.add_stream(name="SECRET", subjects=["secret.>"])
        await js.publish("secret.one", CANARY)
    finally:
        await nc.close()


async def test_the_broker_store_is_encrypted_with_the_key_file(tmp_path: Path) -> None:
    key = tmp_path / "store.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    # Control: without the setting the canary lies in the store in clear.
    plain = EmbeddedBroker(tmp_path / "plain", port=free_port(),
                           identities_dir=tmp_path / "ids")
    await plain.start()
    try:
        await _store_canary(plain)
    finally:
        await plain.stop()
    assert _store_holds(tmp_path / "plain" / "js", CANARY)

    def encrypted() -> EmbeddedBroker:
        return EmbeddedBroker(tmp_path / "enc", port=free_port(),
                              identities_dir=tmp_path / "ids", encryption_key_file=key)

    broker = encrypted()
    await broker.start()
    try:
        await _store_canary(broker)
    finally:
        await broker.stop()
    assert not _store_holds(tmp_path / "enc" / "js", CANARY)
    assert key.read_text().encode() not in (tmp_path / "enc" / "nats-server.conf").read_bytes()
    # The same key reads it back after a restart.
    broker = encrypted()
    await broker.start()
    try:
        nc = await nats.connect(broker.url, **broker.nats_options())
        try:
            msg = await nc.jetstream().get_msg("SECRET", 1)
            assert msg.data == CANARY
        finally:
            await nc.close()
    finally:
        await broker.stop()


async def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "store.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o644)
    broker = EmbeddedBroker(tmp_path / "nats", port=free_port(), encryption_key_file=key)
    with pytest.raises(BrokerError) as err:
        await broker.start()
    assert err.value.code == "broker.encryption_key" and "chmod 600" in str(err.value)
    assert not broker.running


def _probe(env: dict[str, str]) -> str:
    code = ("from actors import crash; "
            "print(repr(crash.fault('erp.fail_start')), crash.hooks_active(), "
            "crash.ignored_hooks())")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("GW_FAULT", "GW_CRASH_AT", "ERPGW_DRILLS")}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def test_fault_hooks_act_only_in_drill_mode() -> None:
    assert _probe({"GW_FAULT": "erp.fail_start"}) == "None False ['GW_FAULT']"
    assert _probe({"GW_FAULT": "erp.fail_start", "ERPGW_DRILLS": "1"}) == "'' True []"


def test_drill_mode_refuses_a_listener_off_loopback(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n'
                   f'[http]\nhost = "0.0.0.0"\nport = {free_port()}\n'
                   f'[admin]\nport = {free_port()}\n')
    env = {**os.environ, "ERPGW_DRILLS": "1", "GW_CRASH_AT": "erp.after_post"}
    r = subprocess.run([sys.executable, "-m", "gateway", "up", "--config", str(cfg)], env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "drills.off_loopback" in r.stderr and "0.0.0.0" in r.stderr
    assert not (tmp_path / "data" / "nats").exists()  # refused before the broker started


async def test_the_embedded_broker_listens_on_loopback_only(broker: EmbeddedBroker) -> None:
    conf = (broker.store_dir / "nats-server.conf").read_text()
    assert f"listen: 127.0.0.1:{broker.port}" in conf
    # No monitoring (http/https) port, no cluster, gateway or leaf node listener.
    for word in ("http", "https", "monitor_port", "cluster", "gateway", "leafnodes"):
        assert f"\n{word}" not in conf and not conf.startswith(word), word
