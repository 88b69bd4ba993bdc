"""Entities and currencies in the invoice router: each posting names its customer's entity;
a foreign-currency invoice keeps its currency and carries the functional currency and the
day's rate; without ``[entities]`` nothing changes (pure, plus the router's rate reads)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import msgspec
import pytest

from actors.lifecycle.fx import EntityMap, RateTable, to_functional
from actors.platforms.erp import entry_to_wire
from actors.router import AccountMap
from actors.router.invoices import (
    load_rates,
    plan_invoice,
    rates_needed,
    with_entity,
)
from contracts import (
    ContractError,
    Envelope,
    MsgpackCodec,
    PostJournalEntry,
    Retryable,
    Subjects,
    convert,
    parse_rate,
)
from sim._erp import daily_rates
from tests.contracts.samples import SAMPLES, envelope_of

_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
SUBJECTS = Subjects("erpgw")
ENTITIES = EntityMap(default="us", functional_currency={"us": "USD", "de": "EUR"},
                     customers={"cus_de_*": "de", "cus_1": "us", "cus_de_x": "us"})
DAY = SAMPLES["invoice.issued.v1"].issued_at.date()  # type: ignore[union-attr]


def _entry(env: Envelope, **kw: object) -> PostJournalEntry:
    out = plan_invoice(env, SUBJECTS, AccountMap(), **kw)  # type: ignore[arg-type]
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
