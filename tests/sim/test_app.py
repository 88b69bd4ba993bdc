"""The app shell: health, JSON errors for anything a client gets wrong, startup failures."""

from __future__ import annotations

import io
import socket

import pytest

from sim import SimConfig, create_app

from .conftest import HOST, Http, free_port, running_sim


async def test_healthz(sim: Http) -> None:
    reply = await sim.get("/healthz")
    assert reply.status == 200
    assert reply.body == {"ok": True}


async def test_unknown_route_is_a_json_404(sim: Http) -> None:
    reply = await sim.get("/nope")
    assert reply.status == 404
    assert reply.body == {"code": "not_found", "message": "Not Found"}


async def test_wrong_method_is_a_json_405_with_allow(sim: Http) -> None:
    reply = await sim.call("PATCH", "/sim/v1/faults")
    assert reply.status == 405
    assert reply.body["code"] == "method_not_allowed"
    assert "PUT" in reply.headers["Allow"]


async def test_body_over_the_size_limit_is_a_json_413() -> None:
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:1/x", erp_max_bulk=10)
    async with running_sim(config) as http:
        body = io.BytesIO(b" " * (2 << 20))  # over the 1 MiB floor of client_max_size
        async with http.session.post(http.base + "/erp/v1/journal-entries/bulk", data=body) as r:
            assert r.status == 413
            error = await r.json()
        assert error["code"] == "request.too_large"
        assert "1048576" in error["message"]


async def test_busy_port_raises_oserror_naming_host_and_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=rf"127\.0\.0\.1:{port}"):
            async with running_sim(SimConfig(port=port)):
                pass


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (SimConfig(delivery_concurrency=0), "delivery_concurrency"),
        (SimConfig(erp_max_bulk=0), "erp_max_bulk"),
        (SimConfig(webhook_url="localhost:8600/hook"), "webhook_url"),
    ],
)
def test_create_app_refuses_unusable_config(config: SimConfig, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        create_app(config)
