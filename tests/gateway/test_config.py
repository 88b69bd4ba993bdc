"""Configuration precedence and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config


def test_defaults_need_no_file() -> None:
    cfg = load_config(env={})
    assert cfg.nats.url == "" and cfg.nats.sync_interval == "always"
    assert cfg.consumers.max_deliver == 8
    assert cfg.streams.duplicate_window_s == 600


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "erpgw.toml"
    f.write_text('data_dir = "x"\n[http]\nport = 9001\n[erp]\ntimeout_s = 3\n')
    cfg = load_config(f, env={"ERPGW_HTTP_PORT": "9002", "ERPGW_DATA_DIR": "y"},
                      overrides={"data_dir": "z"})
    assert cfg.http.port == 9002
    assert cfg.erp.timeout_s == 3.0
    assert cfg.data_dir == "z"


def test_secret_list_from_env_and_masked() -> None:
    cfg = load_config(env={"ERPGW_BILLING_WEBHOOK_SECRETS": "new-secret,old-secret"})
    assert cfg.billing.webhook_secrets == ["new-secret", "old-secret"]
    assert "new-secret" not in repr(cfg)
    assert "new-secret" not in str(cfg.public())


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[http]\nport = 'eighty'\n", "http.port"),
        ("[http]\nprot = 80\n", "prot"),
        ("[nope]\nx = 1\n", "nope"),
        ('[entities]\nfunctional_currency = { de = "XXX" }\n', "functional_currency.de"),
        ('[entities]\ncustomers = { "cus_*" = "" }\n', "entities.customers"),
        ("[erp]\nsubsidiary_ids = { us = 3 }\n", "erp.subsidiary_ids"),
        ("[http\n", "not valid TOML"),
    ],
)
def test_errors_name_the_setting(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f, env={})
    assert needle in str(info.value)
    assert str(f) in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Path("/nonexistent/erpgw.toml"), env={})
    assert info.value.code == "config.missing"


def test_nats_url_takes_a_list_or_a_comma_string_and_masks_every_password(
        tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[nats]\nurl = ["nats://u:pw1@a:4222", " nats://b:4222 ", '
                    '"tls://v:pw2@c:4222"]\n')
    cfg = load_config(toml, env={})
    assert cfg.nats.url == "nats://u:pw1@a:4222,nats://b:4222,tls://v:pw2@c:4222"
    shown = str(cfg.public()["nats"]["url"]) + repr(cfg.nats)
    assert "pw1" not in shown and "pw2" not in shown
    assert "nats://u:***@a:4222,nats://b:4222,tls://v:***@c:4222" in shown
    env = load_config(None, env={"ERPGW_NATS_URL": "nats://a:1, nats://b:2,"})
    assert env.nats.url == "nats://a:1,nats://b:2"


@pytest.mark.parametrize(("url", "needle"), [
    ('"nats://a:4222,http://u:secret@b:1"', "'http://u:***@b:1' is not a server URL"),
    ('"nats://a:notaport"', "'nats://a:notaport' is not a server URL"),
    ("[1, 2]", "Expected a URL or a list of URLs"),
    ('" , "', "no server URL given"),
])
def test_a_bad_nats_url_entry_is_named(tmp_path: Path, url: str, needle: str) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(f"[nats]\nurl = {url}\n")
    with pytest.raises(ConfigError) as err:
        load_config(toml, env={})
    assert f"{toml}: nats.url: " in err.value.message and needle in err.value.message
    assert "secret" not in err.value.message
