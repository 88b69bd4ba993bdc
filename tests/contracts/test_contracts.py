"""Canonical contracts: invariants, strict money, codes and paths, deterministic ids."""

from __future__ import annotations

from datetime import UTC, date, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    BusinessKey,
    ContractError,
    Envelope,
    InvoiceIssued,
    InvoiceLine,
    JournalLine,
    JsonCodec,
    MsgpackCodec,
    PostJournalEntry,
    derive_id,
    format_amount,
    make_envelope,
    new_id,
)


def invoice(**kw: object) -> InvoiceIssued:
    base: dict[str, object] = dict(
        invoice_id="in_1", number="INV-1", customer_id="cus_1", currency="USD",
        issued_at=datetime(2026, 11, 27, tzinfo=UTC), period_start=date(2026, 11, 1),
        period_end=date(2026, 11, 30),
        lines=[InvoiceLine(line_id="l1", product_id="p", description="seat", quantity=3,
                           unit_amount=1000, amount=3000)],
        subtotal=3000, tax=300, total=3300)
    base.update(kw)
    return InvoiceIssued(**base)  # type: ignore[arg-type]


def envelope(inv: InvoiceIssued | None = None) -> Envelope:
    inv = inv or invoice()
    return make_envelope(inv, source="billing", key=BusinessKey("billing", inv.invoice_id, 1))


JSON: JsonCodec[Envelope] = JsonCodec(Envelope)
MSGPACK: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)


def test_roundtrip_both_codecs() -> None:
    env = envelope()
    assert JSON.decode(JSON.encode(env)) == env
    assert MSGPACK.decode(MSGPACK.encode(env)) == env
    assert env.type == "invoice.issued.v1"


@pytest.mark.parametrize(
    ("mutate", "code", "path"),
    [
        (lambda s: s.replace(b'"total":3300', b'"total":3300.0'), "contract.invalid_type",
         "$.payload.total"),
        (lambda s: s.replace(b'"total":3300', b'"total":3301'), "invoice.total_mismatch",
         "$.payload.total"),
        (lambda s: s.replace(b'"subtotal":3000', b'"subtotal":2999'),
         "invoice.lines_total_mismatch", "$.payload.subtotal"),
        (lambda s: s.replace(b'"currency":"USD"', b'"currency":"XXX"'),
         "money.unknown_currency", "$.payload.currency"),
        (lambda s: s.replace(b'"currency":"USD"', b'"currency":"usd"'),
         "contract.constraint", "$.payload.currency"),
        (lambda s: s.replace(b'"amount":3000', b'"amount":-3000'), "contract.constraint",
         "$.payload.lines[0].amount"),
        (lambda s: s.replace(b'"customer_id":"cus_1",', b""), "contract.missing_field",
         "$.payload"),
        (lambda s: s.replace(b'"type":"invoice.issued.v1"', b'"type":"invoice.issued.v9"'),
         "contract.invalid_value", "$.payload.type"),
        (lambda s: s[:-5], "contract.malformed", "$"),
    ],
)
def test_contract_errors_have_code_and_path(mutate, code: str, path: str) -> None:  # type: ignore[no-untyped-def]
    raw = mutate(JSON.encode(envelope()))
    with pytest.raises(ContractError) as info:
        JSON.decode(raw)
    assert info.value.code == code
    assert info.value.path == path


def test_unknown_fields_are_tolerated() -> None:
    raw = JSON.encode(envelope()).replace(b'"tax":300', b'"tax":300,"new_field":1')
    assert JSON.decode(raw).payload.tax == 300  # type: ignore[union-attr]


def test_period_must_be_ordered() -> None:
    with pytest.raises(ValueError, match=r"invoice\.period_reversed"):
        invoice(period_start=date(2026, 12, 1))


def test_journal_entry_must_balance() -> None:
    with pytest.raises(ValueError, match=r"journal\.unbalanced"):
        PostJournalEntry(idempotency_key="k" * 16, external_id="in_1",
                         posting_date=date(2026, 11, 27), currency="USD", memo="",
                         lines=[JournalLine(account="1200", debit=100),
                                JournalLine(account="2400", credit=99)])
    with pytest.raises(ValueError, match=r"journal\.line_sides"):
        JournalLine(account="1200", debit=1, credit=1)


def test_caused_message_keeps_correlation() -> None:
    first = envelope()
    second = make_envelope(first.payload, source="gateway", key=first.key, caused_by=first)
    assert second.correlation_id == first.correlation_id == first.id
    assert second.causation_id == first.id


def test_ids() -> None:
    assert derive_id("a", "bc") == derive_id("a", "bc")
    assert derive_id("a", "bc") != derive_id("ab", "c")  # parts are length-prefixed
    ids = [new_id() for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(i[14] == "7" for i in ids)  # UUID version 7


def test_new_ids_are_canonical_uuid7_text_and_a_forked_child_draws_its_own() -> None:
    import os
    import uuid

    for i in (new_id() for _ in range(200)):
        u = uuid.UUID(i)
        assert str(u) == i and u.version == 7 and u.variant == uuid.RFC_4122
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id, then gone
        os.write(w, new_id().encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 64).decode()
    os.close(r)
    os.waitpid(pid, 0)
    mine = new_id()
    assert uuid.UUID(child).version == 7
    assert child[-12:] != mine[-12:]  # the random part: not the parent's next draw


def test_format_amount() -> None:
    assert format_amount(123456, "USD") == "1234.56 USD"
    assert format_amount(-5, "BHD") == "-0.005 BHD"
    assert format_amount(1200, "JPY") == "1200 JPY"


lines_st = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 10**9)), min_size=1, max_size=20)


@given(lines=lines_st, tax=st.integers(0, 10**9), currency=st.sampled_from(["USD", "JPY", "BHD"]))
def test_valid_invoices_roundtrip(lines: list[tuple[int, int]], tax: int, currency: str) -> None:
    ls = [InvoiceLine(line_id=f"l{i}", product_id="p", description="d", quantity=q,
                      unit_amount=u, amount=q * u) for i, (q, u) in enumerate(lines)]
    sub = sum(x.amount for x in ls)
    env = envelope(invoice(lines=ls, subtotal=sub, tax=tax, total=sub + tax, currency=currency))
    assert MSGPACK.decode(MSGPACK.encode(env)) == env
    assert JSON.decode(JSON.encode(env)) == env


@given(st.binary(max_size=300))
def test_garbage_only_raises_contract_error(data: bytes) -> None:
    for codec in (JSON, MSGPACK):
        try:
            codec.decode(data)
        except ContractError as err:
            assert err.code.startswith(("contract.", "invoice.", "money.", "journal."))


def test_msgspec_float_money_rejected_in_msgpack_too() -> None:
    doc = msgspec.to_builtins(envelope())
    doc["payload"]["total"] = 3300.0
    with pytest.raises(ContractError) as info:
        MSGPACK.decode(msgspec.msgpack.encode(doc))
    assert info.value.code == "contract.invalid_type"


def test_w3c_traceparent_is_carried_along_the_chain() -> None:
    import re

    first = envelope()
    second = make_envelope(first.payload, source="gateway", key=first.key, caused_by=first)
    pattern = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")
    assert first.traceparent and pattern.match(first.traceparent)
    assert second.traceparent and pattern.match(second.traceparent)
    assert first.traceparent.split("-")[1] == second.traceparent.split("-")[1]  # one trace
    assert first.traceparent.split("-")[2] != second.traceparent.split("-")[2]  # two spans
    again = make_envelope(first.payload, source="gateway", key=first.key, caused_by=first,
                          msg_id=second.id)
    assert again.traceparent == second.traceparent  # deterministic on republish


def test_redact_masks_personal_fields_at_any_depth() -> None:
    from contracts import redact

    doc = {"type": "customer.upserted.v1", "customer_id": "cus_1", "tax_id": "DE123456789",
           "billing_email": "ada@example.com",
           "nested": [{"iban": "DE44500105175407324931", "amount": 5}]}
    out = redact(doc)
    assert out["customer_id"] == "cus_1" and out["nested"][0]["amount"] == 5
    assert out["tax_id"] == "***89" and out["billing_email"] == "a***@example.com"
    assert out["nested"][0]["iban"] == "***31"
    assert "DE123456789" not in str(out) and "ada@" not in str(out)
    assert doc["tax_id"] == "DE123456789"  # a copy: the original is untouched
