"""The line an operator looks for first: the start banner names the version, where the
gateway listens and which broker it uses (without the broker's credentials)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway import __version__
from gateway.broker import EmbeddedBroker

from .conftest import running_gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_the_start_banner(broker: EmbeddedBroker, tmp_path: Path, sim_url: str,
                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="erpgw.gateway")
    async with running_gateway(broker, tmp_path, sim_url) as gw:
        ready = [r.getMessage() for r in caplog.records
                 if r.name == "erpgw.gateway" and "ready" in r.getMessage()]
    assert len(ready) == 1
    (banner,) = ready
    base = f"http://127.0.0.1:{gw.cfg.http.port}"
    assert banner.startswith(f"erpgw {__version__} ready: ")
    assert f"{base}/webhooks/billing" in banner and f"{gw.admin_url}/metrics" in banner
    assert f"{gw.admin_url}/readyz" in banner and f"{base}/metrics" not in banner
    assert f"{base}{gw.cfg.partner.webhook_path}" in banner
    assert f"broker {broker.url} (external)" in banner


def test_credentials_never_reach_the_banner() -> None:
    from gateway.app import _public_url

    assert _public_url("nats://svc:s3cret@nats-1:4222,tls://tok@[::1]:4222") == \
        "nats://nats-1:4222,tls://[::1]:4222"
    assert _public_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
