"""Every invariant, violated on purpose: the stable code and the field path, both when a peer
sends the bad message (decode) and when our own code builds it (construction)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from msgspec.structs import replace

from contracts import (
    ContractError,
    Envelope,
    JsonCodec,
    MsgpackCodec,
    contract_error,
    from_decimal,
    to_decimal,
)

from .samples import SAMPLES, as_doc, envelope_of, set_path

JSON: JsonCodec[Envelope] = JsonCodec(Envelope)
MSGPACK: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
ROOT = Path(__file__).resolve().parents[2]

# (message type, {path under $.payload: new value}, code, path of the error)
DECODE_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # amounts, prices and quantities are never negative (outside credit memos)
    ("price.upserted.v1", {"unit_amount": -1}, "amount.negative", "$.payload.unit_amount"),
    ("order.booked.v1", {"lines[0].quantity": -10, "lines[0].amount": -15000},
     "amount.negative", "$.payload.lines[0].quantity"),
    ("subscription.activated.v1", {"items[0].unit_amount": -1}, "amount.negative",
     "$.payload.items[0].unit_amount"),
    ("usage.recorded.v1", {"quantity": -3}, "amount.negative", "$.payload.quantity"),
    ("payment.received.v1", {"amount": -25000}, "amount.negative", "$.payload.amount"),
    ("invoice.issued.v2", {"tax_lines[0].taxable_amount": -1}, "amount.negative",
     "$.payload.tax_lines[0].taxable_amount"),
    ("revenue.schedule.updated.v1", {"lines[1].amount": -1}, "amount.negative",
     "$.payload.lines[1].amount"),
    ("partner.commission.accrued.v1", {"basis_amount": -1}, "amount.negative",
     "$.payload.basis_amount"),
    ("partner.settlement.issued.v1", {"lines[0].amount": -2251}, "amount.negative",
     "$.payload.lines[0].amount"),
    ("ledger.journal.posted.v1", {"amount": -1}, "amount.negative", "$.payload.amount"),
    ("deal.registered.v1", {"estimated_amount": -1}, "amount.negative",
     "$.payload.estimated_amount"),
    # one currency per document, and a known one
    ("customer.upserted.v1", {"currency": "XXX"}, "money.unknown_currency",
     "$.payload.currency"),
    ("partner.upserted.v1", {"payout_currency": "XXX"}, "money.unknown_currency",
     "$.payload.payout_currency"),
    ("payment.received.v1", {"applications[0].currency": "USD"}, "money.currency_mismatch",
     "$.payload.applications[0].currency"),
    ("partner.settlement.issued.v1", {"lines[1].currency": "GBP"}, "money.currency_mismatch",
     "$.payload.lines[1].currency"),
    # dates ordered
    ("price.upserted.v1", {"effective_to": "2026-10-31"}, "period.reversed",
     "$.payload.effective_to"),
    ("order.booked.v1", {"lines[0].service_end": "2026-10-01"}, "period.reversed",
     "$.payload.lines[0].service_end"),
    ("subscription.activated.v1", {"term_end": "2026-01-01"}, "period.reversed",
     "$.payload.term_end"),
    ("subscription.renewed.v1", {"term_end": "2027-10-31"}, "period.reversed",
     "$.payload.term_end"),
    ("usage.recorded.v1", {"window_end": "2026-11-27T09:29:59Z"}, "period.reversed",
     "$.payload.window_end"),
    ("revenue.schedule.updated.v1", {"service_end": "2026-10-01"}, "period.reversed",
     "$.payload.service_end"),
    ("revenue.schedule.updated.v1", {"lines[2].period_end": "2026-12-31"}, "period.reversed",
     "$.payload.lines[2].period_end"),
    ("deal.approved.v1", {"valid_until": "2026-10-01"}, "period.reversed",
     "$.payload.valid_until"),
    ("partner.settlement.issued.v1", {"period_end": "2026-10-01"}, "period.reversed",
     "$.payload.period_end"),
    ("invoice.issued.v2", {"period_end": "2026-10-01"}, "invoice.period_reversed",
     "$.payload.period_end"),
    # lines sum to totals; quantity x unit price == amount; list - discount == net
    ("order.booked.v1", {"total": 20001}, "document.lines_total_mismatch", "$.payload.total"),
    ("order.booked.v1", {"lines[1].amount": 5001}, "line.amount_mismatch",
     "$.payload.lines[1].amount"),
    ("order.booked.v1", {"lines[0].discount_unit_amount": 2001},
     "price.discount_exceeds_list", "$.payload.lines[0].discount_unit_amount"),
    ("order.booked.v1", {"lines[0].unit_amount": 1400}, "price.net_mismatch",
     "$.payload.lines[0].unit_amount"),
    ("credit_memo.issued.v1", {"subtotal": 4001, "total": 4761},
     "document.lines_total_mismatch", "$.payload.subtotal"),
    ("credit_memo.issued.v1", {"total": 4700}, "document.total_mismatch", "$.payload.total"),
    ("credit_memo.issued.v1", {"lines[1].amount": -999}, "line.amount_mismatch",
     "$.payload.lines[1].amount"),
    ("credit_memo.issued.v1", {"lines[1].quantity": -5, "lines[1].amount": -5000,
                               "subtotal": 0, "tax": 0, "total": 0},
     "credit_memo.non_positive_total", "$.payload.total"),
    ("revenue.schedule.updated.v1", {"total_amount": 44999}, "document.lines_total_mismatch",
     "$.payload.total_amount"),
    ("revenue.schedule.updated.v1", {"lines[0].period_start": "2026-10-31"},
     "revenue.line_outside_service_period", "$.payload.lines[0].period_start"),
    ("revenue.schedule.updated.v1", {"lines[2].period_end": "2027-02-01"},
     "revenue.line_outside_service_period", "$.payload.lines[2].period_end"),
    ("partner.settlement.issued.v1", {"total": 2999}, "document.lines_total_mismatch",
     "$.payload.total"),
    ("partner.commission.accrued.v1", {"amount": 2250}, "commission.amount_mismatch",
     "$.payload.amount"),
    ("payment.received.v1", {"applications[0].amount": 25001}, "payment.over_applied",
     "$.payload.applications"),
    ("invoice.issued.v2", {"tax_lines[0].amount": 3419}, "invoice.tax_breakdown_mismatch",
     "$.payload.tax_lines"),
    ("invoice.issued.v2", {"total": 1}, "invoice.total_mismatch", "$.payload.total"),
    ("invoice.issued.v2", {"subtotal": 1, "total": 3421}, "invoice.lines_total_mismatch",
     "$.payload.subtotal"),
    ("invoice.issued.v1", {"lines[1].amount": 2999}, "invoice.line_amount_mismatch",
     "$.payload.lines[1].amount"),
    ("invoice.issued.v1", {"period_start": "2026-12-01"}, "invoice.period_reversed",
     "$.payload.period_end"),
    # journal entries balance; a journal line has one side
    ("erp.journal.post.v1", {"lines[2].credit": 3421}, "journal.unbalanced", "$.payload.lines"),
    ("erp.journal.post.v1", {"lines[0].credit": 5}, "journal.line_sides",
     "$.payload.lines[0].debit"),
    # a foreign-currency entry names its functional currency and an exact rate
    ("erp.journal.post.v1", {"functional_currency": "JPY"}, "fx.missing_rate",
     "$.payload.exchange_rate"),
    ("erp.journal.post.v1", {"functional_currency": "JPY", "exchange_rate": "-1"},
     "fx.invalid_rate", "$.payload.exchange_rate"),
    ("erp.journal.post.v1", {"exchange_rate": "1.1"}, "fx.invalid_rate",
     "$.payload.functional_currency"),
    # strict types: instants carry an offset, enums are closed, ranges hold
    ("usage.recorded.v1", {"window_start": "2026-11-27T09:30:00"}, "contract.constraint",
     "$.payload.window_start"),
    ("partner.upserted.v1", {"tier": "diamond"}, "contract.invalid_value", "$.payload.tier"),
    ("deal.approved.v1", {"discount_bp": 10001}, "contract.constraint",
     "$.payload.discount_bp"),
    ("price.upserted.v1", {"terms": {"model": "freemium"}}, "contract.invalid_value",
     "$.payload.terms.model"),
    ("price.upserted.v1", {"unit_amount": 2**53}, "contract.constraint",
     "$.payload.unit_amount"),
    ("order.booked.v1", {"lines": []}, "contract.constraint", "$.payload.lines"),
]


def _bad(type_: str, changes: dict[str, Any]) -> dict[str, Any]:
    doc = as_doc(envelope_of(SAMPLES[type_]))
    for path, value in changes.items():
        set_path(doc, f"$.payload.{path}", value)
    return doc  # type: ignore[no-any-return]


@pytest.mark.parametrize(("type_", "changes", "code", "path"), DECODE_CASES,
                         ids=[f"{c[0]}:{c[2]}" for c in DECODE_CASES])
def test_decode_reports_code_and_path(type_: str, changes: dict[str, Any], code: str,
                                      path: str) -> None:
    doc = _bad(type_, changes)
    for codec, enc in ((JSON, msgspec.json.encode), (MSGPACK, msgspec.msgpack.encode)):
        with pytest.raises(ContractError) as info:
            codec.decode(enc(doc))
        assert (info.value.code, info.value.path) == (code, path), info.value.message
        assert "(field `" not in info.value.message  # the path marker is parsed away


def test_samples_are_valid_and_decode_unchanged() -> None:
    for type_, payload in SAMPLES.items():
        env = envelope_of(payload)
        assert JSON.decode(JSON.encode(env)) == env, type_


S = SAMPLES
NAIVE = datetime(2026, 11, 27, 9, 30)

# our own code building a bad message: same codes, paths relative to the struct built
CONSTRUCT_CASES: list[tuple[str, Callable[[], Any], str, str]] = [
    ("v1 invoice line", lambda: replace(S["invoice.issued.v1"].lines[0], quantity=-1),
     "amount.negative", "$.quantity"),
    ("order line", lambda: replace(S["order.booked.v1"].lines[0], amount=-1),
     "amount.negative", "$.amount"),
    ("order line", lambda: replace(S["order.booked.v1"].lines[0], discount_unit_amount=3000),
     "price.discount_exceeds_list", "$.discount_unit_amount"),
    ("order", lambda: replace(S["order.booked.v1"], total=1),
     "document.lines_total_mismatch", "$.total"),
    ("price", lambda: replace(S["price.upserted.v1"], effective_to=date(2020, 1, 1)),
     "period.reversed", "$.effective_to"),
    ("payment", lambda: replace(S["payment.received.v1"], applications=(
        replace(S["payment.received.v1"].applications[0], currency="USD"),)),
     "money.currency_mismatch", "$.applications[0].currency"),
    ("usage", lambda: replace(S["usage.recorded.v1"], window_start=NAIVE),
     "contract.constraint", "$.window_start"),
    ("credit memo", lambda: replace(S["credit_memo.issued.v1"], tax=-4000, total=0),
     "credit_memo.non_positive_total", "$.total"),
    ("invoice v2", lambda: replace(S["invoice.issued.v2"], tax_lines=()),
     "invoice.tax_breakdown_mismatch", "$.tax_lines"),
    ("invoice v3", lambda: replace(S["invoice.issued.v3"], discount=1000),
     "invoice.discount_mismatch", "$.discount"),
    ("invoice v3", lambda: replace(S["invoice.issued.v3"], total=12000),
     "invoice.total_mismatch", "$.total"),
    ("invoice v1", lambda: replace(S["invoice.issued.v1"], currency="XXX"),
     "money.unknown_currency", "$.currency"),
    ("commission", lambda: replace(S["partner.commission.accrued.v1"], rate_bp=1000),
     "commission.amount_mismatch", "$.amount"),
    ("journal line", lambda: replace(S["erp.journal.post.v1"].lines[0], debit=-5),
     "amount.negative", "$.debit"),
    # A vendor's decimal amounts (NetSuite) to and from minor units, exactly.
    ("to decimal", lambda: to_decimal(1.5, "USD"), "money.not_minor_units", "$"),  # type: ignore[arg-type]
    ("from decimal", lambda: from_decimal(1.5, "USD"), "money.not_decimal", "$"),  # type: ignore[arg-type]
    ("from decimal", lambda: from_decimal("NaN", "USD"), "money.not_decimal", "$"),
    ("from decimal", lambda: from_decimal("1.005", "USD"), "money.inexact", "$"),
]


@pytest.mark.parametrize(("what", "build", "code", "path"), CONSTRUCT_CASES,
                         ids=[f"{c[0]}:{c[2]}" for c in CONSTRUCT_CASES])
def test_construction_reports_code_and_path(what: str, build: Callable[[], Any], code: str,
                                            path: str) -> None:
    with pytest.raises(ValueError) as info:
        build()
    err = contract_error(info.value)
    assert (err.code, err.path) == (code, path), err.message


def test_credit_memo_lines_may_be_negative() -> None:
    memo = S["credit_memo.issued.v1"]
    assert any(line.amount < 0 for line in memo.lines)
    assert JSON.decode(JSON.encode(envelope_of(memo))).payload == memo


def _codes_in_source() -> set[str]:
    codes: set[str] = set()
    for path in (ROOT / "contracts").glob("_*.py"):
        if path.name == "_errors.py":  # class defaults (gateway.error, …), not contract codes
            continue
        text = path.read_text()
        codes |= set(re.findall(r'violation\(\s*"([a-z_]+\.[a-z_.]+)"', text))
        codes |= set(re.findall(r'code(?:: str)? ?= ?"([a-z_]+\.[a-z_.]+)"', text))
        codes |= set(re.findall(r'ValueError\(\s*f?"([a-z_]+\.[a-z_.]+):', text))
    return codes


def test_every_invariant_code_is_exercised_here() -> None:
    raised = {c[2] for c in DECODE_CASES} | {c[2] for c in CONSTRUCT_CASES}
    invariant_codes = {c for c in _codes_in_source()
                       if not c.startswith(("contract.", "money.allocation"))}
    assert invariant_codes <= raised, invariant_codes - raised


def test_every_code_is_documented() -> None:
    docs = (ROOT / "docs" / "contracts.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_.]+)` \|", docs, re.M))
    generic = {"contract.malformed", "contract.invalid_type", "contract.missing_field",
               "contract.invalid_value", "contract.constraint", "contract.invalid"}
    missing = (_codes_in_source() | generic) - documented
    assert not missing, f"codes missing from docs/contracts.md: {sorted(missing)}"
