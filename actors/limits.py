"""The rate-limiter actor and its hub: one request budget per platform account, per process.

Theory of operation
-------------------
A platform limits an *account*, not an endpoint: the ERP's journal bulk poster, the vendor-bill
poster, the deal saga's sales orders and the reconciler all spend the one ERP account's
concurrency and request rate. So the process holds one ``LimiterHub`` with one budget (a pure
``RateLimiter``: token bucket, concurrency cap, adaptive on 429) per account, and every adapter
of an account holds the same ``AccountLimiter`` handle (it satisfies
``actors.resilience.Limiter``, the protocol ``PlatformGuard`` and ``Monitor`` are typed
against).

The hub belongs to the ``RateLimiterActor``, a child of the supervision tree started before
the adapters: on start it *opens* the hub with fresh budgets, every few hundred milliseconds it
does the housekeeping (leases reclaimed, buckets filled for the statistics), and when it stops
or dies it *closes* the hub. The hot path stays a plain method call: adapters and actor share
one event loop, so a mailbox hop per permit (or per lease) would buy nothing but latency.

While the hub is closed (the actor is down, F35) the handles fail closed:

* ``acquire`` answers "ask again in ``closed_wait`` seconds": no call starts, adapters pause;
* ``on_throttled`` / ``on_success`` are dropped: there is no budget to adapt;
* ``release`` only counts the call as ended.

When the next incarnation opens the hub, each budget starts with an empty bucket (it ramps up
at ``rate``: no burst the platform may already have seen from the previous incarnation) and
``adopt`` s what the previous one knew that is a fact about the world: the permits still in
their calls (they keep their concurrency slots; a release of such a permit frees the slot it
held, never one granted by the new incarnation, so the cap holds across a restart) and the
platform's pending Retry-After deadline. The adaptive rate starts again from the configured
one (a 429 will lower it again if the platform is still overloaded).

Several gateway processes (``SharedBudgets``, on when the rate-limiter actor is given one):
each process announces itself in the ``leases`` bucket (``actors.infra.lease.Members``: a key
per process that expires unless renewed) and takes ``1/N`` of each account's configured limits,
N the live members (``set_members``: rate, burst, min_rate and recovery divided by N, the
concurrency cap too, at least 1 each); and a 429 one process is answered is published on
``<prefix>.limits.throttled`` so that every other process's budget of that account is
throttled as if it had been answered the 429 itself (held for the Retry-After the first one
saw, the bucket emptied, the rate decreased once). One process alone (N = 1) keeps the
configured limits exactly. Without ``SharedBudgets`` the budget is per process.

The hub and the handles are synchronous, with ``now`` passed in (the caller's monotonic clock):
tests/actors/test_limits.py drives them as tables and hypothesis properties. Not thread-safe:
the event loop's thread only.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .crash import fault
from .infra import NatsBus
from .infra.bus import BrokerUnavailable
from .infra.lease import Members
from .resilience import LimiterConfig, RateLimiter
from .runtime import Actor

__all__ = ["AccountLimiter", "CrashOnce", "LimiterHub", "RateLimiterActor", "SharedBudgets",
           "share_of"]

log = logging.getLogger("erpgw.limits")

# The counters of ``RateLimiter.statistics`` that add up across incarnations.
_COUNTERS = ("granted", "used", "returned", "refused", "throttles", "decreases", "recoveries",
             "leases", "reclaimed")


def share_of(config: LimiterConfig, members: int) -> LimiterConfig:
    """One of ``members`` processes' share of an account's limits: ``config`` itself for one;
    else rate, burst, min_rate, recovery, concurrency and max_lease divided by ``members``
    (burst, concurrency and max_lease at least 1). Raises ``ValueError`` for ``members`` < 1."""
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if members == 1:
        return config
    burst = max(1, config.burst // members)
    return msgspec.structs.replace(
        config, rate=config.rate / members, burst=burst, min_rate=config.min_rate / members,
        recovery=None if config.recovery is None else config.recovery / members,
        concurrency=(None if config.concurrency is None
                     else max(1, config.concurrency // members)),
        max_lease=None if config.max_lease is None else min(burst, config.max_lease))


class AccountLimiter:
    """The handle of one platform account's budget in a ``LimiterHub``: what adapters hold.

    Delegates to the account's current ``RateLimiter`` while the hub is open; fails closed
    while it is not (see the module docstring). Counts the permits it granted that are not
    released yet (``outstanding``) across incarnations, which is how the concurrency cap
    survives a restart.
    """

    __slots__ = ("_announced_until", "_budget", "_closed_refusals", "_config", "_hold_until",
                 "_hub", "_members", "_name", "_outstanding", "_remote_throttles", "_retired")

    def __init__(self, hub: LimiterHub, name: str, config: LimiterConfig) -> None:
        self._hub = hub
        self._name = name
        self._config = config
        self._budget: RateLimiter | None = None
        self._outstanding = 0  # granted through this handle (any incarnation), not released
        self._hold_until = -math.inf  # the last closed budget's Retry-After deadline
        self._retired = dict.fromkeys(_COUNTERS, 0)  # counters of closed incarnations
        self._closed_refusals = 0
        self._members = 1  # the live processes sharing the account (SharedBudgets)
        self._announced_until = -math.inf  # the last hold told to the other processes
        self._remote_throttles = 0

    # -- the Limiter protocol --------------------------------------------------------------

    @property
    def name(self) -> str:
        """The platform account. Raises nothing."""
        return self._name

    @property
    def config(self) -> LimiterConfig:
        """The account's configured limits. Raises nothing."""
        return self._config

    @property
    def is_open(self) -> bool:
        """Whether a budget grants permits now (the rate-limiter actor is up). Raises nothing."""
        return self._budget is not None

    @property
    def outstanding(self) -> int:
        """Permits granted and not released yet, whichever incarnation granted them.
        Raises nothing."""
        return self._outstanding

    @property
    def hold_until(self) -> float:
        """No permit before this time (a 429's Retry-After); ``-inf`` when none is known.
        Raises nothing."""
        return self._budget.hold_until if self._budget is not None else self._hold_until

    def acquire(self, n: int, now: float) -> float:
        """``RateLimiter.acquire`` while the hub is open; ``closed_wait`` (ask again then)
        while it is closed: fail closed. Raises ``ValueError`` when ``n`` could never be
        granted (below 1, above ``burst`` or ``concurrency``)."""
        budget = self._budget
        if budget is None:
            cfg = self._config
            if not 1 <= n <= cfg.burst or (cfg.concurrency is not None and n > cfg.concurrency):
                raise ValueError(f"acquire: n must be in [1, min(burst, concurrency)], got {n}")
            self._closed_refusals += 1
            return self._hub.closed_wait
        wait = budget.acquire(n, now)
        if wait <= 0:
            self._outstanding += n
        return wait

    def release(self, n: int = 1) -> None:
        """The calls of ``n`` granted permits have ended: free their concurrency slots (in the
        current budget, which adopted the slots of earlier incarnations' permits).

        Raises ``ValueError`` when ``n`` is below 1 or more than are outstanding.
        """
        if not 1 <= n <= self._outstanding:
            raise ValueError(f"release: n must be in [1, {self._outstanding}], got {n}")
        self._outstanding -= n
        if self._budget is not None:
            self._budget.release(n)

    def on_throttled(self, retry_after: float | None, now: float) -> None:
        """``RateLimiter.on_throttled`` while open; dropped while closed. A hold that ends
        later than the last one announced is told to the other processes (the hub's
        ``on_throttle``). Raises nothing."""
        budget = self._budget
        if budget is None:
            return
        budget.on_throttled(retry_after, now)
        notify = self._hub.on_throttle
        if notify is not None and budget.hold_until > self._announced_until:
            self._announced_until = budget.hold_until
            notify(self._name, budget.hold_until - now)

    def on_remote_throttle(self, hold_s: float, now: float) -> None:
        """Another process of the deployment was answered 429 for this account: throttle as
        if this one had been, for ``hold_s`` seconds from ``now``; not announced again.
        Dropped while closed. Raises nothing."""
        budget = self._budget
        if budget is None or not 0 <= hold_s < math.inf:
            return
        self._remote_throttles += 1
        budget.on_throttled(hold_s, now)
        self._announced_until = max(self._announced_until, budget.hold_until)

    @property
    def members(self) -> int:
        """The processes sharing the account's limits (1: this one alone). Raises nothing."""
        return self._members

    def set_members(self, members: int, now: float) -> None:
        """Take ``1/members`` of the configured limits from ``now`` on (``share_of``).
        Raises ``ValueError`` for ``members`` < 1."""
        share = share_of(self._config, members)
        if members == self._members:
            return
        self._members = members
        if self._budget is not None:
            self._budget.reconfigure(share, now)

    def on_success(self, now: float) -> None:
        """``RateLimiter.on_success`` while open; dropped while closed. Raises nothing."""
        if self._budget is not None:
            self._budget.on_success(now)

    def statistics(self) -> dict[str, object]:
        """The budget's statistics (counters summed over incarnations), whether it is open,
        the hub's incarnation and the refusals while closed. Raises nothing."""
        budget = self._budget
        cfg = self._config
        if budget is not None:
            stats = budget.statistics()
        else:
            stats = {"name": self._name, "rate": 0.0, "configured_rate": cfg.rate,
                     "burst": cfg.burst, "tokens": 0.0, "concurrency": cfg.concurrency,
                     "in_flight": self._outstanding, "acquired": self._outstanding,
                     "leased": 0, "leases_out": 0,
                     "hold_until": self._hold_until if self._hold_until > -math.inf else None,
                     "epoch": 0, **dict.fromkeys(_COUNTERS, 0)}
        for key, value in self._retired.items():
            count = stats[key]
            stats[key] = (count if isinstance(count, int) else 0) + value
        stats["open"] = budget is not None
        stats["incarnation"] = self._hub.incarnation
        stats["closed_refusals"] = self._closed_refusals
        stats["members"] = self._members
        stats["remote_throttles"] = self._remote_throttles
        return stats

    # -- the hub's side --------------------------------------------------------------------

    def _open(self, now: float) -> None:
        budget = RateLimiter(self._name, share_of(self._config, self._members),
                             start_full=False)
        budget.adopt(self._outstanding, self._hold_until, now)
        self._budget = budget

    def _close(self) -> None:
        budget = self._budget
        if budget is None:
            return
        self._budget = None
        self._hold_until = max(self._hold_until, budget.hold_until)
        stats = budget.statistics()
        for key in _COUNTERS:
            count = stats[key]
            self._retired[key] += count if isinstance(count, int) else 0

    def _tick(self, now: float) -> None:
        if self._budget is not None:
            self._budget.tick(now)

    def __repr__(self) -> str:
        state = "open" if self._budget is not None else "closed"
        return (f"AccountLimiter({self._name!r}, {state}, "
                f"outstanding={self._outstanding})")


class LimiterHub:
    """One budget per platform account for the whole process; see the module docstring.

    ``accounts`` maps each account name to its limits. ``closed_wait`` is what ``acquire``
    answers while the hub is closed: how soon a paused adapter asks again (so it resumes that
    soon after a restart). Starts closed: nothing is granted before the rate-limiter actor
    opens it. Raises ``ValueError`` for an empty ``accounts`` or a ``closed_wait`` not > 0.
    """

    def __init__(self, accounts: Mapping[str, LimiterConfig], *,
                 closed_wait: float = 0.05) -> None:
        if not accounts:
            raise ValueError("a limiter hub needs at least one account")
        if not 0 < closed_wait < math.inf:
            raise ValueError(f"closed_wait must be finite and > 0, got {closed_wait}")
        self.closed_wait = closed_wait
        self._handles = {name: AccountLimiter(self, name, cfg) for name, cfg in accounts.items()}
        # Told ``(account, hold seconds)`` of every new 429 hold (``SharedBudgets``).
        self.on_throttle: Callable[[str, float], None] | None = None
        self._open = False
        self._incarnation = 0
        self.opened_at: float | None = None
        self.closed_at: float | None = None
        # The last time it was closed before being opened again (the actor's restart, F35).
        self.last_outage_s: float | None = None

    @property
    def is_open(self) -> bool:
        """Whether the budgets grant permits (the rate-limiter actor is up). Raises nothing."""
        return self._open

    @property
    def incarnation(self) -> int:
        """How many times the hub was opened (1 for the first rate-limiter actor).
        Raises nothing."""
        return self._incarnation

    @property
    def accounts(self) -> tuple[AccountLimiter, ...]:
        """Every account's handle, in configuration order. Raises nothing."""
        return tuple(self._handles.values())

    def account(self, name: str) -> AccountLimiter:
        """The handle of account ``name``; every caller gets the same one.
        Raises ``KeyError`` for an account the hub was not configured with."""
        try:
            return self._handles[name]
        except KeyError:
            raise KeyError(f"no rate-limit budget for platform account {name!r}; "
                           f"known: {sorted(self._handles)}") from None

    def open(self, now: float) -> None:
        """A new incarnation: fresh budgets (empty buckets) that adopt the permits still out
        and the pending Retry-After deadlines. Closes the previous one first if it is still
        open. Raises nothing."""
        self.close(now)
        if self.closed_at is not None:
            self.last_outage_s = max(0.0, now - self.closed_at)
        self._incarnation += 1
        for handle in self._handles.values():
            handle._open(now)
        self._open = True
        self.opened_at = now

    def close(self, now: float | None = None) -> None:
        """Stop granting: every handle fails closed until the next ``open``. Idempotent.
        Raises nothing."""
        if not self._open:
            return
        for handle in self._handles.values():
            handle._close()
        self._open = False
        self.closed_at = now

    def set_members(self, members: int, now: float) -> None:
        """Every account's share: ``1/members`` of its limits (``AccountLimiter.set_members``).
        Raises ``ValueError`` for ``members`` < 1."""
        for handle in self._handles.values():
            handle.set_members(members, now)

    def remote_throttle(self, account: str, hold_s: float, now: float) -> bool:
        """Another process was answered 429 for ``account``: throttle it here too; False for
        an account this hub does not know. Raises nothing."""
        handle = self._handles.get(account)
        if handle is None:
            return False
        handle.on_remote_throttle(hold_s, now)
        return True

    def tick(self, now: float) -> None:
        """Housekeeping: reclaim abandoned leases and fill the buckets up to ``now``.
        Raises nothing."""
        for handle in self._handles.values():
            handle._tick(now)

    def statistics(self) -> dict[str, object]:
        """Open or not, the incarnation and every account's statistics. Raises nothing."""
        return {"open": self._open, "incarnation": self._incarnation,
                "last_outage_s": self.last_outage_s,
                "accounts": {name: h.statistics() for name, h in self._handles.items()}}


class _Throttled(msgspec.Struct, frozen=True):
    origin: str  # the process that was answered 429
    account: str
    hold_s: float  # from when it was answered


_throttled = msgspec.json.Decoder(_Throttled)


def throttled_subject(prefix: str) -> str:
    """``<prefix>.limits.throttled``: the 429 holds the processes tell each other (core)."""
    return f"{prefix}.limits.throttled"


class SharedBudgets:
    """What ties a process's ``LimiterHub`` to the other processes of its deployment (see the
    module docstring): ``run`` keeps this process's membership key, sets the hub's share from
    the live members every ``ttl / 3`` seconds, publishes the hub's new 429 holds and applies
    the others'. ``run`` never raises (the broker unreachable: the last share and no
    broadcasts until it is back); cancelled, it removes the membership key."""

    def __init__(self, hub: LimiterHub, bus: NatsBus, members: Members, *, prefix: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.bus = bus
        self.members = members
        self.subject = throttled_subject(prefix)
        self._clock = clock
        self.sent = 0
        self.received = 0
        self._send: MemoryObjectSendStream[tuple[str, float]] | None = None

    def _announce(self, account: str, hold_s: float) -> None:
        if self._send is None:
            return
        try:
            self._send.send_nowait((account, hold_s))
        except anyio.WouldBlock:  # a storm of holds: the others already hold anyway
            log.debug("throttle broadcast of %s dropped: outbox full", account)

    async def _receive(self, data: bytes) -> None:
        try:
            msg = _throttled.decode(data)
        except msgspec.DecodeError:
            log.warning("ignored a malformed message on %s", self.subject)
            return
        if msg.origin == self.members.holder:
            return
        if self.hub.remote_throttle(msg.account, msg.hold_s, self._clock()):
            self.received += 1
            log.info("%s answered 429 to %s: holding %s for %.2f s", msg.account, msg.origin,
                     msg.account, msg.hold_s)

    async def _publish(self, outbox: MemoryObjectReceiveStream[tuple[str, float]]) -> None:
        async for account, hold_s in outbox:
            await self.bus.emit(self.subject, msgspec.json.encode(
                _Throttled(self.members.holder, account, hold_s)))
            self.sent += 1

    async def _membership(self) -> None:
        while True:
            count = await self.members.refresh()
            self.hub.set_members(count, self._clock())
            await anyio.sleep(self.members.ttl_s / 3)

    async def _listen(self) -> None:
        while True:
            try:
                unsubscribe = await self.bus.subscribe(self.subject, self._receive)
                break
            except BrokerUnavailable as exc:
                log.warning("shared budgets: %s; trying again", exc)
                await anyio.sleep(self.members.ttl_s / 3)
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                await unsubscribe()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        send, outbox = anyio.create_memory_object_stream[tuple[str, float]](256)
        self._send = send
        self.hub.on_throttle = self._announce
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._listen)
                tg.start_soon(self._publish, outbox)
                # The first count before "started" (the adapters start with this process's
                # share), unless the broker does not answer soon.
                with anyio.move_on_after(self.members.ttl_s / 3):
                    await self.members.effective_ttl()
                    self.hub.set_members(await self.members.refresh(), self._clock())
                task_status.started()
                tg.start_soon(self._membership)
        finally:
            self.hub.on_throttle = None
            self._send = None
            send.close()
            outbox.close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                await self.members.release()

    def statistics(self) -> dict[str, object]:
        return {"membership": self.members.statistics(), "throttles_sent": self.sent,
                "throttles_received": self.received}


@dataclass
class CrashOnce:
    """A deliberate crash of the rate-limiter actor, ``after`` seconds after it started, once
    per process (the restarted actor runs on): F35's drill. The next start takes ``down_for``
    seconds longer before it opens the hub (a slow restart: the adapters' pause is long enough
    to see). ``from_fault`` reads ``GW_FAULT=limiter.crash_after:S[,limiter.down_for:D]``
    (``actors.crash``)."""

    after: float
    down_for: float = 0.0
    fired: bool = False
    delayed: bool = False

    @classmethod
    def from_fault(cls) -> CrashOnce | None:
        """The drill ``GW_FAULT`` asks for, or None. Raises ``ValueError`` for a value that is
        not a number of seconds >= 0."""
        value = fault("limiter.crash_after")
        if value is None:
            return None
        down = fault("limiter.down_for")
        after, down_for = float(value or "0"), float(down or "0")
        if not (0 <= after < math.inf and 0 <= down_for < math.inf):
            raise ValueError(f"limiter.crash_after / limiter.down_for must be seconds >= 0, "
                             f"got {value!r} / {down!r}")
        return cls(after, down_for)


class RateLimiterActor(Actor):
    """Owns the ``LimiterHub``: opens it on start (before ``started()``, so the adapters
    started after it find it open), does its housekeeping every ``interval`` seconds, closes
    it when it stops or fails. ``crash`` makes it raise once (drill).

    ``run()`` raises ``RuntimeError`` when the crash drill fires; nothing else.
    """

    def __init__(self, name: str, hub: LimiterHub, *, interval: float = 0.25,
                 crash: CrashOnce | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 shared: SharedBudgets | None = None) -> None:
        super().__init__(name)
        if not 0 < interval < math.inf:
            raise ValueError(f"interval must be finite and > 0, got {interval}")
        self.hub = hub
        self.interval = interval
        self.crash = crash
        self._clock = clock
        self.shared = shared
        self.ticks = 0

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        crash = self.crash
        if crash is not None and crash.fired and not crash.delayed:
            crash.delayed = True  # the drill's slow restart: the hub stays closed meanwhile
            with anyio.move_on_after(crash.down_for):
                await self.wait_stop_requested()
        started = self._clock()
        self.hub.open(started)
        log.info("rate limiter open (incarnation %d): %s", self.hub.incarnation,
                 ", ".join(h.name for h in self.hub.accounts))
        crashed = False
        try:
            async with anyio.create_task_group() as tg:
                if self.shared is not None:
                    await tg.start(self.shared.run)
                task_status.started()
                while not self.stop_requested:
                    wait = self.interval
                    if crash is not None and not crash.fired:
                        wait = max(0.0, min(wait, started + crash.after - self._clock()))
                    with anyio.move_on_after(wait):
                        await self.wait_stop_requested()
                    now = self._clock()
                    self.hub.tick(now)
                    self.ticks += 1
                    if (crash is not None and not crash.fired and not self.stop_requested
                            and now - started >= crash.after):
                        crash.fired = crashed = True
                        break
                tg.cancel_scope.cancel()  # the shared budgets' tasks
            if crashed and crash is not None:
                raise RuntimeError(f"fault hook limiter.crash_after:{crash.after:g}: "
                                   "the rate-limiter actor crashes")
        finally:
            self.hub.close(self._clock())
            if not self.stop_requested:
                log.warning("rate limiter closed: adapters wait for permits until it restarts")

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "ticks": self.ticks, **self.hub.statistics(),
                "shared": self.shared.statistics() if self.shared is not None else None}
