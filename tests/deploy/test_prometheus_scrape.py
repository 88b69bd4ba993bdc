"""The shipped Prometheus config scrapes the gateways where ``/metrics`` is served: the admin
listener's port, with the admin bearer token; ``promtool check config`` accepts it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from actors.ingress import AdminSettings, IngressSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
CONFIG = DEPLOY / "prometheus.yml"
TOKEN_FILE = "/etc/prometheus/erpgw-admin.token"


def _job() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    (job,) = [j for j in doc["scrape_configs"] if j["job_name"] == "erpgw"]
    return job


def test_the_scrape_job_targets_the_admin_listener_with_its_token() -> None:
    job = _job()
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"] == {"type": "Bearer", "credentials_file": TOKEN_FILE}
    ports = {t.rpartition(":")[2] for sc in job["static_configs"] for t in sc["targets"]}
    assert ports == {str(AdminSettings().port)}
    assert str(IngressSettings().port) not in ports  # never the webhook port


@pytest.mark.timeout(120)
def test_promtool_accepts_the_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:  # tests/deploy/test_prometheus_rules.py installs it where it can
        pytest.skip("promtool is not installed")
    token = tmp_path / "erpgw-admin.token"
    token.write_text("scrape-token\n")
    token.chmod(0o600)
    shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(CONFIG.read_text().replace(TOKEN_FILE, str(token)))
    r = subprocess.run([promtool, "check", "config", str(cfg)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr
