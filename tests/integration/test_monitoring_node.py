"""A non-Python NATS client reads the gateway's monitoring: the official Node.js client (the
``nats`` package from npm) subscribes to ``erpgw.mon.metrics`` and parses the JSON.

The client is installed once into ``.venv/npm/`` (``npm install --prefix``) and reused; the test
is skipped only when node or npm is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import anyio
import msgspec
import pytest

from gateway.app import CONSUMERS

from .conftest import LiveGateway, billing_event, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
NPM_CACHE = ROOT / ".venv" / "npm"
NATS_JS = "2.29.3"  # the official NATS client for Node.js (nats.js v2)

# Reads two metrics snapshots and answers what it understood of them, one JSON line each.
SCRIPT = r"""
const { connect, StringCodec, nkeyAuthenticator } = require(process.argv[2]);
const [server, subject] = [process.argv[3], process.argv[4]];
// The broker's read-only monitor identity (its NKey seed file).
const seed = require("fs").readFileSync(process.argv[5], "utf8").trim();
(async () => {
  const nc = await connect({ servers: server, name: "erpgw-node-test",
    authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)),
    inboxPrefix: "_INBOX.monitor" });
  const timer = setTimeout(() => { console.error("no snapshot in 20 s"); process.exit(2); },
                           20000);
  const sc = StringCodec();
  for await (const m of nc.subscribe(subject, { max: 2 })) {
    const doc = JSON.parse(sc.decode(m.data));
    const billing = doc.lanes.billing;
    console.log(JSON.stringify({
      subject: m.subject, v: doc.v, seq: doc.seq, instance: doc.instance,
      at_is_number: typeof doc.at === "number",
      lane_in: billing.in, consumers: Object.keys(billing.consumers).sort(),
      pending: billing.consumers["erp-journal"].pending,
      created: doc.postings.created,
      p99_ms: doc.latency_ms.invoice_posting.p99,
      breaker: doc.breakers["erp.journal_bulk"].state,
      limiter_rate: doc.limiters.erp.rate,
      dead_lettered: doc.dlq.dead_lettered,
      restarts: doc.supervisor.restarts,
      lag_ms: doc.event_loop.lag_ms,
    }));
  }
  clearTimeout(timer);
  await nc.close();
})().catch((err) => { console.error(String(err)); process.exit(1); });
"""


async def _nats_js() -> Path:
    """The installed client's directory, installing it into the cache on first use."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.skip("node and npm are not installed: the Node.js NATS client cannot run "
                    "(install them, e.g. apt-get install nodejs npm, to run this test)")
    pkg = NPM_CACHE / "node_modules" / "nats"
    manifest = pkg / "package.json"
    if not manifest.exists() or json.loads(manifest.read_text())["version"] != NATS_JS:
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        await anyio.run_process([npm, "install", "--prefix", str(NPM_CACHE), "--no-audit",
                                 "--no-fund", "--loglevel=error", f"nats@{NATS_JS}"],
                                check=True)
    return pkg


async def test_node_client_reads_the_metrics(live_gateway: LiveGateway,
                                             tmp_path: Path) -> None:
    client = await _nats_js()
    for i in (501, 502):
        body = msgspec.json.encode(billing_event(i))
        assert (await live_gateway.post(body, signed(body)))[0] == 200
    with anyio.fail_after(15):  # both posted, so the snapshots the client reads show them
        while (await live_gateway.erp_postings("in_000502")) == []:
            await anyio.sleep(0.1)
    script = tmp_path / "watch.cjs"
    script.write_text(SCRIPT)
    try:
        done = await anyio.run_process(
            [shutil.which("node") or "node", str(script), str(client),
             live_gateway.cfg.nats.url, live_gateway.subjects.metrics,
             str(live_gateway.cfg.data_path / "identities" / "monitor.nk")], check=True)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"node client failed ({exc.returncode}): {exc.stderr.decode()}")
    docs = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert len(docs) == 2
    first, second = docs
    assert second["seq"] == first["seq"] + 1  # one snapshot a second, in order
    for doc in docs:
        assert doc["subject"] == "erpgw.mon.metrics" and doc["v"] == 1 and doc["at_is_number"]
        assert doc["consumers"] == sorted(d for ln, d, _ in CONSUMERS if ln == "billing")
        assert doc["lane_in"] == 2 and doc["created"] == 2 and doc["pending"] == 0
        assert doc["p99_ms"] > 0 and doc["breaker"] == "closed" and doc["limiter_rate"] == 50
        assert doc["dead_lettered"] == 0 and doc["restarts"] == 0 and doc["lag_ms"] >= 0
