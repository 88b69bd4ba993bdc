"""``erpgw bench peak-billing --nats-url --gateway --sim``: the bench drives a stack someone else
started (here the test, with the ``Stack`` harness) and starts nothing of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest

from bench._target import broker_problem
from contracts import Subjects
from gateway.broker import EmbeddedBroker, free_port
from gateway.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def _billing_messages(url: str, options: dict[str, Any]) -> int:
    nc = await nats.connect(url, **options)
    try:
        info = await nc.jetstream().stream_info(Subjects().stream("billing"))
        return int(info.state.messages)
    finally:
        await nc.close()


async def test_bench_against_a_running_stack_starts_nothing_and_loses_nothing(
        tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack", seed=11)
    await stack.start()
    try:
        # Some earlier traffic, so the simulator's invoice numbers no longer start at 1.
        await stack.bill_run(20)
        assert (await stack.wait_drained(20, stall_timeout=30)).drained
        before = await _billing_messages(stack.url, stack.nats_options())
        bench_dir = tmp_path / "bench"
        argv = [sys.executable, "-m", "gateway", "bench", "peak-billing",
                "--nats-url", stack.url, "--gateway", stack.gateway_url, "--sim", stack.sim_url,
                "--gateway-pid", str(stack.gateway_pid), "--invoices", "150", "--max",
                "--baselines", "raw_hop", "--workdir", str(bench_dir), "--json", "--quiet"]
        # The targeted broker's credential, as an operator would give it (the admin seed:
        # the baselines make streams of their own).
        env = {**os.environ, "ERPGW_NATS_NKEY_SEED_FILE": str(stack.identities_dir / "admin.nk")}
        r = await anyio.to_thread.run_sync(lambda: subprocess.run(
            argv, capture_output=True, text=True, timeout=180, check=False, env=env))
        assert r.returncode == 0, r.stderr[-2000:]
        doc = msgspec.json.decode(r.stdout)

        assert doc["audit"]["lost"] == 0 and doc["audit"]["duplicates"] == 0
        assert doc["audit"]["sum_ok"] is True and doc["audit"]["drained"] is True
        assert doc["audit"]["per_leg"]["max"]["posted"] == 150
        assert all(v.startswith("targeted") for v in doc["topology"].values())
        # Nothing started: no broker store, no process logs in the bench's work directory,
        # and the harness's gateway is still its first and only process.
        assert not (bench_dir / "nats").exists()
        assert not (bench_dir / "gateway.log").exists() and not (bench_dir / "sim.log").exists()
        assert stack.gateway_running and stack.gateway_starts == 1
        # The load went through the given broker and the given gateway: its billing stream
        # grew by as many messages per invoice as for the harness's own 20.
        after = await _billing_messages(stack.url, stack.nats_options())
        assert before > 0 and after == before * (20 + 150) // 20
        billing = doc["gateway"]["billing"]
        assert billing["peak_rss_mb"] > 0 and billing["cpu_us_per_event"] > 0
        assert billing["latency_source"].startswith("per-invoice")  # numbering was followed
        # The baseline ran on the same broker.
        raw_hop = doc["legs"][0]["baselines"]["raw_hop"]
        assert raw_hop.get("available", True) and raw_hop["complete"], raw_hop
    finally:
        await stack.close()


async def test_a_broker_the_baselines_cannot_use_is_named_with_the_reason(
        broker: EmbeddedBroker) -> None:
    assert await broker_problem(broker.url, broker.nats_options("admin")) is None
    # The broker refuses anonymous clients: that is a reason too.
    refused = await broker_problem(broker.url)
    assert refused is not None and "authorization" in refused.lower()
    reason = await broker_problem(f"nats://127.0.0.1:{free_port()}")
    assert reason is not None and reason.startswith("cannot connect")
