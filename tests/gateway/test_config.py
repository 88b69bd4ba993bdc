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
