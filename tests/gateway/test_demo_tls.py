"""``erpgw demo --tls`` and ``erpgw sim --tls-cert``: settings that cannot work are refused
with a usage error naming them, before anything starts, so the command line is asked in this
process (the TLS stack itself: tests/integration/test_tls_stack.py); and one small TLS demo
run to its report."""

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


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_the_tls_demo_runs_to_its_report() -> None:
    """Every check of the demo reaches the simulator's HTTPS platforms with the stack's CA
    (its close-blocking read did not: ``http.certificate`` after every bill run)."""
    import msgspec

    from .test_cli import erpgw

    r = erpgw("demo", "--tls", "--invoices", "50", "--flows", "invoices", "--json",
              timeout=220)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = msgspec.json.decode(r.stdout.strip().splitlines()[-1])
    assert doc["ok"] and doc["posted"] == 50 and doc["close"]["blocking"] == 0
