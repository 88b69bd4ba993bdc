"""The authority map: one system of record per domain; events from anyone else are refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from contracts import (
    AUTHORITY,
    MESSAGE_SPECS,
    MESSAGES,
    ContractError,
    authority_for,
    check_authority,
    check_envelope_authority,
)
from contracts._envelope import platform_names

from .samples import SAMPLES, envelope_of

DOCS = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"


def test_every_domain_has_exactly_one_known_authority() -> None:
    assert {spec.domain for spec in MESSAGES} == set(AUTHORITY)
    assert set(AUTHORITY.values()) <= set(platform_names()) - {"gateway"}
    examples = {"partner": "partner", "price": "cpq", "invoice": "billing",
                "revenue_schedule": "revenue", "ledger": "erp"}
    for domain, platform in examples.items():
        assert authority_for(domain) == platform
    with pytest.raises(TypeError):
        AUTHORITY["invoice"] = "erp"  # type: ignore[index]


@pytest.mark.parametrize("type_", sorted(MESSAGE_SPECS))
def test_events_only_from_their_authority(type_: str) -> None:
    spec = MESSAGE_SPECS[type_]
    owner = AUTHORITY[spec.domain]
    check_authority(type_, owner if spec.kind == "evt" else "gateway")
    for platform in platform_names():
        if spec.kind == "cmd" or platform == owner:
            check_authority(type_, platform)  # commands pass from anyone
            continue
        with pytest.raises(ContractError) as info:
            check_authority(type_, platform)
        assert (info.value.code, info.value.path) == ("contract.not_authority", "$.source")
        assert owner in info.value.message and platform in info.value.message


def test_envelope_check_and_a_custom_map() -> None:
    env = envelope_of(SAMPLES["invoice.issued.v1"])
    check_envelope_authority(env)
    forged = envelope_of(SAMPLES["invoice.issued.v1"], source="erp")
    with pytest.raises(ContractError) as info:
        check_envelope_authority(forged)
    assert info.value.code == "contract.not_authority"
    check_envelope_authority(forged, {**AUTHORITY, "invoice": "erp"})


def test_unknown_type() -> None:
    with pytest.raises(ContractError) as info:
        check_authority("invoice.issued.v9", "billing")
    assert (info.value.code, info.value.path) == ("contract.unknown_type", "$.payload.type")


def test_docs_authority_table_matches_the_code() -> None:
    text = DOCS.read_text()
    section = text.split("## Authority", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| `([a-z]+)` \| (.+) \|$", section, re.M)
    assert {d: p for d, p, _ in rows} == dict(AUTHORITY)
    messages = dict((d, m) for d, _, m in rows)
    for spec in MESSAGES:
        stem = spec.type.rsplit(".", 1)[0]
        assert stem.split(".")[-1] in messages[spec.domain], (spec.type, messages[spec.domain])


def test_docs_message_table_matches_the_registry() -> None:
    text = DOCS.read_text()
    rows = re.findall(r"^\| `([a-z_.0-9]+)` \| ([a-z_]+) \| ([a-z]+) \| (evt|cmd) \| ([a-z]+) \|",
                      text, re.M)
    table = {t: (d, lane, kind, auth) for t, d, lane, kind, auth in rows}
    assert set(table) == set(MESSAGE_SPECS)
    for t, spec in MESSAGE_SPECS.items():
        assert table[t] == (spec.domain, spec.lane, spec.kind, AUTHORITY[spec.domain]), t
