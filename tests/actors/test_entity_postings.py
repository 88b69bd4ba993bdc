"""Entities and currencies in the invoice router: each posting names its customer's entity;
a foreign-currency invoice keeps its currency and carries the functional currency and the
day's rate; without ``[entities]`` nothing changes (pure, plus the router's rate reads)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

from actors.erp.ordering import reversal_of
from actors.infra.bus import OutMsg
from actors.lifecycle.fx import EntityMap, RateTable, to_functional
from actors.payments.cash import PaymentRouter, fx_needs, plan_cash
from actors.platforms.erp import entry_to_wire
from actors.platforms.erp.netsuite import entry_record
from actors.router import AccountMap
from actors.router.credits import plan_credit_memo
from actors.router.invoices import (
    load_rates,
    plan_invoice,
    rates_needed,
    with_entity,
)
from contracts import (
    ContractError,
    CreditMemoIssued,
    Envelope,
    MsgpackCodec,
    PaymentReceived,
    PostJournalEntry,
    Retryable,
    Subjects,
    convert,
    format_rate,
    parse_rate,
)
from contracts.platforms import netsuite as ns
from gateway.config import load_config
from gateway.demo import DEMO_ENTITIES, by_entity
from sim._erp import daily_rates
from tests.contracts.samples import SAMPLES, envelope_of

_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
SUBJECTS = Subjects("erpgw")
ENTITIES = EntityMap(default="us", functional_currency={"us": "USD", "de": "EUR"},
                     customers={"cus_de_*": "de", "cus_1": "us", "cus_de_x": "us"})
DAY = SAMPLES["invoice.issued.v1"].issued_at.date()  # type: ignore[union-attr]


def _entry(env: Envelope, planner: Callable[..., OutMsg | None] = plan_invoice,
           **kw: object) -> PostJournalEntry:
    out = planner(env, SUBJECTS, AccountMap(), **kw)
    assert out is not None
    entry = _codec.decode(out.data).payload
    assert isinstance(entry, PostJournalEntry)
    return entry


def test_entity_rules_exact_then_longest_prefix_then_default() -> None:
    m = EntityMap(default="us", customers={"cus_*": "a", "cus_de_*": "de", "cus_de_x": "us"})
    assert [m.entity_for(c) for c in ("cus_de_1", "cus_de_x", "cus_fr", "acct_9")] == [
        "de", "us", "a", "us"]
    assert not EntityMap().configured and m.configured
    with pytest.raises(msgspec.ValidationError, match=r"money\.unknown_currency"):
        msgspec.convert({"functional_currency": {"de": "XXX"}}, EntityMap)


@pytest.mark.parametrize("type_", ["invoice.issued.v1", "invoice.issued.v3"])
def test_without_entities_the_payload_is_byte_identical(type_: str) -> None:
    env = envelope_of(SAMPLES[type_])
    before = plan_invoice(env, SUBJECTS, AccountMap())
    after = plan_invoice(env, SUBJECTS, AccountMap(), entities=EntityMap(), rates=RateTable())
    assert before is not None and after is not None and before.msg_id == after.msg_id
    # the payload encodes byte for byte as before (the envelope's own clock aside)
    payload = msgspec.msgpack.encode(_codec.decode(before.data).payload)
    assert payload == msgspec.msgpack.encode(_codec.decode(after.data).payload)
    assert b"entity" not in payload and b"exchange_rate" not in payload


@pytest.mark.parametrize("type_", ["invoice.issued.v1", "invoice.issued.v3"])
def test_a_foreign_currency_invoice_carries_its_entity_and_the_days_rate(type_: str) -> None:
    env = envelope_of(SAMPLES[type_])  # an EUR invoice of cus_1, a USD entity
    rates = RateTable()
    rates.add(DAY, "USD", daily_rates(3, DAY, "USD"))
    entry = _entry(env, entities=ENTITIES, rates=rates)
    assert (entry.entity, entry.currency, entry.functional_currency) == ("us", "EUR", "USD")
    assert entry.exchange_rate is not None
    assert parse_rate(entry.exchange_rate) == daily_rates(3, DAY, "USD")["EUR"]
    plain = _entry(env)
    assert entry.lines == plain.lines and entry.idempotency_key == plain.idempotency_key
    # restated in USD at that rate, the entry balances to the cent
    usd = to_functional(entry.lines, "EUR", "USD", entry.exchange_rate)
    assert sum(ln.debit for ln in usd) == sum(ln.credit for ln in usd)
    assert usd[0].debit == convert(plain.lines[0].debit, "EUR", "USD",
                                   parse_rate(entry.exchange_rate))
    wire = msgspec.json.encode(entry_to_wire(entry))
    assert b'"subsidiary":"us"' in wire and b'"exchangeRate":"' in wire
    assert b"subsidiary" not in msgspec.json.encode(entry_to_wire(plain))


def test_an_invoice_in_its_entitys_currency_names_the_entity_and_no_rate() -> None:
    inv = msgspec.structs.replace(SAMPLES["invoice.issued.v1"], customer_id="cus_de_7")
    entry = _entry(envelope_of(inv), entities=ENTITIES, rates=RateTable())
    assert (entry.entity, entry.functional_currency, entry.exchange_rate) == ("de", None, None)


def test_a_missing_rate_is_dead_lettered_with_its_code() -> None:
    env = envelope_of(SAMPLES["invoice.issued.v1"])
    for rates in (RateTable(), None):
        with pytest.raises(ContractError) as info:
            plan_invoice(env, SUBJECTS, AccountMap(), entities=ENTITIES, rates=rates)
        assert info.value.code == "fx.missing_rate"


async def test_rates_are_read_once_per_day_and_functional_currency() -> None:
    calls: list[tuple[date, str]] = []

    async def source(day: date, base: str) -> dict[str, Decimal]:
        calls.append((day, base))
        return daily_rates(3, day, base)

    payloads = [SAMPLES["invoice.issued.v1"], SAMPLES["invoice.issued.v3"],
                msgspec.structs.replace(SAMPLES["invoice.issued.v1"], customer_id="cus_de_1"),
                SAMPLES["payment.received.v1"]]
    assert rates_needed(payloads, ENTITIES) == {(DAY, "USD")}
    assert rates_needed(payloads, EntityMap()) == set()
    table = RateTable()
    await load_rates(rates_needed(payloads, ENTITIES), table, source)
    await load_rates(rates_needed(payloads, ENTITIES), table, source)
    assert calls == [(DAY, "USD")]
    assert table.rate(DAY, "JPY", "USD") == daily_rates(3, DAY, "USD")["JPY"]

    async def down(day: date, base: str) -> dict[str, Decimal]:
        raise Retryable("ERP down", code="erp.unavailable")

    with pytest.raises(Retryable):
        await load_rates({(date(2027, 1, 2), "USD")}, table, down)


def test_with_entity_leaves_an_unconfigured_entry_alone() -> None:
    entry = SAMPLES["erp.journal.post.v1"]
    assert isinstance(entry, PostJournalEntry)
    assert with_entity(entry, "cus_1", EntityMap(), None) is entry


def test_simulated_daily_rates_are_deterministic_and_consistent() -> None:
    day = date(2026, 11, 30)
    usd = daily_rates(3, day, "USD")
    assert usd == daily_rates(3, day, "USD") and usd["USD"] == 1
    assert usd != daily_rates(4, day, "USD") and usd != daily_rates(3, date(2026, 12, 1), "USD")
    eur = daily_rates(3, day, "EUR")
    # cross rates agree with the USD ones to the rounding of 12 decimals
    assert abs(eur["JPY"] - usd["JPY"] / usd["EUR"]) < Decimal("1e-9")
    assert all(parse_rate(r) == r for r in usd.values())


# -- payments: the entity, and the realized FX gain or loss ----------------------------------


PAYMENT = SAMPLES["payment.received.v1"]  # 250.00 EUR of cus_1, 214.20 applied to in_1
PAY_DAY = PAYMENT.received_at.date()  # type: ignore[union-attr]


def _payment_entry(env: Envelope, **kw: object) -> PostJournalEntry:
    return _entry(env, planner=plan_cash, **kw)


def test_without_entities_the_payment_posting_is_unchanged() -> None:
    env = envelope_of(PAYMENT)
    plain = _payment_entry(env)
    assert _payment_entry(env, entities=EntityMap(), rates=RateTable(), booked={}) == plain
    assert plain.entity is None and fx_needs([PAYMENT], EntityMap()) == (set(), set())


def test_a_payment_in_its_entitys_currency_names_the_entity() -> None:
    pay = msgspec.structs.replace(PAYMENT, customer_id="cus_de_7")
    entry = _payment_entry(envelope_of(pay), entities=ENTITIES)
    assert (entry.entity, entry.currency, entry.exchange_rate) == ("de", "EUR", None)
    assert entry.lines == _payment_entry(envelope_of(pay)).lines
    assert fx_needs([pay], ENTITIES) == (set(), set())


def test_a_foreign_payment_books_the_gain_or_loss_against_the_booked_rate() -> None:
    assert isinstance(PAYMENT, PaymentReceived)
    assert fx_needs([PAYMENT], ENTITIES) == ({(PAY_DAY, "USD")}, {"in_1"})
    rates = RateTable()
    rates.add(PAY_DAY, "USD", {"EUR": Decimal("1.10")})
    entry = _payment_entry(envelope_of(PAYMENT), entities=ENTITIES, rates=rates,
                           booked={"in_1": "1.05"})
    assert (entry.entity, entry.currency, entry.functional_currency) == ("us", "USD", None)
    assert "250.00 EUR at 1.1 USD" in entry.memo
    # cash 275.00 USD; in_1's 214.20 EUR as booked 224.91, the 35.80 rest at today's 39.38
    assert [(ln.account, ln.debit - ln.credit) for ln in entry.lines] == [
        ("1000", 27500), ("1200", -22491), ("1200", -3938), ("7910", -1071)]
    assert convert(21420, "EUR", "USD", Decimal("1.10")) - 22491 == 1071  # realized_fx
    loss = _payment_entry(envelope_of(PAYMENT), entities=ENTITIES, rates=rates,
                          booked={"in_1": "1.2"})
    assert loss.lines[-1].account == "7920" and loss.lines[-1].debit == 25704 - 23562


@pytest.mark.parametrize(("rates", "booked"), [
    (None, {"in_1": "1.05"}), (RateTable(), {"in_1": "1.05"}), ("day", {})])
def test_a_foreign_payment_without_its_rates_is_dead_lettered(
        rates: RateTable | str | None, booked: dict[str, str]) -> None:
    table = rates
    if rates == "day":
        table = RateTable()
        table.add(PAY_DAY, "USD", {"EUR": Decimal("1.1")})
    with pytest.raises(ContractError) as info:
        plan_cash(envelope_of(PAYMENT), SUBJECTS, AccountMap(), entities=ENTITIES,
                  rates=table, booked=booked)  # type: ignore[arg-type]
    assert info.value.code == "fx.missing_rate"


class _Versions:
    """The shared versions of the invoices: in_1 applied at version 2, in_9 never posted."""

    async def read(self, aggregates: object) -> dict[tuple[str, str], object]:
        rows = {"in_1": SimpleNamespace(version=2), "in_9": None}
        return {("billing", i): SimpleNamespace(row=rows[i], revision=1)
                for _, i in aggregates}  # type: ignore[attr-defined]


async def test_the_router_reads_the_booked_rate_of_the_posted_version_once() -> None:
    asked: list[str] = []

    async def booked_source(external_id: str) -> str | None:
        asked.append(external_id)
        return "1.05" if external_id == "in_1:v2" else None

    router = PaymentRouter.__new__(PaymentRouter)
    router.versions, router.booked, router._by_posting = _Versions(), {}, {}  # type: ignore[assignment]
    await router._load_booked({"in_1", "in_9"}, booked_source)
    await router._load_booked({"in_1"}, booked_source)
    assert router.booked == {"in_1": "1.05"}
    assert asked == ["in_1:v2", "in_9"]  # in_9 unposted: its first version, asked again


def test_netsuite_records_carry_the_subsidiary_and_the_rate() -> None:
    rates = RateTable()
    rates.add(DAY, "USD", {"EUR": Decimal("1.0842")})
    entry = _entry(envelope_of(SAMPLES["invoice.issued.v1"]), entities=ENTITIES, rates=rates)
    body = msgspec.json.decode(ns.decimal_encoder().encode(entry_record(
        entry, subsidiary="9", subsidiary_ids={"us": "3"})))
    assert (body["subsidiary"], body["exchangeRate"]) == ({"id": "3"}, 1.0842)
    plain = msgspec.json.decode(ns.decimal_encoder().encode(entry_record(
        _entry(envelope_of(SAMPLES["invoice.issued.v1"])), subsidiary="9")))
    assert plain["subsidiary"] == {"id": "9"} and "exchangeRate" not in plain


def test_entity_settings_load(tmp_path: Path) -> None:
    f = tmp_path / "ok.toml"
    f.write_text('[entities]\ndefault = "us"\nfunctional_currency = { us = "USD" }\n'
                 'customers = { "cus_de_*" = "de" }\n[erp]\nsubsidiary_ids = { de = "4" }\n')
    cfg = load_config(f, env={})
    assert cfg.entities.entity_for("cus_de_1") == "de" and cfg.entities.configured
    assert cfg.erp.subsidiary_ids == {"de": "4"}


def test_a_credit_memo_is_posted_for_its_entity_at_its_days_rate() -> None:
    memo = SAMPLES["credit_memo.issued.v1"]
    assert isinstance(memo, CreditMemoIssued)
    day = memo.issued_at.date()
    assert rates_needed([memo], ENTITIES) == ({(day, "USD")} if memo.currency != "USD"
                                              else set())
    rates = RateTable()
    rates.add(day, "USD", daily_rates(3, day, "USD"))
    entry = _entry(envelope_of(memo), planner=plan_credit_memo, entities=ENTITIES,
                   rates=rates)
    plain = _entry(envelope_of(memo), planner=plan_credit_memo)
    assert entry.entity == "us" and entry.lines == plain.lines and plain.entity is None
    if memo.currency != "USD":
        assert entry.exchange_rate == format_rate(daily_rates(3, day, "USD")[memo.currency])


def test_a_reversal_keeps_the_entity_and_the_rate_of_what_it_reverses() -> None:
    rates = RateTable()
    rates.add(DAY, "USD", {"EUR": Decimal("1.0842")})
    entry = _entry(envelope_of(SAMPLES["invoice.issued.v1"]), entities=ENTITIES, rates=rates)
    back = reversal_of(entry)
    assert (back.entity, back.functional_currency, back.exchange_rate) == (
        "us", "USD", "1.0842")
    assert [(ln.debit, ln.credit) for ln in back.lines] == [
        (ln.credit, ln.debit) for ln in entry.lines]
    assert reversal_of(_entry(envelope_of(SAMPLES["invoice.issued.v1"]))).entity is None


def test_the_demo_reports_what_the_erp_holds_per_entity_and_currency() -> None:
    entries = [{"subsidiary": "eu", "currency": "EUR", "amount": 500},
               {"subsidiary": "us", "currency": "USD", "amount": 100},
               {"subsidiary": "eu", "currency": "EUR", "amount": 250},
               {"subsidiary": "eu", "currency": "JPY", "amount": 9},
               {"currency": "USD", "amount": 7}]
    assert by_entity(entries) == {
        "(none)": {"USD": {"postings": 1, "debits": 7}},
        "eu": {"EUR": {"postings": 2, "debits": 750}, "JPY": {"postings": 1, "debits": 9}},
        "us": {"USD": {"postings": 1, "debits": 100}}}
    cfg = msgspec.toml.decode(DEMO_ENTITIES.encode())
    demo = msgspec.convert(cfg["entities"], EntityMap)
    assert {demo.entity_for(c) for c in ("cus_00042", "cus_01042")} == {"eu", "us"}
