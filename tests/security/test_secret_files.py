"""S15: every secret read from a file goes through one reader that refuses a file others may
read, and webhook signing secrets and usage tokens can come from such a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actors.infra.secret_file import SecretFileProblem, read_secret_file
from gateway.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
CANARY = "whsec_canary_5f1d0c9a"


class Refused(Exception):
    def __init__(self, kind: SecretFileProblem, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _file(tmp_path: Path, text: str, mode: int, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o700 | 0o040])
def test_a_file_others_may_read_is_refused_naming_setting_and_file(tmp_path: Path,
                                                                   mode: int) -> None:
    path = _file(tmp_path, CANARY, mode)
    with pytest.raises(Refused) as err:
        read_secret_file(path, "billing.webhook_secrets_file", Refused)
    assert err.value.kind == "mode"
    text = str(err.value)
    assert text.startswith(f"billing.webhook_secrets_file: {path} ")
    assert f"mode {mode:04o}" in text and f"chmod 600 {path}" in text and CANARY not in text


def test_the_reader_strips_and_names_every_other_problem(tmp_path: Path) -> None:
    assert read_secret_file(_file(tmp_path, f"  {CANARY}\n\n", 0o600), "x.y_file",
                            Refused) == CANARY
    assert read_secret_file(_file(tmp_path, CANARY, 0o400, "ro"), "x.y_file", Refused) == CANARY
    directory = tmp_path / "d"
    directory.mkdir(mode=0o700)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    binary.chmod(0o600)
    cases: list[tuple[Path, SecretFileProblem]] = [
        (tmp_path / "absent", "missing"), (_file(tmp_path, " \n", 0o600, "blank"), "empty"),
        (directory, "invalid"), (binary, "invalid")]
    for path, kind in cases:
        with pytest.raises(Refused) as err:
            read_secret_file(path, "x.y_file", Refused)
        text = str(err.value)
        assert err.value.kind == kind and text.startswith("x.y_file: ") and str(path) in text


def test_webhook_secrets_and_usage_tokens_from_a_private_file(tmp_path: Path) -> None:
    billing = _file(tmp_path, f"{CANARY}\nwhsec_next\n", 0o600, "billing")  # rotation: two
    partner = _file(tmp_path, "whsec_partner_real\n", 0o600, "partner")
    tokens = _file(tmp_path, "usage_real_token\n", 0o600, "tokens")
    cfg = load_config(env={}, overrides={"billing": {"webhook_secrets_file": str(billing)},
                                         "partner": {"webhook_secrets_file": str(partner)},
                                         "usage": {"api_tokens_file": str(tokens)}})
    assert cfg.billing.webhook_secrets == [CANARY, "whsec_next"]
    assert cfg.partner.webhook_secrets == ["whsec_partner_real"]
    assert cfg.usage.api_tokens == ["usage_real_token"]
    assert CANARY not in repr(cfg) and CANARY not in str(cfg.public())
    billing.chmod(0o644)
    with pytest.raises(ConfigError) as err:
        load_config(env={}, overrides={"billing": {"webhook_secrets_file": str(billing)}})
    assert err.value.code == "auth.file_mode"
    assert "billing.webhook_secrets_file" in err.value.message and CANARY not in err.value.message
    with pytest.raises(ConfigError) as err:
        load_config(env={}, overrides={"usage": {"api_tokens_file": str(tmp_path / "none")}})
    assert err.value.code == "auth.file_unreadable" and "usage.api_tokens_file" in err.value.message


# Where a file's permission bits are looked at: the reader itself, and nothing else.
_MODE_CHECK = re.compile(r"0o077|S_IMODE|st_mode")


def test_no_other_code_reads_a_secret_file_by_hand() -> None:
    """The secret-file readers (platform credentials, admin token, broker credentials and
    seeds, store key, audit key, TLS keys, webhook secrets) all use ``read_secret_file``."""
    hand_written = [f"{path.relative_to(ROOT)}:{n}"
                    for top in ("actors", "gateway")
                    for path in sorted((ROOT / top).rglob("*.py"))
                    if path.name != "secret_file.py"
                    for n, line in enumerate(path.read_text().splitlines(), 1)
                    if _MODE_CHECK.search(line)]
    assert hand_written == []
