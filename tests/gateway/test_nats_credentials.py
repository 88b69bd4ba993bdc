"""Broker credentials from the configuration: which one wins, file modes, and masking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from actors.infra.bus import NatsAuth, mask_url
from gateway.config import load_config
from gateway.identities import IdentityError, auth_for, ensure_seeds, seed_path

CANARY = "pw-canary-7f3a9c"


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_mask_url_hides_passwords_and_tokens() -> None:
    assert mask_url(f"nats://gw:{CANARY}@h1:4222,nats://h2:4222") == \
        "nats://gw:***@h1:4222,nats://h2:4222"
    assert mask_url(f"nats://{CANARY}@h1:4222") == "nats://***@h1:4222"
    assert mask_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"


def test_password_never_shows_in_repr_or_print_config(tmp_path: Path) -> None:
    cfg = load_config(env={"ERPGW_NATS_PASSWORD": CANARY, "ERPGW_NATS_USER": "gw",
                           "ERPGW_NATS_URL": f"nats://gw:{CANARY}@broker:4222"})
    assert cfg.nats.password == CANARY
    assert CANARY not in repr(cfg.nats) and CANARY not in repr(cfg)
    assert CANARY not in str(cfg.public())
    auth = auth_for(cfg, "router")
    assert auth == NatsAuth(user="gw", password=CANARY) and CANARY not in repr(auth)
    env = {"ERPGW_NATS_PASSWORD": CANARY, "ERPGW_NATS_URL": f"nats://gw:{CANARY}@broker:4222",
           "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "gateway", "up", "--print-config"], env=env,
                       capture_output=True, text=True, timeout=60, check=True)
    assert CANARY not in r.stdout + r.stderr and "***" in r.stdout


def test_the_external_credential_wins_then_the_role_seed(tmp_path: Path) -> None:
    seed_dir = tmp_path / "data" / "identities"
    ensure_seeds(seed_dir, ["operator"])
    base = {"data_dir": str(tmp_path / "data"), "nats": {"url": "nats://broker:4222"}}
    # Only a seed for the role: it is used, with the role's inbox prefix.
    auth = auth_for(load_config(env={}, overrides=base), "operator")
    assert auth == NatsAuth(seed_file=str(seed_path(seed_dir, "operator")),
                            inbox_prefix="_INBOX.operator")
    # Another role without a seed, on an external broker: anonymous unless required.
    assert auth_for(load_config(env={}, overrides=base), "monitor", required=False) is None
    with pytest.raises(IdentityError) as missing:
        auth_for(load_config(env={}, overrides=base), "monitor")
    assert missing.value.code == "broker.identity_missing" and "monitor.nk" in str(missing.value)
    # An external credential wins over the seeds.
    creds = _private(tmp_path / "gw.creds", "-----BEGIN NATS USER JWT-----\n")
    cfg = load_config(env={}, overrides={**base, "nats": {**base["nats"], "creds": str(creds)}})
    assert auth_for(cfg, "operator") == NatsAuth(creds_file=str(creds))


def test_bad_credentials_are_named(tmp_path: Path) -> None:
    def cfg(**nats: str) -> object:
        return load_config(env={}, overrides={"data_dir": str(tmp_path),
                                              "nats": {"url": "nats://b:4222", **nats}})

    seed = _private(tmp_path / "gw.nk", "SUAXXX")
    with pytest.raises(IdentityError, match="set only one of"):
        auth_for(cfg(nkey_seed_file=str(seed), user="gw"), "router")  # type: ignore[arg-type]
    with pytest.raises(IdentityError, match="no password"):
        auth_for(cfg(user="gw"), "router")  # type: ignore[arg-type]
    pw = tmp_path / "pw"
    pw.write_text(CANARY)
    pw.chmod(0o644)
    with pytest.raises(IdentityError) as loose:
        auth_for(cfg(user="gw", password_file=str(pw)), "router")  # type: ignore[arg-type]
    assert loose.value.code == "broker.identity_mode" and CANARY not in str(loose.value)
    pw.chmod(0o600)
    auth = auth_for(cfg(user="gw", password_file=str(pw)), "router")  # type: ignore[arg-type]
    assert auth is not None and auth.password == CANARY
