"""``erpgw up`` tunes Python's garbage collector (``[runtime]``, ``gateway.gc_tuning``): the
thresholds before the gateway starts, a freeze of what exists once it has started; both
configurable, a bad threshold refused naming the setting."""

from __future__ import annotations

import argparse
import gc
import re
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from gateway import gc_tuning
from gateway.commands import up
from gateway.config import Config, ConfigError, RuntimeConfig, load_config


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, afterwards."""
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_defaults_and_the_environment_set_the_thresholds(collector: None) -> None:
    assert Config().runtime.gc_threshold == [10_000, 20, 20] and Config().runtime.gc_freeze
    cfg = load_config(None, env={"ERPGW_RUNTIME_GC_THRESHOLD": "700,10,10",
                                 "ERPGW_RUNTIME_GC_FREEZE": "false"})
    assert cfg.runtime == RuntimeConfig(gc_threshold=[700, 10, 10], gc_freeze=False)
    gc_tuning.set_thresholds(cfg.runtime)
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("bad", ["700,10", "0,10,10", "a,b,c"])
def test_a_bad_threshold_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"runtime\.gc_threshold"):
        load_config(None, env={"ERPGW_RUNTIME_GC_THRESHOLD": bad})


def test_what_exists_once_started_is_frozen_unless_switched_off(
        collector: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="erpgw.runtime")
    gc.set_threshold(10_000, 20, 20)
    gc_tuning.freeze_started(RuntimeConfig(gc_freeze=False))
    assert gc.get_freeze_count() == 0
    assert "thresholds 10000,20,20, no objects frozen at start" in caplog.text
    gc_tuning.freeze_started(RuntimeConfig())
    assert gc.get_freeze_count() > 0
    said = re.search(r"thresholds 10000,20,20, (\d+) objects frozen at start", caplog.text)
    assert said is not None and int(said.group(1)) > 0


def test_erpgw_up_sets_the_thresholds_then_freezes_once_the_gateway_has_started(
        collector: None, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake_gateway(cfg: Config, *, ready: anyio.Event | None = None,
                           **_: Any) -> None:
        seen["threshold"] = gc.get_threshold()
        seen["frozen_before"] = gc.get_freeze_count()
        assert ready is not None
        ready.set()
        await anyio.sleep(0.05)  # the freeze runs once the gateway says it has started
        seen["frozen_after"] = gc.get_freeze_count()

    monkeypatch.setattr("gateway.app.run_gateway", fake_gateway)
    monkeypatch.setenv("ERPGW_RUNTIME_GC_THRESHOLD", "5000,15,15")
    args = argparse.Namespace(config=None, roles=None, print_config=False, log_json=False,
                              nats_url=None, nats_port=None, data_dir=None, log_level=None)
    assert up.cmd_up(args) == 0
    assert seen["threshold"] == (5000, 15, 15)
    assert seen["frozen_before"] == 0 and seen["frozen_after"] > 0


def test_the_baselines_run_with_the_gateway_s_collector_settings(
        collector: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime setting, not work: the bench's baseline processes take it too."""
    from bench import baseline

    seen: dict[str, Any] = {}

    async def fake_kind(kind: str, cfg: Any) -> dict[str, Any]:
        seen["threshold"] = gc.get_threshold()
        seen["frozen"] = gc.get_freeze_count()
        return {"kind": kind, "complete": True}

    gc.set_threshold(700, 10, 10)
    monkeypatch.setattr(baseline, "run_kind", fake_kind)
    assert baseline.main(["b2wl", '{"nats_url": "nats://x", "sim_url": "http://x", '
                                  '"events": 1}']) == 0
    assert seen["threshold"] == tuple(RuntimeConfig().gc_threshold) and seen["frozen"] > 0
