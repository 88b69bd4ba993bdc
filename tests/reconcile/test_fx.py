"""The reconciler and entities: a payment posted in its entity's functional currency matches
its billing document when its posting is exactly the payment router's restatement (the same
pure core, the rate of the payment's day and the rate the invoice's posting carries); anything
else is a break. The GL leg books the restated lines and sums tax over the per-jurisdiction
accounts."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from actors.lifecycle.fx import EntityMap, FxAccounts, RateTable
from actors.payments.plan import journal_for_payment_in_entity
from actors.reconcile import BillingDoc, ErpPosting, GlDoc, GlRow, expected_balances, reconcile
from actors.reconcile.books import fold_accounts, reconcile_gl
from actors.reconcile.fx import (
    ForeignPayment,
    PaymentRef,
    booked_rates,
    foreign_payments,
    rate_days,
    restate,
)
from actors.reconcile.runner import BillingRead, tax_accounts, with_restated
from actors.router.invoices import AccountMap
from contracts import PaymentApplication, PaymentReceived

ENTITIES = EntityMap(default="us", functional_currency={"us": "USD", "eu": "EUR"},
                     customers={"cus_eu_*": "eu"})
DAY = date(2026, 3, 10)
ACCOUNTS = AccountMap()
FX = FxAccounts(rounding=ACCOUNTS.fx_rounding, fx_gain=ACCOUNTS.fx_gain,
                fx_loss=ACCOUNTS.fx_loss)


def pay(amount: int = 25000, currency: str = "EUR", customer: str = "cus_1",
        key: str = "py_1", invoice: str = "in_1") -> PaymentRef:
    return PaymentRef(key, invoice, customer, currency, amount, DAY)


def invoice_posting(rate: str = "1.1", key: str = "in_1", functional: str = "USD"
                    ) -> ErpPosting:
    return ErpPosting(key, "je_" + key, "EUR", 25000, "us", functional, rate)


def restated(p: PaymentRef, booked: str, rate: str) -> tuple[dict[str, object], dict[str, str]]:
    foreign = foreign_payments([p], ENTITIES)
    out, missing = restate(foreign, booked_rates([invoice_posting(booked, p.invoice)]),
                           {(DAY, p.currency, "USD"): Decimal(rate)}, cash=ACCOUNTS.cash,
                           receivable=ACCOUNTS.receivable, accounts=FX)
    return dict(out), missing


def test_only_payments_foreign_to_their_entity_are_restated() -> None:
    payments = [pay(), pay(currency="USD", key="py_2"), pay(customer="cus_eu_9", key="py_3"),
                pay(amount=0, key="py_4")]
    foreign = foreign_payments(payments, ENTITIES)
    assert [(f.payment.key, f.entity, f.functional) for f in foreign] == [("py_1", "us", "USD")]
    assert rate_days(foreign) == {(DAY, "USD")}
    assert foreign_payments(payments, EntityMap()) == []  # entities not configured


def test_the_booked_rate_is_the_live_latest_versions() -> None:
    postings = [invoice_posting("1.05"),
                ErpPosting("in_1:v2", "je_2", "EUR", 1, "us", "USD", "1.07"),
                ErpPosting("in_1:v3", "je_3", "EUR", 1, "us", "USD", "1.09"),
                ErpPosting("in_1:v3:reversal", "je_4", "EUR", 1, "us", None, None),
                ErpPosting("in_2", "je_5", "EUR", 1, "us", None, None)]
    assert booked_rates(postings) == {"in_1": ("USD", Decimal("1.07"))}


def test_a_loss_payment_matches_its_functional_currency_posting_exactly() -> None:
    # 250.00 EUR booked at 1.1 (275.00 USD receivable), received at 1.08 (270.00 USD cash)
    out, missing = restated(pay(), "1.1", "1.08")
    assert missing == {}
    r = out["py_1"]
    read = with_restated(BillingRead([BillingDoc("py_1", "EUR", 25000, 0.0)], [],
                                     [GlDoc("py_1", "payment", "2026-03", "EUR", 25000)],
                                     set()), out, missing)  # type: ignore[arg-type]
    (doc,) = read.docs
    assert doc.expected == ("USD", 27500)  # the debits: cash 27000 + fx loss 500
    ok = reconcile(read.docs, [ErpPosting("py_1", "je_9", "USD", 27500, "us")], now=1e9)
    assert (ok.matched, ok.breaks) == (1, [])
    off = reconcile(read.docs, [ErpPosting("py_1", "je_9", "USD", 27499, "us")], now=1e9)
    assert [b.kind for b in off.breaks] == ["amount"] and "at 1.08" in off.breaks[0].detail
    eur = reconcile(read.docs, [ErpPosting("py_1", "je_9", "EUR", 25000, "us")], now=1e9)
    assert [b.kind for b in eur.breaks] == ["currency"]
    (gl,) = read.gl
    assert gl.currency == "USD"
    assert expected_balances([gl], {"receivable": "1200", "deferred_revenue": "2400",
                                    "tax_payable": "2200", "cash": "1000"}) == {
        ("2026-03", "1000", "USD"): 27000, ("2026-03", "1200", "USD"): -27500,
        ("2026-03", "7920", "USD"): 500}
    assert r.rate == "1.08" and r.booked == "1.1"


def test_a_payment_without_its_rates_stays_a_currency_break_that_says_why() -> None:
    p = pay()
    out, missing = restate(foreign_payments([p], ENTITIES), {}, {}, cash="1000",
                           receivable="1200", accounts=FX)
    assert out == {} and "no EUR/USD rate" in missing["py_1"]
    out, missing = restate(foreign_payments([p], ENTITIES), {},
                           {(DAY, "EUR", "USD"): Decimal("1.1")}, cash="1000",
                           receivable="1200", accounts=FX)
    assert "invoice in_1 has no booked" in missing["py_1"]
    read = with_restated(BillingRead([BillingDoc("py_1", "EUR", 25000, 0.0)], [], [], set()),
                         out, missing)
    (b,) = reconcile(read.docs, [ErpPosting("py_1", "je_9", "USD", 27500)], now=1e9).breaks
    assert b.kind == "currency" and "has no booked" in b.detail


RATES = st.decimals(min_value=Decimal("0.5"), max_value=Decimal("2"), places=6)


@given(amount=st.integers(min_value=1000, max_value=10**11), booked=RATES, rate=RATES,
       currency=st.sampled_from(["EUR", "GBP", "JPY"]))
def test_the_expectation_is_what_the_payment_router_posts(amount: int, booked: Decimal,
                                                          rate: Decimal, currency: str) -> None:
    """Property: for any amount and rates, the reconciler's restatement equals the payment
    router's posting (lines, currency, amount), so a correct posting never breaks. (Amounts
    from 1000 minor units: a tiny one can convert to nothing, which the router dead-letters.)"""
    p = pay(amount=amount, currency=currency)
    rates = RateTable()
    rates.add(DAY, "USD", {currency: rate})
    payment = PaymentReceived(
        payment_id="py_1", customer_id="cus_1", currency=currency, amount=amount,
        received_at=datetime(DAY.year, DAY.month, DAY.day, 12, tzinfo=UTC),
        applications=(PaymentApplication(invoice_id="in_1", amount=amount,
                                         currency=currency),))
    entry = journal_for_payment_in_entity(payment, "k" * 16, ACCOUNTS, ENTITIES, rates,
                                          {"in_1": format(booked, "f")})
    out, missing = restate(foreign_payments([p], ENTITIES),
                           {"in_1": ("USD", booked)}, {(DAY, currency, "USD"): rate},
                           cash=ACCOUNTS.cash, receivable=ACCOUNTS.receivable, accounts=FX)
    assert missing == {}
    r = out["py_1"]
    assert (r.currency, r.amount) == (entry.currency, entry.amount)
    assert [(ln.account, ln.debit, ln.credit) for ln in r.lines] == [
        (ln.account, ln.debit, ln.credit) for ln in entry.lines]
    read = with_restated(BillingRead([BillingDoc("py_1", currency, amount, 0.0)], [], [],
                                     set()), out, missing)
    report = reconcile(read.docs, [ErpPosting("py_1", "je", entry.currency, entry.amount)],
                       now=1e9)
    assert report.breaks == [] and report.matched == 1


def test_the_gl_leg_sums_tax_over_the_per_jurisdiction_accounts() -> None:
    accounts = {"receivable": "1200", "deferred_revenue": "2400", "tax_payable": "2200",
                "cash": "1000", "tax_payable_by_jurisdiction": {"DE": "2210", "US-CA": "2220"}}
    into = tax_accounts(accounts)
    assert into == {"2210": "2200", "2220": "2200"}
    expected = expected_balances([GlDoc("in_1", "invoice", "2026-03", "USD", 1190, 1000,
                                        190)], accounts)  # type: ignore[arg-type]
    gl = [GlRow("2026-03", "1200", "USD", 1190), GlRow("2026-03", "2400", "USD", -1000),
          GlRow("2026-03", "2210", "USD", -150), GlRow("2026-03", "2220", "USD", -40)]
    roles = ["1200", "2400", "2200", "1000"]
    unfolded = reconcile_gl(expected, gl, accounts=roles, periods=["2026-03"],
                            headline="1200")
    assert [b.key for b in unfolded.breaks] == ["2026-03/2200/USD"]
    folded = reconcile_gl(expected, fold_accounts(gl, into), accounts=roles,
                          periods=["2026-03"], headline="1200")
    assert folded.breaks == [] and folded.matched == 3
    short = fold_accounts(gl[:-1], into)
    assert [b.erp_amount for b in reconcile_gl(expected, short, accounts=roles,
                                               periods=["2026-03"], headline="1200").breaks
            ] == [-150]


def test_foreign_payment_struct_is_plain_data() -> None:
    f = ForeignPayment(pay(), "us", "USD")
    assert f.payment.invoice == "in_1"
