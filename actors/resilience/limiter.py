"""Rate limiter per platform account: a token bucket with a concurrency cap, adaptive on 429.

Theory of operation
-------------------
A *permit* is the right to make one call to the platform: one token from the bucket (the
rate: ``rate`` permits per second, at most ``burst`` at once) and one slot of the concurrency
cap (calls in flight at once, e.g. NetSuite's account concurrency). Every adapter that talks to
the same platform account shares one budget of the process: ``actors.limits.LimiterHub`` holds
one ``RateLimiter`` per account, the ``RateLimiterActor`` opens it with fresh ``RateLimiter`` s
when it starts and closes it when it stops or dies, and adapters hold the hub's account handles
(``Limiter``, the protocol below, which ``RateLimiter`` itself also satisfies).

Two ways to take permits:

* ``acquire(n, now)``: ``0.0`` when granted, else the seconds to wait before asking again
  (``math.inf``: wait for a ``release``/``return_lease``, no amount of time will do). Each
  granted permit's slot is given back with ``release`` when its call ends. This is what the
  adapters use (``actors.platforms.PlatformGuard``): the hub lives in the adapters' own event loop,
  so a permit is a plain method call.
* ``lease(max_n, now)``: up to ``max_n`` permits at once, valid until ``expires_at``, for a
  caller that would otherwise pay a round trip per permit (none does today). When the caller
  is done (every call it started under the lease has ended) it returns the lease with the
  number of permits it did not use: their tokens go back to the bucket, all its slots are
  freed. A lease never returned is reclaimed ``reclaim_after`` seconds after it expires, so a
  crashed caller cannot jam the account forever.

Adaptive on the platform's answer: ``on_throttled(retry_after, now)`` (a 429) empties the
bucket, holds every grant until ``now + retry_after`` (``throttle_hold`` without a header),
multiplies the rate by ``decrease`` (once per hold: the 429s of calls already in flight are
echoes of the same overload) and voids outstanding leases (``is_usable`` turns false);
``on_success(now)`` adds ``recovery`` permits/s back, up to the configured rate.

Invariants (tests/resilience/test_limiter.py states each as a hypothesis property):

* bucket tokens + tokens held by outstanding leases <= ``burst``. So however leases are taken,
  held and returned, the permits *used* in any window of length T are at most
  ``rate * T + burst``, counting a permit at the moment it was granted;
* nothing is granted before a pending Retry-After deadline;
* permits in flight (acquired and not released, plus leased and not returned) <= concurrency;
* a lease is granted at most ``max_n`` permits and at most what the bucket holds.

The bucket starts empty (``start_full=False``): a restarted limiter (F35) ramps up at ``rate``
instead of granting a burst the platform may already have seen from the previous incarnation;
``adopt`` hands it what the previous incarnation knew that is a fact about the world (calls
still in flight, the platform's Retry-After deadline). While no incarnation is running, the
hub's handles grant nothing: the limiter fails closed (``actors.limits``).

Pure: ``now`` is the caller's monotonic clock in seconds; nothing here sleeps, reads a clock,
logs or performs I/O. Not thread-safe; used from the event loop's thread only.
"""

from __future__ import annotations

import math
from typing import Protocol

import msgspec

from .classify import clamp_retry_after

__all__ = ["Lease", "Limiter", "LimiterConfig", "RateLimiter"]

# Float slack when comparing token counts: a caller that waits exactly the advised time must
# be granted, not told to wait another 1e-16 s.
_EPS = 1e-9


class Limiter(Protocol):
    """What an adapter (``actors.platforms.PlatformGuard``) and monitoring (``actors.monitor``)
    need of one platform account's budget: ``RateLimiter`` and the account handles of
    ``actors.limits.LimiterHub`` both provide it. The methods mean what they mean on
    ``RateLimiter``."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> LimiterConfig: ...

    @property
    def hold_until(self) -> float: ...

    def acquire(self, n: int, now: float) -> float: ...

    def release(self, n: int = 1) -> None: ...

    def on_throttled(self, retry_after: float | None, now: float) -> None: ...

    def on_success(self, now: float) -> None: ...

    def statistics(self) -> dict[str, object]: ...


class LimiterConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits of one platform account, from the platform's published figures.

    * ``rate``: permits per second (Stripe: 100 ops/s); ``burst``: the bucket size;
    * ``concurrency``: calls in flight at once (``None``: no cap);
    * ``decrease``: the rate is multiplied by this on a 429; never below ``min_rate``;
    * ``recovery``: permits/s added back per success (``None``: ``rate / 20``);
    * ``throttle_hold``: the hold after a 429 without ``Retry-After``; ``max_retry_after``:
      the longest hold a header can impose;
    * ``lease_ttl``: how long a lease may be used; ``max_lease``: its largest size (``None``:
      ``burst``); ``reclaim_after``: when the slots of an unreturned lease come back, counted
      from its expiry (keep it above the platform call timeout).

    Raises ``ValueError`` (``msgspec.ValidationError`` when converted from config) for a value
    out of range.
    """

    rate: float = 100.0
    burst: int = 100
    concurrency: int | None = None
    decrease: float = 0.5
    min_rate: float = 1.0
    recovery: float | None = None
    throttle_hold: float = 1.0
    max_retry_after: float = 3600.0
    lease_ttl: float = 1.0
    max_lease: int | None = None
    reclaim_after: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.rate < math.inf:
            raise ValueError(f"rate must be finite and > 0, got {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1 or absent, got {self.concurrency}")
        if not 0 < self.decrease < 1:
            raise ValueError(f"decrease must be in (0, 1), got {self.decrease}")
        if not 0 < self.min_rate <= self.rate:
            raise ValueError(f"min_rate must be in (0, rate], got {self.min_rate}")
        if self.recovery is not None and not 0 < self.recovery < math.inf:
            raise ValueError(f"recovery must be finite and > 0, got {self.recovery}")
        for field in ("throttle_hold", "max_retry_after", "reclaim_after"):
            value = getattr(self, field)
            if not 0 <= value < math.inf:
                raise ValueError(f"{field} must be finite and >= 0, got {value}")
        if not 0 < self.lease_ttl < math.inf:
            raise ValueError(f"lease_ttl must be finite and > 0, got {self.lease_ttl}")
        if self.max_lease is not None and self.max_lease < 1:
            raise ValueError(f"max_lease must be >= 1 or absent, got {self.max_lease}")

    @property
    def recovery_step(self) -> float:
        """Permits/s added back per success. Raises nothing."""
        return self.recovery if self.recovery is not None else self.rate / 20


class Lease(msgspec.Struct, frozen=True):
    """``n`` permits usable until ``expires_at``; ``n == 0`` means none now, ask again after
    ``wait`` seconds (``math.inf``: after a release). ``id`` and ``epoch`` identify it to the
    limiter (``return_lease``, ``is_usable``)."""

    n: int
    expires_at: float
    wait: float = 0.0
    id: int = 0
    epoch: int = 0


class _Held(msgspec.Struct):
    n: int
    expires_at: float
    epoch: int


class RateLimiter:
    """The token bucket and concurrency cap of one platform account."""

    __slots__ = (
        "_acquired", "_config", "_counts", "_epoch", "_hold_until", "_last", "_leased",
        "_leases", "_name", "_next_id", "_rate", "_tokens",
    )

    def __init__(self, name: str, config: LimiterConfig | None = None, *,
                 start_full: bool = False) -> None:
        """``name`` identifies the account in statistics. Raises nothing."""
        self._name = name
        self._config = config or LimiterConfig()
        self._rate = self._config.rate
        self._tokens = float(self._config.burst) if start_full else 0.0
        self._last: float | None = None  # the bucket was filled up to this time
        self._hold_until = -math.inf
        self._epoch = 0
        self._acquired = 0  # permits from acquire() not yet released
        self._leased = 0  # permits in outstanding leases (their tokens and their slots)
        self._leases: dict[int, _Held] = {}
        self._next_id = 1
        self._counts = dict.fromkeys(
            ("granted", "used", "returned", "refused", "throttles", "decreases", "recoveries",
             "leases", "reclaimed"), 0)

    # -- queries ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The platform account this limiter budgets. Raises nothing."""
        return self._name

    @property
    def config(self) -> LimiterConfig:
        """The limits in force. Raises nothing."""
        return self._config

    @property
    def rate(self) -> float:
        """The current (adaptive) rate in permits per second. Raises nothing."""
        return self._rate

    @property
    def hold_until(self) -> float:
        """No permit is granted before this time (``-inf`` when there never was a 429).
        Raises nothing."""
        return self._hold_until

    @property
    def in_flight(self) -> int:
        """Permits holding a concurrency slot: acquired and not released, plus leased.
        Raises nothing."""
        return self._acquired + self._leased

    @property
    def next_reclaim_at(self) -> float | None:
        """When the earliest outstanding lease will be reclaimed if nobody returns it
        (``None`` when no lease is out): a shell waiting on ``math.inf`` wakes by then at the
        latest. Raises nothing."""
        if not self._leases:
            return None
        return min(h.expires_at for h in self._leases.values()) + self._config.reclaim_after

    def is_usable(self, lease: Lease, now: float) -> bool:
        """May a call still start under ``lease`` at ``now``? False once it expired, was
        returned or reclaimed, or a 429 voided it. Raises nothing."""
        return (lease.n > 0 and now < lease.expires_at and lease.epoch == self._epoch
                and lease.id in self._leases and now >= self._hold_until)

    def statistics(self) -> dict[str, object]:
        """A JSON-ready snapshot (the account handle's and the rate-limiter actor's
        ``statistics()`` build on it). Raises nothing."""
        cfg = self._config
        return {
            "name": self._name,
            "rate": self._rate,
            "configured_rate": cfg.rate,
            "burst": cfg.burst,
            "tokens": self._tokens,
            "concurrency": cfg.concurrency,
            "in_flight": self.in_flight,
            "acquired": self._acquired,
            "leased": self._leased,
            "leases_out": len(self._leases),
            "hold_until": self._hold_until if self._hold_until > -math.inf else None,
            "epoch": self._epoch,
            **self._counts,
        }

    def adopt(self, in_flight: int, hold_until: float, now: float) -> None:
        """Take over from a previous incarnation of this account's budget (F35): ``in_flight``
        permits it granted are still in their calls (they hold concurrency slots here until
        ``release`` d, but no tokens) and the platform asked for no call before ``hold_until``.
        The bucket stays as it is (a fresh one is empty) and fills from ``now`` or from the
        deadline, whichever is later.

        Raises ``ValueError`` when ``in_flight`` is negative.
        """
        if in_flight < 0:
            raise ValueError(f"adopt: in_flight must be >= 0, got {in_flight}")
        self._advance(now)
        self._acquired += in_flight
        if hold_until > self._hold_until:
            self._hold_until = hold_until
            self._last = max(now, hold_until)

    def reconfigure(self, config: LimiterConfig, now: float) -> None:
        """Adopt new limits at ``now`` (the account's share changed: ``actors.limits``): what
        accrued so far accrued under the old ones; the adaptive rate keeps its proportion of
        the configured rate (within the new ``min_rate`` and ``rate``); the bucket keeps at
        most the new ``burst`` (less the tokens out in leases). Permits in flight keep their
        slots (above a lower concurrency cap, nothing more is granted until they are
        released). Raises nothing."""
        self._advance(now)
        old = self._config
        self._config = config
        self._rate = min(config.rate, max(config.min_rate,
                                          self._rate * config.rate / old.rate))
        self._tokens = max(0.0, min(self._tokens, float(config.burst - self._leased)))

    def tick(self, now: float) -> None:
        """Housekeeping without a request: reclaim abandoned leases and fill the bucket up to
        ``now`` (so ``statistics`` shows tokens as of now). Raises nothing."""
        self._advance(now)

    # -- taking and giving back permits ----------------------------------------------------

    def acquire(self, n: int, now: float) -> float:
        """Take ``n`` permits at ``now``: ``0.0`` when granted, else seconds to wait before
        asking again (``math.inf`` when only a ``release``/``return_lease`` can help).

        Never grants before a pending Retry-After deadline. Raises ``ValueError`` when ``n`` is
        below 1 or above ``burst``/``concurrency`` (it could never be granted).
        """
        cfg = self._config
        if not 1 <= n <= cfg.burst or (cfg.concurrency is not None and n > cfg.concurrency):
            raise ValueError(f"acquire: n must be in [1, min(burst, concurrency)], got {n}")
        self._advance(now)
        wait = self._wait_for(n, now)
        if wait > 0:
            self._counts["refused"] += 1
            return wait
        self._tokens = max(0.0, self._tokens - n)
        self._acquired += n
        self._counts["granted"] += n
        self._counts["used"] += n
        return 0.0

    def release(self, n: int = 1) -> None:
        """The calls of ``n`` acquired permits have ended: free their concurrency slots.

        Raises ``ValueError`` when ``n`` is below 1 or more than are acquired and unreleased.
        """
        if not 1 <= n <= self._acquired:
            raise ValueError(f"release: n must be in [1, {self._acquired}], got {n}")
        self._acquired -= n

    def lease(self, max_n: int, now: float) -> Lease:
        """Up to ``max_n`` permits at once, usable until ``expires_at``.

        Grants what is available now (bucket, concurrency cap, ``max_lease``), possibly fewer
        than asked; ``n == 0`` with ``wait`` when nothing is (never before a Retry-After
        deadline). Return it with ``return_lease`` once its calls have ended.
        Raises ``ValueError`` when ``max_n`` is below 1.
        """
        if max_n < 1:
            raise ValueError(f"lease: max_n must be >= 1, got {max_n}")
        cfg = self._config
        self._advance(now)
        n = 0
        if now >= self._hold_until:
            n = min(max_n, cfg.max_lease or cfg.burst, math.floor(self._tokens + _EPS))
            if cfg.concurrency is not None:
                n = min(n, cfg.concurrency - self.in_flight)
        if n < 1:
            self._counts["refused"] += 1
            return Lease(n=0, expires_at=now, wait=self._wait_for(1, now), epoch=self._epoch)
        self._tokens = max(0.0, self._tokens - n)
        self._leased += n
        lease_id = self._next_id
        self._next_id += 1
        expires_at = now + cfg.lease_ttl
        self._leases[lease_id] = _Held(n=n, expires_at=expires_at, epoch=self._epoch)
        self._counts["granted"] += n
        self._counts["leases"] += 1
        return Lease(n=n, expires_at=expires_at, id=lease_id, epoch=self._epoch)

    def return_lease(self, lease: Lease, unused: int, now: float) -> bool:
        """Give ``lease`` back once every call started under it has ended; ``unused`` permits
        were never used for a call.

        Frees the lease's slots; puts the unused tokens back in the bucket unless a 429 voided
        the lease meanwhile. Returns ``False`` (and does nothing) when the lease was not
        outstanding: already returned, reclaimed, or an empty lease.
        Raises ``ValueError`` when ``unused`` is not in ``[0, lease.n]``.
        """
        if not 0 <= unused <= lease.n:
            raise ValueError(f"return_lease: unused must be in [0, {lease.n}], got {unused}")
        self._advance(now)  # accrue up to now while the lease's tokens still count as held
        held = self._leases.pop(lease.id, None)
        if held is None:
            return False
        unused = min(unused, held.n)
        self._leased -= held.n
        self._counts["used"] += held.n - unused
        if unused and held.epoch == self._epoch:
            self._tokens += unused  # fits: tokens + leased <= burst held before the pop
            self._counts["returned"] += unused
        return True

    # -- the platform's answers ------------------------------------------------------------

    def on_throttled(self, retry_after: float | None, now: float) -> None:
        """The platform answered 429 (``retry_after`` seconds from its header, if any).

        Holds every grant until ``now + retry_after`` (clamped to ``max_retry_after``;
        ``throttle_hold`` when absent), empties the bucket, voids outstanding leases and, unless
        a hold was already running (an echo of the same overload), multiplies the rate by
        ``decrease``. (Strictly after the hold: the echoes of a ``Retry-After: 0`` arrive at the
        same instant and must not decrease it again.) Raises nothing.
        """
        cfg = self._config
        self._advance(now)
        hold = clamp_retry_after(retry_after, cfg.max_retry_after)
        if hold is None:
            hold = cfg.throttle_hold
        if now > self._hold_until:
            self._rate = max(cfg.min_rate, self._rate * cfg.decrease)
            self._counts["decreases"] += 1
        self._hold_until = max(self._hold_until, now + hold)
        self._tokens = 0.0
        # Nothing accrues during the hold: the bucket fills from the deadline on.
        self._last = self._hold_until if self._last is None else max(self._last,
                                                                      self._hold_until)
        self._epoch += 1
        self._counts["throttles"] += 1

    def on_success(self, now: float) -> None:
        """A call was answered without throttling: add ``recovery`` permits/s back to the rate,
        up to the configured rate. An answer arriving during a hold is an echo from before the
        429 and is ignored. Raises nothing."""
        cfg = self._config
        if now < self._hold_until or self._rate >= cfg.rate:
            return
        self._advance(now)  # what accrued so far accrued at the old rate
        self._rate = min(cfg.rate, self._rate + cfg.recovery_step)
        self._counts["recoveries"] += 1

    # -- internals -------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Reclaim abandoned leases, then fill the bucket up to ``now``."""
        if self._leases:
            after = self._config.reclaim_after
            for lease_id in [i for i, h in self._leases.items()
                             if now >= h.expires_at + after]:
                self._leased -= self._leases.pop(lease_id).n
                self._counts["reclaimed"] += 1
        last = self._last
        if last is None:
            self._last = now
            return
        if now > last:
            room = self._config.burst - self._leased
            if self._tokens < room:
                self._tokens = min(float(room), self._tokens + (now - last) * self._rate)
            self._last = now

    def _wait_for(self, n: int, now: float) -> float:
        """Seconds until ``n`` permits could be granted; 0 when they can be now."""
        cfg = self._config
        if cfg.concurrency is not None and self.in_flight + n > cfg.concurrency:
            return math.inf
        if n > cfg.burst - self._leased:
            return math.inf  # the bucket cannot hold n tokens until leases come back
        start = max(now, self._hold_until)
        deficit = n - self._tokens
        if deficit <= _EPS:
            return start - now
        return (start - now) + deficit / self._rate

    def __repr__(self) -> str:
        return (f"RateLimiter({self._name!r}, rate={self._rate:g}/s, tokens={self._tokens:.2f}, "
                f"in_flight={self.in_flight})")
