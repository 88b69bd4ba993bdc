"""The ERP's credentials at start-up: refused off loopback without credentials or with the
simulator's demo secrets, each error naming the setting; masked in --print-config."""

from __future__ import annotations

import json

import pytest

from actors.platforms.auth import AuthError
from gateway.app import erp_journal_client
from gateway.config import load_config
from sim._netsuite_tba import DEMO_TBA


def tba(url: str, **secrets: str) -> dict[str, object]:
    auth = {"type": "oauth1_tba", "consumer_key": DEMO_TBA.consumer_key,
            "consumer_secret": DEMO_TBA.consumer_secret, "token_id": DEMO_TBA.token_id,
            "token_secret": DEMO_TBA.token_secret, **secrets}
    return {"erp": {"dialect": "netsuite", "base_url": url, "account": DEMO_TBA.account,
                    "auth": auth}}


def test_remote_erp_without_credentials_is_refused() -> None:
    cfg = load_config(env={}, overrides={"erp": {"base_url": "https://1234567.suitetalk.api"
                                                 ".netsuite.com", "dialect": "netsuite"}})
    with pytest.raises(AuthError) as err:
        erp_journal_client(cfg, environ={})
    assert err.value.code == "auth.missing_credentials" and "erp.auth.type" in err.value.message


def test_remote_erp_with_the_demo_secrets_is_refused() -> None:
    cfg = load_config(env={}, overrides=tba("https://1234567.suitetalk.api.netsuite.com"))
    with pytest.raises(AuthError) as err:
        erp_journal_client(cfg, environ={})
    assert err.value.code == "auth.demo_secret"
    assert err.value.message.startswith("erp.auth.consumer_key")


def test_loopback_demo_secrets_build_a_netsuite_client_and_print_masked() -> None:
    cfg = load_config(env={}, overrides=tba("http://127.0.0.1:8700"))
    assert callable(erp_journal_client(cfg, environ={}))
    printed = json.dumps(cfg.public())
    assert DEMO_TBA.token_secret not in printed and DEMO_TBA.consumer_secret not in printed
    assert cfg.public()["erp"]["auth"]["token_secret"] == "***"
    assert DEMO_TBA.token_secret not in repr(cfg)


def test_remote_erp_with_env_secrets_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(env={}, overrides=tba(
        "https://1234567.suitetalk.api.netsuite.com", consumer_key="ck-real-0000000001",
        consumer_secret="cs-real", token_id="ti-real-0000000001", token_secret=None,
        token_secret_env="NS_TS"))  # type: ignore[arg-type]
    assert callable(erp_journal_client(cfg, environ={"NS_TS": "ts-real"}))
