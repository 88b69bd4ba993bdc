"""The shipped NATS cluster config (``deploy/nats/nats-server.conf``) as written: it parses,
three nodes started from it form one JetStream cluster with what the gateway relies on
(``sync_interval: always``, the payload limit, one NKey user per gateway role from
``erpgw broker authorization``), and a gateway with ``streams.replicas = 3`` runs on it:
ready, and an invoice webhook is accepted and posted to the ERP once.

Only the addresses and the store directory are rewritten (to loopback ports and a temporary
directory); each rewrite must hit the file exactly once, so a changed file is noticed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import msgspec
import pytest

from actors.infra import NatsBus
from actors.infra.bus import BrokerRejected, NatsAuth
from gateway.broker import find_nats_server, free_port
from gateway.identities import ROLES, public_key, role_auth

from .conftest import billing_event, running_gateway, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "nats-server.conf"


@dataclass
class _Node:
    name: str
    client: int
    route: int
    http: int


def _once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not in the shipped config exactly once"
    return text.replace(old, new)


def _node_conf(nodes: list[_Node], me: _Node, store: Path) -> str:
    text = CONF.read_text()
    text = _once(text, "listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{me.client}")
    text = _once(text, "http: 127.0.0.1:8222", f"http: 127.0.0.1:{me.http}")
    text = _once(text, '"/var/lib/nats/jetstream"', f'"{store}"')
    text = _once(text, "listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{me.route}")
    for n in nodes:
        text = _once(text, f"{n.name}.internal:6222", f"127.0.0.1:{n.route}")
    return text


def _authorization(tmp_path: Path) -> Path:
    out = tmp_path / "etc" / "erpgw-authorization.conf"
    r = subprocess.run([sys.executable, "-m", "gateway", "broker", "authorization",
                        "--data-dir", str(tmp_path / "gw"), "--out", str(out)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert f"{len(ROLES)} broker identities" in r.stdout
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)
    text = out.read_text()
    seeds = sorted((tmp_path / "gw" / "identities").glob("*.nk"))
    assert len(seeds) == len(ROLES)
    for seed in seeds:  # public keys only, never a seed
        assert seed.read_text().strip() not in text
        assert public_key(seed) in text
    return out


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, msgspec.json.decode(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (urllib.error.URLError, OSError):
        return 0, {}


@contextmanager
def _cluster(tmp_path: Path) -> Iterator[list[_Node]]:
    binary = find_nats_server()
    _authorization(tmp_path)
    nodes = [_Node(f"nats-{i}", free_port(), free_port(), free_port()) for i in (1, 2, 3)]
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    try:
        for n in nodes:
            conf = tmp_path / "etc" / f"{n.name}.conf"
            conf.write_text(_node_conf(nodes, n, tmp_path / n.name))
            env = {**os.environ, "NATS_SERVER_NAME": n.name}
            check = subprocess.run([binary, "-c", str(conf), "-t"], env=env,
                                   capture_output=True, text=True, timeout=30, check=False)
            assert check.returncode == 0, check.stdout + check.stderr
            logs.append((tmp_path / f"{n.name}.log").open("wb"))
            procs.append(subprocess.Popen([binary, "-c", str(conf)], env=env, stdout=logs[-1],
                                          stderr=subprocess.STDOUT))
        yield nodes
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()


async def _healthy(nodes: list[_Node]) -> None:
    with anyio.fail_after(60):  # a guard against a hang, not a speed target
        while True:
            states = [await anyio.to_thread.run_sync(_get, f"http://127.0.0.1:{n.http}/healthz")
                      for n in nodes]
            if all(status == 200 for status, _ in states):
                return
            await anyio.sleep(0.2)


@dataclass
class _External:
    """What ``running_gateway`` needs of a broker: its seed list and an admin credential."""

    url: str
    identities: Path

    def auth(self, role: str = "admin") -> NatsAuth | None:
        return role_auth(role, self.identities)


async def test_the_shipped_cluster_config_runs_a_gateway(tmp_path: Path, sim_url: str) -> None:
    with _cluster(tmp_path) as nodes:
        await _healthy(nodes)
        for n in nodes:
            _, varz = await anyio.to_thread.run_sync(_get, f"http://127.0.0.1:{n.http}/varz")
            assert varz["server_name"] == n.name
            js = varz["jetstream"]["config"]
            assert js["sync_always"] is True  # fsync before every PubAck
            assert varz["max_payload"] == 1024 * 1024
            assert varz["cluster"]["name"] == "erpgw"
            assert len(varz["cluster"]["urls"]) == 3
        url = ",".join(f"nats://127.0.0.1:{n.client}" for n in nodes)
        identities = tmp_path / "gw" / "identities"
        # Every role the gateway knows is a user of the cluster; a stranger is refused.
        for role in ROLES:
            bus = await NatsBus.connect(url, auth=role_auth(role, identities))
            await bus.close()
        with pytest.raises(BrokerRejected) as anon:
            await NatsBus.connect(url, wait_for_server=10)
        assert "Authorization Violation" in str(anon.value)
        broker: Any = _External(url, identities)
        async with running_gateway(broker, tmp_path, sim_url, streams={"replicas": 3}) as gw:
            _, ready = await anyio.to_thread.run_sync(_get, f"{gw.admin_url}/readyz")
            assert ready["ready"] is True
            info = await gw.bus.jetstream.stream_info(gw.subjects.stream("billing"))
            assert info.config.num_replicas == 3
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
            body = msgspec.json.encode(billing_event(7301))
            status, answer = await gw.post(body, signed(body))
            assert (status, answer["status"]) == (200, "accepted")
            await gw.wait_idle()
            assert len(await gw.erp_postings("in_007301")) == 1
