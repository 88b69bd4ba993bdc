"""Closed accounting periods: what the ERP poster does with a posting the ERP refuses because
its date falls in a closed period (``PERIOD_CLOSED``).

Theory of operation: the policy ``erp.closed_period`` chooses between two answers.

- ``dead_letter`` (the default): the posting is dead-lettered as ``erp.period_closed``. Moving
  money into another period than its document's date is a decision for whoever closed the
  period, so it is left to them: ``erpgw dlq replay --repost-open`` re-sends the letter marked
  with ``POLICY_HEADER`` and the poster then applies ``next_open`` to it alone.
- ``next_open``: the posting is sent again dated the first day of the next period, and of the
  one after while that is closed too, up to ``MAX_PROBES`` periods ahead (NetSuite's own
  accounting preference "default posting period when the transaction date is in a closed
  period: first open period" does the same). Its memo keeps the original date. Its
  idempotency key and external id do not change, so the ERP holds at most one posting per key
  whatever happens: a retry of the original after the moved entry was committed is refused
  as a key reuse (the key is taken), and the probe that meets the moved entry is answered
  ``replayed``.

A refusal ``IDEMPOTENCY_KEY_REUSED`` therefore also starts (or continues) the probe, but only
for a posting that may have reached the ERP before (a redelivery or a repair) or one already
being moved; a first delivery refused that way is a key-derivation bug and is dead-lettered as
it was. Pure: no I/O, the poster sends what ``moved`` builds.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

import msgspec

from contracts import PostJournalEntry
from contracts.platforms.erp import PERIOD_CLOSED

__all__ = ["KEY_REUSED", "MAX_PROBES", "POLICIES", "POLICY_HEADER", "ClosedPeriodPolicy",
           "first_day_after", "moved", "probes"]

ClosedPeriodPolicy = Literal["next_open", "dead_letter"]
POLICIES: tuple[ClosedPeriodPolicy, ...] = ("next_open", "dead_letter")
# A message carrying this header (value "next_open") is posted under that policy whatever the
# configured one: `erpgw dlq replay --repost-open` sets it.
POLICY_HEADER = "Erpgw-Period-Policy"
# How many periods after the posting's own the poster tries before it dead-letters it.
MAX_PROBES = 12
KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"


def first_day_after(day: date, months: int) -> date:
    """The first day of the month ``months`` (>= 1) after ``day``'s month. Pure."""
    if months < 1:
        raise ValueError(f"months must be >= 1, got {months}")
    index = day.year * 12 + (day.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def moved(entry: PostJournalEntry, months: int) -> PostJournalEntry:
    """``entry`` dated the first day of the ``months``-th period after its own, its memo
    naming the original date; same idempotency key, external id and lines. Always built from
    the original entry, so every attempt at the same period is byte-for-byte the same."""
    day = first_day_after(entry.posting_date, months)
    memo = f"{entry.memo} (dated {entry.posting_date.isoformat()}, period closed)".strip()
    return msgspec.structs.replace(entry, posting_date=day, memo=memo)


def probes(code: str | None, *, step: int, maybe_posted: bool) -> bool:
    """Whether a refusal ``code`` at probe ``step`` (0: the entry as dated) sends the entry on
    to the next period. Pure."""
    if step >= MAX_PROBES:
        return False
    if code == PERIOD_CLOSED:
        return True
    return code == KEY_REUSED and (step > 0 or maybe_posted)
