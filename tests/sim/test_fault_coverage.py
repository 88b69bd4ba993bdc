"""Every fault the simulator can inject is exercised by a test, and latency distributions
delay real HTTP answers by exactly what they draw.

Where each fault kind is tested (over real HTTP unless noted):

=============================  ===========================================================
latency (fixed, distributions)  test_faults (fixed), test_scenario (pure draws, windows),
                                this file (lognormal over HTTP), test_revenue_faults (uniform)
error mixes 500/502/503         test_scenario, test_revenue_faults
429 storms with Retry-After     test_faults, test_scenario, test_revenue_faults
outage windows                  test_faults, test_scenario, test_revenue_faults
commit-then-timeout / -reset    test_faults, test_scenario, test_revenue_faults
connection resets               test_scenario, test_revenue_faults
silent drops                    test_scenario
partial batch failure           test_partial_failure (ERP items), test_revenue_faults (lines)
altered amounts                 test_altered_amount
duplicate / out-of-order /      test_webhook_faults (duplicates, reordering, replays)
replayed webhooks
schema drift                    test_webhook_faults (unknown field, missing field, int to
                                string, renamed enum, nested type change)
signature mangling              test_webhook_faults
=============================  ===========================================================
"""

from __future__ import annotations

import ast
import random
import re
import time
from pathlib import Path

import msgspec

from sim import SimConfig
from sim._faults import (
    DRIFT_MODES,
    MANGLE_MODES,
    BillingFaults,
    ErpFaults,
    HttpFaults,
    LognormalLatency,
    plan_request,
)

from .conftest import HOST, free_port, running_sim
from .test_erp import entry

BULK = "/erp/v1/journal-entries/bulk"
HERE = Path(__file__).parent


def _knobs() -> list[str]:
    names = [f.name for f in msgspec.structs.fields(HttpFaults)]
    names += [f.name for f in msgspec.structs.fields(BillingFaults)]
    return names + list(DRIFT_MODES) + list(MANGLE_MODES)


# Each fault setting or mode -> the sim test that sets it and asserts what it does (over real
# HTTP unless its name says "plan"). A new setting needs a row here, and the row's test must
# exist, name the setting and assert.
EXERCISED_BY: dict[str, str] = {
    "error_rate": "test_faults.py::test_error_rate_one_commits_nothing_and_clearing_restores",
    "status": "test_faults.py::test_other_injected_status",
    "latency_ms": "test_erp_growth.py::test_concurrency_limit_answers_sss_request_limit_exceeded",
    "outage": "test_faults.py::test_outage_wins_over_everything",
    "commit_then_timeout_rate":
        "test_faults.py::test_commit_then_timeout_commits_and_the_retry_is_a_replay",
    "error_mix": "test_revenue_faults.py::test_error_mix_answers_its_statuses_and_records_nothing",
    "latency":
        "test_fault_coverage.py::test_lognormal_latency_delays_each_request_by_its_seeded_draw",
    "rate_limit_rate": "test_revenue_faults.py::test_429_storm_carries_retry_after",
    "retry_after_s": "test_revenue_faults.py::test_429_storm_carries_retry_after",
    "reset_rate": "test_scenario.py::test_reset_faults_reset_the_connection_and_commit_nothing",
    "commit_then_reset_rate":
        "test_scenario.py::test_commit_then_reset_commits_and_the_retry_is_a_replay",
    "silent_drop_rate": "test_scenario.py::test_silent_drop_answers_created_but_records_nothing",
    "item_reject_rate": "test_partial_failure.py::test_bulk_rejects_a_share_and_processes_the_rest",
    "alter_amount_rate": "test_altered_amount.py::test_altered_postings_show_in_the_audit",
    "duplicate_rate":
        "test_webhook_faults.py::test_duplicates_arrive_as_planned_some_concurrently_each_signed",
    "duplicate_max":
        "test_webhook_faults.py::test_duplicates_arrive_as_planned_some_concurrently_each_signed",
    "duplicate_concurrent_rate":
        "test_webhook_faults.py::test_duplicates_arrive_as_planned_some_concurrently_each_signed",
    "reorder_window": "test_webhook_faults.py::test_reordering_shuffles_within_windows_only",
    "replay_rate": "test_webhook_faults.py::"
                   "test_replays_carry_the_captured_body_with_an_old_timestamp_and_are_refused",
    "replay_age_s": "test_webhook_faults.py::test_sources_add_up_and_a_mode_is_used_once",
    "mangle_rate":
        "test_webhook_faults.py::test_mangled_deliveries_are_all_refused_and_never_posted",
    "mangle_modes":
        "test_webhook_faults.py::test_a_receiver_that_skips_verification_is_caught_by_the_audit",
    "drift_rate": "test_webhook_faults.py::"
                  "test_drifted_deliveries_refused_except_the_tolerated_unknown_field",
    "drift_modes": "test_webhook_faults.py::"
                   "test_mangle_and_drift_modes_are_drawn_from_the_configured_ones",
    **{mode: "test_webhook_faults.py::test_drift_modes_break_the_schema_where_they_say"
       for mode in ("unknown_field", "missing_field", "int_to_string", "renamed_enum",
                    "nested_type_change")},
    **{mode: "test_webhook_faults.py::test_every_mangle_mode_fails_verification"
       for mode in ("wrong_secret", "body_byte", "header_missing", "header_garbled",
                    "v0_only")},
}


def _test_source(ref: str) -> str | None:
    """The source of test function ``file::name`` in this folder (decorators included), or
    None when there is no such test."""
    file, name = ref.split("::")
    path = HERE / file
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            parts = [ast.get_source_segment(text, d) or "" for d in node.decorator_list]
            return "".join(parts) + (ast.get_source_segment(text, node) or "")
    return None


def test_every_fault_setting_and_mode_is_set_by_a_test_that_asserts_its_effect() -> None:
    """Not "the name appears in some file": each setting maps to one test, which exists,
    sets the setting (its name as a key, a keyword or a mode string) and asserts."""
    missing = sorted(set(_knobs()) - set(EXERCISED_BY))
    assert missing == [], f"fault settings no test is registered for: {missing}"
    stale = sorted(set(EXERCISED_BY) - set(_knobs()))
    assert stale == [], f"registered settings the simulator no longer has: {stale}"
    problems = []
    for knob, ref in sorted(EXERCISED_BY.items()):
        source = _test_source(ref)
        if source is None:
            problems.append(f"{knob}: no test {ref}")
            continue
        sets = re.search(rf"[\"']{knob}[\"']|\b{knob}\s*=", source)
        if sets is None:
            problems.append(f"{knob}: {ref} does not set it")
        if "assert" not in source:
            problems.append(f"{knob}: {ref} asserts nothing")
    assert problems == []


def test_the_registry_check_refuses_a_test_that_only_mentions_a_setting() -> None:
    """The check above is not blind: a missing test, and one not setting the knob, are seen."""
    assert _test_source("test_faults.py::test_no_such_test") is None
    source = _test_source("test_faults.py::test_outage_wins_over_everything")
    assert source is not None and re.search(r"[\"']reorder_window[\"']", source) is None


async def test_lognormal_latency_delays_each_request_by_its_seeded_draw() -> None:
    seed = 5
    latency = {"dist": "lognormal", "p50_ms": 30, "p99_ms": 120}
    # The delays the sim will draw: the bulk endpoint's generator, in request order.
    rng = random.Random(f"{seed}/http/erp/journal-entries.bulk")
    faults = ErpFaults(latency=LognormalLatency(p50_ms=30, p99_ms=120))
    expected = [plan_request(faults, rng).delay_s for _ in range(12)]
    assert len(set(expected)) == 12 and all(0 < d <= 1.2 for d in expected)
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/x",
                       seed=seed)
    async with running_sim(config) as sim:
        await sim.put("/sim/v1/faults", json={"erp": {"latency": latency}})
        for i, delay in enumerate(expected):
            started = time.perf_counter()
            reply = await sim.post(BULK, json={"items": [entry(key=f"k{i}",
                                                               external_id=f"in_{i}")]})
            took = time.perf_counter() - started
            assert reply.status == 200
            assert took >= delay - 0.002  # the drawn delay, whatever the machine's speed
        injected = (await sim.get("/sim/v1/audit")).body["faults"]["http"]
        assert injected["erp/journal-entries.bulk"] == {"latency": 12}


def test_sim_help_documents_the_revenue_section_and_the_amount_fault() -> None:
    from .test_cli import sim_help

    text = sim_help()
    for needle in ("revenue = {", "cpq = {", "alter_amount_rate", "item_reject_rate",
                   "--scenario month-end", "ERP outage"):
        assert needle in text, needle
