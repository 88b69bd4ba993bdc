"""Canonical journal entries -> NetSuite journalEntry records and back, exactly: every line's
minor units survive the decimal wire format, and the entry balances in both."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from actors.platforms.erp.netsuite import entry_record
from contracts import MAX_AMOUNT, JournalLine, PostJournalEntry, from_decimal
from contracts.platforms import netsuite as ns


@st.composite
def journal_entries(draw: st.DrawFn) -> PostJournalEntry:
    currency = draw(st.sampled_from(["JPY", "USD", "EUR", "BHD", "KWD"]))
    credits = draw(st.lists(st.integers(1, MAX_AMOUNT // 1000), min_size=1, max_size=8))
    debits_split = draw(st.integers(1, 3))
    total = sum(credits)
    base, rest = divmod(total, debits_split)
    debits = [base + (1 if i < rest else 0) for i in range(debits_split)]
    debits = [d for d in debits if d > 0]
    lines = [JournalLine("1100", debit=d) for d in debits] + [
        JournalLine(f"4{i:03d}", credit=c, memo=f"line {i}") for i, c in enumerate(credits)]
    return PostJournalEntry(idempotency_key="key-00000001", external_id="in_000001",
                            posting_date=date(2026, 11, 30), currency=currency,
                            memo="Invoice in_000001", lines=lines)


@given(journal_entries())
def test_entries_round_trip_through_the_netsuite_wire_exactly(e: PostJournalEntry) -> None:
    body = ns.decimal_encoder().encode(entry_record(e, subsidiary="1",
                                                    account_ids={"1100": "58"}))
    back = msgspec.json.decode(body, type=ns.JournalEntryRecord)
    assert back.currency.ref_name == e.currency
    sides = [(from_decimal(ln.debit, e.currency) if ln.debit is not None else 0,
              from_decimal(ln.credit, e.currency) if ln.credit is not None else 0)
             for ln in back.line.items]
    assert sides == [(ln.debit, ln.credit) for ln in e.lines]
    assert ns.line_amounts(back, e.currency) == (e.amount, e.amount)
    # balanced in the vendor's decimals too, and never a float on the wire
    debit = sum((ln.debit for ln in back.line.items if ln.debit is not None), Decimal(0))
    credit = sum((ln.credit for ln in back.line.items if ln.credit is not None), Decimal(0))
    assert debit == credit
    assert back.line.items[0].account == ns.Ref(id="58")
    assert b"e-" not in body.lower() and b"e+" not in body.lower()
