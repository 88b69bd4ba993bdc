"""The simulator over HTTPS (S14): its platforms served over TLS only, and its webhook sender
verifying the receiver's certificate and host name. Certificates are made at run time by
``trustme`` (a throwaway CA)."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from sim import SimConfig, create_app
from sim._billing import post_signed
from sim._tls import server_context, webhook_context

from .conftest import HOST, free_port, running_sim


def _leaf(ca: trustme.CA, d: Path, name: str, *hosts: str) -> tuple[str, str]:
    cert = ca.issue_cert(*hosts)
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    crt.write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    return str(crt), str(key)


def _ca_file(ca: trustme.CA, path: Path) -> str:
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_tls_settings_are_checked_and_named(tmp_path: Path) -> None:
    ca = trustme.CA()
    crt, key = _leaf(ca, tmp_path, "sim", HOST)
    assert server_context(SimConfig()) is None
    with pytest.raises(ValueError, match=r"^tls_key: required"):
        create_app(SimConfig(tls_cert=crt))
    with pytest.raises(ValueError, match=r"^tls_cert: required"):
        create_app(SimConfig(tls_key=key))
    with pytest.raises(ValueError, match=r"^tls_cert/tls_key"):
        create_app(SimConfig(tls_cert=str(tmp_path / "missing.crt"), tls_key=key))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ValueError, match=r"^webhook_ca_file"):
        create_app(SimConfig(webhook_ca_file=str(junk)))
    served = server_context(SimConfig(tls_cert=crt, tls_key=key))
    assert served is not None and served.minimum_version >= ssl.TLSVersion.TLSv1_2
    sender = webhook_context(SimConfig())
    assert sender.verify_mode == ssl.CERT_REQUIRED and sender.check_hostname


async def test_the_simulator_serves_https_only(tmp_path: Path) -> None:
    ca = trustme.CA()
    crt, key = _leaf(ca, tmp_path, "sim", HOST)
    port = free_port()
    cfg = SimConfig(port=port, tls_cert=crt, tls_key=key,
                    webhook_url=f"https://{HOST}:{free_port()}/nowhere")
    trusting = ssl.create_default_context(cafile=_ca_file(ca, tmp_path / "ca.pem"))
    async with running_sim(cfg), aiohttp.ClientSession() as s:
        async with s.get(f"https://{HOST}:{port}/healthz", ssl=trusting) as r:
            assert r.status == 200
        with pytest.raises(aiohttp.ClientError):  # plaintext: no HTTP answer at all
            async with s.get(f"http://{HOST}:{port}/healthz") as r:
                await r.read()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # a client not told of
            async with s.get(f"https://{HOST}:{port}/healthz",  # the CA refuses the sim
                             ssl=ssl.create_default_context()) as r:
                await r.read()


async def test_the_webhook_sender_verifies_the_receiver(tmp_path: Path) -> None:
    ours, stranger = trustme.CA(), trustme.CA()
    ours_file = _ca_file(ours, tmp_path / "ours.pem")
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.host)
        return web.json_response({"status": "accepted"})

    async def deliver(receiver_ca: trustme.CA, host: str, sender_ca: str) -> int:
        app = web.Application()
        app.router.add_post("/webhooks/billing", hook)
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        receiver_ca.issue_cert(host).configure_cert(server)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, HOST, port, ssl_context=server).start()
        connector = aiohttp.TCPConnector(ssl=webhook_context(SimConfig(
            webhook_ca_file=sender_ca)))
        try:
            async with aiohttp.ClientSession(connector=connector) as session:
                return await post_signed(session, f"https://{HOST}:{port}/webhooks/billing",
                                         b"{}", header="X-Signature", signature="t=1,v1=00",
                                         timeout=aiohttp.ClientTimeout(total=10))
        finally:
            await runner.cleanup()

    # A receiver whose certificate another CA signed: not sent (0: a failed delivery).
    assert await deliver(stranger, HOST, ours_file) == 0
    # Our CA, but a certificate for another host: not sent either.
    assert await deliver(ours, "gateway.example", ours_file) == 0
    assert hits == []
    # Our CA and the right host: delivered.
    assert await deliver(ours, HOST, ours_file) == 200
    assert len(hits) == 1
