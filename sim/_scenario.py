"""Scenario files: a fault schedule and a workload for one simulator run, as TOML.

Theory of operation. A scenario is data (``Scenario``); ``load_scenario`` decodes and validates
it, naming the offending field in every error (``http[2].for_s: Expected `float` > 0``).
``Schedule`` answers, for a moment of the run (seconds since the simulator started), which
HTTP fault windows apply to a service's endpoint and which webhook fault windows are active.
The simulator combines those with the runtime faults (``PUT /sim/v1/faults``), draws with its
seeded generators, and fires the scheduled bill runs at their times.

Format (every table and key is optional; times are seconds since the simulator started)::

    name = "month-end"
    description = "..."
    seed = 2025                      # used unless --seed is given
    billing_dialect = "stripe"       # "erpgw" (default) | "stripe"; --billing-dialect wins

    [faults]                         # applied at start, exactly as PUT /sim/v1/faults
    billing = { duplicate_rate = 0.05 }
    revenue = { error_rate = 0.1 }   # erp | billing | revenue | cpq sections

    [[bill_run]]                     # the workload: a bill run fired at at_s
    at_s = 1
    invoices = 6000
    rate = 100                       # invoices/s; 0 = all at once
    amend_rate = 0.0                 # opt-in: share of invoices that get a v2 (invoice.updated)
    reorder_amendments = 0.0         # opt-in: share of those v2 delivered before v1
    credit_memo_rate = 0.0           # opt-in: share that get a credit_note.created webhook
    payment_rate = 0.0               # opt-in: share that get an invoice.paid webhook

    [[http]]                         # HTTP faults on a service's endpoint(s) for a window
    service = "erp"                  # erp | billing | revenue | cpq
    endpoint = "*"                   # one of ENDPOINTS[service], or "*" (all of them)
    at_s = 60
    for_s = 20
    outage = true                    # any HttpFaults field: latency_ms, latency = {dist=...},
                                     # error_rate, status, error_mix = {500 = 1, 503 = 2},
                                     # rate_limit_rate, retry_after_s, reset_rate,
                                     # commit_then_timeout_rate, commit_then_reset_rate,
                                     # silent_drop_rate, item_reject_rate,
                                     # alter_amount_rate

    [[webhooks]]                     # billing webhook faults for a window
    at_s = 0
    for_s = 300
    mangle_rate = 0.01               # any BillingFaults field
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from ._faults import BillingFaults, Faults, HttpFaults, describe

__all__ = [
    "ENDPOINTS",
    "HttpWindow",
    "Scenario",
    "ScenarioError",
    "Schedule",
    "ScheduledBillRun",
    "WebhookWindow",
    "load_scenario",
    "parse_scenario",
]

# The endpoints a fault window can name, per service ("*" names them all).
ENDPOINTS: dict[str, tuple[str, ...]] = {
    "erp": ("journal-entries.bulk", "journal-entries", "gl.balances", "periods", "governance",
            "customers"),
    "billing": ("bill-runs", "events", "customers"),
    "revenue": ("batches",),
    "cpq": ("products", "price"),
}

Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=31_536_000.0)]
Duration = Annotated[float, msgspec.Meta(gt=0.0, le=31_536_000.0)]


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the field."""


class HttpWindow(HttpFaults, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``HttpFaults`` on ``service``'s ``endpoint`` from ``at_s`` for ``for_s`` seconds."""

    service: Literal["erp", "billing", "revenue", "cpq"]
    endpoint: str = "*"
    at_s: Seconds
    for_s: Duration

    def covers(self, service: str, endpoint: str, t: float) -> bool:
        return (self.service == service and self.endpoint in ("*", endpoint)
                and self.at_s <= t < self.at_s + self.for_s)


class WebhookWindow(BillingFaults, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``BillingFaults`` for webhooks issued from ``at_s`` for ``for_s`` seconds."""

    at_s: Seconds
    for_s: Duration

    def covers(self, t: float) -> bool:
        return self.at_s <= t < self.at_s + self.for_s


class ScheduledBillRun(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A bill run the scenario fires at ``at_s`` (same limits as ``POST /billing/v1/bill-runs``)."""

    at_s: Seconds
    invoices: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    rate: Annotated[float, msgspec.Meta(ge=0.0, le=1_000_000.0)] = 0.0
    amend_rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    reorder_amendments: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    credit_memo_rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    payment_rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0


class Scenario(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A whole scenario file (see the module docstring for the format)."""

    name: str = ""
    description: str = ""
    seed: int | None = None
    faults: Faults = msgspec.field(default_factory=Faults)
    billing_dialect: Literal["erpgw", "stripe"] | None = None
    bill_run: list[ScheduledBillRun] = []
    http: list[HttpWindow] = []
    webhooks: list[WebhookWindow] = []
    # The ERP's dialect the simulator speaks (``--erp-dialect`` wins): erpgw or netsuite.
    erp_dialect: Literal["erpgw", "netsuite"] | None = None

    def describe(self) -> list[str]:
        """The schedule as log lines, in time order (bill runs, then windows, by ``at_s``)."""
        title = self.name or "(unnamed)"
        lines = [
            f"scenario {title}: {len(self.bill_run)} bill run(s), {len(self.http)} HTTP fault "
            f"window(s), {len(self.webhooks)} webhook fault window(s)"
        ]
        if self.faults != Faults():
            lines.append(f"  from start          faults: erp [{describe(self.faults.erp)}], "
                         f"billing [{describe(self.faults.billing)}], "
                         f"revenue [{describe(self.faults.revenue)}], "
                         f"cpq [{describe(self.faults.cpq)}]")
        events: list[tuple[float, int, str]] = []
        for i, run in enumerate(self.bill_run):
            at = f"t={run.at_s:8.1f}s"
            events.append((run.at_s, i, f"{at:<27}bill run: {run.invoices} invoices at "
                           f"{'once' if run.rate == 0 else f'{run.rate:g}/s'}"))
        for i, w in enumerate(self.http):
            span = f"t={w.at_s:8.1f}s..{w.at_s + w.for_s:.1f}s"
            events.append((w.at_s, 1000 + i, f"{span:<27}{w.service}/{w.endpoint}: "
                           f"{_window_faults(w, HttpFaults)}"))
        for i, ww in enumerate(self.webhooks):
            span = f"t={ww.at_s:8.1f}s..{ww.at_s + ww.for_s:.1f}s"
            events.append((ww.at_s, 2000 + i, f"{span:<27}billing/webhooks: "
                           f"{_window_faults(ww, BillingFaults)}"))
        lines.extend(f"  {text}" for _, _, text in sorted(events))
        return lines


def _window_faults(window: msgspec.Struct, base: type[msgspec.Struct]) -> str:
    own = {f.name for f in msgspec.structs.fields(base)}
    fields = {k: v for k, v in msgspec.structs.asdict(window).items() if k in own}
    return describe(base(**fields))


def parse_scenario(data: bytes | str, *, source: str = "scenario") -> Scenario:
    """Decode and validate a scenario from TOML text.

    Raises ``ScenarioError`` naming ``source`` and the field (``http[0].at_s: ...``) for a
    TOML syntax error, a wrong type or value, an unknown key, an unknown endpoint, or a window
    that ends after a year.
    """
    text = data.decode() if isinstance(data, bytes) else data
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from exc
    try:
        scenario = msgspec.convert(raw, Scenario, str_keys=True)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{source}: {_field_message(str(exc))}") from exc
    for i, w in enumerate(scenario.http):
        known = ENDPOINTS[w.service]
        if w.endpoint != "*" and w.endpoint not in known:
            raise ScenarioError(
                f"{source}: http[{i}].endpoint: unknown {w.service} endpoint {w.endpoint!r} "
                f"(one of {', '.join(known)}, or '*')"
            )
        _check_ends(source, f"http[{i}]", w.at_s, w.for_s)
    for i, ww in enumerate(scenario.webhooks):
        _check_ends(source, f"webhooks[{i}]", ww.at_s, ww.for_s)
    return scenario


def _check_ends(source: str, where: str, at_s: float, for_s: float) -> None:
    if at_s + for_s > 31_536_000.0:
        raise ScenarioError(f"{source}: {where}.for_s: the window must end within a year")


def _field_message(message: str) -> str:
    """msgspec's ``"... - at `$.http[0].at_s`"`` as ``"http[0].at_s: ..."``."""
    text, sep, where = message.rpartition(" - at `")
    if not sep:
        return f"(top level): {message}"
    path = where.rstrip("`")
    if "` in `" in path:  # a dict key: "key` in `$.http[0].error_mix"
        path = path.split("` in `")[-1] + " (a key)"
    path = path.removeprefix("$").removeprefix(".")
    return f"{path or '(top level)'}: {text}"


def load_scenario(path: str | Path) -> Scenario:
    """``parse_scenario`` of the file at ``path``; ``ScenarioError`` if it cannot be read."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read the scenario file: {exc.strerror or exc}") from exc
    return parse_scenario(data, source=str(p))


class Schedule:
    """The time-dependent part of a scenario, queried by the services at request time."""

    def __init__(self, scenario: Scenario | None) -> None:
        self.scenario = scenario or Scenario()

    def http(self, service: str, endpoint: str, t: float) -> Sequence[HttpFaults]:
        """The HTTP fault windows covering ``service``'s ``endpoint`` at ``t``, in file order."""
        return [w for w in self.scenario.http if w.covers(service, endpoint, t)]

    def webhooks(self, t: float) -> Sequence[BillingFaults]:
        """The webhook fault windows active at ``t``, in file order."""
        return [w for w in self.scenario.webhooks if w.covers(t)]

    def active(self, t: float) -> tuple[list[int], list[int]]:
        """Indexes of the HTTP and webhook windows active at ``t``."""
        return ([i for i, w in enumerate(self.scenario.http) if w.at_s <= t < w.at_s + w.for_s],
                [i for i, w in enumerate(self.scenario.webhooks) if w.covers(t)])
