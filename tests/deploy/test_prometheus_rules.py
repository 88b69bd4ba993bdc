"""The alert rules as Prometheus loads them: ``promtool check rules`` accepts the file and
``promtool test rules`` proves each alert fires on the series it is meant for (and not before
its ``for:``). promtool comes from Debian's ``prometheus`` package, installed here when missing
(root and apt-get needed; otherwise the tests skip, saying why)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "alerts.yml"
DASHBOARD = DEPLOY.parent / "grafana" / "erpgw.json"
_METRIC = re.compile(r"\b(erpgw_[a-z0-9_]+|process_[a-z0-9_]+)\b")


def rule_metrics(path: Path = RULES) -> set[str]:
    """Every metric name of ours an alert expression of ``path`` uses."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    names: set[str] = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            names |= set(_METRIC.findall(rule["expr"]))
    return names


def dashboard_metrics(path: Path = DASHBOARD) -> set[str]:
    """Every metric name of ours a query of the Grafana dashboard uses."""
    doc: dict[str, Any] = json.loads(path.read_text())
    names: set[str] = set()
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            names |= set(_METRIC.findall(target["expr"]))
    for var in doc.get("templating", {}).get("list", []):
        names |= set(_METRIC.findall(str(var.get("query", ""))))
    return names


def _install_promtool() -> str | None:
    """Why promtool cannot be had, or None once it is installed."""
    if shutil.which("apt-get") is None:
        return "promtool is not installed and apt-get is not available"
    if os.geteuid() != 0:
        return "promtool is not installed and installing Debian's prometheus needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    if r.returncode != 0:  # the package lists may be missing: fetch them once and retry
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600,
                       env=env, check=False)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                           check=False)
    if r.returncode != 0 or shutil.which("promtool") is None:
        return f"could not install Debian's prometheus package: {r.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def promtool() -> str:
    if shutil.which("promtool") is None:
        why = _install_promtool()
        if why is not None:
            pytest.skip(why)
    found = shutil.which("promtool")
    assert found is not None
    return found


@pytest.mark.timeout(900)
def test_promtool_accepts_the_rules(promtool: str) -> None:
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 8 rules found" in r.stdout


@pytest.mark.timeout(900)
def test_the_alerts_fire_when_they_should(promtool: str) -> None:
    r = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=DEPLOY,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_the_rules_and_the_dashboard_name_our_metrics() -> None:
    names = rule_metrics()
    assert {"erpgw_breaker_state", "erpgw_dead_letters_total",
            "erpgw_invoice_posting_latency_seconds_bucket", "erpgw_webhooks_total"} <= names
    board = dashboard_metrics()
    assert {"erpgw_lane_out_total", "erpgw_invoice_posting_latency_seconds_bucket",
            "erpgw_consumer_pending", "erpgw_breaker_state", "erpgw_dlq_unresolved",
            "erpgw_sla_value"} <= board


def test_the_dashboard_is_importable_grafana_json() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] == "erpgw" and doc["schemaVersion"] >= 36
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))  # Grafana keys panels by id
    for panel in doc["panels"]:
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24  # the grid is 24 columns wide
