"""Per-source request limits of the webhook listener (pure; S27).

Each source (the peer's IPv4 address, or its IPv6 /64: one host can hold a whole /64) has a
token bucket of ``burst`` requests refilled at ``rate`` per second, kept as one number: the
bucket's "theoretical arrival time" (GCRA, the generic cell rate algorithm, which admits exactly
what a token bucket admits). ``admit`` is a pure function of that number and the clock, so the
property tests drive it with any sequence of times; ``SourceLimits`` keeps one per source in a
bounded table and is what the listener asks.

A refused request learns how long to wait (``Retry-After``); a source never spends another
source's budget. Sources in ``exempt`` networks are never limited (loopback by default: the
local simulator, the bench, a proxy on the same host — put limits on such a proxy instead).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Annotated

import msgspec

__all__ = ["SourceLimit", "SourceLimits", "admit", "source_key"]

_EXEMPT_SEEN_MAX = 4096  # peer addresses whose exemption is remembered


class SourceLimit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``http.source_limit``: requests per second and burst per source; ``rate = 0``: off."""

    rate: Annotated[float, msgspec.Meta(ge=0)] = 100.0
    burst: Annotated[int, msgspec.Meta(ge=1)] = 200
    # Networks never limited (CIDR). Loopback by default.
    exempt: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # At most this many sources are remembered; beyond it the idle ones, then the oldest, go.
    max_sources: Annotated[int, msgspec.Meta(ge=1)] = 100_000

    def __post_init__(self) -> None:
        for cidr in self.exempt:  # refused when the configuration is read, naming the setting
            _network(cidr)


def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise ValueError(f"exempt: {cidr!r} is not a network: {exc}") from None


def admit(tat: float, now: float, rate: float, burst: int) -> tuple[float, float]:
    """One request of a source whose bucket is ``tat`` (0.0: never seen) at ``now``.

    Returns ``(new_tat, wait)``: ``wait == 0.0`` admits the request (keep ``new_tat``);
    ``wait > 0`` refuses it (``new_tat == tat``) and is how long until one would be admitted.
    At most ``burst`` requests are admitted at one instant and at most ``burst + rate * t``
    within any ``t`` seconds. ``rate`` must be > 0 and ``burst`` >= 1."""
    interval = 1.0 / rate
    start = max(tat, now)
    # Admitted while the bucket is at most burst - 1 requests ahead of the clock (with a hair
    # of slack, so that float rounding never refuses the burst's last request).
    ahead = (burst - 1) * interval
    excess = start - now - ahead
    if excess > ahead * 1e-9 + 1e-12:
        return tat, excess
    return start + interval, 0.0


def source_key(remote: str | None) -> str:
    """The source of a peer address: an IPv4 address as is, an IPv6 address by its /64;
    anything unparsable (a Unix socket) as the text itself."""
    if not remote:
        return "?"
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class SourceLimits:
    """The buckets of every source seen (see the module docstring). Not thread-safe: the
    event loop's thread only."""

    def __init__(self, limit: SourceLimit) -> None:
        self.limit = limit
        self._exempt: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = tuple(
            _network(cidr) for cidr in limit.exempt)
        self._tat: dict[str, float] = {}
        self._exempt_seen: dict[str, bool] = {}  # peer address -> exempt, for known peers
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return self.limit.rate > 0

    def _exempted(self, remote: str | None) -> bool:
        if not remote or not self._exempt:
            return False
        known = self._exempt_seen.get(remote)
        if known is not None:  # parsing the address was ~2 % of the gateway's CPU at peak
            return known
        try:
            ip = ipaddress.ip_address(remote)
        except ValueError:
            return False
        exempt = any(ip in net for net in self._exempt)
        if len(self._exempt_seen) >= _EXEMPT_SEEN_MAX:  # bounded: many sources, start again
            self._exempt_seen.clear()
        self._exempt_seen[remote] = exempt
        return exempt

    def check(self, remote: str | None, now: float) -> float:
        """0.0 when the request of peer ``remote`` at ``now`` (monotonic seconds) is admitted,
        else the seconds it must wait."""
        if not self.enabled or self._exempted(remote):
            return 0.0
        key = source_key(remote)
        tat, wait = admit(self._tat.get(key, 0.0), now, self.limit.rate, self.limit.burst)
        if wait > 0:
            self.refused += 1
            return wait
        self._tat.pop(key, None)  # re-insert: the table's order is least recently admitted
        self._tat[key] = tat
        if len(self._tat) > self.limit.max_sources:
            self._shrink(now)
        return 0.0

    def _shrink(self, now: float) -> None:
        # A bucket whose arrival time has passed is full: forgetting it changes nothing.
        for key in [k for k, t in self._tat.items() if t <= now]:
            del self._tat[key]
        while len(self._tat) > self.limit.max_sources:
            del self._tat[next(iter(self._tat))]

    def __len__(self) -> int:
        return len(self._tat)
