"""The command line as a user meets it: help everywhere, errors that name the problem and
never a traceback, a demo that reports in JSON."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from gateway.broker import free_port
from gateway.cli import build_parser, main


def erpgw(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def erpgw_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``erpgw args`` through the command line's own entry point in this process (no
    interpreter start and imports per call, for refusals that never start anything): the exit
    code and stderr. Any exception but the exit escapes and fails the test, as a traceback
    would."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def test_every_command_and_option_is_described(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command has a summary in ``erpgw --help`` and a description of its own, and
    every option says what it does (argparse would print an option without a word)."""
    parser = build_parser()
    group = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
    commands = group.choices
    assert {"up", "sim", "demo", "dlq", "replay", "reconcile"} <= set(commands)
    summaries = {a.dest: a.help for a in group._choices_actions}
    for name, sub in commands.items():
        assert summaries.get(name), f"erpgw {name} has no summary in erpgw --help"
        assert sub.description, f"erpgw {name} has no description"
        undocumented = [a.option_strings or [a.dest] for a in sub._actions
                        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
                        and (not a.help or a.help == argparse.SUPPRESS)]
        assert undocumented == [], f"erpgw {name}: options without help {undocumented}"
    with pytest.raises(SystemExit) as exited:  # argparse's --help exits 0 after printing
        main(["--help"])
    assert exited.value.code == 0
    top = capsys.readouterr().out
    for name, summary in summaries.items():
        assert name in top and str(summary).split()[0] in top


def test_bad_config_names_the_setting(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "erpgw.toml"
    cfg.write_text("[http]\nport = 'eighty'\n")
    code, err = erpgw_here(capsys, "up", "--config", str(cfg))  # refused before starting
    assert code == 2
    assert "http.port" in err and "Traceback" not in err


def test_print_config_masks_secrets(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    # In this process, with no ERPGW_ variable but the secret (as a clean environment).
    for name in [n for n in os.environ if n.startswith("ERPGW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ERPGW_BILLING_WEBHOOK_SECRETS", "canary-secret-123")
    capsys.readouterr()
    assert main(["up", "--print-config"]) == 0
    out, err = capsys.readouterr()
    doc = msgspec.json.decode(out)
    assert doc["billing"]["webhook_secrets"] == ["***"]
    assert "canary-secret-123" not in out + err


@pytest.mark.integration
def test_busy_ports_fail_fast_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = erpgw("up", "--http-port", str(port), "--data-dir", str(tmp_path), timeout=30)
        assert r.returncode == 3
        assert "http.port_busy" in r.stderr and str(port) in r.stderr
        assert "Traceback" not in r.stderr
        r = erpgw("sim", "--port", str(port), timeout=30)
        assert r.returncode == 3
        assert str(port) in r.stderr and "Traceback" not in r.stderr
        # The admin listener's port too, named with its flag.
        r = erpgw("up", "--http-port", str(free_port()), "--admin-port", str(port),
                  "--data-dir", str(tmp_path), timeout=30)
        assert r.returncode == 3 and "Traceback" not in r.stderr
        assert "http.port_busy" in r.stderr and "--admin-port" in r.stderr
        assert f"admin requests on 127.0.0.1:{port}" in r.stderr


# The default demo's JSON report (every flow): tests/gateway/test_demo_revenue_gl.py, which
# reads the same run for the revenue -> GL flow.


@pytest.mark.integration
@pytest.mark.timeout(480)
def test_demo_under_faults_reports_recovery_and_dlq_exact() -> None:
    # Issued over ~2 s, so that every fault fires while the run is in flight.
    r = erpgw("demo", "--invoices", "600", "--rate", "300", "--json", "--flows", "invoices",
              "--faults", "kill-gateway,erp-outage,poison,duplicate-webhooks", timeout=450)
    assert r.returncode == 0, r.stderr + r.stdout
    doc = msgspec.json.decode(r.stdout)
    assert doc["faults"] == ["kill-gateway", "erp-outage", "poison", "duplicate-webhooks"]
    assert (doc["lost"], doc["duplicates"], doc["posted"]) == (0, 0, 600)
    assert doc["dlq_exact"] is True and doc["dead_lettered"] == 5
    rec = doc["recovery_s"]["erp-outage"]  # holds every posting back during its window
    assert rec["first_posting_s"] is not None and rec["first_posting_s"] >= 0
    assert rec["drained_s"] >= rec["first_posting_s"]
    assert doc["recovery_s"]["kill-gateway"]["drained_s"] is not None
    assert doc["webhook_faults"]["deliveries"]["duplicate"]["sent"] > 0  # the fault was felt


def test_demo_refuses_an_unknown_flow_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = erpgw_here(capsys, "demo", "--flows", "usage,teleport")
    assert code != 0 and "teleport" in err and "Traceback" not in err
    code, err = erpgw_here(capsys, "demo", "--flows", "changes")
    assert code != 0 and "add 'deals'" in err


def test_demo_refuses_an_unknown_fault(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = erpgw_here(capsys, "demo", "--faults", "erp-outage,meteor-strike")
    assert code == 2  # a usage error
    assert "meteor-strike" in err and "Traceback" not in err


@pytest.mark.parametrize(("args", "needle"), [
    (("--faults", "kill-nats-leader"), "--faults kill-nats-leader needs --cluster N"),
    (("--cluster", "3", "--nats-url", "nats://127.0.0.1:1"), "drop --nats-url"),
    (("--cluster", "3", "--faults", "broker-restart"), "needs the single embedded broker"),
    (("--gateways", "0"), "argument --gateways: 0 is out of range: 1 to 8"),
    (("--cluster", "three"), "argument --cluster: 'three' is not a whole number"),
    (("--roles", "ingress,billing/sync,revenue,usage,commercial,close"),
     "--roles gives 2 processes' roles: pass --gateways 2"),
    (("--gateways", "2", "--roles", "ingress,billing/sync,revenue"),
     "argument --roles: role 'usage' runs in no process"),
    (("--dialects", "stripe", "--faults", "out-of-order"),
     "out-of-order amends invoices, which the simulator does not do in Stripe's dialect"),
])
def test_demo_refuses_scale_out_options_that_do_not_fit(
        capsys: pytest.CaptureFixture[str], args: tuple[str, ...], needle: str) -> None:
    code, err = erpgw_here(capsys, "demo", *args)
    assert code == 2 and needle in err and "Traceback" not in err


def test_demo_on_a_cluster_rides_out_the_billing_leader_and_a_frozen_gateway() -> None:
    r = erpgw("demo", "--cluster", "3", "--gateways", "1", "--invoices", "150", "--flows",
              "invoices", "--faults", "kill-nats-leader,kill-nats-node,freeze-gateway",
              "--json", timeout=600)
    doc = msgspec.json.decode(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0, r.stderr[-2000:]
    assert doc["ok"] and doc["lost"] == 0 and doc["duplicates"] == 0 and doc["drained"]
    assert doc["posted"] == doc["issued"] == 150
    assert doc["revenue"]["duplicate_lines"] == 0
    assert set(doc["killed_nats_nodes"]) == {"kill-nats-leader", "kill-nats-node"}
    leader, node = (doc["killed_nats_nodes"][f] for f in ("kill-nats-leader", "kill-nats-node"))
    assert leader["node"] == leader["billing_leader"] != ""  # it was the leader
    assert node["node"] != node["billing_leader"] != ""  # it was not
    assert doc["scale_out"]["cluster_nodes"] == 3
    assert doc["scale_out"]["work_shares"][0]["processed"] > 0
