"""The Actor base class: the stop handshake and default statistics."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from actors.runtime import Actor


class Idle(Actor):
    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await self.wait_stop_requested()


def test_an_actor_can_be_built_and_stopped_outside_an_event_loop() -> None:
    actor = Idle("idle")
    assert not actor.stop_requested
    actor.request_stop()
    actor.request_stop()  # idempotent
    assert actor.stop_requested
    assert actor.statistics() == {"name": "idle", "state": "new"}


def test_actor_is_abstract() -> None:
    with pytest.raises(TypeError):
        Actor("x")  # type: ignore[abstract]


async def test_wait_stop_requested_returns_after_request_stop() -> None:
    actor = Idle("idle")
    async with anyio.create_task_group() as tg:
        await tg.start(actor.run)
        await anyio.lowlevel.checkpoint()
        assert tg.cancel_scope.cancel_called is False
        actor.request_stop()
        actor.request_stop()
    # leaving the task group means run() returned
    assert actor.stop_requested


async def test_wait_stop_requested_when_already_requested_still_checkpoints() -> None:
    actor = Idle("idle")
    actor.request_stop()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await actor.wait_stop_requested()  # a checkpoint: the cancellation is delivered
        pytest.fail("wait_stop_requested() did not checkpoint")
    assert scope.cancelled_caught
