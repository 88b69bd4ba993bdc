"""S14 (the gateway's own listeners): ``http.tls`` serves the webhooks over HTTPS only and
``admin.tls`` the admin listener. Certificates are made at run time by ``trustme`` (a
throwaway CA): nothing secret is committed."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest
import trustme

from actors.infra import NatsBus
from actors.ingress import TlsError, TlsFiles, server_tls
from contracts import Subjects
from gateway.app import run_gateway
from gateway.broker import EmbeddedBroker, free_port
from gateway.config import Config, load_config

from .conftest import SECRET, _start, _stop, billing_event, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOKEN = "adm-https-canary-51"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert = ca.issue_cert("127.0.0.1", "localhost")
    crt, key = tmp_path / "gw.crt", tmp_path / "gw.key"
    crt.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return {"ca": tmp_path / "ca.pem", "crt": crt, "key": key}


@asynccontextmanager
async def https_gateway(broker: EmbeddedBroker, tmp_path: Path, sim_url: str,
                        pki: dict[str, Path]) -> AsyncIterator[Config]:
    tls = {"cert": str(pki["crt"]), "key": str(pki["key"])}
    token = tmp_path / "admin.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    cfg = load_config(env={}, overrides={
        "data_dir": str(tmp_path / "gw"), "nats": {"url": broker.url},
        "http": {"port": free_port(), "tls": tls},
        "admin": {"port": free_port(), "tls": tls, "token_file": str(token)},
        "billing": {"webhook_secrets": [SECRET]},
        "erp": {"base_url": sim_url}, "revenue": {"base_url": sim_url},
        "cpq": {"base_url": sim_url}, "partner": {"base_url": sim_url},
        "reconcile": {"billing_url": sim_url}})
    ready = anyio.Event()
    task = await _start(run_gateway(cfg, ready=ready, handle_signals=False), ready)
    try:
        yield cfg
    finally:
        await _stop(task)


def _trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


async def test_webhooks_and_admin_over_https(broker: EmbeddedBroker, tmp_path: Path,
                                             sim_url: str, pki: dict[str, Path]) -> None:
    bus = await NatsBus.connect(broker.url, auth=broker.auth())
    subjects = Subjects()
    try:
        async with https_gateway(broker, tmp_path, sim_url, pki) as cfg, \
                aiohttp.ClientSession() as s:
            hook = f"https://127.0.0.1:{cfg.http.port}/webhooks/billing"
            body = msgspec.json.encode(billing_event(81))
            # A plaintext client to the TLS-only port: no HTTP answer at all.
            with pytest.raises(aiohttp.ClientError):
                async with s.post(hook.replace("https://", "http://"), data=body,
                                  headers=signed(body)) as r:
                    await r.read()
            # A client that does not trust our CA (the system's store): refused.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with s.post(hook, data=body, headers=signed(body),
                                  ssl=ssl.create_default_context()) as r:
                    await r.read()
            # A client that trusts our CA but expects another host name: refused.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with s.post(hook, data=body, headers=signed(body), ssl=_trusting(
                        pki["ca"]), server_hostname="gateway.example") as r:
                    await r.read()
            assert await bus.stream_messages(subjects.stream("billing"),
                                             subjects.invoice_issued) == 0
            # A good client: the signed webhook is accepted over HTTPS and published.
            async with s.post(hook, data=body, headers=signed(body),
                              ssl=_trusting(pki["ca"])) as r:
                assert r.status == 200
                assert msgspec.json.decode(await r.read())["status"] == "accepted"
            assert await bus.stream_messages(subjects.stream("billing"),
                                             subjects.invoice_issued) == 1
            # The admin listener: HTTPS only as well, and its token still required.
            admin = f"https://127.0.0.1:{cfg.admin.port}"
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http://127.0.0.1:{cfg.admin.port}/readyz") as r:
                    await r.read()
            async with s.get(f"{admin}/readyz", ssl=_trusting(pki["ca"])) as r:
                assert r.status == 401
                assert msgspec.json.decode(await r.read())["code"] == "admin.unauthorized"
            async with s.get(f"{admin}/readyz", ssl=_trusting(pki["ca"]),
                             headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200
    finally:
        await bus.close()


def test_bad_tls_settings_are_named(tmp_path: Path, pki: dict[str, Path]) -> None:
    assert server_tls(TlsFiles(), "http.tls") is None
    with pytest.raises(TlsError, match=r"http\.tls\.key: required"):
        server_tls(TlsFiles(cert=str(pki["crt"])), "http.tls")
    pki["key"].chmod(0o644)
    with pytest.raises(TlsError, match=r"admin\.tls\.key: .*mode 0644.*chmod 600"):
        server_tls(TlsFiles(cert=str(pki["crt"]), key=str(pki["key"])), "admin.tls")
    pki["key"].chmod(0o600)
    with pytest.raises(TlsError, match=r"http\.tls\.cert: cannot read"):
        server_tls(TlsFiles(cert=str(tmp_path / "nope.crt"), key=str(pki["key"])), "http.tls")
    other = trustme.CA().issue_cert("127.0.0.1")
    stray = tmp_path / "stray.key"
    other.private_key_pem.write_to_path(str(stray))
    stray.chmod(0o600)
    with pytest.raises(TlsError, match="not a matching"):
        server_tls(TlsFiles(cert=str(pki["crt"]), key=str(stray)), "http.tls")
    ctx = server_tls(TlsFiles(cert=str(pki["crt"]), key=str(pki["key"])), "http.tls")
    assert ctx is not None and ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
