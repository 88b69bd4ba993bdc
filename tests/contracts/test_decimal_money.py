"""Minor units <-> vendor decimals, exactly, by ISO-4217 exponent; NetSuite's wire shapes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import CURRENCY_EXPONENTS, MAX_AMOUNT, from_decimal, to_decimal
from contracts.platforms import netsuite as ns

currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
amounts = st.integers(-MAX_AMOUNT, MAX_AMOUNT)


@pytest.mark.parametrize(("amount", "currency", "text"), [
    (12345, "USD", "123.45"), (5, "USD", "0.05"), (-5, "USD", "-0.05"), (0, "USD", "0.00"),
    (500, "JPY", "500"), (1, "KWD", "0.001"), (123456, "BHD", "123.456"),
])
def test_known_amounts(amount: int, currency: str, text: str) -> None:
    assert str(to_decimal(amount, currency)) == text
    assert from_decimal(text, currency) == amount


@given(amounts, currencies)
def test_round_trip_both_ways(amount: int, currency: str) -> None:
    d = to_decimal(amount, currency)
    exp = CURRENCY_EXPONENTS[currency]
    assert d.as_tuple().exponent == -exp  # exactly the currency's fraction digits
    assert from_decimal(d, currency) == amount
    assert from_decimal(str(d), currency) == amount
    # through NetSuite's JSON: a number with the exact text, decoded exactly
    body = ns.decimal_encoder().encode({"debit": d})
    assert msgspec.json.decode(body, type=dict[str, Decimal])["debit"] == d


@given(st.integers(-10**12, 10**12), st.sampled_from(["JPY", "USD", "BHD", "KWD"]),
       st.integers(0, 3))
def test_trailing_zeros_are_accepted_extra_digits_refused(units: int, currency: str,
                                                          extra: int) -> None:
    exp = CURRENCY_EXPONENTS[currency]
    padded = Decimal(units).scaleb(-exp).quantize(Decimal(1).scaleb(-(exp + extra)))
    assert from_decimal(padded, currency) == units
    finer = Decimal(units * 10 + 1).scaleb(-(exp + 1))
    with pytest.raises(ValueError, match=r"money\.inexact"):
        from_decimal(finer, currency)


@pytest.mark.parametrize("bad", [1.5, "abc", "NaN", "Infinity"])
def test_floats_and_non_numbers_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"money\.not_decimal"):
        from_decimal(bad, "USD")  # type: ignore[arg-type]


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(ValueError, match=r"money\.unknown_currency"):
        to_decimal(1, "XXX")


def test_journal_record_wire_shape_and_amounts() -> None:
    rec = ns.JournalEntryRecord(
        external_id="in_1", subsidiary=ns.Ref(id="1"), currency=ns.Ref(ref_name="KWD"),
        tran_date=date(2026, 11, 30), memo="Invoice in_1",
        line=ns.JournalLines(items=[
            ns.JournalLine(account=ns.Ref(id="1100"), debit=to_decimal(12345, "KWD")),
            ns.JournalLine(account=ns.Ref(id="4000"), credit=to_decimal(12000, "KWD")),
            ns.JournalLine(account=ns.Ref(id="2200"), credit=to_decimal(345, "KWD"),
                           memo="tax")]))
    body = ns.decimal_encoder().encode(rec)
    assert body.startswith(b'{"externalId":"in_1","subsidiary":{"id":"1"},'
                           b'"currency":{"refName":"KWD"},"tranDate":"2026-11-30"')
    assert b'"debit":12.345' in body and b'"credit":0.345' in body
    back = msgspec.json.decode(body, type=ns.JournalEntryRecord)
    assert ns.line_amounts(back, "KWD") == (12345, 12345)


def test_error_body_and_suiteql_page_decode() -> None:
    body = (b'{"type":"https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.30",'
            b'"title":"Too Many Requests","status":429,"o:errorDetails":[{"detail":"x",'
            b'"o:errorCode":"SSS_REQUEST_LIMIT_EXCEEDED"}]}')
    err = msgspec.json.decode(body, type=ns.ErrorBody)
    assert err.code in ns.THROTTLE_CODES and err.status == 429
    page = msgspec.json.decode(b'{"links":[],"count":1,"hasMore":true,"items":[{"id":"7"}],'
                               b'"offset":0,"totalResults":2}', type=ns.SuiteQlPage)
    assert page.has_more and page.items == [{"id": "7"}]


def test_idempotency_uuid_is_stable_per_key() -> None:
    assert ns.idempotency_uuid("key-1") == ns.idempotency_uuid("key-1")
    assert ns.idempotency_uuid("key-1") != ns.idempotency_uuid("key-2")
    assert ns.journal_path("in 1/x") == "/services/rest/record/v1/journalEntry/eid:in%201%2Fx"
