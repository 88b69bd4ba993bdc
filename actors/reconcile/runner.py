"""The reconciler's shell: read billing, the ERP and the DLQ, match, publish, repair.

One ``run_once`` is one reconciliation: it pages through the billing platform's event list and
the ERP's journal entries (their public APIs, through the rate-limited HTTP clients), reads the
dead letters from the DLQ stream, calls the pure ``reconcile``, publishes every break, every
proposal for a person (a ``Flag``: a duplicate, a wrong amount or currency, an orphan; never
applied by the gateway) and the report on ``<prefix>.mon.recon.*`` (JSON), and — when
``repair`` is on — re-drives each missing posting's original event from the billing lane
stream (same idempotency key, so a posting that existed after all is answered "replayed").
``Reconciler`` runs it periodically as an actor.

The other legs run when their sources are given: the revenue leg (``revenue``: the platform's
billings report, and ``ledger``: the gateway's upload rows, the only proof that a line was
never sent; see ``.revenue``), the GL leg (``accounts``: the ERP's GL balances of the periods
of billing's documents against the postings those documents make, ``.books``) and the payables
leg (``partner``: the portal's settlements against the ERP's vendor bills). With ``entities``
(the ``[entities]`` configuration), a payment foreign to its customer's entity is expected in
the entity's functional currency, restated exactly as the payment router posts it (``.fx``):
the rates are the ERP's daily rate of the payment's day and the rate the invoice's ERP posting
carries. With ``repair``,
an invoice whose revenue lines the ledger proves never sent is re-driven to the revenue
poster (its issued event, without the repair header: the poster sends only lines the ledger
says were never sent, so never twice). Every read pages with at most ``PAGE`` items.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Container,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import anyio
import msgspec
from anyio.abc import TaskStatus

from contracts import DeadLetter, GatewayError, JsonCodec, Subjects, parse_rate
from contracts.platforms.billing import (
    BillingEventList,
    CreditNoteEventList,
    PaymentEventList,
)
from contracts.platforms.erp import ExchangeRates, GlBalances, JournalEntryList, VendorBillList
from contracts.platforms.partner import SettlementList
from contracts.platforms.revenue import BillingReport

from ..audit import publish_action
from ..infra import Ledger, NatsBus
from ..infra.lease import KvLease, run_periodically, run_while_held
from ..lifecycle.fx import EntityMap, FxAccounts
from ..platforms import HttpResponse
from ..replay import replay_lane, select_events
from ..runtime import Actor
from .books import (
    GlDoc,
    GlRow,
    Payable,
    Settlement,
    expected_balances,
    fold_accounts,
    reconcile_gl,
    reconcile_payables,
)
from .fx import PaymentRef, Restated, booked_rates, foreign_payments, rate_days, restate
from .matching import (
    EXPLAINED_KINDS,
    BillingDoc,
    ErpPosting,
    Flag,
    ReconReport,
    Repost,
    Reupload,
    reconcile,
)
from .overview import Overview, overview
from .revenue import LedgerView, RevenueDoc, RevenueRecord, reconcile_revenue

__all__ = ["Reconciler", "RunResult", "run_once"]

log = logging.getLogger("erpgw.reconcile")
_events: JsonCodec[BillingEventList] = JsonCodec(BillingEventList)
_credit_notes: JsonCodec[CreditNoteEventList] = JsonCodec(CreditNoteEventList)
_payments: JsonCodec[PaymentEventList] = JsonCodec(PaymentEventList)
# The invoice events whose invoice the ERP must hold (the latest version of each).
INVOICE_EVENTS = frozenset({"invoice.finalized", "invoice.updated"})
T_co = TypeVar("T_co", covariant=True)
_entries: JsonCodec[JournalEntryList] = JsonCodec(JournalEntryList)
_letters: JsonCodec[DeadLetter] = JsonCodec(DeadLetter)
_report: JsonCodec[BillingReport] = JsonCodec(BillingReport)
_gl: JsonCodec[GlBalances] = JsonCodec(GlBalances)
_settlements: JsonCodec[SettlementList] = JsonCodec(SettlementList)
_bills: JsonCodec[VendorBillList] = JsonCodec(VendorBillList)
_rates: JsonCodec[ExchangeRates] = JsonCodec(ExchangeRates)
_json = msgspec.json.Encoder()
PAGE = 1000
# The roles of the account map the GL leg compares (the accounts flow 2 and 3 post to).
GL_ROLES = ("receivable", "deferred_revenue", "tax_payable", "cash")


class RunResult(msgspec.Struct, frozen=True):
    period: str | None
    started_at: float
    elapsed_s: float
    report: ReconReport  # the ERP leg (billing documents vs journal entries)
    repaired: list[str]
    unrepairable: list[str]
    # every leg that ran, by name (erp, revenue, gl, payables), and what they add up to
    legs: dict[str, ReconReport] = {}
    reuploaded: list[str] = []

    @property
    def overview(self) -> Overview:
        return overview(self.legs or {"erp": self.report},
                        repaired=len(self.repaired) + len(self.reuploaded))


def _period_of(ts: float) -> str:
    # Interned: a read keeps one per document, and they are a handful of distinct strings.
    return sys.intern(datetime.fromtimestamp(ts, UTC).strftime("%Y-%m"))


def _code(text: str) -> str:
    """A currency code upper-cased, interned (a read keeps one per document; few differ)."""
    return sys.intern(text.upper())


class Reader(Protocol):
    """What the reconciler reads a platform through: the platform's budgeted reader
    (``actors.platforms.Platform.reader``), or any client with the same ``get``."""

    async def get(self, path: str) -> HttpResponse: ...


class _Page(Protocol[T_co]):
    @property
    def data(self) -> Sequence[T_co]: ...
    @property
    def has_more(self) -> bool: ...
    @property
    def next_cursor(self) -> str: ...


async def _pages(billing: Reader, query: str, codec: JsonCodec[Any],
                 page_size: int | None = None) -> AsyncIterator[Sequence[Any]]:
    """The items of a billing event list (``query`` selects which), one page at a time: a
    caller that keeps only what it needs of each page holds one page of wire objects at most."""
    cursor = "0"
    while True:
        page: _Page[Any] = codec.decode((await billing.get(
            f"/billing/v1/events?{query}after={cursor}&limit={page_size or PAGE}")).body)
        yield page.data
        if not page.has_more or page.next_cursor == cursor:
            return
        cursor = page.next_cursor


class _Invoice(msgspec.Struct, frozen=True, gc=False, tag="invoice"):
    """What the legs need of one version of an invoice (its lines: only their count)."""

    id: str
    currency: str  # upper-case
    total: int
    subtotal: int
    tax: int
    created: float
    version: int
    lines: int


class _Note(msgspec.Struct, frozen=True, gc=False, tag="note"):
    """What the legs need of a credit note."""

    id: str
    invoice: str
    currency: str  # upper-case
    amount: int
    created: float
    lines: int


class _Paid(msgspec.Struct, frozen=True, gc=False, tag="paid"):
    """What the legs need of a payment (``created``: its event's time, ``paid_at``: its own)."""

    id: str
    invoice: str
    customer: str
    currency: str  # upper-case
    amount: int
    created: float
    paid_at: int


class BillingRead(msgspec.Struct, frozen=True):
    """Billing's documents of one run, as each leg needs them: ``docs`` for the ERP leg,
    ``revenue`` (invoices with every version's subtotal and line count), ``gl`` (each
    document's parts, dated like its posting) and ``invoice_ids`` (every invoice billing
    ever issued, whatever the period: not a revenue orphan)."""

    docs: list[BillingDoc]
    revenue: list[RevenueDoc]
    gl: list[GlDoc]
    invoice_ids: set[str]
    payments: list[PaymentRef] = []  # the payments of ``docs``, with invoice and customer


# What a read of billing keeps of one event (tagged: a spill can hold the three in one place).
BillingRecord = _Invoice | _Note | _Paid


async def read_billing(billing: Reader, period: str | None, *, gl: bool = True
                       ) -> BillingRead:
    """Every document billing issued, from its event lists (all pages); only those of
    ``period`` (the month they were issued) when given. The ERP must hold each invoice at its
    latest version (its total), each credit note (its amount, the reversing entry) and each
    payment (its amount, the cash application). Raises ``GatewayError`` subclasses.

    Each page's events are reduced to what the legs use as soon as it is read (an invoice's
    lines to their count, ``billing_records``), so a read holds one page of wire objects,
    never every event. ``gl=False`` leaves the GL leg's documents out (``BillingRead.gl``
    empty)."""
    records: list[BillingRecord] = []
    async for page in billing_records(billing):
        records += page
    return reduce_billing(records, period, gl=gl)


async def billing_records(billing: Reader, page_size: int | None = None
                          ) -> AsyncIterator[list[BillingRecord]]:
    """Billing's invoice versions, then its credit notes, then its payments, one page (of
    ``page_size`` events, default ``PAGE``) at a time, each event reduced to a
    ``BillingRecord`` as soon as its page is read. Raises ``GatewayError`` subclasses."""
    async for data in _pages(billing, "", _events, page_size):
        yield [_Invoice(o.id, _code(o.currency), o.total, o.subtotal, o.tax,
                        float(o.created), o.version, len(o.lines.data))
               for o in (e.data.object for e in data if e.type in INVOICE_EVENTS)]
    async for data in _pages(billing, "type=credit_note.created&", _credit_notes, page_size):
        yield [_Note(n.id, n.invoice, _code(n.currency), n.amount, float(n.created),
                     len(n.lines.data)) for n in (e.data.object for e in data)]
    async for data in _pages(billing, "type=invoice.paid&", _payments, page_size):
        yield [_Paid(p.id, p.invoice, p.customer, _code(p.currency), p.amount,
                     float(e.created), p.paid_at)
               for e, p in ((e, e.data.object) for e in data)]


def record_documents(r: BillingRecord) -> tuple[str, ...]:
    """The document ids whose figures ``reduce_billing`` draws from ``r``: its own, and for a
    credit note the invoice it credits (the revenue leg counts it with the invoice). Pure."""
    return (r.id, r.invoice) if isinstance(r, _Note) else (r.id,)


def reduce_billing(records: Iterable[BillingRecord], period: str | None, *, gl: bool = True
                   ) -> BillingRead:
    """``read_billing``'s result from its records (``billing_records``, in the order read).
    Per document: a document's figures depend only on the records ``record_documents`` names
    it in, so the records of a set of documents give exactly their figures. Pure."""
    invoices: list[_Invoice] = []
    notes: list[_Note] = []
    payments: list[_Paid] = []
    for r in records:
        if isinstance(r, _Invoice):
            invoices.append(r)
        elif isinstance(r, _Note):
            notes.append(r)
        else:
            payments.append(r)
    found = [BillingDoc(o.id, o.currency, o.total, o.created, o.version) for o in invoices]
    found += [BillingDoc(n.id, n.currency, n.amount, n.created) for n in notes]
    found += [BillingDoc(p.id, p.currency, p.amount, p.created) for p in payments]
    docs: dict[str, BillingDoc] = {}
    for doc in found:
        if period and _period_of(doc.issued_at) != period:
            continue
        if doc.key not in docs or docs[doc.key].version < doc.version:
            docs[doc.key] = doc
    del found
    latest: dict[str, _Invoice] = {}
    versions: dict[str, dict[int, tuple[int, int]]] = {}
    for o in invoices:
        versions.setdefault(o.id, {})[o.version] = (o.subtotal, o.lines)
        if o.id not in latest or latest[o.id].version < o.version:
            latest[o.id] = o
    # What the credit notes credit per invoice: the revenue poster uploads them as negative
    # lines of the invoice (docs/flows.md, "Flow 2: credit memos").
    credited: dict[str, tuple[int, int]] = {}
    for n in notes:
        amount, count = credited.get(n.invoice, (0, 0))
        credited[n.invoice] = (amount + n.amount, count + n.lines)
    revenue = [RevenueDoc(o.id, o.currency, o.subtotal, o.lines, o.created,
                          tuple(versions[o.id][v] for v in sorted(versions[o.id])),
                          *credited.get(o.id, (0, 0)))
               for o in latest.values() if o.id in docs]
    ledger_docs: list[GlDoc] = []
    if gl:
        ledger_docs += [GlDoc(o.id, "invoice", _period_of(o.created), o.currency, o.total,
                              o.subtotal, o.tax) for o in latest.values() if o.id in docs]
        ledger_docs += [GlDoc(n.id, "credit_note", _period_of(n.created), n.currency, n.amount)
                        for n in notes if n.id in docs]
        ledger_docs += [GlDoc(p.id, "payment", _period_of(float(p.paid_at)), p.currency,
                              p.amount) for p in payments if p.id in docs]
    refs = [PaymentRef(p.id, p.invoice, p.customer, p.currency, p.amount,
                       datetime.fromtimestamp(p.paid_at, UTC).date())
            for p in payments if p.id in docs]
    return BillingRead(list(docs.values()), revenue, ledger_docs, set(latest), refs)


def with_restated(read: BillingRead, restated: Mapping[str, Restated],
                  missing: Mapping[str, str]) -> BillingRead:
    """``read`` with each restated payment expected as its functional-currency posting (the
    ERP leg's ``BillingDoc.posted_*``, the GL leg's ``GlDoc.parts``), and each payment that
    could not be restated saying why (``posted_as``). Pure; raises nothing."""
    def doc(d: BillingDoc) -> BillingDoc:
        r = restated.get(d.key)
        if r is not None:
            return msgspec.structs.replace(
                d, posted_currency=r.currency, posted_amount=r.amount,
                posted_as=f"{r.amount} {r.currency}: at {r.rate}, booked at {r.booked}")
        if d.key in missing:
            return msgspec.structs.replace(d, posted_as=missing[d.key])
        return d

    def gl(d: GlDoc) -> GlDoc:
        r = restated.get(d.key) if d.kind == "payment" else None
        if r is None:
            return d
        net: dict[str, int] = {}
        for ln in r.lines:
            net[ln.account] = net.get(ln.account, 0) + ln.debit - ln.credit
        return msgspec.structs.replace(d, currency=r.currency, parts=tuple(net.items()))

    return msgspec.structs.replace(read, docs=[doc(d) for d in read.docs],
                                   gl=[gl(d) for d in read.gl])


async def daily_rates(erp: Reader, days: Iterable[tuple[date, str]]
                      ) -> dict[tuple[date, str, str], Decimal]:
    """The ERP's daily rates of each ``(day, functional currency)``, one request each:
    ``(day, currency, functional)`` → rate. Raises ``GatewayError`` subclasses; a rate that
    is not an exact decimal is left out (the payment is then not restated)."""
    out: dict[tuple[date, str, str], Decimal] = {}
    for day, functional in sorted(days):
        body = _rates.decode((await erp.get(
            f"/erp/v1/exchange-rates?date={day.isoformat()}&base={functional}")).body)
        for currency, raw in body.rates.items():
            try:
                out[(day, currency.upper(), functional)] = parse_rate(raw)
            except ValueError:
                continue
    return out


def tax_accounts(accounts: Mapping[str, object]) -> dict[str, str]:
    """Each per-jurisdiction tax account (``tax_payable_by_jurisdiction``, when the account
    map has it) → ``tax_payable``. Raises nothing."""
    by = accounts.get("tax_payable_by_jurisdiction")
    target = accounts.get("tax_payable")
    if not isinstance(by, Mapping) or not isinstance(target, str):
        return {}
    return {str(a): target for a in by.values() if str(a) != target}


async def fx_read(read: BillingRead, postings: Sequence[ErpPosting], erp: Reader,
                  entities: EntityMap | None, accounts: Mapping[str, object]
                  ) -> BillingRead:
    """``read`` with its foreign payments restated (``with_restated``), reading the daily
    rates they need from ``erp``; ``read`` itself without ``entities`` or foreign payments.
    Raises ``GatewayError`` subclasses."""
    fx = await fx_restated(read.payments, postings, erp, entities, accounts)
    return read if fx is None else with_restated(read, *fx)


async def fx_restated(payments: Sequence[PaymentRef], postings: Sequence[ErpPosting],
                      erp: Reader, entities: EntityMap | None, accounts: Mapping[str, object]
                      ) -> tuple[dict[str, Restated], dict[str, str]] | None:
    """``restate``'s ``(restated, missing)`` of the foreign ones of ``payments`` (``None``
    without ``entities`` or foreign payments), with the daily rates read from ``erp`` and the
    booked rates of ``postings`` (those of the payments' invoices suffice). Raises
    ``GatewayError`` subclasses."""
    foreign = foreign_payments(payments, entities) if entities is not None else []
    if not foreign:
        return None
    rates = await daily_rates(erp, rate_days(foreign))
    defaults = FxAccounts()
    fx = FxAccounts(rounding=str(accounts.get("fx_rounding", defaults.rounding)),
                    fx_gain=str(accounts.get("fx_gain", defaults.fx_gain)),
                    fx_loss=str(accounts.get("fx_loss", defaults.fx_loss)))
    return restate(foreign, booked_rates(postings), rates,
                   cash=str(accounts.get("cash", "1000")),
                   receivable=str(accounts.get("receivable", "1200")), accounts=fx)


# Reads billing's documents of a period (``None``: all) in a dialect of its own.
BillingReadFn = Callable[[str | None], Awaitable[BillingRead]]


async def billing_docs(billing: Reader, period: str | None) -> list[BillingDoc]:
    """The documents the ERP must hold (``read_billing(...).docs``)."""
    return (await read_billing(billing, period)).docs


async def revenue_records(revenue: Reader, keep: Callable[[str], bool] | None = None
                          ) -> list[RevenueRecord]:
    """Every row of the revenue platform's billings report (all pages); with ``keep``, only
    the rows of the invoices it accepts, chosen page by page."""
    out: list[RevenueRecord] = []
    async for page in revenue_pages(revenue):
        out += [r for r in page if keep is None or keep(r.key)]
    return out


async def revenue_pages(revenue: Reader, page_size: int | None = None
                        ) -> AsyncIterator[list[RevenueRecord]]:
    """The rows of the revenue platform's billings report, one page (of ``page_size``,
    default ``PAGE``) at a time. Raises ``GatewayError`` subclasses."""
    after = ""
    while True:
        page = _report.decode((await revenue.get(
            f"/revenue/v1/reports/billings?after={quote(after)}&limit={page_size or PAGE}")).body)
        yield [RevenueRecord(r.invoice_id, r.currency.upper(), r.amount, r.lines,
                             r.distinct_lines) for r in page.items]
        if not page.has_more or not page.items or page.next_after == after:
            return
        after = page.next_after


_NO_ROWS = LedgerView()


async def ledger_views(ledger: Ledger, keys: Container[str] | None = None
                       ) -> dict[str, LedgerView]:
    """The ledger's revenue upload rows, per invoice (``LedgerView``); with ``keys``, only
    those invoices'. Raises ``LedgerUnavailable``."""
    views: dict[str, LedgerView] = {}
    async for tally in ledger.upload_tallies("revenue"):
        fold_view(views, tally, keys)
    return views


def fold_view(views: dict[str, LedgerView], tally: tuple[str, str, int, int],
              keys: Container[str] | None = None) -> None:
    """Add one of ``Ledger.upload_tallies``'s ``(invoice, status, rows, amount)`` to
    ``views`` (left out when ``keys`` does not hold its invoice). Pure but for ``views``."""
    invoice_id, status, rows, amount = tally
    if keys is not None and invoice_id not in keys:
        return
    v = views.get(invoice_id, _NO_ROWS)
    views[invoice_id] = msgspec.structs.replace(
        v, **{status: rows},
        amount=v.amount + (amount if status in ("uploaded", "in_doubt") else 0))


async def gl_rows(erp: Reader, periods: Sequence[str]) -> list[GlRow]:
    """The ERP's GL balances of ``periods``, one request each."""
    out: list[GlRow] = []
    for period in periods:
        body = _gl.decode((await erp.get(f"/erp/v1/gl/balances?period={period}")).body)
        out += [GlRow(period, b.account, b.currency.upper(), b.balance) for b in body.balances]
    return out


async def payables(partner: Reader, erp: Reader
                   ) -> tuple[list[Settlement], list[Payable]]:
    """The portal's settlements and the ERP's vendor bills (both list APIs are unpaged)."""
    settled = _settlements.decode((await partner.get("/partner/v1/settlements")).body)
    bills = _bills.decode((await erp.get("/erp/v1/vendor-bills")).body)
    return ([Settlement(s.id, s.currency.upper(), s.total, s.recorded_at)
             for s in settled.items],
            [Payable(b.external_id, b.id, b.currency.upper(), b.amount) for b in bills.items])


async def erp_postings(erp: Reader) -> list[ErpPosting]:
    """Every journal entry the ERP recorded (all pages)."""
    out: list[ErpPosting] = []
    async for page in erp_pages(erp):
        out += page
    return out


async def erp_pages(erp: Reader, page_size: int | None = None) -> AsyncIterator[list[ErpPosting]]:
    """The ERP's journal entries, one page (of ``page_size``, default ``PAGE``) at a time. Raises
    ``GatewayError`` subclasses."""
    after = 0
    while True:
        page = _entries.decode((await erp.get(
            f"/erp/v1/journal-entries?after={after}&limit={page_size or PAGE}")).body)
        yield [ErpPosting(e.external_id, e.id, sys.intern(e.currency), e.amount,
                          e.subsidiary and sys.intern(e.subsidiary),
                          e.functional_currency and sys.intern(e.functional_currency),
                          e.exchange_rate) for e in page.items]
        if len(page.items) < (page_size or PAGE):
            return
        after = page.items[-1].seq


async def dead_lettered(bus: NatsBus, subjects: Subjects) -> set[str]:
    """Object ids named by dead letters' business keys (``billing:<id>:v<n>``)."""
    out = set()
    for m in await bus.scan(subjects.dlq_stream, subject=subjects.dlq_letters):
        key = _letters.decode(m.data).business_key or ""
        if key.count(":") >= 2:
            out.add(key.split(":", 2)[1])
    return out


async def run_once(bus: NatsBus, subjects: Subjects, billing: Reader, erp: Reader, *,
                   period: str | None = None, grace_s: float = 300.0, repair: bool = True,
                   revenue: Reader | None = None, ledger: Ledger | None = None,
                   partner: Reader | None = None,
                   accounts: Mapping[str, str] | None = None,
                   postings: Callable[[], Awaitable[list[ErpPosting]]] | None = None,
                   billing_read: BillingReadFn | None = None,
                   audit_role: str = "reconciler", audit_identity: str = "",
                   entities: EntityMap | None = None) -> RunResult:
    """One reconciliation (see the module docstring): the ERP leg always; the revenue leg with
    ``revenue`` (repairs only with ``ledger`` too), the GL leg with ``accounts`` (role →
    account number), the payables leg with ``partner``. ``postings`` reads the ERP's journal
    entries in the ERP's own dialect (NetSuite: SuiteQL); by default the ``erpgw`` lookup
    through ``erp``. ``billing_read`` reads billing in another dialect than the simulator's
    own (Stripe's: ``actors.reconcile.stripe.read_billing_stripe``) instead of ``billing``.
    Raises ``GatewayError`` subclasses when a platform, the ledger or the broker cannot be
    read; nothing is repaired then. Every repair is also stored as an audited action of
    broker identity ``audit_role`` (``actors.audit``; the gateway's ledger records it)."""
    t0 = time.time()

    async def audited(what: str, key: str, events: int) -> None:
        await publish_action(bus, subjects, audit_role, f"recon.{what}", key,
                             msg_id=f"audit:{audit_role}:recon.{what}:{key}:{t0!r}",
                             detail=f"{events} event(s) re-driven", identity=audit_identity)

    read = (await billing_read(period) if billing_read is not None
            else await read_billing(billing, period))
    postings_read = await (postings() if postings is not None else erp_postings(erp))
    if postings is None:  # the erpgw ERP: its postings carry their rates, it has daily rates
        read = await fx_read(read, postings_read, erp, entities, accounts or {})
    dead = await dead_lettered(bus, subjects)
    now = time.time()
    report = reconcile(read.docs, postings_read, now=now, grace_s=grace_s, dead_lettered=dead)
    legs: dict[str, ReconReport] = {"erp": report}
    if revenue is not None:
        views = await ledger_views(ledger) if ledger is not None else None
        legs["revenue"] = reconcile_revenue(read.revenue, await revenue_records(revenue),
                                            ledger=views, now=now, grace_s=grace_s,
                                            dead_lettered=dead, known=read.invoice_ids)
    if accounts is not None:
        # Not expected at the ERP: documents still in flight, and those the gateway gave up
        # on (their dead letters are the evidence, reported as dead_lettered).
        explained = {b.key for b in report.breaks if b.kind in EXPLAINED_KINDS}
        periods = [period] if period else sorted({d.period for d in read.gl})
        expected = expected_balances((d for d in read.gl if d.key not in explained),
                                     accounts)
        compared = [accounts[r] for r in GL_ROLES] + [
            accounts[r] for r in ("fx_gain", "fx_loss") if r in accounts]
        legs["gl"] = reconcile_gl(expected, fold_accounts(await gl_rows(erp, periods),
                                                          tax_accounts(accounts)),
                                  accounts=compared, periods=periods,
                                  headline=accounts["receivable"])
    if partner is not None:
        settled, bills = await payables(partner, erp)
        legs["payables"] = reconcile_payables(settled, bills, now=now, grace_s=grace_s)
    for leg in legs.values():
        for b in leg.breaks:
            if b.kind != "in_flight":
                await bus.emit(f"{subjects.prefix}.mon.recon.break", _json.encode(b))
        for action in leg.actions:
            if isinstance(action, Flag):  # for a person to approve: never applied here
                await bus.emit(f"{subjects.prefix}.mon.recon.proposal", _json.encode(action))
    repaired: list[str] = []
    unrepairable: list[str] = []
    reuploaded: list[str] = []
    if repair:
        since = datetime.fromtimestamp(0, UTC)
        for action in report.actions:
            if not isinstance(action, Repost):
                continue
            # The ERP poster's command for this document, with its original idempotency key.
            items = await select_events(bus, subjects, "billing", since=since,
                                        key=f"billing:{action.key}:",
                                        subject=subjects.billing_erp_commands)
            if items:
                await replay_lane(bus, subjects, "billing", items[-1:], repair=True)
                repaired.append(action.key)
                await bus.emit(f"{subjects.prefix}.mon.recon.repair", _json.encode(
                    {"key": action.key, "action": "repost", "events": len(items)}))
                await audited("repost", action.key, len(items))
            else:
                unrepairable.append(action.key)  # never reached the gateway: not in a stream
        # Reupload actions exist only when the ledger was read (its proof of "never sent").
        for action in legs["revenue"].actions if "revenue" in legs else []:
            if not isinstance(action, Reupload):
                continue
            # The invoice's issued event again, *without* the repair header: the revenue
            # poster then sends only the lines its ledger says were never sent.
            items = await select_events(bus, subjects, "billing", since=since,
                                        key=f"billing:{action.key}:",
                                        subject=subjects.invoice_issued)
            if items:
                await replay_lane(bus, subjects, "billing", items[-1:])
                reuploaded.append(action.key)
                await bus.emit(f"{subjects.prefix}.mon.recon.repair", _json.encode(
                    {"key": action.key, "action": "reupload", "events": len(items)}))
                await audited("reupload", action.key, len(items))
            else:
                unrepairable.append(action.key)
    result = RunResult(period, t0, round(time.time() - t0, 3), report, repaired, unrepairable,
                       legs, reuploaded)
    await bus.emit(f"{subjects.prefix}.mon.recon.report", _json.encode(summary(result)))
    return result


def summary(r: RunResult) -> dict[str, object]:
    """The run's report as JSON-ready data (``<prefix>.mon.recon.report``, ``erpgw reconcile
    --json``): the ERP leg's ``checked``/``matched``/``totals``/``accuracy`` as before, and
    over every leg: ``breaks`` by kind, ``legs`` (each leg's checked, matched, totals per
    system and currency, breaks), ``auto_repairable_share``, ``auto_repaired_share`` and
    ``revenue_event_accuracy`` (revenue-matched invoices ÷ invoices checked, ``None`` when the
    revenue leg did not run)."""
    rep = r.report
    ov = r.overview
    return {"period": r.period, "at": r.started_at, "elapsed_s": r.elapsed_s,
            "checked": rep.checked, "matched": rep.matched, "breaks": ov.by_kind,
            "totals": rep.totals, "accuracy": round(rep.accuracy, 6),
            "auto_repairable_share": round(ov.auto_repairable_share, 6),
            "auto_repaired_share": round(ov.auto_repaired_share, 6),
            "revenue_event_accuracy": (None if ov.revenue_event_accuracy is None
                                       else round(ov.revenue_event_accuracy, 6)),
            "legs": {name: {"checked": leg.checked, "matched": leg.matched,
                            "totals": leg.totals,
                            "breaks": {k: n for k, n in leg.by_kind.items() if n}}
                     for name, leg in (r.legs or {"erp": rep}).items()},
            "repaired": len(r.repaired), "reuploaded": len(r.reuploaded),
            "unrepairable": len(r.unrepairable)}


class Reconciler(Actor):
    """Runs ``run_once`` every ``interval_s`` seconds (the first run after one interval).

    With ``lease`` (several gateway processes): keeps the lease (``actors.infra.lease``) and
    runs a pass only when the lease is confirmed just before it; a pass is cancelled when the
    lease is lost meanwhile. A process that does not hold it counts the pass as ``skipped``.
    """

    def __init__(self, name: str, *, bus: NatsBus, subjects: Subjects, billing: Reader,
                 erp: Reader, interval_s: float, grace_s: float, repair: bool,
                 revenue: Reader | None = None, ledger: Ledger | None = None,
                 partner: Reader | None = None,
                 accounts: Mapping[str, str] | None = None,
                 postings: Callable[[], Awaitable[list[ErpPosting]]] | None = None,
                 billing_read: BillingReadFn | None = None, audit_identity: str = "",
                 lease: KvLease | None = None, entities: EntityMap | None = None) -> None:
        super().__init__(name)
        self.entities = entities
        self.audit_identity = audit_identity  # its broker identity, named in repair audit rows
        self.lease = lease
        self.skipped = 0
        self.postings = postings
        self.billing_read = billing_read
        self.bus, self.subjects, self.billing, self.erp = bus, subjects, billing, erp
        self.interval_s, self.grace_s, self.repair = interval_s, grace_s, repair
        self.revenue, self.ledger, self.partner, self.accounts = revenue, ledger, partner, accounts
        self.runs = 0
        self.last: dict[str, object] | None = None
        self.last_error: str | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await run_periodically(self, self.interval_s, self.lease, self._pass,
                               task_status=task_status)

    async def _run_once(self) -> RunResult:
        return await run_once(self.bus, self.subjects, self.billing, self.erp,
                              grace_s=self.grace_s, repair=self.repair,
                              revenue=self.revenue, ledger=self.ledger,
                              partner=self.partner, accounts=self.accounts,
                              postings=self.postings, billing_read=self.billing_read,
                              audit_identity=self.audit_identity, entities=self.entities)

    async def _pass(self) -> None:
        try:
            if self.lease is None:
                result: RunResult | None = await self._run_once()
            else:
                _, result = await run_while_held(self.lease, self._run_once)
        except GatewayError as err:  # a platform is down: try again next period
            self.last_error = f"[{err.code}] {err.message}"
            log.warning("reconciliation skipped: %s", self.last_error)
            return
        if result is None:  # another process holds the lease (or it was lost mid-pass)
            self.skipped += 1
            return
        self.runs += 1
        self.last = summary(result)
        log.info("reconciled %d documents: %d matched, breaks %s, repaired %d",
                 result.report.checked, result.report.matched,
                 {k: v for k, v in result.overview.by_kind.items() if v},
                 len(result.repaired) + len(result.reuploaded))

    def statistics(self) -> dict[str, object]:
        return {"name": self.name, "runs": self.runs, "skipped": self.skipped,
                "last": self.last, "last_error": self.last_error,
                "lease": self.lease.statistics() if self.lease is not None else None}
