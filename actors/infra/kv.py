"""Shared state in the cluster: JetStream key/value buckets with compare-and-set.

Theory of operation: a ``KvBucket`` is one KV bucket (nats-py's ``KeyValue``, a stream
``KV_<bucket>`` of one message per key) seen through one NATS connection. Every write is
conditional on the revision its caller read (``put_if``: revision 0 creates the key, N updates
it only while its last revision is N; the server checks ``Nats-Expected-Last-Subject-Sequence``
in the stream leader), so two gateway processes, or a frozen process that wakes up, can never
both win: the loser gets ``KvConflict`` and must re-read and re-plan. Reads go to the stream
leader's direct-get API; in a cluster (R3) a stored write is on a quorum before it is
acknowledged, so what a process reads after a conflict is the winner's write.

Keys: the bucket's keys are ``[A-Za-z0-9_=-]`` tokens joined by ``.``; ``key_token`` turns any
id into one token, reversibly and injectively (every other byte becomes ``=XX``).

Batches: ``put_many`` writes a batch of ``ATOMIC_FROM`` keys or more (fewer are faster key by
key, concurrently) as one JetStream atomic batch (``Nats-Batch-Id`` /
``Nats-Batch-Sequence`` / ``Nats-Batch-Commit``; the bucket's stream needs ``allow_atomic``,
which ``allow_atomic_writes`` sets), each message carrying its own key's
``Nats-Expected-Last-Subject-Sequence``: the stream leader checks every condition and stores
all the writes with one commit (one fsync) or none of them. A refused batch stored nothing; the
writes are then made one key per round trip, each still conditional, which tells which keys
lost (``KvConflict``) and stores the others, exactly as before batching. A batch whose commit
went unanswered (timeout, connection lost) may or may not be stored: every key of it is
answered ``BrokerUnavailable`` (re-read before trying again), never written a second time.

Reads of several keys: ``get_many`` asks for up to 1,000 keys in one batched direct get (the
stream's ``$JS.API.DIRECT.GET.<stream>`` with ``multi_last``: the last message of each key's
subject, then an end-of-batch status), one round trip instead of one per key; each key comes
with its revision (the message's stream sequence), the one a later ``put_if`` is conditional
on, exactly as ``get`` reads it. A batched read the server does not answer as one (an older
server, a stream without direct gets, no permission) is made key by key.

Errors: ``KvConflict`` (the key moved since it was read; retryable after a re-read) and
``BrokerUnavailable`` (retryable: timeout, reconnecting, no quorum).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from contracts import Retryable, new_id

from .bus import ATOMIC_FROM, BrokerUnavailable, NatsBus

__all__ = ["KvBucket", "KvConflict", "KvEntry", "allow_atomic_writes", "bucket_stream",
           "key_token"]

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
# Every ASCII character outside the plain set, and its escape (for ``str.translate``).
_ASCII_ESCAPES = {c: f"={c:02X}" for c in range(128) if not _TOKEN.fullmatch(chr(c))}
# At most this many reads or writes of one call in flight on the connection.
_IN_FLIGHT = 128
# The server's "wrong last sequence" error codes (a conditional write or delete refused).
_WRONG_LAST = (10071, 10164)
# Largest atomic batch nats-server accepts (a larger one is refused whole).
_MAX_ATOMIC = 1000
# The server's "atomic publish is disabled" (the stream has no ``allow_atomic``).
_ATOMIC_DISABLED = 10174
# Most keys one batched direct get asks for (the server answers 413 beyond about 1,024).
_MAX_BATCH_READ = 1000
# A direct get's message that is a key's delete or purge marker, not a value.
_MARKERS = ("DEL", "PURGE")
# After a batched read went unanswered while the same keys read one by one were answered (an
# identity whose broker authorization lacks the bare direct-get subject, a server that drops
# it): read key by key for this long before trying a batch again, not one timeout per batch.
_BATCH_READ_PAUSE_S = 300.0

log = logging.getLogger("erpgw.kv")


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _BatchAck(msgspec.Struct):
    seq: int = 0
    count: int = 0
    error: _ApiError | None = None


_batch_ack = msgspec.json.Decoder(_BatchAck)


class _BatchGet(msgspec.Struct):
    """A batched direct get: the last message of each subject, ``batch`` at most."""

    multi_last: list[str]
    batch: int


_batch_get = msgspec.json.Encoder()


class _BatchReadRefused(Exception):
    """The server did not answer a batched direct get as one (read the keys one by one)."""


class KvConflict(Retryable):
    """A conditional write lost: the key's revision is no longer the one it was read at."""

    code = "state.conflict"


@dataclass(frozen=True, slots=True)
class KvEntry:
    """A key's value and revision; ``value`` None: the key holds nothing (revision 0: never
    written, or deleted — ``put_if(key, …, 0)`` creates it again)."""

    key: str
    value: bytes | None
    revision: int


@functools.lru_cache(maxsize=4096)  # a batch's keys are made several times each; bounded
def key_token(text: str) -> str:
    """``text`` as one key token: ``[A-Za-z0-9_-]`` kept, every other UTF-8 byte ``=XX``."""
    if _TOKEN.fullmatch(text):  # the usual id: nothing to escape
        return text
    # A table lookup per character (an ASCII character's UTF-8 byte is its code point). The
    # character-by-character match and join this replaces was a quarter of the gateway's CPU
    # at peak load: every revenue line id has a ``:`` and passes here several times.
    if text.isascii():
        return text.translate(_ASCII_ESCAPES) or "="
    return "".join(_ASCII_ESCAPES.get(ord(ch), ch) if ch.isascii()
                   else "".join(f"={b:02X}" for b in ch.encode()) for ch in text)


def bucket_stream(bucket: str) -> str:
    """The stream that holds a bucket."""
    return f"KV_{bucket}"


class KvBucket:
    """One KV bucket on one connection; see the module docstring."""

    def __init__(self, js: JetStreamContext, bucket: str, *, timeout: float = 5.0,
                 atomic: bool = True) -> None:
        self.name = bucket
        self._kv = KeyValue(name=bucket, stream=bucket_stream(bucket), pre=f"$KV.{bucket}.",
                            js=js, direct=True)
        self._js = js
        self._timeout = timeout
        self.reads = 0
        self.writes = 0
        self.conflicts = 0
        self.batches = 0  # atomic batches stored
        self.batches_refused = 0  # atomic batches refused (then written key by key)
        self.read_batches = 0  # batched direct gets answered (one round trip each)
        # Whether ``get_many`` asks for several keys in one batched direct get; False once
        # the server refused one (the keys are then read one get each).
        self._batched_reads = True
        # Monotonic time before which ``get_many`` reads key by key (see _BATCH_READ_PAUSE_S).
        self._batched_paused_until = 0.0
        # Whether ``put_many`` tries an atomic batch first; False once the bucket's stream
        # refused one for not allowing them (``atomic=False``: always key by key).
        self._atomic = atomic

    @classmethod
    def on(cls, bus: NatsBus, bucket: str, *, atomic: bool = True) -> KvBucket:
        return cls(bus.jetstream, bucket, atomic=atomic)

    async def get(self, key: str) -> KvEntry:
        """The key's current value and revision. Raises ``BrokerUnavailable``."""
        self.reads += 1
        try:
            entry = await asyncio.wait_for(self._kv.get(key), self._timeout)
        except nats.js.errors.KeyNotFoundError:
            return KvEntry(key, None, 0)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BrokerUnavailable(f"read {self.name}/{key}: {exc!r}") from exc
        return KvEntry(key, entry.value or b"", int(entry.revision or 0))

    async def get_many(self, keys: Iterable[str]) -> dict[str, KvEntry]:
        """``get`` of every key: one batched direct get (``get_all``) per 1,000 keys, or,
        when the server does not answer one (refused, or not in time), ``get`` of each of its
        keys, ``_IN_FLIGHT`` at a time. Raises ``BrokerUnavailable``."""
        wanted = list(dict.fromkeys(keys))
        out: dict[str, KvEntry] = {}
        unanswered = False
        if (self._batched_reads and len(wanted) > 1
                and time.monotonic() >= self._batched_paused_until):
            left: list[str] = []
            for i in range(0, len(wanted), _MAX_BATCH_READ):
                chunk = wanted[i:i + _MAX_BATCH_READ]
                try:
                    out.update(await self.get_all(chunk))
                except _BatchReadRefused:
                    left += chunk
                except BrokerUnavailable:
                    left += chunk  # read key by key (which says whether the broker is down)
                    unanswered = True
            wanted = left
        for i in range(0, len(wanted), _IN_FLIGHT):
            for e in await asyncio.gather(*(self.get(k) for k in wanted[i:i + _IN_FLIGHT])):
                out[e.key] = e
        if unanswered:  # ... and the keys one by one were: the batched read is what fails
            self._batched_paused_until = time.monotonic() + _BATCH_READ_PAUSE_S
            log.warning("batched reads of bucket %s went unanswered while single reads were "
                        "answered: reading key by key for %.0f s (does this identity's broker "
                        "authorization allow $JS.API.DIRECT.GET.%s? erpgw broker "
                        "authorization prints it)", self.name, _BATCH_READ_PAUSE_S,
                        bucket_stream(self.name), extra={"code": "kv.batch_read_unanswered"})
        return out

    async def get_all(self, keys: Sequence[str]) -> dict[str, KvEntry]:
        """Every key's current value and revision (``KvEntry(key, None, 0)`` when absent,
        deleted or purged, as ``get``) from one batched direct get: one request, one round
        trip. Takes 1 to 1,000 distinct keys.

        Raises ``BrokerUnavailable`` (the batch went unanswered in time, or the connection
        failed) or ``_BatchReadRefused`` (the server did not answer it as a batched read:
        read the keys one by one; unless it only had no responder just then (503, as in a
        leader election), later ``get_many`` calls then read key by key at once).
        """
        if not keys or len(keys) > _MAX_BATCH_READ or len(set(keys)) < len(keys):
            raise ValueError("get_all takes 1 to 1,000 distinct keys")
        nc = self._js._nc
        pre = f"$KV.{self.name}."
        out = {k: KvEntry(k, None, 0) for k in keys}
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def take(msg: Msg) -> None:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is not None:
                if not done.done():
                    done.set_result(status)
                return
            key = headers.get("Nats-Subject", "")[len(pre):]
            if key in out and headers.get("KV-Operation") not in _MARKERS:
                out[key] = KvEntry(key, msg.data or b"", int(headers.get("Nats-Sequence", 0)))

        self.reads += len(keys)
        request = _batch_get.encode(_BatchGet(multi_last=[pre + k for k in keys],
                                              batch=len(keys)))
        try:
            sub = await nc.subscribe(nc.new_inbox(), cb=take)
            try:
                await nc.publish(f"$JS.API.DIRECT.GET.{bucket_stream(self.name)}", request,
                                 reply=sub.subject)
                status = await asyncio.wait_for(done, self._timeout)
            finally:
                await sub.unsubscribe()
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BrokerUnavailable(f"read {len(keys)} keys of {self.name}: {exc!r}") from exc
        if status == "404":  # none of the keys has a message
            status = "204"
        if status != "204":  # not a batched read's end
            if status != "503":  # refused (400, 408, 413...), not "no responder just now"
                self._batched_reads = False
            raise _BatchReadRefused(f"batched read of {self.name} answered {status}")
        self.read_batches += 1
        return out

    async def put_if(self, key: str, value: bytes, revision: int) -> int:
        """Write ``value`` if the key is still at ``revision`` (0: absent); the new revision.

        Raises ``KvConflict`` (someone wrote it since) or ``BrokerUnavailable`` (the outcome
        is unknown: re-read before trying again).
        """
        self.writes += 1
        try:
            if revision:
                return int(await asyncio.wait_for(
                    self._kv.update(key, value, last=revision), self._timeout))
            return int(await asyncio.wait_for(self._kv.create(key, value), self._timeout))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            self.conflicts += 1
            raise KvConflict(f"{self.name}/{key} moved past revision {revision}") from exc
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BrokerUnavailable(f"write {self.name}/{key}: {exc!r}") from exc

    async def put_all(self, writes: Sequence[tuple[str, bytes, int]]) -> dict[str, int]:
        """Write every ``(key, value, revision)`` (distinct keys, at most 1,000) if each key is
        still at its revision, as one atomic batch: all of them are stored or none. The new
        revision of each key.

        Raises ``KvConflict`` (the batch was refused and nothing was stored: a key moved, or
        the bucket's stream takes no atomic batches) or ``BrokerUnavailable`` (the commit went
        unanswered: the outcome is unknown, re-read before trying again).
        """
        if not writes or len(writes) > _MAX_ATOMIC or len({k for k, _, _ in writes}) < len(writes):
            raise ValueError("put_all takes 1 to 1,000 writes of distinct keys")
        nc = self._js._nc
        batch_id = new_id()
        pre = f"$KV.{self.name}."
        self.writes += len(writes)
        try:
            for seq, (key, value, revision) in enumerate(writes[:-1], 1):
                await nc.publish(pre + key, value, headers={
                    "Nats-Expected-Last-Subject-Sequence": str(revision),
                    "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(seq)})
            key, value, revision = writes[-1]
            reply = await nc.request(pre + key, value, timeout=self._timeout, headers={
                "Nats-Expected-Last-Subject-Sequence": str(revision),
                "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(len(writes)),
                "Nats-Batch-Commit": "1"})
            ack = _batch_ack.decode(reply.data)
        except (TimeoutError, nats.errors.Error, OSError, msgspec.DecodeError) as exc:
            raise BrokerUnavailable(f"batch of {len(writes)} to {self.name}: {exc!r}") from exc
        if ack.error is not None:
            self.batches_refused += 1
            if ack.error.err_code == _ATOMIC_DISABLED:
                self._atomic = False  # written key by key from now on (``put_many``)
            raise KvConflict(f"batch of {len(writes)} to {self.name} refused, nothing stored: "
                             f"{ack.error.description} ({ack.error.err_code})")
        if ack.count != len(writes) or ack.seq < len(writes):
            raise BrokerUnavailable(f"batch of {len(writes)} to {self.name}: the server "
                                    f"acknowledged {ack.count} at {ack.seq}")
        self.batches += 1
        # An atomic batch is stored as consecutive messages of the stream, in batch order.
        first = ack.seq - len(writes) + 1
        return {key: first + i for i, (key, _, _) in enumerate(writes)}

    async def put_many(self, writes: Iterable[tuple[str, bytes, int]]
                       ) -> dict[str, int | Exception]:
        """Every ``(key, value, revision)`` written if its key is still at its revision; per
        key the new revision or the exception (``KvConflict``/``BrokerUnavailable``). Never
        raises. ``ATOMIC_FROM`` or more distinct keys go as one atomic batch (``put_all``) per
        1,000 (fewer are written key by key, concurrently: faster below that size); a refused
        batch is written key by key (``put_if``, concurrently), which sorts the writes that
        lost from those that still apply."""
        todo = list(writes)
        out: dict[str, int | Exception] = {}
        if (self._atomic and len(todo) >= ATOMIC_FROM
                and len({k for k, _, _ in todo}) == len(todo)):
            left: list[tuple[str, bytes, int]] = []
            for i in range(0, len(todo), _MAX_ATOMIC):
                chunk = todo[i:i + _MAX_ATOMIC]
                try:
                    out.update(await self.put_all(chunk))
                except KvConflict:
                    left += chunk
                except BrokerUnavailable as exc:
                    out.update((k, exc) for k, _, _ in chunk)
            todo = left
        for i in range(0, len(todo), _IN_FLIGHT):
            chunk = todo[i:i + _IN_FLIGHT]
            results = await asyncio.gather(*(self.put_if(k, v, r) for k, v, r in chunk),
                                           return_exceptions=True)
            for (k, _, _), res in zip(chunk, results, strict=True):
                if isinstance(res, BaseException) and not isinstance(res, Exception):
                    raise res
                out[k] = res
        return out

    async def forget(self, key: str, *, keep_s: float = 3600.0) -> None:
        """Remove the key: a purge marker that itself expires after ``keep_s`` (so listing
        the bucket stays short). Raises ``BrokerUnavailable``."""
        self.writes += 1
        try:
            await asyncio.wait_for(self._kv.purge(key, msg_ttl=keep_s), self._timeout)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BrokerUnavailable(f"purge {self.name}/{key}: {exc!r}") from exc

    async def delete_if(self, key: str, revision: int) -> None:
        """Remove the key (a delete marker) if it is still at ``revision`` (> 0). Raises
        ``KvConflict`` (it moved) or ``BrokerUnavailable``."""
        self.writes += 1
        try:
            await asyncio.wait_for(self._kv.delete(key, last=revision), self._timeout)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST:
                self.conflicts += 1
                raise KvConflict(f"{self.name}/{key} moved past revision {revision}") from exc
            raise BrokerUnavailable(f"delete {self.name}/{key}: {exc!r}") from exc
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BrokerUnavailable(f"delete {self.name}/{key}: {exc!r}") from exc

    async def keys(self, key_prefix: str = "") -> list[str]:
        """Every key (starting with ``key_prefix``, ``.``-terminated, when given) with a message in
        the bucket (a removed key may still be listed until its marker expires; its ``get``
        answers no value). Raises ``BrokerUnavailable``."""
        prefix = f"$KV.{self.name}."
        try:
            info = await asyncio.wait_for(self._js.stream_info(
                bucket_stream(self.name), subjects_filter=f"{prefix}{key_prefix}>"),
                self._timeout)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BrokerUnavailable(f"list {self.name}: {exc!r}") from exc
        return sorted(s[len(prefix):] for s in (info.state.subjects or {}))


def bucket_config(bucket: str, *, replicas: int) -> api.KeyValueConfig:
    """A bucket of one revision per key, on disk, read through direct gets."""
    return api.KeyValueConfig(bucket=bucket, history=1, storage=api.StorageType.FILE,
                              replicas=replicas, direct=True)


async def allow_atomic_writes(js: JetStreamContext, bucket: str) -> None:
    """Let the bucket's stream take atomic batches (``put_many`` writes a batch of keys with
    one commit); idempotent, needs a connection allowed to update streams. Raises
    ``BrokerUnavailable``."""
    stream = bucket_stream(bucket)
    try:
        info = await asyncio.wait_for(js.stream_info(stream), 10.0)
        if not info.config.allow_atomic:
            await asyncio.wait_for(js.update_stream(
                api.StreamConfig.from_response({**info.config.as_dict(), "allow_atomic": True})),
                10.0)
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BrokerUnavailable(f"atomic writes for {bucket}: {exc!r}") from exc
