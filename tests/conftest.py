"""Shared fixtures: a real nats-server on a free loopback port, started per test."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
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


# The longest test files, longest first (seconds of one CI run, setup included). With
# ``--dist loadfile --no-loadscope-reorder`` (the Makefile) the workers take files in
# collection order, so these start first and the short files fill in behind them, instead
# of one long file starting last and running alone at the end. Keep it roughly current with
# the table above; a file missing from it only starts later.
_LONGEST_FIRST = (
    "tests/integration/test_end_to_end.py",
    "tests/bench/test_smoke.py",
    "tests/integration/test_revenue_flow.py",
    "tests/gateway/test_cli.py",
    "tests/integration/test_platform_faults.py",
    "tests/integration/test_promises.py",
    "tests/sim/test_openapi.py",
    "tests/integration/test_reconcile.py",
    "tests/integration/test_closed_periods.py",
    "tests/integration/test_process_faults.py",
    "tests/integration/test_dlq.py",
    "tests/integration/test_two_gateways.py",
    "tests/gateway/test_package.py",
    "tests/integration/test_deal_flow.py",
    "tests/gateway/test_demo_revenue_gl.py",
    "tests/integration/test_payment_flow.py",
    "tests/integration/test_usage_crash.py",
    "tests/gateway/test_demo_period_close.py",
    "tests/integration/test_sync_lane.py",
    "tests/integration/test_revenue_to_gl.py",
)
_RANK = {path: rank for rank, path in enumerate(_LONGEST_FIRST)}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (a stable sort: the order within a file is kept)."""
    items.sort(key=lambda item: _RANK.get(item.nodeid.split("::", 1)[0], len(_RANK)))


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
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    """A gateway process's ledger on a real SQLite file of the test's own."""
    ledger = await Ledger.open(tmp_path / "ledger.db")
    try:
        yield ledger
    finally:
        await ledger.close()


@pytest.fixture
async def other_ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    """The ledger of a second gateway process (its own data directory)."""
    ledger = await Ledger.open(tmp_path / "other" / "ledger.db")
    try:
        yield ledger
    finally:
        await ledger.close()


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Tests that run ``erpgw`` in this process (``gateway.cli.main``) set logging up as the
    command does: a handler on the stderr of that moment (a capture that is closed later) and
    the root level. Put both back after every test, so no test sees another's logging."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("aiohttp.access", "nats", "asyncio")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in quiet.items():
        logging.getLogger(name).setLevel(lvl)
