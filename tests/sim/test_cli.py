"""``erpgw sim`` as a user meets it: the scenario format in --help, --check, errors that name
the field, a standalone run with a scenario, and ``erpgw sim audit``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import msgspec
import pytest

from gateway.cli import build_parser, main
from sim import SimConfig

from .conftest import HOST, Http, free_port, running_sim
from .test_erp import bulk, entry
from .test_scenario import MONTH_END


def sim_help() -> str:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    return str(commands["sim"].format_help())


def test_help_documents_the_scenario_format_and_the_audit_subcommand() -> None:
    text = sim_help()
    for needle in ("--scenario", "--check", "[[http]]", "[[webhooks]]", "[[bill_run]]",
                   "error_mix", "rate_limit_rate", "commit_then_timeout_rate", "mangle_modes",
                   "drift_modes", "--scenario month-end", "audit", "--erp-concurrency-limit",
                   "--billing-rate-limit"):
        assert needle in text, needle


def test_check_prints_the_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--scenario", str(MONTH_END), "--check"]) == 0
    out = capsys.readouterr().out
    assert "scenario month-end" in out
    assert "erp/*: outage=True" in out
    assert "seed 2025: OK" in out
    assert main(["sim", "--scenario", str(MONTH_END), "--check", "--seed", "9"]) == 0
    assert "seed 9: OK" in capsys.readouterr().out


def test_invalid_scenario_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[webhooks]]\nat_s = 0\nfor_s = 5\nreplay_rate = 1.5\n")
    assert main(["sim", "--scenario", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "scenario.invalid" in err
    assert f"{bad}: webhooks[0].replay_rate: Expected `float` <= 1.0" in err
    assert "Traceback" not in err


def test_check_without_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--check"]) == 2
    assert "--check needs --scenario" in capsys.readouterr().err


async def run_cli(*argv: str) -> int:
    # urllib blocks: run the command in a thread while the sim serves in this loop.
    code: int = await anyio.to_thread.run_sync(main, list(argv))
    return code


async def test_audit_json_and_human_report(sim: Http, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("sim", "audit", "--url", sim.base, "--json") == 0
    doc = msgspec.json.decode(capsys.readouterr().out)
    assert doc["issued"] == 0
    assert "faults" in doc

    await bulk(sim, entry())  # a posting nothing issued: the audit must flag it
    assert await run_cli("sim", "audit", "--url", sim.base) == 1
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if "unexpected (UNEXPECTED)" in ln]
    assert line.split()[-1] == "1"
    assert "PROBLEMS: 1 posting(s) with no source event" in out
    assert "ORDER_OK" in out


async def test_audit_of_nothing_listening_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("sim", "audit", "--url", f"http://{HOST}:{free_port()}") == 3
    err = capsys.readouterr().err
    assert "cannot reach the simulator" in err and "Traceback" not in err
    assert await run_cli("sim", "audit", "--url", "ftp://x") == 2


async def test_audit_reports_webhook_faults(capsys: pytest.CaptureFixture[str]) -> None:
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/x")
    async with running_sim(config) as http:
        await http.put("/sim/v1/faults", json={"erp": {"outage": True}})
        await http.post("/erp/v1/journal-entries/bulk", json={"items": [entry()]})
        assert await run_cli("sim", "audit", "--url", http.base) == 0
    out = capsys.readouterr().out
    assert "injected HTTP faults:" in out
    assert "erp/journal-entries.bulk" in out and "outage 1" in out


async def test_standalone_sim_runs_a_scenario_and_logs_its_schedule(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text('name = "standalone"\n[[http]]\nservice = "erp"\nat_s = 0\n'
                        'for_s = 60\nerror_rate = 1.0\nstatus = 502\n')
    port = free_port()
    log = (tmp_path / "sim.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - a child we stop below
        [sys.executable, "-m", "gateway", "sim", "--port", str(port), "--scenario",
         str(scenario), "--webhook-url", f"http://{HOST}:{free_port()}/x"],
        stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            http = Http(session, f"http://{HOST}:{port}")
            with anyio.fail_after(20):
                while True:
                    assert proc.poll() is None, (tmp_path / "sim.log").read_text()
                    try:
                        if (await http.get("/healthz")).status == 200:
                            break
                    except aiohttp.ClientError:
                        pass
                    await anyio.sleep(0.05)
            reply = await http.post("/erp/v1/journal-entries/bulk", json={"items": [entry()]})
            assert reply.status == 502
    finally:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.wait() == 0
    text = (tmp_path / "sim.log").read_text()
    assert "scenario standalone: 0 bill run(s), 1 HTTP fault window(s)" in text
    assert "erp/*: error_rate=1.0, status=502" in text
