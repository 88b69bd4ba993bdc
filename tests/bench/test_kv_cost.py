"""The shared guards' cost benchmark runs on a real broker and reports every leg as a ratio to
the atomic stream write measured in the same run (its figures are not asserted: speed is the
bench's business, not a test's)."""

from __future__ import annotations

import json

import pytest

from bench import kv_cost

pytestmark = pytest.mark.integration


def test_every_leg_is_measured_against_the_same_runs_stream_write(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert kv_cost.main(["--events", "40", "--batch", "20", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["us_per_event"]) == {"stream", "stream_commit", "stream_each", "versions",
                                        "versions_each", "uploads"}
    assert all(v > 0 for v in doc["us_per_event"].values())
    assert doc["ratio_to_stream"]["stream"] == 1.0
    for leg, us in doc["us_per_event"].items():
        # rounded figures: the ratio of the rounded µs may differ in the last digit
        assert doc["ratio_to_stream"][leg] == pytest.approx(
            us / doc["us_per_event"]["stream"], abs=0.02)


def test_events_must_fill_whole_batches(capsys: pytest.CaptureFixture[str]) -> None:
    assert kv_cost.main(["--events", "30", "--batch", "20"]) == 2
    assert "--events must be a multiple of --batch" in capsys.readouterr().err
