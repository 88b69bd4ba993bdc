"""``erpgw close run`` as a user meets it: it names a bad period, and without the gateway's
ledger it stops naming the data directory, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .test_cli import erpgw_here


def erpgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_bad_period_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = erpgw_here(capsys, "close", "run", "--period", "2026-13")
    assert code == 2 and "--period must be YYYY-MM, got '2026-13'" in err
    assert "Traceback" not in err
    code, err = erpgw_here(capsys, "close", "run")
    assert code == 2 and "--period" in err


def test_without_the_gateway_ledger_it_names_the_data_dir(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = erpgw_here(capsys, "close", "run", "--period", "2026-01", "--data-dir",
                           str(tmp_path / "nowhere"))
    assert code == 2
    assert "no gateway ledger" in err and "--data-dir" in err
    assert "Traceback" not in err


def test_help_describes_the_run() -> None:
    r = erpgw("close", "run", "--help")
    assert r.returncode == 0
    for option in ("--period", "--entity", "--timeout", "--json", "--revenue-url"):
        assert option in r.stdout


def test_status_names_a_bad_period_and_a_missing_ledger_and_documents_its_exit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    # In this process (the same parser and command as `erpgw close status`): no start-up cost.
    with pytest.raises(SystemExit) as bad:
        main(["close", "status", "--period", "26-01"])
    err = capsys.readouterr().err
    assert bad.value.code == 2 and "--period must be YYYY-MM, got '26-01'" in err
    assert main(["close", "status", "--period", "2026-01", "--data-dir",
                 str(tmp_path / "nowhere")]) == 2
    assert "no gateway ledger" in capsys.readouterr().err
    with pytest.raises(SystemExit) as helped:
        main(["close", "status", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert helped.value.code == 0
    for text in ("--period", "--entity", "--json", "unposted", "dead_lettered", "recon_break",
                 "in_doubt", "revenue_unposted", "0 when nothing blocks"):
        assert text in out, text


def test_status_prints_each_kind_with_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from actors.close import OpenLetter, close_blockers
    from actors.reconcile import Break
    from gateway.commands.close import LISTED, _print_status

    letters = [OpenLetter(n, "erp.period_closed", "billing", f"in_{n}", "2026-11", "2026-12")
               for n in range(1, LISTED + 3)]
    status = close_blockers("default", "2026-11", letters=letters, documents=[], revenue=[],
                            breaks=[Break("missing", "in_x", "no posting")])
    _print_status(status.to_builtins())
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("close 2026-11 entity default: NOT ready, 23 item(s) block the close")
    assert out[1] == ("  close.unposted (1): erpgw reconcile --period 2026-11 --repair")
    assert "  close.dead_lettered (22): erpgw dlq replay --code erp.period_closed " \
           "--repost-open" in out
    assert "      -> erpgw dlq replay --seq 1 --repost-open" in out
    assert "    ... and 2 more (--json lists them all)" in out
    _print_status(close_blockers("default", "2026-11", letters=[], documents=[], revenue=[],
                                 breaks=[]).to_builtins())
    assert capsys.readouterr().out == ("close 2026-11 entity default: ready, nothing blocks "
                                       "the close\n")
