"""The docs stay true to the code: every configuration setting and every command is documented."""

from __future__ import annotations

from pathlib import Path

import msgspec

from gateway.cli import _command_modules
from gateway.config import Config

ROOT = Path(__file__).resolve().parents[2]


def _settings(struct: type[msgspec.Struct], prefix: str = "") -> list[str]:
    out = []
    for f in msgspec.structs.fields(struct):
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct):
            out += _settings(f.type, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def _documented_as(setting: str) -> str:
    """Every platform's ``auth`` table has the same settings, documented once."""
    _, _, rest = setting.partition(".")
    return f"<platform>.{rest}" if rest.startswith("auth.") else setting


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [s for s in _settings(Config) if f"`{_documented_as(s)}`" not in doc
               or (".auth." in s and f"`{s.split('.auth.')[0]}.auth`" not in doc)]
    assert not missing, f"undocumented settings in docs/configuration.md: {missing}"


def test_readme_names_every_command() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [c for c in _command_modules() if f"erpgw {c}" not in readme]
    assert not missing, f"commands missing from README.md: {missing}"
