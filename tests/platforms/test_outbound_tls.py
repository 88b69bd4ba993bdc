"""Outbound platform calls verify certificates (S14): a platform with a certificate from a CA
we were not told of is refused before anything is sent; the same platform is reached once its
CA is configured (``platforms.ca_file``); a certificate for another host is refused even from
that CA. Certificates are made at run time by ``trustme`` (a throwaway CA)."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from actors.infra.http import ClientTlsError, HttpClient, PlatformUnavailable, client_tls
from gateway.app import platform_specs
from gateway.broker import free_port
from gateway.config import load_config


@asynccontextmanager
async def _https_platform(cert: trustme.LeafCert, hits: list[str]) -> AsyncIterator[str]:
    async def ping(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/ping", ping)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx)
    await site.start()
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_unknown_ca_is_refused_and_a_configured_one_accepted(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "platform-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    hits: list[str] = []
    async with _https_platform(ca.issue_cert("127.0.0.1"), hits) as base:
        async with HttpClient(base, platform="erp", timeout=10) as http:
            with pytest.raises(PlatformUnavailable) as refused:
                await http.get("/ping")
        assert refused.value.code == "http.certificate"
        assert hits == []  # nothing reached the platform
        async with HttpClient(base, platform="erp", timeout=10, ca_file=str(ca_file)) as http:
            resp = await http.get("/ping")
        assert resp.status == 200 and hits == ["/ping"]


async def test_a_certificate_for_another_host_is_refused_even_from_our_ca(
        tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "platform-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    hits: list[str] = []
    async with _https_platform(ca.issue_cert("erp.example.com"), hits) as base, \
            HttpClient(base, platform="erp", timeout=10, ca_file=str(ca_file)) as http:
        with pytest.raises(PlatformUnavailable) as refused:
            await http.get("/ping")
    assert refused.value.code == "http.certificate"
    assert hits == []


def test_verification_is_never_off_and_a_bad_ca_file_is_named(tmp_path: Path) -> None:
    ctx = client_tls()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ClientTlsError, match=r"^platforms\.ca_file: .*junk\.pem"):
        client_tls(str(junk))
    with pytest.raises(ClientTlsError, match=r"^platforms\.ca_file: cannot read"):
        HttpClient("https://erp.example.com", ca_file=str(tmp_path / "missing.pem"))
    # From the configuration: the start stops before listening, naming the setting.
    cfg = load_config(env={}, overrides={"platforms": {"ca_file": str(junk)}})
    with pytest.raises(ClientTlsError) as err:
        platform_specs(cfg, environ={})
    assert err.value.code == "config.invalid"
    ca = trustme.CA()
    good = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(good))
    specs = platform_specs(load_config(env={}, overrides={"platforms": {"ca_file": str(good)}}),
                           environ={})
    assert {s.ca_file for s in specs.values()} == {str(good)}


def test_no_code_turns_verification_off() -> None:
    """Nothing the gateway or the simulator runs can switch certificate checks off."""
    root = Path(__file__).resolve().parents[2]
    off = re.compile(r"CERT_NONE|verify_ssl\s*=|ssl\s*=\s*False|check_hostname\s*=\s*False"
                     r"|_create_unverified_context|verify\s*=\s*False")
    hits = [f"{path.relative_to(root)}:{n}" for top in ("actors", "gateway", "sim", "contracts")
            for path in sorted((root / top).rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if off.search(line)]
    assert hits == []
