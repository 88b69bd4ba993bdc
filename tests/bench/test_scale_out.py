"""``erpgw bench peak-billing --gateways 1,2,3 --cluster 3``: the option parses (and refuses
what it cannot combine with, naming it), and the report's shape (``by_gateways``, the table)
from made-up leg figures. No run, no timing."""

from __future__ import annotations

import pytest

from bench._scale import GROUPS, bottleneck, parse_gateways, render_scale, scale_summary
from gateway.cli import build_parser


def test_gateway_counts_parse_sorted_once_each() -> None:
    assert parse_gateways("3,1,2,1") == (1, 2, 3)
    assert parse_gateways(" 2 ") == (2,)


@pytest.mark.parametrize(("text", "needle"), [
    ("0", "out of range"), ("9", "out of range"), ("two", "not a whole number"),
    (",", "at least one count")])
def test_bad_gateway_counts_are_refused_naming_the_option(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match="--gateways") as err:
        parse_gateways(text)
    assert needle in str(err.value)


def test_the_cli_takes_gateways_and_cluster() -> None:
    args = build_parser().parse_args(
        ["bench", "peak-billing", "--gateways", "1,2,3", "--cluster", "3", "--json"])
    assert args.gateways == (1, 2, 3) and args.cluster == 3 and args.json


def test_a_bad_count_is_a_usage_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as code:
        build_parser().parse_args(["bench", "peak-billing", "--gateways", "1,x"])
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert "--gateways" in err and "not a whole number" in err


@pytest.mark.parametrize(("extra", "needle"), [
    (("--gateways", "1,2", "--rate", "100"), "drop --rate"),
    (("--gateways", "1", "--faults", "erp-outage"), "drop --faults"),
    (("--gateways", "1", "--repeat", "2"), "drop --repeat"),
    (("--cluster", "3",), "--cluster needs --gateways"),
    (("--roles", "ingress,billing/sync,revenue,usage,commercial,close", "--gateway",
      "http://127.0.0.1:1"), "--roles starts the gateway processes itself"),
    (("--gateways", "1,3", "--roles", "ingress,billing/sync,revenue,usage,commercial,close"),
     "--gateways must include 2")])
def test_the_cli_refuses_what_a_scale_out_run_cannot_do(
        extra: tuple[str, ...], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["bench", "peak-billing", *extra])
    assert args.func(args) == 2  # refused before anything starts
    assert needle in capsys.readouterr().err


def _leg(eps: float, lost: int = 0) -> dict[str, object]:
    return {"complete": lost == 0, "events": 100, "completed": 100 - lost,
            "throughput_eps": eps, "latency_ms": {"p50": 10.0, "p95": 20.0, "p99": 30.0,
                                                  "max": 40.0},
            "audit": {"lost": lost, "duplicates": 0}}


def test_the_report_has_one_entry_per_count_and_a_table_row_each() -> None:
    one = scale_summary(_leg(200.0), {"gateway-1": 4.0, "erpgw-1": 2.0, "erpgw-2": 1.0,
                                      "simulator": 1.0, "generator": 1.0, "proxy": 1.0},
                        wall_s=5.0, gateways=1, shares=[100])
    two = scale_summary(_leg(190.0, lost=1), {"gateway-1": 3.0, "gateway-2": 3.0,
                                              "erpgw-1": 2.0, "proxy": 2.0},
                        wall_s=5.0, gateways=2, shares=[60, 40])
    assert one["cores_by_group"] == {"gateways": 0.8, "nats": 0.6, "simulator": 0.2,
                                     "generator": 0.2, "proxy": 0.2}
    assert one["cores_total"] == 2.0 and one["latency_ms"]["p99"] == 30.0
    assert two["cores"]["gateway-2"] == 0.6 and two["processed_by_gateway"] == [60, 40]
    by = {"1": one, "2": two}
    text = bottleneck(by, 2)
    assert "2 gateway process(es)" in text and "gateways 1.20 cores" in text
    report = {"invoices": 100, "cluster_nodes": 3, "fsync": "always", "machine": {"nproc": 2},
              "by_gateways": by, "bottleneck": text, "ok": False}
    table = render_scale(report).splitlines()
    assert all(g in table[2] for g in GROUPS)  # the header row names every CPU group
    rows = [line.split() for line in table[3:5]]
    assert [r[0] for r in rows] == ["1", "2"] and rows[0][1] == "200.0" and rows[1][4] == "1"
    assert table[-1].strip().startswith("FAILED")


def test_a_count_that_could_not_run_is_listed_with_its_reason() -> None:
    one = scale_summary(_leg(200.0), {"gateway-1": 1.0}, wall_s=1.0, gateways=1, shares=[100])
    by = {"1": one, "3": {"gateways": 3, "complete": False, "available": False,
                          "reason": "[stack.failed] gateway not ready within 30 s:"}}
    report = {"invoices": 100, "cluster_nodes": 3, "fsync": "always", "machine": {"nproc": 2},
              "by_gateways": by, "bottleneck": bottleneck(by, 2), "ok": False}
    assert report["bottleneck"].startswith("with 1 gateway process(es)")  # from the run made
    text = render_scale(report)
    assert "3 gateway process(es): not run: [stack.failed]" in text


@pytest.mark.parametrize(("text", "needle"), [
    ("ingress,billing", "one list per process"),
    ("ingress,billing/sync,revenue", "role 'usage' runs in no process"),
    ("ingress,billing/sync,revenue,usage,commercial,clos", "unknown role 'clos'")])
def test_bad_process_roles_are_a_usage_error_naming_them(
        text: str, needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as code:
        build_parser().parse_args(["bench", "peak-billing", "--gateways", "2", "--roles", text])
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert "--roles" in err and needle in err


def test_the_roles_of_a_split_run_are_listed_under_the_table() -> None:
    args = build_parser().parse_args(["bench", "peak-billing", "--gateways", "1,2", "--roles",
                                      "ingress,billing/close,sync,revenue,usage,commercial"])
    assert args.roles == ["ingress,billing", "close,sync,revenue,usage,commercial"]
    two = {**scale_summary(_leg(190.0), {"gateway-1": 3.0}, wall_s=5.0, gateways=2,
                           shares=[60, 40]), "roles": args.roles}
    one = {**scale_summary(_leg(200.0), {"gateway-1": 3.0}, wall_s=5.0, gateways=1,
                           shares=[100]), "roles": []}
    by = {"1": one, "2": two}
    report = {"invoices": 100, "cluster_nodes": 0, "fsync": "always", "machine": {"nproc": 2},
              "by_gateways": by, "bottleneck": bottleneck(by, 2), "ok": True}
    lines = [x for x in render_scale(report).splitlines() if "process roles" in x]
    assert lines == ["  2 gateway processes ran process roles ingress,billing | "
                     "close,sync,revenue,usage,commercial"]
