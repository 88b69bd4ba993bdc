"""The close-watch pass's scratch store (``actors.infra.spill``): records come back by
partition in the order written, and the file goes with the block, however it ends."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from actors.infra.spill import Spill, SpillUnavailable


async def test_records_come_back_by_partition_in_the_order_written(tmp_path: Path) -> None:
    rng = random.Random(3)
    rows = [(rng.randrange(4), f"r{i}".encode()) for i in range(200)]
    async with Spill.opened(tmp_path) as spill:
        await spill.add("a", rows[:120])
        await spill.add("b", [(0, b"other kind")])
        await spill.add("a", rows[120:])
        for part in range(4):
            assert await spill.read("a", part) == [d for p, d in rows if p == part]
        assert await spill.read("b", 0) == [b"other kind"]
        assert await spill.read("b", 1) == []
        assert spill.rows == 201
        assert len(os.listdir(tmp_path)) == 1  # its own directory, under the parent


async def test_the_file_is_deleted_when_the_block_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        async with Spill.opened(tmp_path) as spill:
            await spill.add("a", [(0, b"x")])
            raise RuntimeError("the pass failed")
    assert not os.listdir(tmp_path)


async def test_a_spill_that_cannot_be_created_is_a_gateway_error(tmp_path: Path) -> None:
    parent = tmp_path / "a-file"
    parent.write_text("not a directory")
    with pytest.raises(SpillUnavailable) as err:
        async with Spill.opened(parent):
            pass
    assert err.value.code == "spill.unavailable"
