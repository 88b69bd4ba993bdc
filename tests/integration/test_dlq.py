"""Dead letters as an operator meets them: listed, shown, replayed after a fix (posting
exactly once), purged — all through the ``erpgw dlq`` command against a running stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from gateway.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def dlq(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "dlq", *args, "--nats-url",
                           stack.url, "--data-dir", str(stack.data_dir)],
                          capture_output=True, text=True, timeout=60, check=False)


def rows(stack: Stack, *args: str) -> list[dict[str, Any]]:
    r = dlq(stack, "ls", "--json", *args)
    assert r.returncode == 0, r.stderr
    out: list[dict[str, Any]] = msgspec.json.decode(r.stdout)
    return out


async def test_rejected_postings_are_replayed_after_the_fix(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=21)
    await stack.start()
    try:
        # The ERP refuses every bulk request with a 422: a business rejection, not retried.
        await stack.set_faults({"erp": {"error_rate": 1.0, "status": 422}})
        await stack.bill_run(20)
        with anyio.fail_after(60):
            while len(await stack.dead_letters()) < 20:
                await anyio.sleep(0.1)
        letters = rows(stack)
        assert len(letters) == 20
        assert {r["code"] for r in letters} == {"http.rejected"}
        assert all(r["key"].startswith("billing:in_") for r in letters)
        assert (await stack.audit())["posted"] == 0

        shown = dlq(stack, "show", str(letters[0]["seq"]), "--json")
        assert shown.returncode == 0, shown.stderr
        doc = msgspec.json.decode(shown.stdout)
        assert doc["message"]["payload"]["type"] == "erp.journal.post.v1"

        # Acting needs a filter (or --all-matching): no accidental mass replay.
        refused = dlq(stack, "replay")
        assert refused.returncode == 2 and "--all-matching" in refused.stderr

        await stack.set_faults({})
        before = await stack.stream_last_seq("billing")
        dry = dlq(stack, "replay", "--code", "http.", "--dry-run")
        assert dry.returncode == 0 and "20 letter(s) would be replayed" in dry.stdout
        # A dry run moves nothing: the command has returned and the lane holds no new message.
        assert await stack.stream_last_seq("billing") == before
        assert (await stack.audit())["posted"] == 0

        done = dlq(stack, "replay", "--code", "http.")
        assert done.returncode == 0 and "20 letter(s) replayed" in done.stdout
        with anyio.fail_after(60):
            while (await stack.audit())["posted"] < 20:
                await anyio.sleep(0.1)
        audit = await stack.audit()
        assert (audit["posted"], audit["duplicates"], audit["unexpected"]) == (20, 0, 0)
        assert rows(stack) == []  # resolved letters are hidden ...
        assert {r["resolved"] for r in rows(stack, "--all")} == {"replayed"}  # ... not deleted
        again = dlq(stack, "replay", "--code", "http.")
        assert "nothing to replay" in again.stdout
        rest = await stack.wait_quiet()  # every consumer idle, the counts stable
        assert rest.quiet, (rest.busy, rest.moving)
        assert (rest.audit["posted"], rest.audit["postings"], rest.audit["duplicates"]) == (
            20, 20, 0)
    finally:
        await stack.close()


async def test_poison_is_dead_lettered_without_blocking_and_can_be_purged(
        tmp_path: Path) -> None:
    from actors.infra import NatsBus, OutMsg
    from contracts import Subjects

    stack = Stack(tmp_path, ack_wait_s=2.0, seed=22)
    await stack.start()
    try:
        bus = await NatsBus.connect(stack.url, auth=stack.auth())
        try:
            for i in range(3):  # undecodable bytes on the invoice subject
                await bus.publish(OutMsg(Subjects().invoice_issued, b"\xc1poison" + bytes([i]),
                                         f"poison-{i}"))
        finally:
            await bus.close()
        await stack.bill_run(100)
        result = await stack.wait_drained(100, stall_timeout=30)
        assert result.lost == 0 and result.audit["posted"] == 100
        letters = rows(stack, "--code", "contract.")
        assert len(letters) == 3 and {r["code"] for r in letters} == {"contract.malformed"}
        shown = msgspec.json.decode(dlq(stack, "show", str(letters[0]["seq"]), "--json").stdout)
        assert shown["message"] is None and shown["undecodable"]["bytes"] == 8
        purged = dlq(stack, "purge", "--code", "contract.", "--note", "test poison")
        assert "3 letter(s) purged" in purged.stdout
        assert rows(stack) == []
    finally:
        await stack.close()


async def test_replay_of_history_doubles_nothing(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=23)
    await stack.start()
    try:
        await stack.bill_run(60)
        result = await stack.wait_drained(60, stall_timeout=30)
        assert result.lost == 0

        def replay(*args: str) -> dict[str, Any]:
            r = subprocess.run([sys.executable, "-m", "gateway", "replay", "--lane", "billing",
                                "--since", "1h", "--json", "--nats-url", stack.url,
                                "--data-dir", str(stack.data_dir), *args],
                               capture_output=True, text=True, timeout=60, check=False)
            assert r.returncode == 0, r.stderr
            doc: dict[str, Any] = msgspec.json.decode(r.stdout)
            return doc

        one = replay("--key", "in_000001", "--dry-run")
        assert one["events"] == 1 and one["run"] is None
        router_before = next(c for c in await stack.consumer_states()
                             if c.name == "invoice-router")
        everything = replay()
        assert everything["events"] == 60 and everything["run"]
        # The event that proves the replay ran through: the router has acknowledged the
        # lane's last message (the replay's), then the whole system is at rest.
        last = await stack.stream_last_seq("billing")
        router = await stack.wait_consumed("billing", "invoice-router", last)
        assert router.delivered_stream_seq >= last > router_before.delivered_stream_seq
        rest = await stack.wait_quiet()
        assert rest.quiet, (rest.busy, rest.moving)
        audit = rest.audit
        assert (audit["posted"], audit["postings"], audit["duplicates"]) == (60, 60, 0)
    finally:
        await stack.close()
