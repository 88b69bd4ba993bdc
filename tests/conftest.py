"""Shared fixtures: a real nats-server on a free loopback port, started per test."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from actors.infra.ledger import Ledger
from gateway.broker import EmbeddedBroker, free_port

# Deterministic property tests: derandomized, no deadline flakiness on a loaded 2-core box.
settings.register_profile("erpgw", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "erpgw"))


# Seconds per test file (setup + call + teardown summed, so a module fixture counts once), shown
# at the end of every run: the suite has a time budget, and this says where the time goes.
_FILE_SECONDS: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _FILE_SECONDS[report.nodeid.split("::", 1)[0]] += report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if len(_FILE_SECONDS) < 2:
        return
    total = sum(_FILE_SECONDS.values())
    terminalreporter.write_sep("-", f"slowest test files ({total:.0f} s of test time in all)")
    for path, seconds in sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1])[:20]:
        terminalreporter.write_line(f"{seconds:8.1f} s  {path}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[EmbeddedBroker]:
    # Authentication on, as in production; the seeds go where a gateway with data dir
    # tmp_path/"gw" (the integration tests' live gateway) finds them.
    b = EmbeddedBroker(tmp_path / "nats", port=free_port(),
                       identities_dir=tmp_path / "gw" / "identities")
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


@pytest.fixture
async def other_ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    """The ledger of a second gateway process (its own data directory)."""
    ledger = await Ledger.open(tmp_path / "other" / "ledger.db")
    try:
        yield ledger
    finally:
        await ledger.close()
