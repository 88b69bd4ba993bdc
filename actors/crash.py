"""Deterministic crash points and fault hooks for drills.

Crash points: ``GW_CRASH_AT=<name>[:<nth>]``.

``crashpoint("erp.after_post")`` makes the process ``os._exit(137)`` (what SIGKILL looks like to
a parent) the nth time execution passes that point (default: the first). Tests use it to prove
that a crash between any two steps loses nothing and doubles nothing. Unset, a crash point costs
one dictionary lookup.

Names in use: ``ingress.after_publish`` (stored in JetStream, 2xx not sent),
``router.after_publish`` (outputs stored, inputs not acked), ``erp.after_post`` (ERP answered
2xx, ledger not committed), ``erp.after_commit`` (ledger committed, inputs not acked),
``revenue.between_claims`` (the upload's lines claimed in the shared ``uploads``, not yet in
the ledger), ``revenue.before_upload`` (the upload's lines claimed ``pending`` in the ledger,
request not sent), ``revenue.after_upload`` (the revenue platform answered 201, ledger still
``pending``), ``revenue.after_commit`` (ledger says ``uploaded``, inputs not acked),
``saga.after_step`` (a deal saga's step or reversal was answered by its platform, its state not
yet committed: the step is redone under the same idempotency key), ``subscription.after_write``
(flow 5: the ERP order and the revenue contract hold a subscription's new version, the ledger
not yet: the version is applied again, answered as replays),
``usage.before_billing`` / ``usage.before_revenue`` (flow 4: usage records claimed ``pending``
for billing / revenue, request not sent), ``usage.after_billing`` / ``usage.after_revenue``
(the platform answered, ledger still ``pending``), ``usage.after_billing_commit`` (billing's
answer committed, revenue not sent).

Fault hooks: ``GW_FAULT=<name>[:<value>][,<name>[:<value>]…]`` makes a component misbehave on
purpose: ``erp.raise_every:N`` (the ERP poster raises a bug-like error once it has handled N
more messages: supervision drill), ``erp.fail_start`` (the ERP poster fails at every start:
restart-storm drill), ``ledger.max_page_count:N`` (the ledger database may not grow past N
pages: disk-full drill), ``revenue.corrupt_line:<invoice id>`` (the revenue poster sends that
invoice's first line with a reversed period, which the revenue platform refuses with a 422:
a rule of the platform the gateway cannot know in advance), ``limiter.crash_after:S`` (the
rate-limiter actor raises once, S seconds after it started: F35's drill; adapters pause until
the supervisor restarts it) and ``limiter.down_for:D`` (its restart then takes D s longer).
``fault(name)`` returns the value ("" when set without one) or None.

Drill mode (S22): both variables are ignored unless ``ERPGW_DRILLS=1`` is set too (the demo,
drill and test launchers set it), so a stray variable in a production environment cannot crash
or corrupt anything; ``ignored_hooks()`` names what was ignored, for a warning at start. With
drill mode on and a hook set, ``refuse_off_loopback`` refuses to start a gateway whose
listener or any platform URL is not on loopback (``drills.off_loopback``).
"""

from __future__ import annotations

import ipaddress
import os
import sys
import urllib.parse
from collections.abc import Iterable

from contracts import GatewayError

__all__ = ["CRASH_POINTS", "DRILLS_VAR", "FAULTS", "DrillError", "crashpoint", "drills_enabled",
           "fault", "hooks_active", "ignored_hooks", "refuse_off_loopback"]

DRILLS_VAR = "ERPGW_DRILLS"
_HOOK_VARS = ("GW_CRASH_AT", "GW_FAULT")


class DrillError(GatewayError):
    code = "drills.off_loopback"


def drills_enabled() -> bool:
    """Drill mode: ``ERPGW_DRILLS=1``. Without it no fault hook or crash point acts."""
    return os.environ.get(DRILLS_VAR) == "1"

CRASH_POINTS = ("ingress.after_publish", "router.after_publish", "erp.after_post",
                "erp.after_commit", "revenue.between_claims", "revenue.before_upload",
                "revenue.after_upload", "revenue.after_commit", "saga.after_step",
                "subscription.after_write",
                # flow 4 (actors/usage/aggregator.py): claimed / answered / committed, per half
                "usage.before_billing", "usage.after_billing", "usage.after_billing_commit",
                "usage.before_revenue", "usage.after_revenue")


def _parse(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, nth = spec.partition(":")
    if name not in CRASH_POINTS:
        raise SystemExit(f"GW_CRASH_AT: unknown crash point {name!r}; one of {CRASH_POINTS}")
    return name, int(nth) if nth.isdigit() and int(nth) > 0 else 1


_TARGET = _parse(os.environ.get("GW_CRASH_AT", "")) if drills_enabled() else None

FAULTS = ("erp.raise_every", "erp.fail_start", "ledger.max_page_count",
          "revenue.corrupt_line",
          # F35 (actors/limits.py): the rate-limiter actor raises once, S seconds after start
          "limiter.crash_after", "limiter.down_for")


def _parse_faults(spec: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = item.partition(":")
        if name not in FAULTS:
            raise SystemExit(f"GW_FAULT: unknown fault {name!r}; one of {FAULTS}")
        out[name] = value
    return out


_FAULTS = _parse_faults(os.environ.get("GW_FAULT", "")) if drills_enabled() else {}


def hooks_active() -> bool:
    """True when a crash point or fault hook is armed (drill mode on and one set)."""
    return _TARGET is not None or bool(_FAULTS)


def ignored_hooks() -> list[str]:
    """The hook variables set in the environment but ignored because drill mode is off."""
    return [] if drills_enabled() else [v for v in _HOOK_VARS if os.environ.get(v)]


def _loopback(url_or_host: str) -> bool:
    host = urllib.parse.urlsplit(url_or_host).hostname if "://" in url_or_host else url_or_host
    for part in (host or "").split(","):
        name = part.strip().strip("[]")
        if name == "localhost":
            continue
        try:
            if not ipaddress.ip_address(name).is_loopback:
                return False
        except ValueError:
            return False
    return bool(host)


def refuse_off_loopback(targets: Iterable[str]) -> None:
    """Raise ``DrillError`` when a hook is armed and a listener host or URL in ``targets``
    (empty ones skipped) is not on loopback: drills only ever run on one machine."""
    if not hooks_active():
        return
    off = [t for t in targets if t and not _loopback(t)]
    if off:
        raise DrillError(f"drill hooks ({', '.join(v for v in _HOOK_VARS if os.environ.get(v))})"
                         f" refuse to run with listeners or platforms off loopback: "
                         f"{', '.join(off)}")


def fault(name: str) -> str | None:
    """The value of fault hook ``name`` if ``GW_FAULT`` sets it, else None."""
    return _FAULTS.get(name)
_passes: dict[str, int] = {}


def crashpoint(name: str) -> None:
    """Exit the process at once if ``GW_CRASH_AT`` names this point and its pass count."""
    if _TARGET is None or _TARGET[0] != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] >= _TARGET[1]:
        sys.stderr.write(f"erpgw: crash point {name} reached (GW_CRASH_AT); exiting 137\n")
        sys.stderr.flush()
        os._exit(137)
