"""Revenue to the GL: what the revenue platform recognises in a period becomes one journal entry
per entity, period and currency (debit deferred revenue, credit revenue by product line).

Theory of operation: the entry of (entity, period, currency) is a versioned document, the
aggregate ``revenue:recognition:<entity>:<period>:<currency>``, whose versions are the close
*runs* that changed it. ``plan_close`` compares what the platform recognises now with the
aggregate's latest run the ERP poster knows (its ledger's applied or claimed version):

- nothing posted yet: run 1;
- the same amounts per account as the latest run: nothing to post (a re-run never doubles;
  even a re-published run is skipped by the poster as already applied, and its idempotency key
  guards the ERP);
- other amounts (a contract amended after the period was posted): run n + 1. The ERP poster
  orders versions per aggregate (``actors.erp.ordering``): it sends the reversal of run n and
  run n + 1 together. Both are dated the period's last day and published under the closed-period
  policy ``next_open`` (``actors.erp.periods``), so when the month is closed the true-up lands in
  the first open period, never editing posted money; while the month is open it stays in it.

The idempotency key of a run derives from (entity, period, currency, run); the contracts and
their versions that make up each product line are named in the line's memo. With entities
configured (``EntityMap``), ``plan_close_entities`` splits the recognition by the entity of each
contract's customer, and each entry names its entity (sent to the ERP as its subsidiary);
without, ``plan_close`` posts everything for one entity and the entry names none. Pure: the shell
(``erpgw close run``) reads the recognition and the ledger and publishes the commands.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from contracts import BusinessKey, JournalLine, PostJournalEntry, derive_id
from contracts.platforms.revenue import RecognitionItem

from ..erp.ordering import versioned_external_id
from ..lifecycle.fx import EntityMap
from ..router.invoices import AccountMap

__all__ = ["Latest", "RunPosting", "aggregate_id", "group_by_entity", "period_end",
           "plan_close", "plan_close_entities", "revenue_entry"]

Action = Literal["posted", "true_up", "unchanged"]


def aggregate_id(entity: str, period: str, currency: str) -> str:
    """The object id of the (entity, period, currency) entry's business key."""
    return f"recognition:{entity}:{period}:{currency}"


def period_end(period: str) -> date:
    """The last day of ``period`` (``YYYY-MM``). Raises ``ValueError`` for a malformed one."""
    year, month = (int(part) for part in period.split("-"))
    return date(year, month, calendar.monthrange(year, month)[1])


@dataclass(frozen=True, slots=True)
class Latest:
    """The aggregate's highest run the poster knows, and its entry when known."""

    run: int
    entry: PostJournalEntry | None


@dataclass(frozen=True, slots=True)
class RunPosting:
    """One (entity, period, currency) of a close run: what to do and the command to publish
    (``entry``/``key`` are ``None`` when ``unchanged``)."""

    currency: str
    run: int
    action: Action
    amount: int
    entry: PostJournalEntry | None
    key: BusinessKey | None
    entity: str = ""


def revenue_entry(entity: str, period: str, currency: str, run: int,
                  items: Iterable[RecognitionItem], accounts: AccountMap, *,
                  named: bool = False) -> PostJournalEntry | None:
    """Run ``run`` of the (entity, period, currency) entry over ``items`` (that currency's
    recognition), or ``None`` when it recognises nothing. Lines: one credit per revenue
    account (product lines mapped to the same account share it), the debit of deferred revenue
    last. ``named``: the entry names ``entity`` (its ``entity`` field). Raises
    ``ContractError`` only for an unknown currency."""
    per_account: dict[str, int] = {}
    sources: dict[str, list[str]] = {}
    for it in sorted(items, key=lambda i: (i.product, i.contract)):
        if it.amount == 0:
            continue
        account = accounts.revenue_account(it.product)
        per_account[account] = per_account.get(account, 0) + it.amount
        sources.setdefault(account, []).append(f"{it.contract} v{it.version} {it.product}")
    total = sum(per_account.values())
    if total <= 0 or any(v < 0 for v in per_account.values()):
        return None
    lines = [JournalLine(account=a, debit=0, credit=v,
                         memo=f"revenue: {', '.join(sources[a])}"[:500])
             for a, v in sorted(per_account.items()) if v > 0]
    lines.append(JournalLine(account=accounts.deferred_revenue, debit=total, credit=0,
                             memo="deferred revenue released"))
    return PostJournalEntry(
        idempotency_key=derive_id("revenue_gl", entity, period, currency, str(run)),
        external_id=versioned_external_id(aggregate_id(entity, period, currency), run),
        posting_date=period_end(period),
        currency=currency,
        memo=f"Recognised revenue {period} entity {entity} run {run}",
        lines=lines,
        entity=entity if named else None,
    )


def _amounts(entry: PostJournalEntry) -> list[tuple[str, int, int]]:
    return sorted((ln.account, ln.debit, ln.credit) for ln in entry.lines)


def plan_close(entity: str, period: str, items: Sequence[RecognitionItem],
               accounts: AccountMap, latest: Mapping[str, Latest], *,
               named: bool = False) -> list[RunPosting]:
    """What a close run of ``period`` for ``entity`` posts, per currency of ``items`` (sorted
    by currency), given each currency's ``latest`` run. ``named``: the entries name
    ``entity``. Pure; raises nothing for valid input.

    A latest run whose entry is unknown (claimed, outcome not recorded) counts as changed: the
    next run is planned, and the poster sorts out what the ERP holds."""
    out: list[RunPosting] = []
    by_currency: dict[str, list[RecognitionItem]] = {}
    for it in items:
        by_currency.setdefault(it.currency.upper(), []).append(it)
    for currency in sorted(by_currency):
        prev = latest.get(currency)
        run = 1 if prev is None else prev.run
        entry = revenue_entry(entity, period, currency, run, by_currency[currency], accounts,
                              named=named)
        if entry is None:
            continue
        if prev is not None:
            if prev.entry is not None and _amounts(prev.entry) == _amounts(entry):
                out.append(RunPosting(currency, run, "unchanged", entry.amount, None, None,
                                      entity))
                continue
            run += 1
            entry = revenue_entry(entity, period, currency, run, by_currency[currency],
                                  accounts, named=named)
            if entry is None:  # never: the same items recognise the same total
                continue
        key = BusinessKey(source="revenue", object_id=aggregate_id(entity, period, currency),
                          version=run)
        out.append(RunPosting(currency, run, "posted" if prev is None else "true_up",
                              entry.amount, entry, key, entity))
    return out


def group_by_entity(items: Iterable[RecognitionItem], entities: EntityMap
                    ) -> dict[str, list[RecognitionItem]]:
    """``items`` per entity of their contract's customer (``entities.entity_for``; an item
    naming no customer goes to ``entities.default``), entities sorted. Pure; raises
    nothing."""
    out: dict[str, list[RecognitionItem]] = {}
    for it in items:
        entity = entities.entity_for(it.customer) if it.customer else entities.default
        out.setdefault(entity, []).append(it)
    return dict(sorted(out.items()))


def plan_close_entities(period: str, items: Sequence[RecognitionItem], accounts: AccountMap,
                        latest: Mapping[tuple[str, str], Latest], entities: EntityMap
                        ) -> list[RunPosting]:
    """``plan_close`` per entity of ``group_by_entity``: one entry per (entity, period,
    currency), each naming its entity, given each ``(entity, currency)``'s ``latest`` run;
    sorted by entity, then currency. Pure; raises nothing for valid input."""
    out: list[RunPosting] = []
    for entity, group in group_by_entity(items, entities).items():
        mine = {c: v for (e, c), v in latest.items() if e == entity}
        out += plan_close(entity, period, group, accounts, mine, named=True)
    return out
