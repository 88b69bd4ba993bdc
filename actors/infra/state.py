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
  next version's differences; and one key per usage record and platform (flow 4: the
  aggregate a billing claim sends, and the amount and currency billing rated it at);
* ``sagas`` — one key per deal saga and per subscription record: a step's outcome is stored
  conditionally on the revision the step started from, so a process that wakes up from a freeze
  cannot overwrite a saga another process moved on.

The process's ledger keeps its audit rows and a copy (lineage, reports), written after the
shared write succeeded; nothing in it decides anything.

Errors: ``KvConflict`` (retryable: re-read and re-plan), ``BrokerUnavailable`` (retryable).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from contracts import Retryable, Subjects, new_id

from .bus import NatsBus
from .kv import KvBucket, KvConflict, allow_atomic_writes, bucket_config, key_token
from .ledger import Ledger, ParkedPayment, UploadRow, VersionMark, VersionRow

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

log = logging.getLogger("erpgw.state")

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
    # Flow 4: what the line is sent in (the aggregate id a billing claim rates), the amount's
    # currency, and whether the claim sends its group again (it may have been sent before).
    group: str = ""
    currency: str = ""
    again: bool = False


_upload = msgspec.msgpack.Decoder(_Upload)


@dataclass(frozen=True, slots=True)
class SharedLine:
    """A line's upload as every process sees it: its status, which process (``owner``, the
    stable identity of a data directory) last moved it, the revision read and the attempt that
    last moved it; its ``amount`` and, for a line of one version of a document, how many
    ``lines`` that version wrote (so a reader that finds some of them knows whether it found
    them all). ``amount`` and ``lines`` are None when not stored (a value written before they
    were, or a line never claimed). Flow 4: ``group`` (the aggregate a billing claim sends),
    the amount's ``currency``, and ``again`` (a claim to send its group again)."""

    status: str | None
    owner: str | None
    revision: int
    attempt: str | None = None
    amount: int | None = None
    lines: int | None = None
    group: str = ""
    currency: str = ""
    again: bool = False


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
        # Claims ``give_back`` could not give back (the broker did not answer): (platform,
        # line ids, attempt), tried again by ``give_back_stranded``.
        self._stranded: list[tuple[str, list[str], str]] = []

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
                line = SharedLine(u.status, u.owner, e.revision, u.attempt, u.amount, u.lines,
                                  u.group, u.currency, u.again)
            out[i] = self._seen[self._key(platform, i)] = line
        return out

    async def claim(self, platform: str, line_ids: Sequence[str], attempt: str,
                    now: float, *, amounts: Mapping[str, int] | None = None,
                    counts: Mapping[str, int] | None = None,
                    groups: Mapping[str, str] | None = None, again: bool = False) -> set[str]:
        """Take every line for ``attempt``, each conditional on the revision last read
        (``read`` first), storing its amount (``amounts``), its version's line count
        (``counts``) and what it is sent in (``groups``: for another process to send the very
        same again, flow 4's billing items) where given; ``again``: this claim sends a group
        claimed before, which may have been sent then, so it is never given back
        (``left_behind``). Returns the lines another process took meanwhile (the caller must
        not send them). Raises ``BrokerUnavailable``."""
        amounts, counts, groups = amounts or {}, counts or {}, groups or {}
        writes = []
        for i in line_ids:
            seen = self._seen.get(self._key(platform, i), SharedLine(None, None, 0))
            writes.append((self._key(platform, i), _encode(_Upload(
                "pending", self.owner, attempt, now, amounts.get(i), counts.get(i),
                groups.get(i, ""), "", again)), seen.revision))
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
                    "pending", self.owner, res, attempt, amounts.get(i), counts.get(i),
                    groups.get(i, ""), "", again)
        return lost

    async def mark(self, platform: str, line_ids: Sequence[str], status: str, attempt: str,
                   now: float, *, amounts: Mapping[str, int] | None = None,
                   currencies: Mapping[str, str] | None = None) -> None:
        """Mirror this process's outcome for its own lines (conditional on the revision it
        last wrote or read; after a lost race it reads again and writes only while the line is
        still its own or free). Each line keeps the amount (and currency), line count and
        group last read or written here unless ``amounts`` (``currencies``) gives its amount,
        so an outcome never drops them. Raises ``BrokerUnavailable``."""
        todo = list(dict.fromkeys(line_ids))
        unseen = [i for i in todo if self._key(platform, i) not in self._seen]
        if unseen:  # one read of them all, not one round trip each
            await self.read(platform, unseen)
        facts: dict[str, tuple[int | None, int | None, str, str]] = {}
        for i in todo:
            seen = self._seen[self._key(platform, i)]
            facts[i] = ((amounts or {}).get(i, seen.amount), seen.lines, seen.group,
                        (currencies or {}).get(i, seen.currency))
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

    async def record(self, ledger: Ledger, rows: Sequence[UploadRow]) -> None:
        """This process's outcome for its lines: the ledger first, then mirrored here with
        each line's amount and currency (a crash in between leaves the bucket behind the
        ledger, which is the authority on this process's own lines; ``left_behind`` catches
        up). Raises ``LedgerUnavailable``, ``BrokerUnavailable``."""
        await ledger.record_uploads(rows)
        by_status: dict[tuple[str, str, str], list[str]] = {}
        for r in rows:
            by_status.setdefault((r.platform, r.status, r.attempt), []).append(r.line_id)
        amounts = {(r.platform, r.line_id): r.amount for r in rows}
        currencies = {(r.platform, r.line_id): r.currency for r in rows}
        for (platform, status, attempt), ids in by_status.items():
            await self.mark(platform, ids, status, attempt, time.time(),
                            amounts={i: amounts[platform, i] for i in ids},
                            currencies={i: currencies[platform, i] for i in ids})

    async def take(self, platform: str, line_ids: Sequence[str], attempt: str, *,
                   amounts: Mapping[str, int] | None = None,
                   counts: Mapping[str, int] | None = None,
                   groups: Mapping[str, str] | None = None) -> set[str]:
        """``claim``, all or nothing: when another process took some lines meanwhile, what
        this attempt took is given back and the lines lost are returned (the caller sends
        none); when the broker cannot say, what may be stored is given back (best effort) and
        the error raised. Raises ``BrokerUnavailable``."""
        try:
            lost = await self.claim(platform, line_ids, attempt, time.time(), amounts=amounts,
                                    counts=counts, groups=groups)
        except Retryable as err:  # some claims may be stored: give them back
            await self.give_back(platform, line_ids, attempt, err)
            raise
        if lost:
            await self.mark(platform, [i for i in line_ids if i not in lost], "released",
                            attempt, time.time())
        return lost

    async def give_back(self, platform: str, line_ids: Sequence[str], attempt: str,
                        err: Exception) -> None:
        """Give back ``attempt``'s claims after ``err`` stopped it before anything was sent
        (the ledger holds no claim of it). Best effort: a claim that cannot be given back now
        stays this process's, which sends the line when it comes back here, or gives it back
        when it starts (``left_behind``), or before its next batch once the broker answers
        again (``give_back_stranded``): another process waiting for such a line must not wait
        for this one to restart."""
        try:
            await self.mark(platform, line_ids, "released", attempt, time.time())
        except Retryable as again:
            self._stranded.append((platform, list(line_ids), attempt))
            log.warning("%s: %d shared claim(s) of attempt %s not given back after %s (%s); "
                        "given back once the broker answers", platform, len(line_ids),
                        attempt, getattr(err, "code", type(err).__name__), again)

    async def give_back_stranded(self) -> int:
        """Give back what ``give_back`` could not: each line still ``pending`` here for this
        owner under the same attempt (nothing of it was sent; a line taken since by another
        attempt or process is left alone). The poster calls it before each batch, in its own
        task, so no attempt of its own runs meanwhile. Returns how many were given back;
        raises nothing (what still cannot be given back is tried again next time)."""
        if not self._stranded:
            return 0
        left: list[tuple[str, list[str], str]] = []
        released = 0
        for platform, ids, attempt in self._stranded:
            try:
                lines = await self.read(platform, ids)
                mine = [i for i in ids if lines[i].status == "pending"
                        and lines[i].owner == self.owner and lines[i].attempt == attempt]
                if mine:
                    await self.mark(platform, mine, "released", attempt, time.time())
                released += len(mine)
            except Retryable:
                left.append((platform, ids, attempt))
        self._stranded = left
        if released:
            log.warning("%d shared claim(s) left by a broker outage given back", released)
        return released

    async def left_behind(self, platform: str, ledger: Ledger, *,
                          amounts: bool = False) -> tuple[int, int]:
        """At start (no other incarnation of this owner runs then: its data directory is
        locked), settle the claims an earlier incarnation left here: a claim the owner's
        ledger does not hold ``pending`` died between the two claims, so nothing of it was
        sent: it is given back (``released``, conditionally); where the ledger has an outcome
        the bucket missed (a death between the two writes), that outcome is mirrored
        (``amounts``: with the amount the ledger kept). A claim the ledger holds ``pending``
        is left to the caller, and so is a claim to send a group again (``claim(...,
        again=True)``: what it sends may have been sent before). Returns (given back,
        mirrored). Raises ``LedgerUnavailable``, ``BrokerUnavailable``."""
        self.forget_seen()
        claims = await self.own_claims(platform)
        if not claims:
            return 0, 0
        states = await ledger.upload_states(platform, claims)
        moves: dict[str, list[str]] = {}
        for line_id in claims:
            status = states.get(line_id)
            if status in ("uploaded", "in_doubt"):  # the outcome the bucket missed
                moves.setdefault(status, []).append(line_id)
            elif status != "pending" and not claims[line_id].again:
                # no ledger claim: nothing of that attempt was sent
                moves.setdefault("released", []).append(line_id)
        for status, ids in moves.items():
            rated = await ledger.upload_amounts(platform, ids) \
                if amounts and status == "uploaded" else {}
            await self.mark(platform, ids, status, new_id(), time.time(),
                            amounts={i: a for i, (a, _) in rated.items()} or None,
                            currencies={i: c for i, (_, c) in rated.items()} or None)
        released = len(moves.get("released", ()))
        mirrored = sum(len(ids) for ids in moves.values()) - released
        if moves:
            log.warning("%s: %d shared claim(s) of an earlier attempt of this process that "
                        "never reached its ledger (so were never sent) given back; %d "
                        "outcome(s) mirrored", platform, released, mirrored)
        return released, mirrored

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
