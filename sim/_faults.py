"""Fault injection settings and the pure decisions they lead to.

Two kinds of fault, both plain data (``msgspec`` structs, so the same settings come from
``PUT /sim/v1/faults`` as JSON and from a scenario file as TOML):

* ``HttpFaults``: how one HTTP endpoint of a simulated platform misbehaves (latency, error mixes,
  429 storms, outages, commit-then-timeout, connection resets, silently dropped postings).
  ``plan_request`` decides the fate of one request; ``combine_plans`` merges the decisions of
  several active settings (runtime faults plus scenario windows).
* ``BillingFaults``: how the billing platform's webhook *sender* misbehaves (duplicates,
  reordering, replays, signature mangling, schema drift). ``plan_webhook`` decides, per event,
  which extra deliveries it gets.

Every decision draws from a seeded ``random.Random`` in a fixed order and only for rates above
zero, so the same seed and the same request (or event) sequence give the same faults, and
settings that are all defaults draw nothing at all.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec

__all__ = [
    "DRIFT_MODES",
    "MANGLE_MODES",
    "BillingFaults",
    "BulkPlan",
    "CpqFaults",
    "DriftMode",
    "ErpFaults",
    "Faults",
    "FixedLatency",
    "HttpFaults",
    "Latency",
    "LognormalLatency",
    "MangleMode",
    "RequestPlan",
    "RevenueFaults",
    "UniformLatency",
    "WebhookPlan",
    "combine_plans",
    "describe",
    "draw_latency_ms",
    "plan_bulk",
    "plan_request",
    "plan_webhook",
]

Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Millis = Annotated[float, msgspec.Meta(ge=0.0, le=600_000.0)]
Status = Annotated[int, msgspec.Meta(ge=400, le=599)]
Weight = Annotated[float, msgspec.Meta(gt=0.0, le=1_000_000.0)]

# Standard normal quantile at 0.99: p99 = p50 * exp(Z99 * sigma) for a lognormal.
_Z99 = 2.3263478740408408


class FixedLatency(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="dist",
                   tag="fixed"):
    """Always ``ms`` milliseconds."""

    ms: Millis


class UniformLatency(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="dist",
                     tag="uniform"):
    """Uniform between ``min_ms`` and ``max_ms``."""

    min_ms: Millis
    max_ms: Millis


class LognormalLatency(msgspec.Struct, frozen=True, forbid_unknown_fields=True,
                       tag_field="dist", tag="lognormal"):
    """Heavy-tailed, like a loaded SaaS API: median ``p50_ms``, 99th percentile ``p99_ms``.

    Draws are capped at ``max_ms`` (default ten times ``p99_ms``) so one draw cannot stall a
    run for hours.
    """

    p50_ms: Annotated[float, msgspec.Meta(gt=0.0, le=600_000.0)]
    p99_ms: Annotated[float, msgspec.Meta(gt=0.0, le=600_000.0)]
    max_ms: Millis | None = None


Latency = FixedLatency | UniformLatency | LognormalLatency


def draw_latency_ms(latency: Latency, rng: random.Random) -> float:
    """One draw from ``latency`` in milliseconds (one ``rng`` draw, none for ``fixed``)."""
    if isinstance(latency, FixedLatency):
        return latency.ms
    if isinstance(latency, UniformLatency):
        lo, hi = sorted((latency.min_ms, latency.max_ms))
        return lo + (hi - lo) * rng.random()
    sigma = max(0.0, math.log(max(latency.p99_ms, latency.p50_ms) / latency.p50_ms) / _Z99)
    value = latency.p50_ms * math.exp(sigma * rng.gauss(0.0, 1.0))
    cap = latency.max_ms if latency.max_ms is not None else 10.0 * latency.p99_ms
    return min(value, cap)


class HttpFaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How one endpoint misbehaves. All fields default to "healthy".

    ``latency_ms`` (fixed) plus a draw from ``latency`` (a distribution) delays the answer.
    ``outage``: every request answers 503. ``rate_limit_rate``: that share answers 429 with
    ``Retry-After: retry_after_s`` (a 429 storm). ``error_rate``: that share answers an error,
    ``status`` or, when ``error_mix`` is set, a status drawn by the mix's weights (for example
    ``{500: 1, 502: 1, 503: 2}``). ``reset_rate``: that share has its TCP connection reset
    before anything happens. Those all commit nothing. ``commit_then_timeout_rate``: that share
    commits, then stalls 30 s before answering, so the caller times out not knowing the
    outcome; ``commit_then_reset_rate``: commits, then resets the connection.
    ``silent_drop_rate`` (journal-entry bulk only): that share of *items* is answered
    ``created`` but never recorded, like an ERP bug that loses acknowledged postings.
    ``item_reject_rate`` (journal-entry bulk only): that share of *items* (decided per
    ``externalId`` from the seed, so a resent item is rejected again) is answered ``rejected``
    with ``VALIDATION``, a business rejection like a field validation error (F19); the rest
    of the batch is processed normally. On the revenue upload it makes that share of *lines*
    (decided per ``lineId``) invalid, so the whole batch is answered 422 naming them (the
    platform is all-or-nothing).
    ``alter_amount_rate`` (journal-entry bulk only): that share of *items* (decided per
    ``externalId`` from the seed) is created, but recorded with a different amount than sent,
    like a platform bug or a manual edit in the ERP; the reconciler must find it.
    Precedence: outage, 429, error, reset, then the commit faults.
    """

    error_rate: Rate = 0.0
    status: Status = 503
    latency_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 0
    outage: bool = False
    commit_then_timeout_rate: Rate = 0.0
    error_mix: dict[Status, Weight] = {}
    latency: Latency | None = None
    rate_limit_rate: Rate = 0.0
    retry_after_s: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 1
    reset_rate: Rate = 0.0
    commit_then_reset_rate: Rate = 0.0
    silent_drop_rate: Rate = 0.0
    item_reject_rate: Rate = 0.0
    alter_amount_rate: Rate = 0.0


class ErpFaults(HttpFaults, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``HttpFaults`` of ``POST /erp/v1/journal-entries/bulk`` (the ``erp`` section of
    ``PUT /sim/v1/faults``)."""


def _refuse_erp_only(faults: HttpFaults, service: str, fields: tuple[str, ...]) -> None:
    for name in fields:
        if getattr(faults, name) > 0.0:
            raise ValueError(f"{name} applies to the ERP's journal-entry bulk endpoint only, "
                             f"not to {service}")


class RevenueFaults(HttpFaults, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``HttpFaults`` of every revenue platform route (the ``revenue`` section of
    ``PUT /sim/v1/faults``). ``item_reject_rate`` rejects that share of uploaded *lines*
    (seeded per ``lineId``): the batch is answered 422 naming them, nothing is recorded.
    ``silent_drop_rate`` and ``alter_amount_rate`` are ERP-only: a value above 0 is refused
    (``ValueError``, a 400 naming the section)."""

    def __post_init__(self) -> None:
        _refuse_erp_only(self, "revenue", ("silent_drop_rate", "alter_amount_rate"))


class CpqFaults(HttpFaults, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``HttpFaults`` of every CPQ route (the ``cpq`` section of ``PUT /sim/v1/faults``).
    The item-level faults (``silent_drop_rate``, ``item_reject_rate``,
    ``alter_amount_rate``) do not apply: a value above 0 is refused (``ValueError``)."""

    def __post_init__(self) -> None:
        _refuse_erp_only(self, "cpq", ("silent_drop_rate", "item_reject_rate",
                                       "alter_amount_rate"))


MangleMode = Literal["wrong_secret", "body_byte", "header_missing", "header_garbled", "v0_only"]
DriftMode = Literal[
    "unknown_field", "missing_field", "int_to_string", "renamed_enum", "nested_type_change"
]
MANGLE_MODES: tuple[MangleMode, ...] = (
    "wrong_secret", "body_byte", "header_missing", "header_garbled", "v0_only"
)
DRIFT_MODES: tuple[DriftMode, ...] = (
    "unknown_field", "missing_field", "int_to_string", "renamed_enum", "nested_type_change"
)


class BillingFaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How the billing platform's webhook sender misbehaves. All fields default to "healthy".

    The genuine delivery of every event always happens (retried until a 2xx); faults only add
    deliveries or change their order.

    * ``duplicate_rate``: that share of events is delivered 2..``duplicate_max`` times in all;
      each extra copy is signed afresh, and is sent at the same moment as the first genuine
      attempt with probability ``duplicate_concurrent_rate``, else after the genuine one is
      accepted.
    * ``reorder_window``: events are shuffled (seeded) within consecutive windows of that many
      events before delivery (at most twice the delivery concurrency; 0 or 1 keeps the order).
    * ``replay_rate``: that share of events is re-sent after acceptance as a captured request:
      the exact body, signed with the right secret but ``replay_age_s`` seconds ago.
    * ``mangle_rate``: that share of events gets one extra delivery with a broken signature, its
      mode drawn from ``mangle_modes``. ``drift_rate``: one extra delivery whose body drifted
      from the schema, mode from ``drift_modes``. Except for ``unknown_field`` (the genuine
      event plus an unknown field), these carry a *shadow* copy of the invoice whose ids end
      in ``~<mode>`` so that a posting made from one is attributable.
    """

    duplicate_rate: Rate = 0.0
    duplicate_max: Annotated[int, msgspec.Meta(ge=2, le=10)] = 3
    duplicate_concurrent_rate: Rate = 0.5
    reorder_window: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    replay_rate: Rate = 0.0
    replay_age_s: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 600
    mangle_rate: Rate = 0.0
    mangle_modes: Annotated[tuple[MangleMode, ...], msgspec.Meta(min_length=1)] = MANGLE_MODES
    drift_rate: Rate = 0.0
    drift_modes: Annotated[tuple[DriftMode, ...], msgspec.Meta(min_length=1)] = DRIFT_MODES


class Faults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """All runtime fault settings; the body of ``PUT``/``GET /sim/v1/faults``.

    ``erp`` applies to the journal-entry bulk endpoint, ``billing`` to webhook delivery,
    ``revenue`` to every revenue platform route and ``cpq`` to every CPQ route.
    Unknown fields are refused (400) so that a misspelt fault is not silently ignored.
    """

    erp: ErpFaults = msgspec.field(default_factory=ErpFaults)
    billing: BillingFaults = msgspec.field(default_factory=BillingFaults)
    revenue: RevenueFaults = msgspec.field(default_factory=RevenueFaults)
    cpq: CpqFaults = msgspec.field(default_factory=CpqFaults)


class RequestPlan(msgspec.Struct, frozen=True):
    """What a handler does for one request, decided before it reads the body.

    ``fail_status`` (when set) answers that status (with ``Retry-After: retry_after_s`` for a
    429) and commits nothing; ``reset`` resets the connection and commits nothing;
    ``commit_then_timeout`` commits, then stalls the answer; ``commit_then_reset`` commits,
    then resets; ``drop_rate`` is the share of items to drop silently, ``reject_rate`` the
    share to reject as ``VALIDATION``, ``alter_rate`` the share of created items recorded
    with another amount. ``fault`` names what
    fired, for the counters (empty when nothing did).
    """

    delay_s: float = 0.0
    fail_status: int | None = None
    commit_then_timeout: bool = False
    retry_after_s: int = 1
    reset: bool = False
    commit_then_reset: bool = False
    drop_rate: float = 0.0
    fault: str = ""
    reject_rate: float = 0.0
    alter_rate: float = 0.0


BulkPlan = RequestPlan  # the name of the plan before other endpoints had faults


def plan_request(faults: HttpFaults, rng: random.Random) -> RequestPlan:
    """Decide the fate of one request. Draws from ``rng`` only for settings that are on.

    Raises nothing. Precedence: outage, 429 storm, error, reset, commit-then-timeout,
    commit-then-reset.
    """
    delay_ms = float(faults.latency_ms)
    if faults.latency is not None:
        delay_ms += draw_latency_ms(faults.latency, rng)
    delay_s = delay_ms / 1000.0
    drop = faults.silent_drop_rate
    reject = faults.item_reject_rate
    alter = faults.alter_amount_rate
    if faults.outage:
        return RequestPlan(delay_s=delay_s, fail_status=503, fault="outage")
    if faults.rate_limit_rate > 0.0 and rng.random() < faults.rate_limit_rate:
        return RequestPlan(delay_s=delay_s, fail_status=429, retry_after_s=faults.retry_after_s,
                           fault="rate_limit")
    if faults.error_rate > 0.0 and rng.random() < faults.error_rate:
        status = faults.status
        if faults.error_mix:
            statuses = sorted(faults.error_mix)
            status = rng.choices(statuses, [faults.error_mix[s] for s in statuses])[0]
        return RequestPlan(delay_s=delay_s, fail_status=status, retry_after_s=faults.retry_after_s,
                           fault=f"error_{status}")
    if faults.reset_rate > 0.0 and rng.random() < faults.reset_rate:
        return RequestPlan(delay_s=delay_s, reset=True, fault="reset")
    if faults.commit_then_timeout_rate > 0.0 and rng.random() < faults.commit_then_timeout_rate:
        return RequestPlan(delay_s=delay_s, commit_then_timeout=True, drop_rate=drop,
                           fault="commit_then_timeout", reject_rate=reject, alter_rate=alter)
    if faults.commit_then_reset_rate > 0.0 and rng.random() < faults.commit_then_reset_rate:
        return RequestPlan(delay_s=delay_s, commit_then_reset=True, drop_rate=drop,
                           fault="commit_then_reset", reject_rate=reject, alter_rate=alter)
    return RequestPlan(delay_s=delay_s, drop_rate=drop, fault="latency" if delay_s > 0 else "",
                       reject_rate=reject, alter_rate=alter)


def plan_bulk(faults: HttpFaults, rng: random.Random) -> RequestPlan:
    """``plan_request`` for the journal-entry bulk endpoint (kept for its callers)."""
    return plan_request(faults, rng)


def combine_plans(plans: Sequence[RequestPlan]) -> RequestPlan:
    """One plan for several active settings: delays add up, the first failure in order wins,
    and any commit fault or reset applies. Raises nothing; ``()`` gives the healthy plan."""
    if len(plans) == 1:
        return plans[0]
    delay = sum(p.delay_s for p in plans)
    failing = next((p for p in plans if p.fail_status is not None or p.reset), None)
    if failing is not None:
        return msgspec.structs.replace(failing, delay_s=delay)
    ctt = any(p.commit_then_timeout for p in plans)
    ctr = not ctt and any(p.commit_then_reset for p in plans)
    faults = [p.fault for p in plans if p.fault and p.fault != "latency"]
    return RequestPlan(
        delay_s=delay,
        commit_then_timeout=ctt,
        commit_then_reset=ctr,
        drop_rate=max((p.drop_rate for p in plans), default=0.0),
        fault=faults[0] if faults else ("latency" if delay > 0 else ""),
        reject_rate=max((p.reject_rate for p in plans), default=0.0),
        alter_rate=max((p.alter_rate for p in plans), default=0.0),
    )


class WebhookPlan(msgspec.Struct, frozen=True):
    """The extra deliveries of one event, decided when it is issued.

    ``concurrent_copies`` duplicates go out with the first genuine attempt, ``later_copies``
    after its acceptance; ``mangles`` and ``drifts`` (modes, each at most once) go out before
    the genuine delivery; ``replay`` re-sends the accepted request with an old timestamp.
    """

    concurrent_copies: int = 0
    later_copies: int = 0
    mangles: tuple[str, ...] = ()
    drifts: tuple[str, ...] = ()
    replay: bool = False
    replay_age_s: int = 600

    @property
    def empty(self) -> bool:
        return self == _NO_EXTRAS


_NO_EXTRAS = WebhookPlan()
_HEALTHY_BILLING = BillingFaults()


def plan_webhook(sources: Sequence[BillingFaults], seed: int, index: int) -> WebhookPlan:
    """The extra deliveries of event ``index`` (the invoice number) under ``sources``.

    Pure: depends only on the settings, ``seed`` and ``index`` (each event draws from its own
    ``random.Random``), so reordering or concurrency never changes which event gets which
    fault. Several sources (runtime settings and scenario windows) add up; a mode is used at
    most once per event. Raises nothing.
    """
    active = [s for s in sources if s != _HEALTHY_BILLING]
    if not active:
        return _NO_EXTRAS
    rng = random.Random(f"{seed}/webhook/{index}")
    concurrent = later = 0
    mangles: list[str] = []
    drifts: list[str] = []
    replay = False
    replay_age_s = 600
    for s in active:
        if s.duplicate_rate > 0.0 and rng.random() < s.duplicate_rate:
            for _ in range(rng.randint(2, s.duplicate_max) - 1):
                if rng.random() < s.duplicate_concurrent_rate:
                    concurrent += 1
                else:
                    later += 1
        if s.mangle_rate > 0.0 and rng.random() < s.mangle_rate:
            mode = rng.choice(s.mangle_modes)
            if mode not in mangles:
                mangles.append(mode)
        if s.drift_rate > 0.0 and rng.random() < s.drift_rate:
            drift = rng.choice(s.drift_modes)
            if drift not in drifts:
                drifts.append(drift)
        if s.replay_rate > 0.0 and rng.random() < s.replay_rate and not replay:
            replay, replay_age_s = True, s.replay_age_s
    return WebhookPlan(concurrent_copies=concurrent, later_copies=later, mangles=tuple(mangles),
                       drifts=tuple(drifts), replay=replay, replay_age_s=replay_age_s)


def describe(settings: msgspec.Struct) -> str:
    """The fields of ``settings`` that differ from their defaults, as ``name=value`` pairs
    (``"healthy"`` when none do). For the schedule log."""
    default = type(settings)
    parts: list[str] = []
    for field in msgspec.structs.fields(default):
        value = getattr(settings, field.name)
        if field.default is not msgspec.NODEFAULT:
            base = field.default
        elif field.default_factory is not msgspec.NODEFAULT:
            base = field.default_factory()
        else:
            base = object()
        if value != base:
            shown = msgspec.json.encode(value).decode() if isinstance(
                value, (msgspec.Struct, dict, tuple, list)) else repr(value)
            parts.append(f"{field.name}={shown}")
    return ", ".join(parts) if parts else "healthy"
