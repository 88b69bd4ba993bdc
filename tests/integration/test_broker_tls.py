"""S14 (broker side): the embedded broker serving TLS only, with client certificates required.

Certificates are made at run time by ``trustme`` (a throwaway CA): nothing secret is committed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest
import trustme

from actors.infra import NatsBus
from actors.infra.bus import BrokerRejected, BrokerUnavailable, client_tls
from gateway.broker import BrokerTls, EmbeddedBroker, free_port
from gateway.config import load_config
from gateway.identities import auth_for

pytestmark = pytest.mark.integration


def _write(ca: trustme.CA, name: str, d: Path, *hosts: str) -> tuple[Path, Path]:
    cert = ca.issue_cert(*hosts)
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(crt))
    cert.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return crt, key


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca, stranger = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = _write(ca, "server", tmp_path, "127.0.0.1", "localhost")
    client = _write(ca, "client", tmp_path, "erpgw-gateway")
    foreign = _write(stranger, "foreign", tmp_path, "erpgw-gateway")
    wrong_host = _write(ca, "wrong-host", tmp_path, "broker.example")
    return {"ca": tmp_path / "ca.pem", "server_crt": server[0], "server_key": server[1],
            "client_crt": client[0], "client_key": client[1], "foreign_crt": foreign[0],
            "foreign_key": foreign[1], "wrong_crt": wrong_host[0], "wrong_key": wrong_host[1]}


async def _tls_broker(tmp_path: Path, cert: Path, key: Path, ca: Path) -> EmbeddedBroker:
    b = EmbeddedBroker(tmp_path / "nats", port=free_port(),
                       identities_dir=tmp_path / "gw" / "identities",
                       tls=BrokerTls(cert=cert, key=key, ca=ca))
    await b.start()
    return b


async def test_mutual_tls_admits_only_clients_of_our_ca(tmp_path: Path,
                                                        pki: dict[str, Path]) -> None:
    broker = await _tls_broker(tmp_path, pki["server_crt"], pki["server_key"], pki["ca"])
    try:
        admin = broker.auth("admin")
        assert admin is not None and broker.url.startswith("tls://")
        # Our CA's client certificate and the admin seed: in, and JetStream works over TLS.
        good = dataclasses.replace(admin, tls=client_tls(str(pki["ca"]), str(pki["client_crt"]),
                                                         str(pki["client_key"])))
        bus = await NatsBus.connect(broker.url, auth=good, wait_for_server=10)
        try:
            assert bus.connected
        finally:
            await bus.close()
        # The same through the configuration (nats.tls), as the gateway connects.
        cfg = load_config(env={}, overrides={
            "data_dir": str(tmp_path / "gw"), "nats": {"url": broker.url, "tls": {
                "ca": str(pki["ca"]), "cert": str(pki["client_crt"]),
                "key": str(pki["client_key"])}}})
        bus = await NatsBus.connect(broker.url, auth=auth_for(cfg, "operator"),
                                    wait_for_server=10)
        await bus.close()
        # A plaintext client to the TLS-only port: refused.
        with pytest.raises((BrokerUnavailable, BrokerRejected)):
            await NatsBus.connect(f"nats://127.0.0.1:{broker.port}", auth=admin,
                                  wait_for_server=3)
        # No client certificate: refused.
        no_cert = dataclasses.replace(admin, tls=client_tls(str(pki["ca"])))
        with pytest.raises((BrokerUnavailable, BrokerRejected)):
            await NatsBus.connect(broker.url, auth=no_cert, wait_for_server=3)
        # A client certificate from another CA: refused.
        foreign = dataclasses.replace(admin, tls=client_tls(
            str(pki["ca"]), str(pki["foreign_crt"]), str(pki["foreign_key"])))
        with pytest.raises((BrokerUnavailable, BrokerRejected)):
            await NatsBus.connect(broker.url, auth=foreign, wait_for_server=3)
    finally:
        await broker.stop()


async def test_a_server_certificate_for_another_host_is_refused(tmp_path: Path,
                                                                pki: dict[str, Path]) -> None:
    broker = await _tls_broker(tmp_path, pki["wrong_crt"], pki["wrong_key"], pki["ca"])
    try:
        admin = broker.auth("admin")
        assert admin is not None
        good_client = dataclasses.replace(admin, tls=client_tls(
            str(pki["ca"]), str(pki["client_crt"]), str(pki["client_key"])))
        with pytest.raises((BrokerUnavailable, BrokerRejected)):
            await NatsBus.connect(broker.url, auth=good_client, wait_for_server=3)
    finally:
        await broker.stop()


async def test_the_gateway_serves_its_embedded_broker_over_mutual_tls(
        tmp_path: Path, pki: dict[str, Path], sim_url: str) -> None:
    """`erpgw up` with nats.server_tls and nats.tls: its actors connect over mutual TLS (the
    gateway becomes ready), a client without a certificate is refused."""
    from gateway.app import run_gateway

    from .conftest import _start, _stop

    port = free_port()
    cfg = load_config(env={}, overrides={
        "data_dir": str(tmp_path / "data"), "http": {"port": free_port()},
        "admin": {"port": free_port()},
        "nats": {"port": port,
                 "server_tls": {"cert": str(pki["server_crt"]), "key": str(pki["server_key"]),
                                "ca": str(pki["ca"])},
                 "tls": {"ca": str(pki["ca"]), "cert": str(pki["client_crt"]),
                         "key": str(pki["client_key"])}},
        "erp": {"base_url": sim_url}, "revenue": {"base_url": sim_url},
        "cpq": {"base_url": sim_url}, "partner": {"base_url": sim_url},
        "reconcile": {"billing_url": sim_url}})
    ready = anyio.Event()
    task = await _start(run_gateway(cfg, ready=ready, handle_signals=False), ready)
    url = f"tls://127.0.0.1:{port}"
    try:
        operator = auth_for(cfg, "operator")
        assert operator is not None and operator.tls is not None
        bus = await NatsBus.connect(url, auth=operator, wait_for_server=10)
        assert await bus.stream_messages("ERPGW_BILLING") == 0
        await bus.close()
        bare = dataclasses.replace(operator, tls=client_tls(str(pki["ca"])))
        with pytest.raises((BrokerUnavailable, BrokerRejected)):
            await NatsBus.connect(url, auth=bare, wait_for_server=3)
    finally:
        await _stop(task)
