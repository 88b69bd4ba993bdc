"""``billing.dialect`` and the Stripe keys in the configuration, ``erpgw demo --dialects``,
and the scenario file's ``billing_dialect``."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.demo import parse_dialects


def test_billing_dialect_defaults_to_erpgw_and_takes_stripe() -> None:
    assert load_config(env={}).billing.dialect == "erpgw"
    cfg = load_config(env={"ERPGW_BILLING_DIALECT": "stripe"}, overrides={"billing": {
        "auth": {"type": "bearer", "token": "sk_live_51QxSECRETkey"}}})
    assert cfg.billing.dialect == "stripe"
    assert "sk_live_51QxSECRETkey" not in repr(cfg.billing)
    public = cfg.public()
    assert public["billing"]["auth"]["token"] == "***"
    assert "sk_live_51QxSECRETkey" not in str(public)


def test_an_unknown_billing_dialect_names_the_setting() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={"billing": {"dialect": "chargebee"}})
    assert "billing.dialect" in info.value.message


def test_parse_dialects() -> None:
    assert parse_dialects("") == {"billing": "erpgw", "erp": "erpgw"}
    assert parse_dialects("stripe") == {"billing": "stripe", "erp": "erpgw"}
    assert parse_dialects("stripe, netsuite") == {"billing": "stripe", "erp": "netsuite"}
    assert parse_dialects("billing=stripe,erp=erpgw") == {"billing": "stripe", "erp": "erpgw"}
    for bad in ("paypal", "billing=netsuite", "erp=stripe", "stripe,billing=erpgw"):
        with pytest.raises(ValueError):
            parse_dialects(bad)


def test_scenario_file_names_the_billing_dialect(tmp_path: Path) -> None:
    import sim

    path = tmp_path / "s.toml"
    path.write_text('billing_dialect = "stripe"\n')
    assert sim.load_scenario(path).billing_dialect == "stripe"
    path.write_text('billing_dialect = "paypal"\n')
    with pytest.raises(sim.ScenarioError) as info:
        sim.load_scenario(path)
    assert "billing_dialect" in str(info.value)
