"""``erpgw close run`` as a user meets it: it names a bad period, and without the gateway's
ledger it stops naming the data directory, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def erpgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_bad_period_is_named() -> None:
    r = erpgw("close", "run", "--period", "2026-13")
    assert r.returncode == 2 and "--period must be YYYY-MM, got '2026-13'" in r.stderr
    assert "Traceback" not in r.stderr
    missing = erpgw("close", "run")
    assert missing.returncode == 2 and "--period" in missing.stderr


def test_without_the_gateway_ledger_it_names_the_data_dir(tmp_path: Path) -> None:
    r = erpgw("close", "run", "--period", "2026-01", "--data-dir", str(tmp_path / "nowhere"))
    assert r.returncode == 2
    assert "no gateway ledger" in r.stderr and "--data-dir" in r.stderr
    assert "Traceback" not in r.stderr


def test_help_describes_the_run() -> None:
    r = erpgw("close", "run", "--help")
    assert r.returncode == 0
    for option in ("--period", "--entity", "--timeout", "--json", "--revenue-url"):
        assert option in r.stdout


def test_status_names_a_bad_period_and_a_missing_ledger_and_documents_its_exit(
        tmp_path: Path) -> None:
    bad = erpgw("close", "status", "--period", "26-01")
    assert bad.returncode == 2 and "--period must be YYYY-MM, got '26-01'" in bad.stderr
    nowhere = erpgw("close", "status", "--period", "2026-01", "--data-dir",
                    str(tmp_path / "nowhere"))
    assert nowhere.returncode == 2 and "no gateway ledger" in nowhere.stderr
    assert "Traceback" not in bad.stderr + nowhere.stderr
    helped = erpgw("close", "status", "--help")
    assert helped.returncode == 0
    for text in ("--period", "--entity", "--json", "unposted", "dead_lettered", "recon_break",
                 "in_doubt", "revenue_unposted", "0 when nothing blocks"):
        assert text in " ".join(helped.stdout.split()), text
