"""docs/fault-matrix.md names real tests, and covers every row the gateway is held to."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "fault-matrix.md"
# The rows each of which must have an automated check (the resilience issue's list).
REQUIRED = {"F1", "F2", "F3", "F4", "F5", "F7", "F8", "F9", "F10", "F12", "F16", "F17", "F18",
            "F19", "F22", "F23", "F25", "F27", "F28", "F29", "F31"}
_ROW = re.compile(r"^\| (F\d+) \|(.*)$")
_NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _rows() -> dict[str, list[tuple[str, str]]]:
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in DOC.read_text().splitlines():
        if m := _ROW.match(line):
            rows[m.group(1)] = _NODE.findall(m.group(2))
    return rows


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test")}


def test_every_named_test_exists() -> None:
    missing = [f"{row}: {file}::{name}" for row, nodes in _rows().items()
               for file, name in nodes
               if not (ROOT / file).is_file() or name not in _test_names(ROOT / file)]
    assert missing == []


def test_every_required_row_has_a_check() -> None:
    rows = _rows()
    assert sorted(REQUIRED - {r for r, nodes in rows.items() if nodes},
                  key=lambda r: int(r[1:])) == []
