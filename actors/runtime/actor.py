"""The actor base class: a long-lived task with a start handshake and a cooperative stop.

An actor is run by a supervisor as ``await task_group.start(actor.run)``. The contract:

* ``run()`` calls ``task_status.started()`` once, when the actor is really ready (consumer
  bound, state loaded), so the supervisor starts the next sibling only then;
* ``run()`` watches for a stop request (``wait_stop_requested()`` in a task of its own, or
  ``stop_requested`` between batches), stops taking new work, finishes what is in flight and
  returns; raising is a failure, returning is a normal exit;
* cancellation is the supervisor's last resort after the child's ``shutdown_timeout``.

The base class stays tiny on purpose: mailboxes, consumers and batching belong to the actors
that need them.
"""

from __future__ import annotations

import abc

import anyio
import anyio.abc
import anyio.lowlevel

__all__ = ["Actor"]


class Actor(abc.ABC):
    """Base class of every actor, supervisors included."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._stop_requested = False
        # Created lazily: an ``anyio.Event`` needs a running event loop, and actors (a
        # top-level supervisor in particular) are often built before the loop starts.
        self._stop_event: anyio.Event | None = None
        # Lifecycle as seen by whoever runs the actor; a supervisor keeps it current
        # ("new", "starting", "running", "stopped").
        self._lifecycle = "new"

    @abc.abstractmethod
    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Do the actor's work until a stop is requested and in-flight work is finished.

        Call ``task_status.started()`` exactly once, when ready. Returning is a normal exit;
        raising an ``Exception`` is a failure the supervisor handles according to the child's
        restart type. Runs in its own task inside the supervisor's task group.
        """

    def request_stop(self) -> None:
        """Ask the actor to finish its in-flight work and return from ``run()``.

        Idempotent, synchronous and safe to call before ``run()`` started (the actor then
        stops as soon as it checks). Does not wait: the supervisor waits for ``run()``.
        """
        if self._stop_requested:
            return
        self._stop_requested = True
        if self._stop_event is not None:
            self._stop_event.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    async def wait_stop_requested(self) -> None:
        """Return once ``request_stop()`` has been called (a checkpoint even if it already was)."""
        if self._stop_requested:
            await anyio.lowlevel.checkpoint()
            return
        if self._stop_event is None:
            self._stop_event = anyio.Event()
        await self._stop_event.wait()

    def statistics(self) -> dict[str, object]:
        """What health, monitoring and the bench may know about this actor (JSON-friendly).

        Subclasses extend the dict (queue depth, in flight, last error) rather than replace it.
        """
        state = self._lifecycle
        if self._stop_requested and state in ("starting", "running"):
            state = "stopping"
        return {"name": self.name, "state": state}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
