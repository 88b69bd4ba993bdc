"""OpenAPI 3.1 documents per service, and schemathesis (a real external client) against each.

Schemathesis runs as its own process against a live sim with every check but
``positive_data_acceptance``: the platforms refuse integers written with a fraction
(``"invoices": 360.0``, and float money anywhere), which JSON Schema's ``integer`` cannot
express, so that one check would only report the deliberate strictness.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from sim import SimConfig, create_app
from sim._openapi import SERVICES, document

from .conftest import HOST, Http, free_port, running_sim

pytest.importorskip("schemathesis")

ST = ("import sys; from schemathesis.cli import schemathesis; "
      "sys.argv[0] = 'st'; sys.exit(schemathesis())")


def test_documents_cover_every_route_and_are_openapi_31() -> None:
    app = create_app(SimConfig())
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.method != "HEAD"}
    documented = {(method, path) for path, ops in document("all")["paths"].items()
                  for method in ops}
    served_docs = {("get", "/openapi.json")} | {("get", f"/{s}/openapi.json") for s in SERVICES}
    assert routes - served_docs == documented
    for service in SERVICES:
        doc = document(service)
        assert doc["openapi"] == "3.1.0"
        # billing also serves Stripe's list APIs at Stripe's paths (--billing-dialect stripe)
        assert all(p.startswith(f"/{service}/") or service == "sim"
                   or (service == "billing" and p.startswith("/v1/")) for p in doc["paths"])
        for ops in doc["paths"].values():
            for op in ops.values():
                assert op["operationId"] and op["responses"]
    with pytest.raises(KeyError):
        document("nonesuch")


async def test_documents_are_served(sim: Http) -> None:
    whole = (await sim.get("/openapi.json")).body
    assert whole["openapi"] == "3.1.0"
    erp = (await sim.get("/erp/openapi.json")).body
    assert set(erp["paths"]) < set(whole["paths"])
    assert "/erp/v1/gl/balances" in erp["paths"]
    schemas = erp["components"]["schemas"]
    assert schemas["Governance"]["properties"]["concurrencyLimit"]["type"] == "integer"


async def test_schemathesis_finds_nothing_in_any_service(tmp_path: Path) -> None:
    # One run over the merged document tests every operation of every service (one process
    # per service would cost twice the time for the same cases).
    operations = sum(len(ops) for ops in document("all")["paths"].values())
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/x", seed=3)
    async with running_sim(config) as http:
        result = await anyio.run_process(
            [sys.executable, "-c", ST, "run", f"{http.base}/openapi.json",
             "--checks", "all", "--exclude-checks", "positive_data_acceptance",
             "--phases", "coverage,fuzzing", "--max-examples", "10",
             "--workers", "1", "--seed", "11", "--no-color"],
            check=False,
            cwd=tmp_path,  # schemathesis keeps its state in ./.schemathesis
        )
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, output[-6000:]
    assert f"Tested: {operations}" in output, output[-3000:]
    assert " passed" in output and "failure" not in output
    assert "Schema validation mismatch" not in output, output[-3000:]
