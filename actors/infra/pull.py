"""A JetStream pull fetch that takes a batch from the subscription's queue in one go.

nats-py's ``PullSubscription.fetch(batch)`` hands over each message of a batch through
``Subscription.next_msg``: a task (and a ``uuid4`` name) per message, and on Python 3.11 a
second task inside ``asyncio.wait_for``. Each is at least one turn of the event loop, so a
fetch of 100 messages takes 100 turns; on a busy loop (the webhook ingress, the router and
the posters share it) that made a fetch of an already-delivered batch last 15 to 100 ms, and the
ERP poster's cycle waited on it at maximum load (docs/benchmarks.md, "Seventh round").

``fetch`` here sends the same pull requests as nats-py 2.16 (a ``no_wait`` request first,
with ``expires`` only when nothing was left over from an earlier request: the server then
waits for a first message and ends the request when no more are pending; a lingering request
for the rest of the timeout when the first ended empty) and reads the answers the same way
(status 404/408 ends a request, 100 is a heartbeat, 409 is skipped, any other status is an
error), but takes every message already queued without waiting, and waits once per arrival of
messages rather than once per message.

It reads four attributes nats-py does not document (the subscription's queue and byte count,
the request subject and the inbox); ``supported`` says whether they are there, and
``actors.infra.bus.PullConsumer`` uses nats-py's own ``fetch`` when they are not. nats-py is
pinned in requirements.lock, and ``tests/actors/test_pull_fetch.py`` fails if they move.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

__all__ = ["fetch", "supported"]

_STATUS = api.Header.STATUS
_END = (api.StatusCode.NO_MESSAGES, api.StatusCode.REQUEST_TIMEOUT)
_HEARTBEAT = api.StatusCode.CONTROL_MESSAGE
_SKIP = api.StatusCode.CONFLICT


def supported(psub: Any) -> bool:
    """Whether ``psub`` (a nats-py ``PullSubscription``) has what ``fetch`` reads."""
    sub = getattr(psub, "_sub", None)
    return (sub is not None and isinstance(getattr(sub, "_pending_queue", None), asyncio.Queue)
            and isinstance(getattr(sub, "_pending_size", None), int)
            and isinstance(getattr(psub, "_nms", None), str)
            and isinstance(getattr(psub, "_deliver", None), str)
            and getattr(psub, "_nc", None) is not None)


class _Pull:
    """One fetch's reading of the subscription's queue."""

    def __init__(self, psub: Any, batch: int) -> None:
        self.sub = psub._sub
        self.queue: asyncio.Queue[Msg] = self.sub._pending_queue
        self.nc = psub._nc
        self.msgs: list[Msg] = []
        self.needed = batch

    def _take(self) -> Msg:
        msg = self.queue.get_nowait()
        self.sub._pending_size -= len(msg.data)
        self.queue.task_done()  # a drain of the connection joins this queue
        return msg

    def leftovers(self) -> None:
        """What an earlier request delivered after its fetch returned; a status left there
        belonged to that request and is dropped (as nats-py drops it)."""
        while self.needed and not self.queue.empty():
            msg = self._take()
            if msg.headers is None or _STATUS not in msg.headers:
                self.msgs.append(msg)
                self.needed -= 1

    def _file(self, msg: Msg) -> bool:
        """Keep a message, or read a status; True when it ends the request (404/408)."""
        status = msg.headers.get(_STATUS) if msg.headers else None
        if not status:
            self.msgs.append(msg)
            self.needed -= 1
            return False
        if status in _END:
            return True
        if status in (_HEARTBEAT, _SKIP):
            return False
        raise nats.js.errors.APIError.from_msg(msg)

    def ready(self) -> bool:
        """Take what is queued; True when the request has ended (404/408) or the batch is
        full."""
        while self.needed and not self.queue.empty():
            if self._file(self._take()):
                return True
        return not self.needed

    async def arrival(self, deadline: float) -> bool:
        """Wait for the next message or status until ``deadline`` (monotonic); True when the
        request has ended, False when it goes on; raises ``TimeoutError`` when nothing came."""
        left = deadline - time.monotonic()
        if self.nc.is_closed:
            raise nats.errors.ConnectionClosedError
        try:
            if left <= 0:
                raise TimeoutError
            msg = await asyncio.wait_for(self.queue.get(), left)
        except TimeoutError:
            if self.nc.is_closed:
                raise nats.errors.ConnectionClosedError from None
            raise
        self.sub._pending_size -= len(msg.data)
        self.queue.task_done()
        return self._file(msg)

    async def request(self, psub: Any, *, no_wait: bool, expires_s: float | None) -> None:
        req: dict[str, Any] = {"batch": self.needed}
        if expires_s is not None:
            req["expires"] = int(expires_s * 1_000_000_000) - 100_000
        if no_wait:
            req["no_wait"] = True
        await self.nc.publish(psub._nms, json.dumps(req).encode(), psub._deliver)

    async def collect(self, deadline: float) -> None:
        """Read one request's answers until it ends, the batch is full or ``deadline``."""
        try:
            while not self.ready():
                if await self.arrival(deadline):
                    return
        except TimeoutError:
            return


async def fetch(psub: Any, batch: int, timeout: float) -> list[Msg]:
    """Up to ``batch`` messages of pull subscription ``psub`` within ``timeout`` s; raises
    nats-py's ``TimeoutError`` when none came (as its ``fetch`` does), its
    ``ConnectionClosedError`` when the connection closed, ``APIError`` for an error status."""
    if batch < 1:
        raise ValueError("batch must be >= 1")
    start = time.monotonic()
    deadline = start + timeout
    pull = _Pull(psub, batch)
    pull.leftovers()
    if not pull.needed:
        return pull.msgs
    # First request: what is there now (waiting for a first message only when nothing was
    # left over: the server ends a no_wait request with expires once no more are pending).
    await pull.request(psub, no_wait=True, expires_s=None if pull.msgs else timeout)
    await pull.collect(deadline)
    if pull.msgs:
        return pull.msgs
    # Second request: a lingering one for what is left of the timeout.
    left = deadline - time.monotonic()
    if left * 1_000_000_000 <= 100_000:
        raise nats.errors.TimeoutError
    await pull.request(psub, no_wait=False, expires_s=left)
    await pull.collect(deadline)
    if not pull.msgs:
        raise nats.errors.TimeoutError
    return pull.msgs
