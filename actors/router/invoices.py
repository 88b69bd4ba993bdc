"""Invoice router: ``invoice.issued.v1`` → one balanced ERP journal entry command.

The accounting is plain and pure (``journal_for_invoice``): debit accounts receivable with the
total, credit deferred revenue with the subtotal and tax payable with the tax. Revenue is
recognised later by the revenue platform, not here.

The actor processes whole fetched batches: decode every message, plan its output, publish all
outputs pipelined and wait for their PubAcks, then ack the inputs whose outputs are stored.
Output ids are derived from (input id, step), so a redelivered batch republishes the same ids
and the stream drops the duplicates.

Entities and currencies (``with_entity``): with ``[entities]`` configured, every posting names
the legal entity of the invoice's customer (``EntityMap``); when the invoice's currency is not
that entity's functional currency, the entry stays in the invoice's (transaction) currency and
carries the functional currency and the exchange rate of the invoice's date. The router reads
the day's rates through ``rate_source`` (the ERP's daily rates) before it plans a batch, once
per (day, functional currency): planning itself stays pure. A rate the ERP cannot give is
``fx.missing_rate`` (dead-lettered; replay it once the rate exists); a failed read of the rates
sends the whole batch back (retryable) like any other passing outage.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date
from decimal import Decimal

import msgspec

from contracts import (
    ContractError,
    CreditMemoIssued,
    Envelope,
    GatewayError,
    InvoiceIssued,
    InvoiceIssuedV3,
    JournalLine,
    MsgpackCodec,
    PostJournalEntry,
    Retryable,
    Subjects,
    contract_error,
    derive_id,
    format_rate,
    make_envelope,
    revenue_by_line,
    tax_by_jurisdiction,
)

from ..deadletter import DeadLetterSink
from ..erp.ordering import versioned_external_id
from ..infra.bus import Delivery, OutMsg
from ..lifecycle.fx import EntityMap, RateTable, entity_of
from ..worker import BatchWorker

__all__ = ["AccountMap", "InvoiceRouter", "RateSource", "journal_command", "journal_for_invoice",
           "journal_for_invoice_v3", "load_rates", "plan_invoice", "preload_rates", "rates_needed",
           "with_entity"]

# The ERP's daily rates: ``(day, base)`` → every currency's rate in ``base`` on that day.
RateSource = Callable[[date, str], Awaitable[Mapping[str, Decimal]]]

log = logging.getLogger("erpgw.router.invoices")
_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)


class AccountMap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ERP accounts the invoice posting uses (configurable per company)."""

    receivable: str = "1200"
    deferred_revenue: str = "2400"
    tax_payable: str = "2200"
    # Flow 3: the bank account a payment is applied to, and the expense account of partner
    # commissions (the lines of a settlement's vendor bill).
    cash: str = "1000"
    partner_commission: str = "6100"
    # Tax payable per tax jurisdiction ("DE", "US-CA"); a jurisdiction not listed posts to
    # ``tax_payable``. Empty (the default): one tax account for every jurisdiction.
    tax_payable_by_jurisdiction: dict[str, str] = {}
    # Revenue to the GL (``actors.close``): the account credited with recognised revenue, and
    # one per product line where it differs ({"prod_seat": "4010"}); deferred revenue is debited.
    revenue: str = "4000"
    revenue_by_product: dict[str, str] = {}
    # Foreign currencies (actors/lifecycle/fx.py): the differences of rounding an entry into
    # the functional currency, and realized exchange gains and losses on payments.
    fx_rounding: str = "7990"
    fx_gain: str = "7910"
    fx_loss: str = "7920"

    def tax_account(self, jurisdiction: str) -> str:
        return self.tax_payable_by_jurisdiction.get(jurisdiction, self.tax_payable)

    def revenue_account(self, product: str) -> str:
        return self.revenue_by_product.get(product, self.revenue)


def erp_idempotency_key(env: Envelope) -> str:
    """The ERP idempotency key of the posting for ``env``'s business object version."""
    k = env.key
    return derive_id("erp.journal", k.source, k.object_id, str(k.version))


def journal_for_invoice(inv: InvoiceIssued, key: str, accounts: AccountMap,
                        version: int = 1) -> PostJournalEntry:
    """The balanced journal entry for version ``version`` of an issued invoice (requires
    ``inv.total > 0``). Its external id is the invoice id, with ``:v<n>`` from version 2 on
    (an amendment; the ERP poster orders versions and reverses the one it replaces)."""
    memo = f"Invoice {inv.number} ({inv.invoice_id}) customer {inv.customer_id}"
    if version > 1:
        memo += f" version {version}"
    lines = [JournalLine(account=accounts.receivable, debit=inv.total, memo=memo)]
    if inv.subtotal:
        lines.append(JournalLine(account=accounts.deferred_revenue, credit=inv.subtotal,
                                 memo="deferred revenue"))
    if inv.tax:
        lines.append(JournalLine(account=accounts.tax_payable, credit=inv.tax, memo="tax"))
    return PostJournalEntry(
        idempotency_key=key,
        external_id=versioned_external_id(inv.invoice_id, version),
        posting_date=inv.issued_at.date(),
        currency=inv.currency,
        memo=memo,
        lines=lines,
    )


def _side(account: str, amount: int, memo: str, *, credit: bool) -> JournalLine:
    """``amount`` on the credit (``credit``) or debit side; a negative amount on the other."""
    if (amount > 0) == credit:
        return JournalLine(account=account, credit=abs(amount), memo=memo)
    return JournalLine(account=account, debit=abs(amount), memo=memo)


def journal_for_invoice_v3(inv: InvoiceIssuedV3, key: str, accounts: AccountMap,
                           version: int = 1) -> PostJournalEntry:
    """The balanced journal entry of a real platform's invoice (``invoice.issued.v3``).

    Debit receivable ``total``; credit deferred revenue per line with the line's revenue net
    of its discounts and included tax (``revenue_by_line``; zero lines omitted); credit tax
    payable per jurisdiction (``AccountMap.tax_account``) with every tax of that
    jurisdiction, inclusive and exclusive. Negative amounts go to the other side. Credits less
    debits: net revenue + tax = subtotal - discount + exclusive tax = total, so the entry
    balances to the minor unit. Raises ``ValueError`` (``journal.*``) only when every line
    is zero (nothing to post; ``plan_invoice`` skips a zero total first).
    """
    memo = f"Invoice {inv.number or inv.invoice_id} ({inv.invoice_id}) customer {inv.customer_id}"
    if version > 1:
        memo += f" version {version}"
    lines = [_side(accounts.receivable, inv.total, memo, credit=False)] if inv.total else []
    for ln, amount in zip(inv.lines, revenue_by_line(inv), strict=True):
        if amount:
            what = "proration" if ln.proration else "deferred revenue"
            lines.append(_side(accounts.deferred_revenue, amount,
                               f"{what} {ln.line_id} {ln.product_id}"[:200], credit=True))
    for jurisdiction, amount in tax_by_jurisdiction(inv).items():
        if amount:
            lines.append(_side(accounts.tax_account(jurisdiction), amount,
                               f"tax {jurisdiction}", credit=True))
    return PostJournalEntry(
        idempotency_key=key,
        external_id=versioned_external_id(inv.invoice_id, version),
        posting_date=inv.issued_at.date(),
        currency=inv.currency,
        memo=memo,
        lines=lines,
    )


def with_entity(entry: PostJournalEntry, customer: str, entities: EntityMap,
                rates: RateTable | None) -> PostJournalEntry:
    """``entry`` posted for ``customer``'s entity: unchanged while ``entities`` is not
    configured; else naming the entity, and, when the entity's functional currency is not
    the entry's currency, carrying it and the rate of ``entry.posting_date`` from ``rates``.

    Raises ``ValueError`` (``fx.missing_rate``) when ``rates`` has no such rate.
    """
    if not entities.configured:
        return entry
    posted = entity_of(entities, customer, entry.currency, entry.posting_date, rates)
    if isinstance(posted, str):
        return msgspec.structs.replace(entry, entity=posted)
    entity, functional, rate = posted
    return PostJournalEntry(
        idempotency_key=entry.idempotency_key, external_id=entry.external_id,
        posting_date=entry.posting_date, currency=entry.currency, memo=entry.memo,
        lines=entry.lines, entity=entity, functional_currency=functional,
        exchange_rate=format_rate(rate))


def plan_invoice(env: Envelope, subjects: Subjects, accounts: AccountMap, *,
                 entities: EntityMap | None = None,
                 rates: RateTable | None = None) -> OutMsg | None:
    """What to publish for one inbound envelope; None when there is nothing to post.
    ``entities``/``rates``: see ``with_entity`` (default: no entities, as before).

    Raises ``ContractError`` for an envelope that is not an issued invoice, and
    ``fx.missing_rate`` for a foreign-currency invoice whose day's rate is unknown.
    """
    inv = env.payload
    if not isinstance(inv, InvoiceIssuedV3 | InvoiceIssued):
        raise ContractError(f"invoice router cannot handle {env.type}",
                            code="route.unexpected_type", path="$.payload.type")
    if inv.total == 0:
        return None  # nothing to post for a zero invoice
    try:
        if isinstance(inv, InvoiceIssuedV3):
            entry = journal_for_invoice_v3(inv, erp_idempotency_key(env), accounts,
                                           env.key.version)
        else:
            entry = journal_for_invoice(inv, erp_idempotency_key(env), accounts,
                                        env.key.version)
        entry = with_entity(entry, inv.customer_id, entities or EntityMap(), rates)
    except ValueError as exc:
        raise contract_error(exc) from exc
    return journal_command(env, entry, subjects)


async def load_rates(needed: set[tuple[date, str]], rates: RateTable,
                     source: RateSource) -> None:
    """Read into ``rates`` the days' rates of ``needed`` ((day, functional currency)) that
    it does not hold yet, one read per pair. Raises what ``source`` raises (a retryable
    outage sends the batch back)."""
    for day, functional in sorted(needed):
        if not rates.has(day, functional):
            rates.add(day, functional, dict(await source(day, functional)))


def rates_needed(payloads: Sequence[object], entities: EntityMap) -> set[tuple[date, str]]:
    """The (day, functional currency) pairs whose rates the invoices and credit memos among
    ``payloads`` need: those in another currency than their entity's functional one. Raises
    nothing."""
    needed: set[tuple[date, str]] = set()
    if not entities.configured:
        return needed
    for p in payloads:
        if isinstance(p, InvoiceIssuedV3 | InvoiceIssued | CreditMemoIssued) and p.total:
            functional = entities.functional(entities.entity_for(p.customer_id))
            if functional is not None and functional != p.currency:
                needed.add((p.issued_at.date(), functional))
    return needed


async def preload_rates(name: str, batch: Sequence[Delivery], entities: EntityMap,
                        rates: RateTable, source: RateSource | None) -> None:
    """Before planning ``batch``: read into ``rates`` the daily rates its foreign-currency
    documents need (``rates_needed``, ``load_rates``). A retryable failure propagates (the
    whole batch comes back after a delay); a refusal is logged, and the documents needing the
    rate dead-letter with ``fx.missing_rate`` when planned. Undecodable messages are left to
    the planning (dead-lettered there)."""
    if not entities.configured or source is None:
        return
    payloads = []
    for d in batch:
        try:
            payloads.append(_codec.decode(d.data).payload)
        except ContractError:
            continue
    try:
        await load_rates(rates_needed(payloads, entities), rates, source)
    except Retryable:
        raise
    except GatewayError as exc:
        log.error("%s: exchange rates refused: [%s] %s", name, exc.code, exc)


def journal_command(env: Envelope, entry: PostJournalEntry, subjects: Subjects) -> OutMsg:
    """``entry`` as the ``erp.journal`` command caused by ``env``: its message id derived from
    (``env``'s id, "erp.journal"), so a redelivered cause republishes the same id."""
    out = make_envelope(entry, source="gateway", key=env.key, caused_by=env,
                        msg_id=derive_id(env.id, "erp.journal"))
    return OutMsg(subject=subjects.erp_journal, data=_codec.encode(out), msg_id=out.id,
                  headers={"traceparent": out.traceparent or ""})


class InvoiceRouter(BatchWorker):
    def __init__(self, name: str, *, subjects: Subjects, dlq: DeadLetterSink,
                 accounts: AccountMap | None = None, entities: EntityMap | None = None,
                 rate_source: RateSource | None = None, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.subjects = subjects
        self.dlq = dlq
        self.accounts = accounts or AccountMap()
        self.entities = entities or EntityMap()
        self.rate_source = rate_source
        self.rates = RateTable()
        self.skipped = 0

    async def handle(self, batch: Sequence[Delivery]) -> None:
        await preload_rates(self.name, batch, self.entities, self.rates, self.rate_source)
        _, skipped = await self.route(
            batch, lambda d: plan_invoice(_codec.decode(d.data), self.subjects, self.accounts,
                                          entities=self.entities, rates=self.rates),
            self.dlq, crash_at="router.after_publish")
        self.skipped += skipped

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "skipped": self.skipped,
                "dead_lettered": self.dlq.count}
