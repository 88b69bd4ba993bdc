"""Evolution: a v2 reader accepts v1; a v1 reader tolerates v2 where the rules allow it."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings

from contracts import (
    BusinessKey,
    ContractError,
    Envelope,
    InvoiceIssued,
    InvoiceIssuedV2,
    InvoiceRead,
    JsonCodec,
    MsgpackCodec,
    PostJournalEntry,
    TaxLine,
    invoice_v2,
)
from contracts.schema import compare, json_schemas

from .samples import SAMPLES, T0, as_doc, envelope_of
from .strategies import invoices

V1 = SAMPLES["invoice.issued.v1"]
V2 = SAMPLES["invoice.issued.v2"]


class EnvelopeV1Era(msgspec.Struct, frozen=True):
    """An envelope as a gateway that only knows v1 messages decodes it."""

    id: str
    source: str
    tenant: str
    occurred_at: msgspec.Raw
    correlation_id: str
    causation_id: str | None
    key: BusinessKey
    payload: InvoiceIssued | PostJournalEntry
    traceparent: str | None = None


V2_READER: JsonCodec[InvoiceRead] = JsonCodec(InvoiceRead)  # type: ignore[arg-type]
V1_READER: JsonCodec[EnvelopeV1Era] = JsonCodec(EnvelopeV1Era)


@settings(max_examples=40)
@given(invoices())
def test_a_v2_reader_accepts_v1(inv: InvoiceIssued) -> None:
    for codec in (JsonCodec(InvoiceRead), MsgpackCodec(InvoiceRead)):  # type: ignore[arg-type]
        read = codec.decode(codec.encode(inv))
        assert read == inv
        up = invoice_v2(read)
        assert isinstance(up, InvoiceIssuedV2)
        assert up.to_v1() == inv  # nothing v1 had is lost
        assert sum(t.amount for t in up.tax_lines) == inv.tax


def test_upgrade_makes_one_unknown_tax_line_and_keeps_v2_as_is() -> None:
    up = invoice_v2(V1)
    assert up.tax_lines == (TaxLine(jurisdiction="unknown", taxable_amount=V1.subtotal,
                                    amount=V1.tax),)
    assert invoice_v2(V2) is V2
    no_tax = msgspec.structs.replace(V1, tax=0, total=V1.subtotal)
    assert invoice_v2(no_tax).tax_lines == ()


@settings(max_examples=40)
@given(invoices(v2=True))
def test_a_v1_reader_reads_a_v2_body_as_v1(inv: InvoiceIssuedV2) -> None:
    body = as_doc(inv)
    body["type"] = "invoice.issued.v1"  # what a producer publishes while v1 readers remain
    read = msgspec.json.decode(msgspec.json.encode(body), type=InvoiceIssued)
    assert read == inv.to_v1()


def test_a_v1_era_gateway_reads_v1_with_v2_fields_and_refuses_the_v2_tag() -> None:
    # v1 tag, v2 fields: a newer writer's additions are ignored (and countable as drift)
    doc = as_doc(envelope_of(V2))
    doc["payload"]["type"] = "invoice.issued.v1"
    raw = msgspec.json.encode(doc)
    assert V1_READER.decode(raw).payload == V2.to_v1()
    assert V1_READER.unknown_fields(raw) == ["$.payload.tax_lines"]
    # the v2 tag itself: refused with a clear code, never misread
    with pytest.raises(ContractError) as info:
        V1_READER.decode(JsonCodec(Envelope).encode(envelope_of(V2)))
    assert (info.value.code, info.value.path) == ("contract.invalid_value", "$.payload.type")


def test_today_s_gateway_reads_both_versions_from_one_stream() -> None:
    codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
    for inv in (V1, V2):
        env = envelope_of(inv, occurred_at=T0)
        assert invoice_v2(codec.decode(codec.encode(env)).payload) == invoice_v2(inv)  # type: ignore[arg-type]


def test_v2_is_a_superset_of_v1_by_the_schema_checker() -> None:
    schemas = json_schemas()
    old, new = schemas["invoice.issued.v1"], schemas["invoice.issued.v2"]
    report = compare({"invoice": old}, {"invoice": new})
    kinds = {(c.path, c.kind) for c in report.changes}
    # what makes it a new version: the tag, the subject, and a new required field ...
    assert ("$.payload.type", "enum.changed") in kinds
    assert ("$", "subject.changed") in kinds
    assert ("$.payload.tax_lines", "field.added_required") in kinds
    # ... and nothing v1 readers rely on was removed or retyped
    assert not [c for c in report.changes if c.kind in ("field.removed", "type.changed")]
