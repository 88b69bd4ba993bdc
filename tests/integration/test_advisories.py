"""DLQ_EXACT when no handler can write the letter: a message that runs out of deliveries
while its actor keeps crashing is dead-lettered from the server's max-deliveries advisory."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from gateway.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_exhausted_messages_are_dead_lettered_from_the_advisory(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=1.0, seed=81,
                  gateway_env={"GW_FAULT": "erp.raise_every:1",  # the poster never succeeds
                               "ERPGW_CONSUMERS_MAX_DELIVER": "2"},
                  gateway_toml="[supervisor]\nintensity = 1000\n")
    try:
        await stack.start()
        await stack.bill_run(20)
        with anyio.fail_after(60):
            while len(await stack.dead_letters()) < 20:
                await anyio.sleep(0.25)
        # At rest (every consumer, the advisory one included, idle): no letter is still due.
        rest = await stack.wait_quiet()
        assert rest.quiet, (rest.busy, rest.moving)
        letters = await stack.dead_letters()
        assert len(letters) == 20  # exactly one letter per exhausted message
        assert {dl.code for dl in letters} == {"retry.max_deliveries"}
        assert {dl.business_key for dl in letters} == {
            f"billing:in_{i:06d}:v1" for i in range(1, 21)}
        assert all(dl.attempts == 2 and dl.data for dl in letters)
        audit = await stack.audit()
        assert audit["posted"] == 0 and audit["accepted"] == 20
    finally:
        await stack.close()
