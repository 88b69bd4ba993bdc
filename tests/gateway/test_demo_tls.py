"""``erpgw demo --tls`` and ``erpgw sim --tls-cert``: settings that cannot work are refused
with a usage error naming them, before anything starts, so the command line is asked in this
process (the TLS stack itself: tests/integration/test_tls_stack.py)."""

from __future__ import annotations

import pytest

from .test_cli import erpgw_here


@pytest.mark.parametrize("args", [("--cluster", "3"), ("--gateways", "2")])
def test_demo_tls_refuses_what_it_does_not_run(capsys: pytest.CaptureFixture[str],
                                               args: tuple[str, ...]) -> None:
    code, err = erpgw_here(capsys, "demo", "--tls", *args)
    assert code == 2 and "Traceback" not in err
    assert "--tls runs one embedded broker and one gateway process" in err


def test_sim_refuses_a_certificate_without_its_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = erpgw_here(capsys, "sim", "--tls-cert", "gateway.crt")
    assert code == 2 and "Traceback" not in err
    assert "config.sim" in err and "tls_key: required with tls_cert" in err
