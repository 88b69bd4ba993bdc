"""Log lines as an operator's collector reads them: ISO-8601 UTC timestamps, the structured
fields (from ``extra=`` or bound for a block), JSON chosen from the config or the
environment, and a bad level refused with the setting's name."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest

from actors.logfields import log_fields, trace_id_of
from gateway.config import load_config
from gateway.logs import setup_logging


class Stderr:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Stderr]:
    """What the handler ``setup_logging`` installs writes; the root logger restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield Stderr(capsys)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_utc_time_and_the_fields(stderr: Stderr) -> None:
    setup_logging("info", json=True)
    log = logging.getLogger("erpgw.test")
    with log_fields(correlation_id="corr-1", platform="erp"):
        log.warning("posting %s failed\r\nforged", "in_1",
                    extra={"code": "erp.validation", "business_key": "billing:in_1:v1"})
    log.info("outside")
    first, second = (msgspec.json.decode(line) for line in stderr.getvalue().splitlines())
    assert first["ts"].endswith("Z") and first["ts"][10] == "T"  # 2026-12-07T00:41:02.123Z
    assert first["level"] == "warning" and first["logger"] == "erpgw.test"
    assert first["msg"] == "posting in_1 failed\r\nforged"  # escaped inside one line
    assert {k: first[k] for k in ("correlation_id", "business_key", "code", "platform")} == {
        "correlation_id": "corr-1", "business_key": "billing:in_1:v1",
        "code": "erp.validation", "platform": "erp"}
    assert "correlation_id" not in second  # the binding ended with its block


async def test_bound_fields_stay_with_their_task(stderr: Stderr) -> None:
    setup_logging("info", json=True)
    log = logging.getLogger("erpgw.test")

    async def work(key: str) -> None:
        with log_fields(business_key=key):
            await anyio.sleep(0.01)  # the other task runs in between
            log.info("done")

    async with anyio.create_task_group() as tg:
        tg.start_soon(work, "a")
        tg.start_soon(work, "b")
    keys = sorted(msgspec.json.decode(line)["business_key"]
                  for line in stderr.getvalue().splitlines())
    assert keys == ["a", "b"]


def test_human_lines_are_utc_with_fields_after_the_message(stderr: Stderr) -> None:
    setup_logging("info")
    logging.getLogger("erpgw.test").info("hello", extra={"trace_id": "abc"})
    line = stderr.getvalue().strip()
    assert line.endswith("erpgw.test: hello trace_id=abc")
    assert line.split(" ", 1)[0].endswith("Z")


def test_trace_id_of_a_traceparent() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_id_of(tp) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_of("garbage") is None and trace_id_of(None) is None


def test_json_from_the_config_or_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "erpgw.toml"
    cfg.write_text("[log]\njson = true\n")
    assert load_config(cfg, env={}).log.json is True
    assert load_config(env={"ERPGW_LOG_JSON": "1"}).log.json is True
    assert load_config(env={}).log.json is False


def _erpgw(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={"PATH": os.environ.get("PATH", ""), **env})


@pytest.mark.parametrize("how", ["env", "file"])
def test_a_bad_log_level_is_a_usage_error_naming_the_setting(tmp_path: Path, how: str) -> None:
    if how == "env":
        r = _erpgw("up", "--data-dir", str(tmp_path), env={"ERPGW_LOG_LEVEL": "verbose"})
    else:
        cfg = tmp_path / "erpgw.toml"
        cfg.write_text('log_level = "loud"\n')
        r = _erpgw("up", "--config", str(cfg), "--data-dir", str(tmp_path), env={})
    assert r.returncode == 2, r.stderr
    assert "log_level" in r.stderr and "Traceback" not in r.stderr
    assert ("verbose" if how == "env" else "loud") in r.stderr
    assert not (tmp_path / "nats").exists()  # refused before anything started
