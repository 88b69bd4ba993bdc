"""``erpgw demo --tls`` and ``erpgw sim --tls-cert``: settings that cannot work are refused
with a usage error naming them, before anything starts (the TLS stack itself:
tests/integration/test_tls_stack.py)."""

from __future__ import annotations

import pytest

from .test_cli import erpgw


@pytest.mark.parametrize("args", [("--cluster", "3"), ("--gateways", "2")])
def test_demo_tls_refuses_what_it_does_not_run(args: tuple[str, ...]) -> None:
    r = erpgw("demo", "--tls", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--tls runs one embedded broker and one gateway process" in r.stderr


def test_sim_refuses_a_certificate_without_its_key() -> None:
    r = erpgw("sim", "--tls-cert", "gateway.crt")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "config.sim" in r.stderr and "tls_key: required with tls_cert" in r.stderr
