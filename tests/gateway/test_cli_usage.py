"""Small things users hit at the command line: a pipe closed early, a bad flag value, help
that sends them to documents they do not have."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest

from gateway.cli import build_parser

from .test_cli import erpgw_here


def erpgw_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``erpgw`` with its stdout a pipe whose reader has already gone (``| head``)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "gateway", *args], stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    finally:
        os.close(w)


@pytest.mark.parametrize("args", [("up", "--print-config"), ("schema", "asyncapi")])
def test_a_reader_that_goes_away_is_not_an_error(args: tuple[str, ...]) -> None:
    r = erpgw_into_closed_pipe(*args)
    assert r.stderr == ""  # no "Broken pipe", no traceback, no "Exception ignored"
    assert r.returncode == 141  # as a command killed by SIGPIPE


@pytest.mark.parametrize(("args", "named"), [
    (("demo", "--faults", "erp-outage,nope"), "nope"),
    (("bench", "peak-billing", "--faults", "typo"), "typo"),
    (("dlq", "ls", "--since", "yesterday"), "yesterday"),
    (("replay", "--lane", "billing", "--since", "5 minutes"), "5 minutes"),
    (("demo", "--flows", "bogus"), "bogus"),
])
def test_bad_values_are_usage_errors_naming_the_value(
        capsys: pytest.CaptureFixture[str], args: tuple[str, ...], named: str) -> None:
    code, err = erpgw_here(capsys, *args)
    assert code == 2, err
    flag = next(a for a in args if a.startswith("--"))
    assert named in err and flag in err
    assert "Traceback" not in err


def _all_help(parser: argparse.ArgumentParser, name: str = "erpgw") -> dict[str, str]:
    out = {name: parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                out.update(_all_help(sub, f"{name} {sub_name}"))
    return out


def test_help_names_no_internal_documents() -> None:
    texts = _all_help(build_parser())
    assert len(texts) > 20  # every command and subcommand was walked
    internal = re.compile(r"RELIABILITY|DESIGN\.md|STYLE\.md|\bF\d{1,2}\b|\bissue \d+")
    found = {name: internal.findall(text) for name, text in texts.items()}
    assert {name: hits for name, hits in found.items() if hits} == {}
