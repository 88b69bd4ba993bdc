"""ERP faults against the whole stack (F16 429 storm, F17 5xx burst with the circuit breaker,
F18 commit-then-timeout): every run ends with lost = 0 and duplicates = 0."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import nats
import pytest

from contracts import Subjects
from gateway.stack import Stack

from .test_end_to_end import assert_clean

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_5xx_burst_opens_the_breaker_then_recovers(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=31,
                  gateway_toml="[erp_breaker]\nconsecutive_failures = 3\nopen_for = 0.5\n"
                               "open_for_cap = 2.0\n")
    await stack.start()
    nc = await nats.connect(stack.url, **stack.nats_options())
    try:
        events = await nc.subscribe(Subjects().mon_event("breaker"))
        await stack.set_faults({"erp": {"error_rate": 1.0, "status": 503}})
        await stack.bill_run(400)
        with anyio.fail_after(30):
            opened = msgspec.json.decode((await events.next_msg(timeout=30)).data)
        assert (opened["source"], opened["target"]) == ("closed", "open")
        assert "consecutive failures" in opened["reason"]
        # The breaker let a probe through during the burst and opened again: the gateway
        # kept trying, and nothing posted meanwhile.
        probe = msgspec.json.decode((await events.next_msg(timeout=30)).data)
        failed = msgspec.json.decode((await events.next_msg(timeout=30)).data)
        assert [(e["source"], e["target"]) for e in (probe, failed)] == [
            ("open", "half_open"), ("half_open", "open")]
        assert (await stack.audit())["posted"] == 0
        await stack.set_faults({})  # the burst ends
        result = await stack.wait_drained(400, stall_timeout=45)
        assert_clean(result, 400)
        assert result.dead_letters == []  # waiting out an outage never dead-letters
        seen = []
        while True:
            try:
                seen.append(msgspec.json.decode((await events.next_msg(timeout=0.5)).data))
            except nats.errors.TimeoutError:
                break
        assert ("half_open", "closed") in {(e["source"], e["target"]) for e in seen}
    finally:
        await nc.close()
        await stack.close()


async def test_429_storm_completes_without_loss(tmp_path: Path) -> None:
    # Bulk requests of 25, so that 600 invoices make at least 24 requests: with 30 % of them
    # answered 429, the storm is felt whatever the batching (no 429 at all: 0.7^24 ≈ 2e-4).
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=32, gateway_toml="[erp]\nbatch = 25\n")
    await stack.start()
    try:
        await stack.set_faults({"erp": {"error_rate": 0.3, "status": 429}})
        await stack.bill_run(600)
        result = await stack.wait_drained(600, stall_timeout=60)
        assert_clean(result, 600)
        assert result.dead_letters == []
        assert "(http.rate_limited)" in stack.tail("gateway.log", 5000)  # the storm was felt
    finally:
        await stack.close()


async def test_commit_then_timeout_posts_once(tmp_path: Path) -> None:
    """F18: the ERP commits, then the answer never comes; the retry carries the same
    idempotency key and is answered 'replayed' — never a second posting."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=33, gateway_toml="[erp]\ntimeout_s = 1.0\n")
    await stack.start()
    try:
        await stack.set_faults({"erp": {"commit_then_timeout_rate": 0.5}})
        await stack.bill_run(300)
        await stack.wait_injected("erp", "commit_then_timeout", 3)  # the fault was met
        await stack.set_faults({})
        result = await stack.wait_drained(300, stall_timeout=60)
        assert_clean(result, 300)
        assert result.audit["postings"] == 300
        assert "(http.ambiguous)" in stack.tail("gateway.log", 5000)  # timeouts did happen
    finally:
        await stack.close()


async def test_per_item_rejections_are_dead_lettered_exactly(tmp_path: Path) -> None:
    """F19: the ERP refuses a few items of each bulk request (validation). Exactly those are
    dead-lettered, with the ERP's code; the rest of each batch posts; nothing is retried."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=34)
    await stack.start()
    try:
        await stack.set_faults({"erp": {"item_reject_rate": 0.05}})
        await stack.bill_run(300)
        result = await stack.wait_drained(300, stall_timeout=45)
        audit = result.audit
        assert audit["rejected_count"] > 0
        assert result.lost == 0 and audit["duplicates"] == 0
        letters = result.dead_letters
        assert {dl.code for dl in letters} == {"erp.validation"}
        assert result.dlq_keys == set(audit["rejected_ids"])  # DLQ_EXACT
        assert len(letters) == audit["rejected_count"]
        assert all(dl.attempts == 1 for dl in letters)  # a business rejection is not retried
        assert audit["posted"] + audit["rejected_count"] == 300
    finally:
        await stack.close()
