"""Leases in the cluster: one holder at a time for a singleton, and the live members.

Theory of operation: the ``leases`` KV bucket (``actors.infra.kv``) keeps its messages for
``ttl`` seconds only (the bucket's ``max_age``), so a key nobody rewrites disappears ``ttl``
seconds after its last write, by the server's own clock, whatever happened to its writer.

* ``KvLease`` — one key per singleton (``lease.<name>``). A process *takes* it with a create
  (revision 0: only while nobody holds it), *renews* it every ``ttl / 3`` with a write
  conditional on the revision it holds, and *releases* it on a clean stop with a delete
  conditional on that revision. Two processes can never both take or renew it: the loser's
  conditional write is refused (``KvConflict``). A holder that dies stops renewing; its key
  expires ``ttl`` after its last renewal and the next standby poll (every ``ttl / 6``) takes
  it. The holder counts itself the holder only until ``sent + ttl * HOLD_FRACTION`` of its
  last renewal acknowledged (``sent``: when that renewal was sent, so before the server
  stamped it), which ends before the key can expire: a holder that froze, or cannot reach the
  broker, stops counting itself the holder before anyone else may take over. The singleton
  confirms the lease (a renewal) before each pass and its pass is cancelled when the lease
  is lost. The work a singleton does stays idempotent: a lease is a schedule, the
  compare-and-set guards and idempotency keys remain what keeps a write single.
* ``Members`` — one key per live gateway process (``member.<id>``), renewed the same way;
  ``count`` is the number of keys that hold a record, i.e. the processes that renewed within
  the last ``ttl`` seconds (the budgets' share, ``actors.limits``).

The bucket's ``max_age`` is the TTL in force: ``provision_leases`` creates the bucket with the
configured TTL (and sets it again when it changed); every lease reads it back on start.

Errors: ``BrokerUnavailable`` is retried at the next tick (``keep``); a lease never raises
out of ``keep``.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import anyio
import anyio.abc
import msgspec
import nats.errors
import nats.js.errors
from nats.js import api

from contracts import Subjects

from .bus import BrokerUnavailable, NatsBus
from .kv import KvBucket, KvConflict, KvEntry, bucket_stream, key_token
from .state import bucket_name

__all__ = [
    "HOLD_FRACTION",
    "LEASES",
    "KvLease",
    "LeaseStore",
    "Members",
    "bucket_ttl",
    "leases_bucket",
    "process_id",
    "provision_leases",
    "run_while_held",
]

log = logging.getLogger("erpgw.lease")

LEASES = "leases"
# A holder counts itself the holder for this fraction of the TTL after its last renewal was
# sent: the rest covers clock-rate differences and the server's expiry timer (the key cannot
# expire earlier than a full TTL after that renewal was sent).
HOLD_FRACTION = 0.8
DEFAULT_TTL_S = 10.0

T = TypeVar("T")


class LeaseStore(Protocol):
    """What a lease needs of a KV bucket (``KvBucket``; an in-memory one in unit tests)."""

    async def get(self, key: str) -> KvEntry: ...
    async def put_if(self, key: str, value: bytes, revision: int) -> int: ...
    async def delete_if(self, key: str, revision: int) -> None: ...
    async def keys(self, key_prefix: str = "") -> list[str]: ...


def process_id() -> str:
    """A name for this process that no other process shares: host, pid and a random tag."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def leases_bucket(subjects: Subjects) -> str:
    """``ERPGW_leases`` for the default prefix."""
    return bucket_name(subjects, LEASES)


async def provision_leases(bus: NatsBus, subjects: Subjects, *, ttl_s: float,
                           replicas: int = 1) -> None:
    """Create the ``leases`` bucket with ``max_age = ttl_s`` (or set its ``max_age`` to
    ``ttl_s`` when it exists with another). An admin connection. Raises
    ``BrokerUnavailable``."""
    name = leases_bucket(subjects)
    await bus.ensure_kv(api.KeyValueConfig(bucket=name, history=1, ttl=ttl_s,
                                           storage=api.StorageType.FILE, replicas=replicas,
                                           direct=True))
    js = bus.jetstream
    try:
        info = await js.stream_info(bucket_stream(name))
        config = info.config
        if config.max_age is None or abs(config.max_age - ttl_s) > 1e-3:
            log.warning("lease bucket %s: TTL %s s -> %g s", name, config.max_age, ttl_s)
            config.max_age = ttl_s
            # The server requires the duplicate window to be at most max_age.
            if config.duplicate_window is not None and config.duplicate_window > ttl_s:
                config.duplicate_window = ttl_s
            await js.update_stream(config)
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BrokerUnavailable(f"lease bucket {name}: {exc!r}") from exc


async def bucket_ttl(bucket: KvBucket) -> float | None:
    """The bucket's ``max_age`` in seconds (None: none). Raises ``BrokerUnavailable``."""
    try:
        info = await bucket._js.stream_info(bucket_stream(bucket.name))
    except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
        raise BrokerUnavailable(f"info {bucket.name}: {exc!r}") from exc
    age = info.config.max_age
    return float(age) if age else None


class _Record(msgspec.Struct, frozen=True):
    holder: str
    ttl_s: float
    at: float  # wall clock of the write (for people reading the bucket)


_record = msgspec.msgpack.Decoder(_Record)


def _holder_of(value: bytes) -> str:
    """The holder a lease value names (``?`` for a value this code did not write)."""
    try:
        return _record.decode(value).holder
    except msgspec.DecodeError:
        return "?"


class _Renewed:
    """One key this process keeps alive: take (revision 0), renew (held revision)."""

    def __init__(self, store: LeaseStore, key: str, *, holder: str, ttl_s: float,
                 clock: Callable[[], float], bucket_ttl_from: KvBucket | None = None) -> None:
        if not 0 < ttl_s < math.inf:
            raise ValueError(f"lease ttl must be finite and > 0, got {ttl_s}")
        self.store = store
        self.key = key
        self.holder = holder
        self.ttl_s = ttl_s
        self._clock = clock
        self.revision = 0
        self.valid_until = -math.inf
        self.seen_holder: str | None = None
        self.acquired = 0
        self.renewals = 0
        self.lost = 0
        self.failures = 0
        self.last_error: str | None = None
        self._lock = anyio.Lock()  # one take or renewal at a time (keeper and passes)
        self._bucket = bucket_ttl_from

    async def effective_ttl(self) -> None:
        """Use the bucket's ``max_age`` as the TTL (a key expires then), when it can be read
        (``bucket_ttl_from``). Never raises."""
        if self._bucket is None:
            return
        try:
            ttl = await bucket_ttl(self._bucket)
        except BrokerUnavailable:
            return
        if ttl is not None and abs(ttl - self.ttl_s) > 1e-3:
            log.warning("%s: bucket TTL %g s, configured %g s: using the bucket's",
                        self.key, ttl, self.ttl_s)
            self.ttl_s = ttl

    def _value(self) -> bytes:
        return msgspec.msgpack.encode(_Record(self.holder, self.ttl_s, time.time()))

    def held(self) -> bool:
        return self.revision > 0 and self._clock() < self.valid_until

    def _drop(self) -> None:
        if self.revision:
            self.lost += 1
            log.warning("lease %s lost by %s", self.key, self.holder)
        self.revision = 0
        self.valid_until = -math.inf

    async def tick(self) -> bool:
        """Take the key when nobody holds it, renew it while this process does; whether this
        process holds it now. Never raises."""
        try:
            async with self._lock:
                return await self._tick()
        except BrokerUnavailable as exc:
            self.failures += 1
            self.last_error = str(exc)
            if not self.held():
                self._drop()
            return self.held()

    async def _tick(self) -> bool:
        sent = self._clock()
        if self.revision and sent < self.valid_until:
            try:
                self.revision = await self.store.put_if(self.key, self._value(), self.revision)
            except KvConflict:
                # Expired and taken by another, or a renewal of ours whose answer was lost
                # landed after all: read who holds it.
                entry = await self.store.get(self.key)
                if entry.value is None or _holder_of(entry.value) != self.holder:
                    self._drop()
                    return await self._take()
                self.revision = await self.store.put_if(self.key, self._value(),
                                                        entry.revision)
            self.valid_until = sent + self.ttl_s * HOLD_FRACTION
            self.renewals += 1
            self.seen_holder = self.holder
            return True
        self._drop()  # past its hold: never renew, take again only if it is free
        return await self._take()

    async def _take(self) -> bool:
        entry = await self.store.get(self.key)
        if entry.value is not None:
            self.seen_holder = _holder_of(entry.value)
            if self.seen_holder != self.holder:
                return False
            # Still this process's record (it froze or lost the broker past its hold, and
            # nobody took over meanwhile): renewing on that very revision is safe.
        sent = self._clock()
        try:
            self.revision = await self.store.put_if(self.key, self._value(), entry.revision)
        except KvConflict:
            return False  # another process took it first
        self.valid_until = sent + self.ttl_s * HOLD_FRACTION
        self.acquired += 1
        self.seen_holder = self.holder
        log.info("lease %s taken by %s", self.key, self.holder)
        return True

    async def release(self) -> None:
        """Delete the key if this process still holds it (so a standby takes over at its next
        poll, not a TTL later). Never raises."""
        revision, self.revision, self.valid_until = self.revision, 0, -math.inf
        if not revision:
            return
        try:
            await self.store.delete_if(self.key, revision)
            self.seen_holder = None
        except (KvConflict, BrokerUnavailable) as exc:
            log.info("lease %s not released (%s): it expires by itself", self.key, exc)

    def statistics(self) -> dict[str, object]:
        return {"key": self.key, "me": self.holder, "held": self.held(),
                "holder": self.seen_holder, "ttl_s": self.ttl_s, "acquired": self.acquired,
                "renewals": self.renewals, "lost": self.lost, "failures": self.failures,
                "last_error": self.last_error}


class KvLease(_Renewed):
    """The lease of one singleton (``lease.<name>``); see the module docstring.

    ``keep`` runs the takes and renewals until cancelled, then releases; ``confirm`` renews
    (or takes) at once and says whether this process holds it; ``held`` is the local view
    (no I/O); ``lost_event`` is set whenever a held lease is lost or expires locally.
    """

    def __init__(self, store: LeaseStore, name: str, *, holder: str,
                 ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic,
                 bucket_ttl_from: KvBucket | None = None) -> None:
        super().__init__(store, f"lease.{key_token(name)}", holder=holder, ttl_s=ttl_s,
                         clock=clock, bucket_ttl_from=bucket_ttl_from)
        self.name = name

    async def confirm(self) -> bool:
        """Renew now (or take it when free): whether this process holds the lease. Before a
        pass. Never raises."""
        return await self.tick()

    async def keep(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                   ) -> None:
        """Take or renew every ``ttl / 3`` until cancelled; then release (shielded)."""
        await self.effective_ttl()
        task_status.started()
        try:
            while True:
                # Renew every third of the TTL; while another holds it, look twice as often.
                await anyio.sleep(self.ttl_s / (3 if await self.tick() else 6))
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.ttl_s / 3):
                await self.release()

    def statistics(self) -> dict[str, object]:
        return {"name": self.name, **super().statistics()}


async def run_while_held(lease: KvLease, work: Callable[[], Awaitable[T]]
                         ) -> tuple[bool, T | None]:
    """Run ``work`` if ``lease`` is confirmed now, cancelling it as soon as this process stops
    counting itself the holder; ``(True, result)`` when it ran to the end, ``(False, None)``
    when it did not run or was cancelled. Raises what ``work`` raises."""
    if not await lease.confirm():
        return False, None
    result: list[T] = []
    error: list[Exception] = []

    async def watch(scope: anyio.CancelScope) -> None:
        while lease.held():
            await anyio.sleep(min(0.25, lease.ttl_s / 10))
        scope.cancel()

    async with anyio.create_task_group() as tg:
        async def body() -> None:
            try:
                result.append(await work())
            except Exception as exc:  # re-raised below, outside the task group
                error.append(exc)
            tg.cancel_scope.cancel()

        tg.start_soon(watch, tg.cancel_scope)
        tg.start_soon(body)
    if error:
        raise error[0]
    if result:
        return True, result[0]
    log.warning("lease %s lost during a pass: the pass was cancelled", lease.name)
    return False, None


class Periodic(Protocol):
    """What ``run_periodically`` needs of an actor (``actors.runtime.Actor`` has it)."""

    @property
    def stop_requested(self) -> bool: ...

    async def wait_stop_requested(self) -> None: ...


async def run_periodically(actor: Periodic, interval_s: float, lease: KvLease | None,
                           one_pass: Callable[[], Awaitable[None]], *,
                           task_status: anyio.abc.TaskStatus[None]) -> None:
    """A periodic job's life: keep ``lease`` (when given) the whole time, report started, then
    run ``one_pass`` every ``interval_s`` (the first after one interval) until the actor is
    asked to stop; stopping releases the lease. ``one_pass`` itself decides, with
    ``run_while_held``, whether this process runs the pass."""
    async with anyio.create_task_group() as tg:
        if lease is not None:
            await tg.start(lease.keep)
        task_status.started()
        while not actor.stop_requested:
            with anyio.move_on_after(interval_s):
                await actor.wait_stop_requested()
            if actor.stop_requested:
                break
            await one_pass()
        tg.cancel_scope.cancel()  # the lease's keeper: releases the lease


class Members(_Renewed):
    """This process's membership key (``member.<id>``) and the count of live members."""

    PREFIX = "member."

    def __init__(self, store: LeaseStore, *, holder: str, ttl_s: float = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.monotonic,
                 bucket_ttl_from: KvBucket | None = None) -> None:
        super().__init__(store, f"{self.PREFIX}{key_token(holder)}", holder=holder,
                         ttl_s=ttl_s, clock=clock, bucket_ttl_from=bucket_ttl_from)
        self.count = 1

    async def refresh(self) -> int:
        """Renew this process's key and count the members whose key holds a record (this
        process always counts itself). Keeps the last count when the broker cannot be
        read. Never raises."""
        await self.tick()
        try:
            keys = await self.store.keys(self.PREFIX)
            live = 0
            for key in keys:
                if key == self.key:
                    continue
                if (await self.store.get(key)).value is not None:
                    live += 1
        except BrokerUnavailable as exc:
            self.failures += 1
            self.last_error = str(exc)
            return self.count
        self.count = live + 1
        return self.count

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "members": self.count}
