"""The gateway's own HTTP faces as OpenAPI 3.1 (``gateway/openapi.py``): the documents cover
every route each listener serves, follow the config, are served on the admin listener and
printed by ``erpgw schema openapi``; schemathesis, a real external client, finds nothing
against a running gateway (as ``tests/sim/test_openapi.py`` does against the simulator).

Every check but ``positive_data_acceptance`` runs: a schema-valid webhook without a valid
signature is refused (401) by design, and the synchronous lane refuses some schema-valid
requests on rules JSON Schema cannot express (a product given twice in ``items``:
``sync.duplicate_item``). For the same reasons schemathesis's "mostly rejected" warning is
expected here and not asserted on.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from actors.ingress import AdminListener
from gateway.broker import EmbeddedBroker
from gateway.config import load_config
from gateway.openapi import LISTENERS, OPENAPI_PATH, document, webhook_sources

from .conftest import actor_stats, running_gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
pytest.importorskip("schemathesis")

ST = ("import sys; from schemathesis.cli import schemathesis; "
      "sys.argv[0] = 'st'; sys.exit(schemathesis())")


def _operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, ops in doc["paths"].items() for method in ops}


def _served(app: Any) -> set[tuple[str, str]]:
    return {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
            if r.resource is not None and r.method != "HEAD"}


def test_the_documents_cover_every_route_each_listener_serves() -> None:
    cfg = load_config(env={}, overrides={"billing": {"dialect": "stripe"},
                                         "partner": {"webhook_path": "/hooks/deals"},
                                         "admin": {"token": "t0k"}})
    from actors.sync import SyncDoor
    from actors.usage import UsageDoor

    admin = AdminListener(cfg.admin, post_routes=SyncDoor().routes(),
                          documents={OPENAPI_PATH.format(listener=n): b"{}" for n in LISTENERS})
    assert _operations(document("admin", cfg)) == _served(admin.app())
    hooks = document("webhooks", cfg)
    ingress_routes = {("post", s.path) for s in webhook_sources(cfg)} | {
        ("post", p) for p in UsageDoor().routes()}
    assert _operations(hooks) == ingress_routes
    assert ("post", "/hooks/deals") in ingress_routes
    # The billing webhook in the configured dialect: Stripe's header and event types.
    billing = hooks["paths"][cfg.http.path]["post"]
    assert billing["parameters"][0]["name"] == "Stripe-Signature"
    body = billing["requestBody"]["content"]["application/json"]["schema"]
    assert "invoice.finalized" in body["x-erpgw-routed-types"]
    # A configured admin token is the admin document's security, and 401 is documented.
    admin_doc = document("admin", cfg)
    assert admin_doc["security"] == [{"adminToken": []}]
    assert all("401" in op["responses"] for ops in admin_doc["paths"].values()
               for op in ops.values())
    assert "security" not in document("admin", load_config(env={}))
    for name in LISTENERS:
        doc = document(name, cfg)
        assert doc["openapi"] == "3.1.0"
        for ops in doc["paths"].values():
            for op in ops.values():
                assert op["operationId"] and op["responses"]
    with pytest.raises(KeyError):
        document("nonesuch", cfg)


def test_the_deadline_header_pattern_is_what_the_lane_reads() -> None:
    from actors.sync.rules import MAX_DEADLINE_MS, resolve_deadline_ms
    from contracts import ContractError

    op = document("admin", load_config(env={}))["paths"]["/sync/v1/pricing/validate"]["post"]
    (header,) = [p for p in op["parameters"] if p["name"] == "Erpgw-Deadline-Ms"]
    pattern = re.compile(header["schema"]["pattern"])
    for value in ("0", "1", "09", "99999", "100000", str(MAX_DEADLINE_MS),
                  str(MAX_DEADLINE_MS + 1), "1000000", "-5", "1.5", ""):
        try:
            resolve_deadline_ms(value, None, 300)
            lane_reads = True
        except ContractError:
            lane_reads = False
        # The lane strips blanks and takes leading zeros; the document asks for neither.
        if pattern.fullmatch(value):
            assert lane_reads, value
        elif value not in ("09",):
            assert not lane_reads, value


def test_the_cli_prints_what_the_gateway_serves(tmp_path: Path) -> None:
    config = tmp_path / "erpgw.toml"
    config.write_text('[partner]\nwebhook_path = "/hooks/deals"\n')
    out = tmp_path / "webhooks.json"
    r = subprocess.run([sys.executable, "-m", "gateway", "schema", "openapi", "--config",
                        str(config), "--out", str(out)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "webhooks listener (3 operations)" in r.stdout
    doc = msgspec.json.decode(out.read_bytes())
    assert doc == document("webhooks", load_config(config, env={}))
    r = subprocess.run([sys.executable, "-m", "gateway", "schema", "openapi", "--listener",
                        "nonesuch"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "--listener" in r.stderr
    r = subprocess.run([sys.executable, "-m", "gateway", "schema", "openapi", "--config",
                        str(tmp_path / "missing.toml")], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2 and "config.missing" in r.stderr and "Traceback" not in r.stderr


async def _schemathesis(location: str, base: str, cwd: Path,
                        *extra: str) -> tuple[int, str]:
    result = await anyio.run_process(
        [sys.executable, "-c", ST, "run", location, "--url", base, *extra,
         "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "--phases", "coverage,fuzzing", "--max-examples", "8",
         "--workers", "1", "--seed", "11", "--no-color"],
        check=False, cwd=cwd)  # schemathesis keeps its state in ./.schemathesis
    return result.returncode, (result.stdout.decode(errors="replace")
                               + result.stderr.decode(errors="replace"))


async def test_schemathesis_finds_nothing_in_either_listener(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    async with running_gateway(broker, tmp_path, sim_url,
                               usage={"api_tokens": ["usage-token"]}) as gw:
        webhooks = gw.url.removesuffix(gw.cfg.http.path)
        async with aiohttp.ClientSession() as s:
            for name in LISTENERS:
                async with s.get(f"{gw.admin_url}{OPENAPI_PATH.format(listener=name)}") as r:
                    assert r.status == 200
                    assert msgspec.json.decode(await r.read()) == document(name, gw.cfg)
        # With a usage token, the intake's records are stored, not only refused (401).
        for name, base, extra in (("admin", gw.admin_url, ()),
                                  ("webhooks", webhooks,
                                   ("--header", "Authorization: Bearer usage-token"))):
            doc = document(name, gw.cfg)
            code, output = await _schemathesis(
                f"{gw.admin_url}{OPENAPI_PATH.format(listener=name)}", base, tmp_path, *extra)
            assert code == 0, f"{name}:\n{output[-6000:]}"
            # Loaded from a URL, schemathesis leaves out the operation serving that document.
            tested = len(_operations(doc)) - (name == "admin")
            assert f"Tested: {tested}" in output, output[-3000:]
            assert " passed" in output and "failure" not in output, output[-3000:]
        intake = await actor_stats(gw.admin_url, "usage-intake")
        assert intake["accepted"] > 0  # schema-valid records were stored
