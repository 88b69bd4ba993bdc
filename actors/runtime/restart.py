"""Pure cores of supervision: restart intensity (when to give up) and backoff (how long to wait).

Both are plain synchronous objects with the time passed in, so a supervisor's policy can be
tested as a table without an event loop, and the supervisor (the I/O shell) only asks them.

Restart intensity follows Erlang/OTP: a supervisor may restart its children at most
``max_restarts`` times within any window of ``period`` seconds; the restart that would make it
``max_restarts + 1`` is refused and the supervisor escalates to its parent instead. As in OTP's
``supervisor.erl`` a restart recorded at ``t`` still counts at ``now`` while
``now <= t + period``, so the window is closed at both ends.

Backoff is capped exponential with "full jitter": the delay before attempt ``n`` is drawn
uniformly from ``[0, min(cap, base * factor**n))``. Full jitter spreads a herd of actors that
failed together (a broker restart) instead of having them retry in lock-step.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

__all__ = ["Backoff", "RestartIntensity"]


class RestartIntensity:
    """Counts restarts in a sliding window of ``period`` seconds (OTP's MaxR in MaxT).

    ``max_restarts == 0`` means a supervisor never restarts anything: the first restart
    escalates. Timestamps are whatever monotonic clock the caller uses; if ``now`` ever goes
    backwards the older entries simply stay in the window a little longer.
    """

    __slots__ = ("_max_restarts", "_period", "_times")

    def __init__(self, max_restarts: int, period: float) -> None:
        """Raises ``ValueError`` for a negative ``max_restarts`` or a non-positive ``period``."""
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        if not period > 0:
            raise ValueError(f"period must be > 0, got {period}")
        self._max_restarts = max_restarts
        self._period = period
        # Oldest first. Only restarts inside the window are kept, so the deque holds at most
        # the restarts of one period: bounded by how often the caller records, not by uptime.
        self._times: deque[float] = deque()

    @property
    def max_restarts(self) -> int:
        return self._max_restarts

    @property
    def period(self) -> float:
        return self._period

    def record(self, now: float) -> bool:
        """Record one restart at ``now``.

        Returns ``True`` if the restart is allowed, ``False`` when it makes more than
        ``max_restarts`` restarts within the window ending at ``now`` (escalate).
        """
        self._expire(now)
        self._times.append(now)
        return len(self._times) <= self._max_restarts

    def recent(self, now: float) -> int:
        """How many recorded restarts still count at ``now``."""
        self._expire(now)
        return len(self._times)

    def _expire(self, now: float) -> None:
        times = self._times
        while times and now > times[0] + self._period:
            times.popleft()

    def __repr__(self) -> str:
        return (
            f"RestartIntensity(max_restarts={self._max_restarts}, period={self._period}, "
            f"recorded={len(self._times)})"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter.

    ``ceiling(n) = min(cap, base * factor**n)`` is the longest wait before attempt ``n``
    (counting from 0); ``delay(n, rand) = rand * ceiling(n)`` for a uniform ``rand`` in
    ``[0, 1)``. The random number is passed in so the schedule stays a pure function.
    """

    base: float = 0.1
    factor: float = 2.0
    cap: float = 10.0

    def __post_init__(self) -> None:
        # ``not x >= 0`` also refuses NaN; a finite cap keeps ``rand * ceiling`` a number.
        if not 0 <= self.base < math.inf:
            raise ValueError(f"base must be finite and >= 0, got {self.base}")
        if not 1 <= self.factor < math.inf:
            raise ValueError(f"factor must be finite and >= 1, got {self.factor}")
        if not 0 <= self.cap < math.inf:
            raise ValueError(f"cap must be finite and >= 0, got {self.cap}")

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay before ``attempt``; raises ``ValueError`` if it is negative."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        if self.base == 0 or self.factor == 1:
            return min(self.cap, self.base)
        try:
            raw = self.base * self.factor**attempt
        except OverflowError:
            # factor**attempt left the float range (or attempt could not even be converted to
            # a float): with base > 0 and factor > 1 the cap was reached long ago.
            return self.cap
        return min(self.cap, raw)

    def delay(self, attempt: int, rand: float) -> float:
        """The jittered delay before ``attempt``, in ``[0, ceiling(attempt)]``.

        ``rand`` is a uniform draw from ``[0, 1)`` (``random.Random.random()``); raises
        ``ValueError`` outside that range or for a negative ``attempt``.
        """
        if not 0.0 <= rand < 1.0:
            raise ValueError(f"rand must be in [0, 1), got {rand}")
        return rand * self.ceiling(attempt)
