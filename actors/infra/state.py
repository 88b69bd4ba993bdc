"""The guards every gateway process shares, kept in the cluster (``actors.infra.kv``).

Theory of operation: what decides whether a flow may act (which version of an invoice the ERP
holds or may hold, which payments wait for their invoice, where a deal saga stands and which
subscription version is applied) lives in three KV buckets, not in a process's SQLite ledger,
so any gateway process on the cluster decides from the same facts, and every change is a
compare-and-set on the revision it was planned from:

* ``versions`` — one key per aggregate ``(source, object id)``: the version the ERP holds and
  the entry that applied it, and the version *claimed* (written before its ERP request, whose
  outcome is not known yet). ``claim`` is conditional on the revision the plan was made from:
  when another process claimed or applied the aggregate in between, the claim is refused and
  the poster re-reads and re-plans (``actors.erp.ordering``). ``apply`` never moves a version
  down and clears a claim at or below it; it retries its own conflicts (it only ever merges).
* ``parked`` — one key per parked payment (the envelope as delivered): any process may resume
  it once ``versions`` shows every invoice it pays applied; resuming publishes the same ids, so
  two processes resuming the same payment publish one posting.
* ``uploads`` — one key per line uploaded to a platform that takes uploads without an
  idempotency key (the revenue platform): which process took it and how it ended, so another
  process never sends a line one took (``SharedUploads``), and its amount (with, for an
  invoice version's lines, how many lines the version wrote), so any process can plan the
  next version's differences;
* ``sagas`` — one key per deal saga and per subscription record: a step's outcome is stored
  conditionally on the revision the step started from, so a process that wakes up from a freeze
  cannot overwrite a saga another process moved on.

The process's ledger keeps its audit rows and a copy (lineage, reports), written after the
shared write succeeded; nothing in it decides anything.

Errors: ``KvConflict`` (retryable: re-read and re-plan), ``BrokerUnavailable`` (retryable).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from contracts import Subjects

from .bus import NatsBus
from .kv import KvBucket, KvConflict, allow_atomic_writes, bucket_config, key_token
from .ledger import Ledger, ParkedPayment, VersionMark, VersionRow

__all__ = [
    "BUCKETS",
    "ReadVersion",
    "SagaRecords",
    "SharedLine",
    "SharedParking",
    "SharedSagas",
    "SharedUploads",
    "SharedVersions",
    "StoredSaga",
    "bucket_name",
    "provision_state",
]

# The shared buckets (their names are prefixed per deployment: ``bucket_name``).
BUCKETS = ("versions", "parked", "sagas", "uploads")
# How often ``apply`` re-reads and merges after losing a race before giving up (retryable).
_MERGE_ATTEMPTS = 16


def bucket_name(subjects: Subjects, kind: str) -> str:
    """``ERPGW_versions`` for the default prefix."""
    return f"{subjects.stream(kind).rsplit('_', 1)[0]}_{kind}"


async def provision_state(bus: NatsBus, subjects: Subjects, *, replicas: int = 1,
                          lease_ttl_s: float = 10.0) -> None:
    """Create the shared buckets (idempotent; an admin connection), each taking atomic batches
    (``KvBucket.put_many``: one commit per batch of keys), and the ``leases`` bucket whose keys
    expire ``lease_ttl_s`` after their last write (``actors.infra.lease``)."""
    from .lease import provision_leases  # lease.py builds on this module

    for kind in BUCKETS:
        await bus.ensure_kv(bucket_config(bucket_name(subjects, kind), replicas=replicas))
        await allow_atomic_writes(bus.jetstream, bucket_name(subjects, kind))
    await provision_leases(bus, subjects, ttl_s=lease_ttl_s, replicas=replicas)


class _Version(msgspec.Struct, frozen=True, omit_defaults=True):
    version: int | None = None
    entry: bytes | None = None
    claimed: int | None = None
    claimed_entry: bytes | None = None
    recorded_at: float = 0.0


_version = msgspec.msgpack.Decoder(_Version)
_encode = msgspec.msgpack.encode

Aggregate = tuple[str, str]


def _aggregate_key(agg: Aggregate) -> str:
    return f"{key_token(agg[0])}.{key_token(agg[1])}"


@dataclass(frozen=True, slots=True)
class ReadVersion:
    """An aggregate's row and the revision it was read at (0: no row yet)."""

    row: VersionRow | None
    revision: int


class SharedVersions:
    """The ``versions`` bucket; see the module docstring."""

    def __init__(self, bucket: KvBucket) -> None:
        self.bucket = bucket

    async def read(self, aggregates: Iterable[Aggregate]) -> dict[Aggregate, ReadVersion]:
        """Every aggregate's row (None when absent) and revision. Raises
        ``BrokerUnavailable``."""
        wanted = list(dict.fromkeys(aggregates))
        entries = await self.bucket.get_many(_aggregate_key(a) for a in wanted)
        out: dict[Aggregate, ReadVersion] = {}
        for agg in wanted:
            e = entries[_aggregate_key(agg)]
            if e.value is None:
                out[agg] = ReadVersion(None, e.revision)
                continue
            v = _version.decode(e.value)
            out[agg] = ReadVersion(VersionRow(agg[0], agg[1], v.version, v.entry, v.claimed,
                                              v.claimed_entry, v.recorded_at), e.revision)
        return out

    async def claim(self, claims: Sequence[tuple[VersionMark, ReadVersion]]
                    ) -> tuple[set[Aggregate], dict[Aggregate, int]]:
        """Claim each mark, conditionally on the revision its plan was read at. Returns the
        aggregates whose claim lost to another writer (re-read and re-plan them) and the new
        revision of each claim stored. Raises ``BrokerUnavailable`` (then some claims may be
        stored: they are only claims)."""
        writes: list[tuple[str, bytes, int]] = []
        for mark, seen in claims:
            row = seen.row
            value = _Version(None if row is None else row.version,
                             None if row is None else row.entry, mark.version, mark.entry,
                             mark.recorded_at)
            writes.append((_aggregate_key((mark.source, mark.object_id)), _encode(value),
                           seen.revision))
        results = await self.bucket.put_many(writes)
        lost: set[Aggregate] = set()
        stored: dict[Aggregate, int] = {}
        for mark, _ in claims:
            agg = (mark.source, mark.object_id)
            res = results[_aggregate_key(agg)]
            if isinstance(res, KvConflict):
                lost.add(agg)
            elif isinstance(res, Exception):
                raise res
            else:
                stored[agg] = res
        return lost, stored

    async def apply(self, marks: Sequence[VersionMark],
                    claimed: Mapping[Aggregate, int] | None = None) -> None:
        """Move each aggregate to its mark's version (never down; a claim at or below it is
        cleared), merging with whatever another process wrote meanwhile. ``claimed``: the
        revision of this caller's own claim of the mark's version, per aggregate: while the
        aggregate is still there, the write needs no read first. Raises
        ``BrokerUnavailable`` or, after ``_MERGE_ATTEMPTS`` lost races, ``KvConflict``."""
        best: dict[Aggregate, VersionMark] = {}
        for m in marks:
            agg = (m.source, m.object_id)
            if agg not in best or m.version >= best[agg].version:
                best[agg] = m
        todo = dict(best)
        known = {agg: rev for agg, rev in (claimed or {}).items() if agg in todo}
        for _ in range(_MERGE_ATTEMPTS):
            if not todo:
                return
            unknown = [agg for agg in todo if agg not in known]
            seen = await self.read(unknown) if unknown else {}
            writes: list[tuple[str, bytes, int]] = []
            for agg, mark in todo.items():
                if agg in known:  # still at our own claim of this very version
                    value = _Version(mark.version, mark.entry, None, None, mark.recorded_at)
                    writes.append((_aggregate_key(agg), _encode(value), known[agg]))
                    continue
                row = seen[agg].row
                if row is not None and row.version is not None and row.version > mark.version:
                    continue  # a newer version is applied already: nothing to move
                keep_claim = row is not None and row.claimed is not None \
                    and row.claimed > mark.version
                value = _Version(mark.version, mark.entry,
                                 row.claimed if keep_claim and row else None,
                                 row.claimed_entry if keep_claim and row else None,
                                 mark.recorded_at)
                writes.append((_aggregate_key(agg), _encode(value), seen[agg].revision))
            results = await self.bucket.put_many(writes)
            by_key = {_aggregate_key(agg): agg for agg in todo}
            todo, known = {}, {}
            for key, res in results.items():
                if isinstance(res, KvConflict):
                    todo[by_key[key]] = best[by_key[key]]  # read and merge next round
                elif isinstance(res, Exception):
                    raise res
        if todo:
            raise KvConflict(f"{len(todo)} aggregate(s) kept moving while being applied")

    async def applied(self, source: str, object_ids: Iterable[str]) -> set[str]:
        """The ids among ``object_ids`` (of ``source``) whose aggregate the ERP holds a version
        of. Raises ``BrokerUnavailable``."""
        rows = await self.read((source, i) for i in object_ids)
        return {agg[1] for agg, r in rows.items()
                if r.row is not None and r.row.version is not None}


class _Parked(msgspec.Struct, frozen=True):
    payment_id: str
    invoice_ids: tuple[str, ...]
    envelope: bytes
    subject: str
    stream_seq: int
    parked_at: float


_parked = msgspec.msgpack.Decoder(_Parked)


class SharedParking:
    """The ``parked`` bucket; see the module docstring."""

    def __init__(self, bucket: KvBucket) -> None:
        self.bucket = bucket

    async def park(self, rows: Sequence[ParkedPayment]) -> None:
        """Hold every row; a payment already held is left as it is. Raises
        ``BrokerUnavailable``."""
        results = await self.bucket.put_many(
            (key_token(r.payment_id), _encode(_Parked(r.payment_id, r.invoice_ids, r.envelope,
                                                      r.subject, r.stream_seq, r.parked_at)), 0)
            for r in rows)
        for res in results.values():
            if isinstance(res, Exception) and not isinstance(res, KvConflict):
                raise res

    async def held(self) -> list[ParkedPayment]:
        """The payments held, oldest first. Raises ``BrokerUnavailable``."""
        keys = await self.bucket.keys()
        entries = await self.bucket.get_many(keys)
        out = []
        for e in entries.values():
            if e.value is None:
                continue
            p = _parked.decode(e.value)
            out.append(ParkedPayment(p.payment_id, p.invoice_ids, p.envelope, p.subject,
                                     p.stream_seq, p.parked_at))
        return sorted(out, key=lambda p: (p.parked_at, p.payment_id))

    async def release(self, payment_ids: Iterable[str]) -> None:
        """Stop holding these payments (resumed or dead-lettered). Raises
        ``BrokerUnavailable``."""
        for pid in dict.fromkeys(payment_ids):
            await self.bucket.forget(key_token(pid))


@dataclass(frozen=True, slots=True)
class StoredSaga:
    """A saga's (or subscription record's) state as stored, and the revision it was read at
    (0: nothing stored yet)."""

    state: bytes | None
    revision: int


class _Saga(msgspec.Struct, frozen=True):
    status: str
    state: bytes
    updated_at: float


_saga = msgspec.msgpack.Decoder(_Saga)


class SharedSagas:
    """The ``sagas`` bucket; see the module docstring."""

    def __init__(self, bucket: KvBucket) -> None:
        self.bucket = bucket

    async def get(self, saga_id: str) -> StoredSaga:
        """Raises ``BrokerUnavailable``."""
        e = await self.bucket.get(key_token(saga_id))
        return StoredSaga(None if e.value is None else _saga.decode(e.value).state, e.revision)

    async def save(self, saga_id: str, status: str, state: bytes, *, revision: int,
                   now: float) -> int:
        """Store the saga's new state if it is still at ``revision``; the new revision.
        Raises ``KvConflict`` (another process moved it: re-read) or ``BrokerUnavailable``."""
        return await self.bucket.put_if(key_token(saga_id), _encode(_Saga(status, state, now)),
                                        revision)


class SagaRecords:
    """What a saga actor reads and writes: the shared ``sagas`` bucket (the guard: each write
    conditional on the revision this actor last read or wrote for that id) and the process's
    ledger (an audit row per write, and a copy). ``begin`` starts a message: revisions read for
    an earlier message are forgotten, so every decision starts from a fresh read."""

    def __init__(self, shared: SharedSagas, ledger: Ledger) -> None:
        self.shared = shared
        self.ledger = ledger
        self._revisions: dict[str, int] = {}

    def begin(self) -> None:
        self._revisions.clear()

    async def get(self, saga_id: str) -> bytes | None:
        """Raises ``BrokerUnavailable``."""
        stored = await self.shared.get(saga_id)
        self._revisions[saga_id] = stored.revision
        return stored.state

    async def save(self, saga_id: str, status: str, state: bytes, *,
                   correlation_id: str | None, now: float, event: str,
                   detail: str = "") -> None:
        """Store, conditionally on the revision last seen here (read first if none), then
        audit. Raises ``KvConflict`` (another process moved it: the message is redelivered
        and decided again from a fresh read), ``BrokerUnavailable`` or ``LedgerUnavailable``."""
        if saga_id not in self._revisions:
            await self.get(saga_id)
        self._revisions[saga_id] = await self.shared.save(
            saga_id, status, state, revision=self._revisions[saga_id], now=now)
        await self.ledger.save_saga(saga_id, status, state, correlation_id=correlation_id,
                                    now=now, event=event, detail=detail)


class _Upload(msgspec.Struct, frozen=True, omit_defaults=True):
    status: str
    owner: str
    attempt: str
    at: float
    # Added later, optional so values written before still decode: the line's amount, and
    # how many lines the document version it belongs to wrote (``SharedLine``).
    amount: int | None = None
    lines: int | None = None


_upload = msgspec.msgpack.Decoder(_Upload)


@dataclass(frozen=True, slots=True)
class SharedLine:
    """A line's upload as every process sees it: its status, which process (``owner``, the
    stable identity of a data directory) last moved it, the revision read and the attempt that
    last moved it; its ``amount`` and, for a line of one version of a document, how many
    ``lines`` that version wrote (so a reader that finds some of them knows whether it found
    them all). ``amount`` and ``lines`` are None when not stored (a value written before they
    were, or a line never claimed)."""

    status: str | None
    owner: str | None
    revision: int
    attempt: str | None = None
    amount: int | None = None
    lines: int | None = None


class SharedUploads:
    """The ``uploads`` bucket: one key per (platform, line id), the guard that keeps a line
    sent by one process at a time, for platforms that take uploads without an idempotency key
    (the revenue platform). The process's ledger stays the authority on its *own* attempts
    (the crash window between claim and answer is judged there); the bucket tells every other
    process that a line is taken (``pending``), finished (``uploaded``, ``in_doubt``) or free
    again (``released``, ``rejected``, or never claimed).

    Order of writes: a claim is taken here first (conditional on the revision read: a line
    another process claimed in between is not sent), then committed in the ledger, then the
    request is sent; an outcome is committed in the ledger first, then mirrored here by its
    owner. So a claim here that the owner's ledger does not hold ``pending`` proves that no
    request of that attempt left: ``own_claims`` finds them when the owner starts again, and
    ``mark(..., "released", ...)`` gives them back."""

    FREE = (None, "released", "rejected")

    def __init__(self, bucket: KvBucket, owner: str) -> None:
        self.bucket = bucket
        self.owner = owner
        self._seen: dict[str, SharedLine] = {}

    @staticmethod
    def _key(platform: str, line_id: str) -> str:
        return f"{key_token(platform)}.{key_token(line_id)}"

    async def read(self, platform: str, line_ids: Iterable[str]) -> dict[str, SharedLine]:
        """Every line's shared state (status None: never claimed). Raises
        ``BrokerUnavailable``."""
        ids = list(dict.fromkeys(line_ids))
        entries = await self.bucket.get_many(self._key(platform, i) for i in ids)
        out: dict[str, SharedLine] = {}
        for i in ids:
            e = entries[self._key(platform, i)]
            if e.value is None:
                line = SharedLine(None, None, e.revision)
            else:
                u = _upload.decode(e.value)
                line = SharedLine(u.status, u.owner, e.revision, u.attempt, u.amount, u.lines)
            out[i] = self._seen[self._key(platform, i)] = line
        return out

    async def claim(self, platform: str, line_ids: Sequence[str], attempt: str,
                    now: float, *, amounts: Mapping[str, int] | None = None,
                    counts: Mapping[str, int] | None = None) -> set[str]:
        """Take every line for ``attempt``, each conditional on the revision last read
        (``read`` first), storing its amount (``amounts``) and its version's line count
        (``counts``) where given; the lines another process took meanwhile (the caller must not
        send them). Raises ``BrokerUnavailable``."""
        amounts, counts = amounts or {}, counts or {}
        writes = []
        for i in line_ids:
            seen = self._seen.get(self._key(platform, i), SharedLine(None, None, 0))
            writes.append((self._key(platform, i), _encode(_Upload(
                "pending", self.owner, attempt, now, amounts.get(i), counts.get(i))),
                seen.revision))
        results = await self.bucket.put_many(writes)
        lost: set[str] = set()
        for i in line_ids:
            res = results[self._key(platform, i)]
            if isinstance(res, KvConflict):
                lost.add(i)
            elif isinstance(res, Exception):
                raise res
            else:
                self._seen[self._key(platform, i)] = SharedLine(
                    "pending", self.owner, res, attempt, amounts.get(i), counts.get(i))
        return lost

    async def mark(self, platform: str, line_ids: Sequence[str], status: str, attempt: str,
                   now: float, *, amounts: Mapping[str, int] | None = None) -> None:
        """Mirror this process's outcome for its own lines (conditional on the revision it
        last wrote or read; after a lost race it reads again and writes only while the line is
        still its own or free). Each line keeps the amount and line count last read or written
        here unless ``amounts`` gives its amount, so an outcome never drops them. Raises
        ``BrokerUnavailable``."""
        todo = list(dict.fromkeys(line_ids))
        unseen = [i for i in todo if self._key(platform, i) not in self._seen]
        if unseen:  # one read of them all, not one round trip each
            await self.read(platform, unseen)
        facts: dict[str, tuple[int | None, int | None]] = {}
        for i in todo:
            seen = self._seen[self._key(platform, i)]
            facts[i] = ((amounts or {}).get(i, seen.amount), seen.lines)
        for _ in range(_MERGE_ATTEMPTS):
            if not todo:
                return
            writes = [(self._key(platform, i),
                       _encode(_Upload(status, self.owner, attempt, now, *facts[i])),
                       self._seen[self._key(platform, i)].revision) for i in todo]
            results = await self.bucket.put_many(writes)
            retry: list[str] = []
            for i in todo:
                res = results[self._key(platform, i)]
                if isinstance(res, KvConflict):
                    now_line = (await self.read(platform, [i]))[i]
                    if now_line.owner in (None, self.owner) or now_line.status in self.FREE:
                        retry.append(i)
                elif isinstance(res, Exception):
                    raise res
                else:
                    self._seen[self._key(platform, i)] = SharedLine(status, self.owner, res,
                                                                    attempt, *facts[i])
            todo = retry
        if todo:
            raise KvConflict(f"{len(todo)} upload line(s) kept moving while being marked")

    async def own_claims(self, platform: str) -> dict[str, SharedLine]:
        """This owner's lines of ``platform`` still ``pending`` here (claims of an earlier
        incarnation of this process: the caller runs it at start, before any claim of its
        own). Reads every key of the platform once. Raises ``BrokerUnavailable``."""
        prefix = f"{key_token(platform)}."
        keys = await self.bucket.keys(prefix)
        ids = [_untoken(k[len(prefix):]) for k in keys if k.startswith(prefix)]
        lines = await self.read(platform, ids)
        return {i: line for i, line in lines.items()
                if line.status == "pending" and line.owner == self.owner}

    def forget_seen(self) -> None:
        """Drop the revisions read for an earlier batch."""
        self._seen.clear()


def _untoken(part: str) -> str:
    """The text ``key_token`` made the key token ``part`` from."""
    if part == "=":
        return ""
    out = bytearray()
    i = 0
    while i < len(part):
        if part[i] == "=":
            out.append(int(part[i + 1:i + 3], 16))
            i += 3
        else:
            out += part[i].encode()
            i += 1
    return out.decode()
