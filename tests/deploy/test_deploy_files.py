"""The shipped deployment files work as written: the production config example loads (every
key a real setting, no secret in it) and the systemd unit passes ``systemd-analyze verify``
with a real ``erpgw`` executable, running a command line the CLI accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "systemd" / "erpgw.service"
EXAMPLE = DEPLOY / "erpgw.example.toml"


def test_the_production_example_loads_and_holds_no_secret() -> None:
    cfg = load_config(EXAMPLE, env={})  # unknown keys or wrong types would raise
    assert cfg.streams.replicas == 3 and cfg.log.json and cfg.nats.url.count("nats://") == 3
    assert cfg.data_dir == "/var/lib/erpgw"
    # Its admin listener is off loopback, so it names a token file (never a token).
    assert cfg.admin.host == "0.0.0.0" and cfg.admin.token_file and cfg.admin.token is None
    assert cfg.admin.port != cfg.http.port
    doc = tomllib.loads(EXAMPLE.read_text())
    for section in ("billing", "usage", "partner"):
        assert not {"webhook_secrets", "api_tokens"} & set(doc.get(section, {}))


def _exec_start() -> list[str]:
    lines = [ln for ln in UNIT.read_text().splitlines() if ln.startswith("ExecStart=")]
    assert len(lines) == 1
    return shlex.split(lines[0].removeprefix("ExecStart="))


def test_the_unit_runs_a_command_the_cli_accepts() -> None:
    argv = _exec_start()
    assert Path(argv[0]).name == "erpgw"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "up" and str(args.config) == "/etc/erpgw/erpgw.toml"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    erpgw = Path(sys.executable).with_name("erpgw")
    assert erpgw.exists()
    # The unit as installed, but with this environment's real erpgw as the executable (the
    # verifier insists the ExecStart binary exists).
    unit = tmp_path / "erpgw.service"
    unit.write_text(UNIT.read_text().replace(_exec_start()[0], str(erpgw)))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "erpgw.service" not in r.stderr  # no warning about our unit either
