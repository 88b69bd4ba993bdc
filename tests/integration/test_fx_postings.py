"""Entities and currencies against the simulated ERP over real HTTP: a EUR invoice of a USD
entity is posted in EUR with the day's rate and its tax per jurisdiction; its payment, on a
later day at another rate, is posted in USD with the realized FX gain or loss."""

from __future__ import annotations

from datetime import UTC, date, datetime

import msgspec
import pytest

from actors.infra.http import HttpClient
from actors.lifecycle.fx import EntityMap, RateTable
from actors.payments.cash import fx_needs, plan_cash
from actors.platforms.erp import ErpBookedRates, ErpgwJournalClient, ErpRates
from actors.platforms.guard import PlatformGuard
from actors.reconcile.fx import PaymentRef
from actors.router import AccountMap
from actors.router.invoices import load_rates, plan_invoice, rates_needed
from contracts import (
    Envelope,
    InvoiceIssuedV3,
    InvoiceLineV3,
    LineTax,
    MsgpackCodec,
    PaymentApplication,
    PaymentReceived,
    PostJournalEntry,
    Subjects,
    convert,
    parse_rate,
)
from contracts.platforms.erp import GlBalances, JournalEntryList
from tests.contracts.samples import SAMPLES, envelope_of

pytestmark = pytest.mark.integration
_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
SUBJECTS = Subjects("erpgw")
ENTITIES = EntityMap(default="us", functional_currency={"us": "USD", "de": "EUR"},
                     customers={"cus_de_*": "de"})
ACCOUNTS = AccountMap(tax_payable_by_jurisdiction={"DE": "2210", "AT": "2220"})
ISSUED, PAID = date(2026, 11, 27), date(2026, 12, 3)


def _invoice() -> InvoiceIssuedV3:
    """A EUR invoice of ``cus_1`` (the USD entity ``us``) taxed in two jurisdictions."""
    sample = SAMPLES["invoice.issued.v3"]
    assert isinstance(sample, InvoiceIssuedV3)
    second = msgspec.structs.replace(
        sample.lines[1], amount=3000, proration=False,
        taxes=(LineTax(jurisdiction="AT", kind="vat", rate_bp=2000, inclusive=False,
                       taxable_amount=3000, amount=600),))
    lines: tuple[InvoiceLineV3, ...] = (sample.lines[0], second)
    return msgspec.structs.replace(sample, lines=lines, subtotal=18000, tax=3165,
                                   total=19665)


def _first(payload: InvoiceIssuedV3 | PaymentReceived) -> Envelope:
    """``payload``'s envelope as version 1 of its document (posted under its own id)."""
    env = envelope_of(payload)
    return msgspec.structs.replace(env, key=msgspec.structs.replace(env.key, version=1))


def _entry(out: object) -> PostJournalEntry:
    assert out is not None
    entry = _codec.decode(out.data).payload  # type: ignore[attr-defined]
    assert isinstance(entry, PostJournalEntry)
    return entry


async def test_foreign_invoice_and_its_payment_at_another_rate(sim_url: str) -> None:
    inv = _invoice()
    payment = PaymentReceived(
        payment_id="pay_fx_1", customer_id="cus_1", currency="EUR", amount=20665,
        received_at=datetime(2026, 12, 3, 15, 0, tzinfo=UTC),
        applications=(PaymentApplication(invoice_id=inv.invoice_id, amount=19665,
                                         currency="EUR"),))
    async with HttpClient(sim_url, platform="erp") as http:
        guard = PlatformGuard("erp", http, open_code="erp.breaker_open")
        erp, rates_source, booked_source = (ErpgwJournalClient(guard), ErpRates(guard),
                                            ErpBookedRates(guard))
        rates = RateTable()
        # the invoice: the day's rate read from the ERP, then posted
        await load_rates(rates_needed([inv], ENTITIES), rates, rates_source)
        invoice_entry = _entry(plan_invoice(_first(inv), SUBJECTS, ACCOUNTS,
                                            entities=ENTITIES, rates=rates))
        # the payment: its day's rate, and the rate the ERP booked its invoice at
        days, invoices = fx_needs([payment], ENTITIES)
        assert (days, invoices) == ({(PAID, "USD")}, {inv.invoice_id})
        assert await booked_source(inv.invoice_id) is None  # not posted yet
        results = await erp.post_journal_entries([invoice_entry])
        assert [r.status for r in results] == ["created"]
        await load_rates(days, rates, rates_source)
        booked = {inv.invoice_id: await booked_source(inv.invoice_id) or ""}
        payment_entry = _entry(plan_cash(_first(payment), SUBJECTS, ACCOUNTS,
                                         entities=ENTITIES, rates=rates, booked=booked))
        results = await erp.post_journal_entries([payment_entry])
        assert [r.status for r in results] == ["created"]

        async def get(path: str) -> bytes:
            return (await guard.get(path)).body

        invoice_posted = msgspec.json.decode(
            await get(f"/erp/v1/journal-entries?externalId={inv.invoice_id}"),
            type=JournalEntryList).items
        payment_posted = msgspec.json.decode(
            await get(f"/erp/v1/journal-entries?externalId={payment.payment_id}"),
            type=JournalEntryList).items
        november = msgspec.json.decode(await get("/erp/v1/gl/balances?period=2026-11"),
                                       type=GlBalances)
        december = msgspec.json.decode(await get("/erp/v1/gl/balances?period=2026-12"),
                                       type=GlBalances)
        day_rates = [await rates_source(d, "USD") for d in (ISSUED, PAID)]

    booked_rate, paid_rate = (r["EUR"] for r in day_rates)
    assert booked_rate != paid_rate  # the simulated EUR moved between the two days
    # the invoice: in its transaction currency, naming its entity and the issue day's rate
    [posted] = invoice_posted
    assert (posted.currency, posted.amount, posted.subsidiary, posted.functional_currency) \
        == ("EUR", 19665, "us", "USD")
    assert posted.exchange_rate is not None and parse_rate(posted.exchange_rate) == booked_rate
    gl_nov = {(b.account, b.currency): b.balance for b in november.balances}
    assert gl_nov == {("1200", "EUR"): 19665, ("2400", "EUR"): -16500,
                      ("2210", "EUR"): -2565, ("2220", "EUR"): -600}
    # the payment: in the entity's functional currency, the gain or loss realized
    [paid] = payment_posted
    assert (paid.currency, paid.subsidiary, paid.exchange_rate) == ("USD", "us", None)
    cash = convert(20665, "EUR", "USD", paid_rate)
    cleared = convert(19665, "EUR", "USD", booked_rate)  # the invoice as it was booked
    on_account = convert(1000, "EUR", "USD", paid_rate)
    gain = cash - cleared - on_account
    assert gain != 0
    gl_dec = {(b.account, b.currency): b.balance for b in december.balances}
    fx_line = ("7910", "USD") if gain > 0 else ("7920", "USD")
    assert gl_dec == {("1000", "USD"): cash, ("1200", "USD"): -(cleared + on_account),
                      fx_line: -gain}
    assert paid.amount == cash + max(-gain, 0)  # the debits: cash, and a loss


async def _post_invoice_and_payment(guard: PlatformGuard, inv: InvoiceIssuedV3,
                                    payment: PaymentReceived) -> None:
    """Post ``inv`` and ``payment`` as the routers do: the rates read from the ERP."""
    erp, rates_source, booked_source = (ErpgwJournalClient(guard), ErpRates(guard),
                                        ErpBookedRates(guard))
    rates = RateTable()
    await load_rates(rates_needed([inv], ENTITIES), rates, rates_source)
    await erp.post_journal_entries([_entry(plan_invoice(
        _first(inv), SUBJECTS, ACCOUNTS, entities=ENTITIES, rates=rates))])
    days, _ = fx_needs([payment], ENTITIES)
    await load_rates(days, rates, rates_source)
    booked = {inv.invoice_id: await booked_source(inv.invoice_id) or ""}
    await erp.post_journal_entries([_entry(plan_cash(
        _first(payment), SUBJECTS, ACCOUNTS, entities=ENTITIES, rates=rates,
        booked=booked))])


async def test_the_reconciler_matches_a_payment_posted_in_the_functional_currency(
        sim_url: str) -> None:
    """The reconciler (ERP and GL legs) against what the simulated ERP holds: the EUR invoice
    and its whole payment, posted in USD at another day's rate, match exactly; without the
    restatement the payment is a ``currency`` break, without folding the per-jurisdiction tax
    accounts the tax is a ``gl`` break."""
    from actors.reconcile import BillingDoc, GlDoc, expected_balances, reconcile
    from actors.reconcile.books import fold_accounts, reconcile_gl
    from actors.reconcile.runner import (
        GL_ROLES,
        BillingRead,
        erp_postings,
        fx_read,
        gl_rows,
        tax_accounts,
    )

    issued_at, paid_at = (datetime(2025, 4, 28, 10, tzinfo=UTC),
                          datetime(2025, 5, 6, 15, tzinfo=UTC))
    inv = msgspec.structs.replace(_invoice(), invoice_id="in_fx_recon_1", issued_at=issued_at)
    payment = PaymentReceived(
        payment_id="py_fx_recon_1", customer_id="cus_1", currency="EUR", amount=inv.total,
        received_at=paid_at,
        applications=(PaymentApplication(invoice_id=inv.invoice_id, amount=inv.total,
                                         currency="EUR"),))
    accounts = msgspec.structs.asdict(ACCOUNTS)
    async with HttpClient(sim_url, platform="erp") as http:
        guard = PlatformGuard("erp", http, open_code="erp.breaker_open")
        await _post_invoice_and_payment(guard, inv, payment)
        mine = {inv.invoice_id, payment.payment_id}
        postings = [p for p in await erp_postings(guard) if p.key in mine]
        billing = BillingRead(
            [BillingDoc(inv.invoice_id, "EUR", inv.total, issued_at.timestamp()),
             BillingDoc(payment.payment_id, "EUR", inv.total, paid_at.timestamp())], [],
            [GlDoc(inv.invoice_id, "invoice", "2025-04", "EUR", inv.total,
                   inv.total - inv.tax, inv.tax),
             GlDoc(payment.payment_id, "payment", "2025-05", "EUR", inv.total)],
            {inv.invoice_id},
            [PaymentRef(payment.payment_id, inv.invoice_id, "cus_1", "EUR", inv.total,
                        paid_at.date())])
        read = await fx_read(billing, postings, guard, ENTITIES, accounts)
        rows = await gl_rows(guard, ["2025-04", "2025-05"])

    erp_leg = reconcile(read.docs, postings, now=paid_at.timestamp() + 1e6)
    assert (erp_leg.matched, erp_leg.breaks) == (2, [])
    unrestated = reconcile(billing.docs, postings, now=paid_at.timestamp() + 1e6)
    assert [(b.kind, b.key) for b in unrestated.breaks] == [("currency", payment.payment_id)]
    compared = [getattr(ACCOUNTS, r) for r in GL_ROLES] + [ACCOUNTS.fx_gain,
                                                                   ACCOUNTS.fx_loss]
    expected = expected_balances(read.gl, accounts)
    gl = reconcile_gl(expected, fold_accounts(rows, tax_accounts(accounts)),
                      accounts=compared, periods=["2025-04", "2025-05"],
                      headline=ACCOUNTS.receivable)
    assert gl.breaks == [] and gl.matched >= 5
    unfolded = reconcile_gl(expected, rows, accounts=compared,
                            periods=["2025-04", "2025-05"], headline=ACCOUNTS.receivable)
    assert [b.key for b in unfolded.breaks] == [f"2025-04/{ACCOUNTS.tax_payable}/EUR"]
