"""The commercial model: every message round-trips through both codecs, matches its own
generated JSON Schema, tolerates unknown fields (and names them) and refuses float money."""

from __future__ import annotations

import typing
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import (
    MESSAGE_SPECS,
    MESSAGES,
    BusinessKey,
    ContractError,
    DeadLetter,
    Envelope,
    JsonCodec,
    Money,
    MsgpackCodec,
    Payload,
    Subjects,
)
from contracts.schema import json_schemas

from .samples import SAMPLES, as_doc, envelope_of, set_path
from .strategies import PAYLOADS, dead_letters, envelopes, moneys

JSON: JsonCodec[Envelope] = JsonCodec(Envelope)
MSGPACK: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
TYPES = sorted(MESSAGE_SPECS)
SCHEMAS = json_schemas()
VALIDATORS = {name: jsonschema.Draft202012Validator(doc) for name, doc in SCHEMAS.items()}


def test_registry_union_samples_and_strategies_agree() -> None:
    union = {cls.__struct_config__.tag for cls in typing.get_args(Payload)}
    assert union == set(MESSAGE_SPECS) == set(SAMPLES) == set(PAYLOADS)
    assert len(MESSAGES) == len(union)  # no tag registered twice
    for spec in MESSAGES:
        assert spec.type.rsplit(".", 1)[1].startswith("v")  # the version is in the tag
        assert spec.cls.__struct_config__.frozen
        assert spec.cls.__struct_config__.tag_field == "type"
        assert not spec.cls.__struct_config__.forbid_unknown_fields


def test_every_message_has_a_subject_in_its_lane_stream() -> None:
    subjects = Subjects()
    seen = set()
    for spec in MESSAGES:
        subject = subjects.for_type(spec.type)
        assert subject.startswith(f"erpgw.{spec.lane}.{spec.kind}.")
        assert subject not in seen
        seen.add(subject)
    assert subjects.for_type("invoice.issued.v1") == subjects.invoice_issued
    assert subjects.for_type("erp.journal.post.v1") == subjects.erp_journal


@pytest.mark.parametrize("type_", TYPES)
@settings(max_examples=30)
@given(data=st.data())
def test_every_message_roundtrips_both_codecs(type_: str, data: st.DataObject) -> None:
    env = data.draw(envelopes(type_))
    assert env.type == type_
    assert JSON.decode(JSON.encode(env)) == env
    assert MSGPACK.decode(MSGPACK.encode(env)) == env
    bare: JsonCodec[Any] = JsonCodec(MESSAGE_SPECS[type_].cls)
    assert bare.decode(bare.encode(env.payload)) == env.payload


@pytest.mark.parametrize("type_", TYPES)
@settings(max_examples=15)
@given(data=st.data())
def test_every_encoded_message_is_valid_against_its_json_schema(
        type_: str, data: st.DataObject) -> None:
    doc = msgspec.json.decode(JSON.encode(data.draw(envelopes(type_))))
    VALIDATORS[type_].validate(doc)


@given(moneys, dead_letters)
def test_money_and_dead_letters_roundtrip(money: Money, letter: DeadLetter) -> None:
    for codec_type in (JsonCodec, MsgpackCodec):
        mc = codec_type(Money)
        assert mc.decode(mc.encode(money)) == money
        dc = codec_type(DeadLetter)
        assert dc.decode(dc.encode(letter)) == letter
    VALIDATORS["dead_letter"].validate(msgspec.json.decode(JsonCodec(DeadLetter).encode(letter)))


def test_business_key_roundtrip_and_text() -> None:
    key = BusinessKey("billing", "in_1", 4)
    assert msgspec.json.decode(msgspec.json.encode(key), type=BusinessKey) == key
    assert str(key) == "billing:in_1:v4"


@pytest.mark.parametrize("type_", TYPES)
def test_unknown_fields_are_tolerated_and_named(type_: str) -> None:
    doc = as_doc(envelope_of(SAMPLES[type_]))
    doc["payload"]["added_in_a_later_release"] = {"x": 1}
    doc["extra_envelope_field"] = 1
    raw = msgspec.json.encode(doc)
    assert JSON.decode(raw).payload == SAMPLES[type_]
    assert JSON.unknown_fields(raw) == ["$.payload.added_in_a_later_release",
                                        "$.extra_envelope_field"]
    packed = msgspec.msgpack.encode(doc)
    assert MSGPACK.decode(packed).payload == SAMPLES[type_]
    assert sorted(MSGPACK.unknown_fields(packed)) == sorted(JSON.unknown_fields(raw))


def test_drift_is_found_in_nested_lines_and_unions() -> None:
    doc = as_doc(envelope_of(SAMPLES["price.upserted.v1"]))
    doc["payload"]["terms"]["trial_days"] = 14
    assert JSON.unknown_fields(msgspec.json.encode(doc)) == ["$.payload.terms.trial_days"]
    doc = as_doc(envelope_of(SAMPLES["order.booked.v1"]))
    doc["payload"]["lines"][1]["margin"] = 3
    doc["key"]["shard"] = 1
    assert JSON.unknown_fields(msgspec.json.encode(doc)) == [
        "$.key.shard", "$.payload.lines[1].margin"]
    assert JSON.unknown_fields(JSON.encode(envelope_of(SAMPLES["order.booked.v1"]))) == []
    with pytest.raises(ContractError) as info:
        JSON.unknown_fields(b"{not json")
    assert info.value.code == "contract.malformed"


def _amount_paths(node: Any, path: str) -> list[str]:
    """Every integer money field of a sample, as a path into the builtins document."""
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, int) and not isinstance(v, bool) and (
                    "amount" in k or k in ("subtotal", "tax", "total", "debit", "credit")):
                out.append(f"{path}.{k}")
            out.extend(_amount_paths(v, f"{path}.{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_amount_paths(v, f"{path}[{i}]"))
    return out


@pytest.mark.parametrize("type_", TYPES)
def test_a_float_is_never_money(type_: str) -> None:
    doc = as_doc(envelope_of(SAMPLES[type_]))
    paths = _amount_paths(doc["payload"], "$.payload")
    assert paths or type_ in {"customer.upserted.v1", "partner.upserted.v1",
                              "partner.tier_changed.v1", "product.upserted.v1",
                              "deal.approved.v1", "deal.rejected.v1", "usage.recorded.v1",
                              "subscription.cancelled.v1"}
    for path in paths:
        bad = as_doc(envelope_of(SAMPLES[type_]))
        set_path(bad, path, 1.0)
        for codec, enc in ((JSON, msgspec.json.encode), (MSGPACK, msgspec.msgpack.encode)):
            with pytest.raises(ContractError) as info:
                codec.decode(enc(bad))
            assert (info.value.code, info.value.path) == ("contract.invalid_type", path)


def test_a_types_subject_is_the_same_asked_again_and_per_prefix() -> None:
    from contracts._registry import MESSAGE_SPECS

    a, b = Subjects(prefix="erpgw"), Subjects(prefix="other")
    for type_ in MESSAGE_SPECS:
        first = a.for_type(type_)
        assert a.for_type(type_) == first
        assert b.for_type(type_) == "other." + first.removeprefix("erpgw.")
    assert a.for_type("invoice.issued.v1") == a.invoice_issued
    for _ in range(2):  # an unknown type is refused every time, never remembered
        with pytest.raises(KeyError):
            a.for_type("no.such.type.v1")
