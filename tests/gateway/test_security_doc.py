"""docs/security.md names real tests, lists every S-row, and matches the broker's roles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gateway.identities import CONSUMER_ROLE, ROLES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
_ROW = re.compile(r"^\| (S\d+) \|[^|]*\| (done|partial|open) \|(.*)$")
_NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
# Rows this work is held to: each must name its proof.
REQUIRED = {"S12", "S13", "S22", "S26", "S28"}


def _rows() -> dict[str, tuple[str, list[tuple[str, str]], str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        if m := _ROW.match(line):
            rows[m.group(1)] = (m.group(2), _NODE.findall(m.group(3)), m.group(3))
    return rows


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test")}


def test_every_row_is_present_with_a_status() -> None:
    assert sorted(_rows(), key=lambda r: int(r[1:])) == [f"S{i}" for i in range(1, 29)]


def test_every_named_test_exists() -> None:
    missing = [f"{row}: {file}::{name}" for row, (_, nodes, _) in _rows().items()
               for file, name in nodes
               if not (ROOT / file).is_file() or name not in _test_names(ROOT / file)]
    assert missing == []


def test_status_matches_the_evidence() -> None:
    for row, (status, nodes, text) in _rows().items():
        if status == "open":
            assert not nodes and "missing:" in text, row
        else:
            assert nodes, row
        if status == "partial":
            assert "missing:" in text, row
    assert all(_rows()[r][0] != "open" for r in REQUIRED)


def test_the_identity_table_lists_every_role_and_consumer() -> None:
    text = DOC.read_text()
    for role in ROLES:
        assert f"| `{role}` |" in text, role
    for durable in CONSUMER_ROLE:
        assert durable in text, durable


def test_the_summary_counts_the_rows() -> None:
    m = re.search(r"^\*\*Summary:\*\* (\d+) done, (\d+) partial, (\d+) open\.$", DOC.read_text(),
                  re.M)
    assert m is not None
    statuses = [status for status, _, _ in _rows().values()]
    assert [int(n) for n in m.groups()] == [statuses.count(s) for s in ("done", "partial", "open")]
