"""The admin listener on its own (S26): probes, the bearer token, and the start-up refusals.

A real listener on a loopback port, without a gateway behind it: readiness checks and routes
are plugged in as the gateway plugs them in."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import aiohttp
import msgspec
import pytest

from actors.ingress import AdminListener, AdminSettings
from actors.platforms.auth import AuthError
from gateway.broker import free_port
from gateway.config import load_config
from gateway.credentials import admin_token

TOKEN = "adm-canary-7f3a9c"


async def _get(url: str, headers: Mapping[str, str] | None = None
               ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, msgspec.json.decode(await r.read()), r.headers


def _listener(token: str | None = None, **kw: Any) -> AdminListener:
    return AdminListener(AdminSettings(port=free_port()), token=token, **kw)


async def test_readyz_names_what_is_not_ready() -> None:
    state = {"broker": False, "ledger": True}
    admin = _listener()
    admin.check("broker", lambda: state["broker"])
    admin.check("ledger", lambda: state["ledger"])

    def broken() -> bool:
        raise RuntimeError("cannot tell")

    admin.check("consumers", broken)
    async with admin.serving():
        status, body, headers = await _get(f"{admin.url}/readyz")
        assert status == 503 and headers["Retry-After"] == "1"
        assert body["code"] == "admin.not_ready"
        assert body["not_ready"] == ["broker", "consumers"]
        assert "broker" in body["message"] and "consumers" in body["message"]
        assert (await _get(f"{admin.url}/livez"))[:2] == (200, {"ok": True})
        admin.check("consumers", lambda: True)
        state["broker"] = True
        status, body, _ = await _get(f"{admin.url}/readyz")
        assert (status, body["ready"]) == (200, True)
        assert body["checks"] == {"broker": True, "ledger": True, "consumers": True}


async def test_status_and_metrics_wait_for_the_gateway() -> None:
    admin = _listener()
    async with admin.serving():
        status, body, _ = await _get(f"{admin.url}/metrics")
        assert (status, body["code"]) == (503, "admin.not_ready")
        assert (await _get(f"{admin.url}/status"))[1] == {"ready": True, "checks": {}}
        admin.metrics = lambda: (200, "text/plain; version=0.0.4", b"erpgw_up 1\n")
        admin.status = lambda: {"actors": {"name": "gateway"}}
        async with aiohttp.ClientSession() as s, s.get(f"{admin.url}/metrics") as r:
            assert r.status == 200 and await r.read() == b"erpgw_up 1\n"
        assert (await _get(f"{admin.url}/status"))[1]["actors"] == {"name": "gateway"}
        status, body, _ = await _get(f"{admin.url}/webhooks/billing")
        assert (status, body["code"]) == (404, "admin.not_found")


async def test_an_internal_error_answers_only_a_correlation_id(
        caplog: pytest.LogCaptureFixture) -> None:
    """S24 on the admin listener: a route that fails is a generic 500; the text is logged."""
    admin = _listener()

    def status() -> dict[str, object]:
        raise RuntimeError("canary-status-9d1e")

    admin.status = status
    async with admin.serving():
        code, body, _ = await _get(f"{admin.url}/status")
    assert code == 500 and set(body) == {"code", "message", "correlation_id"}
    assert body["code"] == "internal.error" and "canary" not in str(body)
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and body["correlation_id"] in logged[0].getMessage()


async def test_a_token_guards_every_route() -> None:
    admin = _listener(token=TOKEN)
    admin.check("broker", lambda: True)
    async with admin.serving():
        for path in ("/livez", "/readyz", "/status", "/metrics", "/nowhere"):
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": f"Basic {TOKEN}"},
                            {"Authorization": f"Bearer {TOKEN}x"}):
                status, body, h = await _get(f"{admin.url}{path}", headers)
                assert status == 401, (path, headers)
                assert set(body) == {"code", "message"} and body["code"] == "admin.unauthorized"
                assert TOKEN not in body["message"] and h["WWW-Authenticate"].startswith("Bearer")
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert (await _get(f"{admin.url}/readyz", good))[0] == 200
        assert (await _get(f"{admin.url}/livez", good))[0] == 200
        # Bytes that are not UTF-8 in the header: refused like any wrong token, never a 500.
        reader, writer = await asyncio.open_connection("127.0.0.1", admin.settings.port)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Authorization: Bearer \xff\xfe" + TOKEN.encode() + b"\r\n\r\n")
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401") and b"admin.unauthorized" in answer
    assert admin.unauthorized == 21


async def test_sync_routes_keep_their_body_limit() -> None:
    seen: list[bytes] = []

    async def route(body: bytes, headers: Mapping[str, str]) -> tuple[int, str, bytes]:
        seen.append(body)
        return 200, "application/json", b'{"ok":true}'

    admin = _listener(post_routes={"/sync/v1/pricing/validate": route}, max_body_bytes=1024)
    async with admin.serving(), aiohttp.ClientSession() as s:
        async with s.post(f"{admin.url}/sync/v1/pricing/validate", data=b"{}") as r:
            assert r.status == 200
        async with s.post(f"{admin.url}/sync/v1/pricing/validate", data=b"x" * 2048) as r:
            assert r.status == 413
            assert msgspec.json.decode(await r.read())["code"] == "body.too_large"
    assert seen == [b"{}"]


def test_off_loopback_the_token_is_required() -> None:
    cfg = load_config(env={}, overrides={"admin": {"host": "0.0.0.0"}})
    with pytest.raises(AuthError) as err:
        admin_token(cfg)
    assert err.value.code == "auth.admin_token_missing" and "admin.token" in str(err.value)
    # On loopback no token is needed.
    assert admin_token(load_config(env={})) is None


def test_the_token_from_env_or_a_private_file(tmp_path: Path) -> None:
    cfg = load_config(env={}, overrides={"admin": {"host": "10.0.0.5",
                                                   "token_env": "ADMIN_TOKEN"}})
    secret = admin_token(cfg, environ={"ADMIN_TOKEN": TOKEN})
    assert secret is not None and secret.reveal() == TOKEN and TOKEN not in repr(secret)
    with pytest.raises(AuthError) as err:
        admin_token(cfg, environ={})
    assert err.value.code == "auth.env_unset" and "admin.token_env" in str(err.value)
    f = tmp_path / "admin.token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o644)
    cfg = load_config(env={}, overrides={"admin": {"host": "10.0.0.5", "token_file": str(f)}})
    with pytest.raises(AuthError) as err:
        admin_token(cfg)
    assert err.value.code == "auth.file_mode" and "admin.token_file" in str(err.value)
    f.chmod(0o600)
    secret = admin_token(cfg)
    assert secret is not None and secret.reveal() == TOKEN


def test_the_token_is_masked_everywhere() -> None:
    cfg = load_config(env={"ERPGW_ADMIN_TOKEN": TOKEN})
    assert cfg.admin.token == TOKEN
    assert TOKEN not in repr(cfg.admin) and TOKEN not in repr(cfg)
    assert cfg.public()["admin"]["token"] == "***"
    env = {**os.environ, "ERPGW_ADMIN_TOKEN": TOKEN}
    r = subprocess.run([sys.executable, "-m", "gateway", "up", "--print-config"], env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and TOKEN not in r.stdout + r.stderr
    assert '"token": "***"' in r.stdout


@pytest.mark.integration
def test_the_gateway_refuses_to_start_off_loopback_without_a_token(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n[http]\nport = {free_port()}\n'
                   f'[admin]\nhost = "0.0.0.0"\nport = {free_port()}\n')
    r = subprocess.run([sys.executable, "-m", "gateway", "up", "--config", str(cfg)],
                       env={k: v for k, v in os.environ.items() if not k.startswith("ERPGW_")},
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "auth.admin_token_missing" in r.stderr and "admin.token" in r.stderr
    assert not (tmp_path / "data" / "nats").exists()  # refused before the broker started


class _Tree:
    """What readiness reads of the supervision tree."""

    def __init__(self, *states: str) -> None:
        self.stop_requested = False
        self.states = states

    def statistics(self) -> dict[str, object]:
        return {"children": [{"name": f"c{i}", "state": s} for i, s in enumerate(self.states)]}


def test_consumers_are_ready_only_while_every_child_runs() -> None:
    from actors.runtime import Supervisor
    from gateway.app import _tree_ready

    def ready(tree: _Tree | None) -> bool:
        return _tree_ready(cast(Supervisor | None, tree))

    assert not ready(None)  # not started yet
    assert ready(_Tree("running", "running", "stopped"))  # a child that finished its work
    assert not ready(_Tree("running", "restarting"))
    assert not ready(_Tree("starting", "running"))
    draining = _Tree("running")
    draining.stop_requested = True
    assert not ready(draining)


def test_help_names_the_admin_listener() -> None:
    import argparse

    from gateway.cli import build_parser

    parser = build_parser()
    assert "/readyz" in parser.format_help() and "8601" in parser.format_help()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    up = sub.choices["up"].format_help()
    assert "--admin-port" in up and "/livez" in up and "/healthz" not in up


async def test_mangled_authorization_headers_never_reach_a_5xx() -> None:
    """Seeded random bytes (no CR/LF) as the Authorization header, near-misses of the token
    included: every answer is a 4xx that does not echo the token, and none gets in."""
    import random

    rnd = random.Random(13)
    admin = _listener(token=TOKEN)
    alphabet = bytes(b for b in range(256) if b not in (10, 13))
    values = [b"Bearer " + TOKEN.encode()[:-1] + bytes([b]) for b in alphabet[:40]]
    values += [bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 300)))
               for _ in range(60)]
    values += [b"Bearer " + bytes(rnd.choice(alphabet) for _ in range(len(TOKEN)))
               for _ in range(20)]
    async with admin.serving():
        for value in values:
            reader, writer = await asyncio.open_connection("127.0.0.1", admin.settings.port)
            writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         b"Authorization: " + value + b"\r\n\r\n")
            answer = await reader.read()
            writer.close()
            status = int(answer.split(b" ", 2)[1])
            assert 400 <= status < 500, (value, answer[:200])
            assert TOKEN.encode() not in answer


async def test_another_method_is_405_naming_the_allowed_ones() -> None:
    admin = _listener()
    async with admin.serving(), aiohttp.ClientSession() as s:
        async with s.delete(f"{admin.url}/livez") as r:
            body = msgspec.json.decode(await r.read())
            assert (r.status, body["code"]) == (405, "admin.method_not_allowed")
            assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
