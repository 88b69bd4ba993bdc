"""docs/errors.md lists every error code written in the source (pure: reads files only).

A code is "written in the source" when it appears as ``code="x.y"`` / ``code = "x.y"`` /
``code: str = "x.y"``, as the first argument of a contract ``violation("x.y", ...)``, as the
``"x.y: ..."`` prefix of an invariant ``ValueError``, as a simulator ``SimHTTPError(status,
"x.y", ...)``, or as a per-item ERP error code (documented as ``erp.<lower>``, the code the
poster dead-letters it under). Codes built at run time from a template are documented by
their template and are not checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

from actors.resilience import EXHAUSTED, UNCLASSIFIED

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "errors.md"
PACKAGES = ("contracts", "actors", "gateway", "sim")

_CODE = r"([a-z_]+(?:\.[a-z_]+)+)"
PATTERNS = [
    re.compile(r"\bcode\s*(?::\s*str\s*)?=\s*\"" + _CODE + "\""),
    re.compile(r"\bviolation\(\s*\"" + _CODE + "\""),
    re.compile(r"ValueError\(\s*f?\"" + _CODE + ":"),
    re.compile(r"SimHTTPError\(\s*\d+,\s*\"" + r"([a-z_]+(?:\.[a-z_]+)*)" + "\""),
]
ERP_ITEM = re.compile(r"ErpError\(\s*code=\"([A-Z_]+)\"")


def source_codes() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            where = str(path.relative_to(ROOT))
            for pattern in PATTERNS:
                for m in pattern.finditer(text):
                    found.setdefault(m.group(1), set()).add(where)
            for m in ERP_ITEM.finditer(text):
                found.setdefault(f"erp.{m.group(1).lower()}", set()).add(where)
    return found


def documented() -> str:
    return DOC.read_text(encoding="utf-8")


def test_the_scan_finds_the_codes_we_know_about() -> None:
    codes = source_codes()
    for code in ("http.rate_limited", "contract.missing_field", "journal.unbalanced",
                 "broker.timeout", "config.missing", "signature.stale", "erp.unbalanced"):
        assert code in codes, code


def test_every_code_in_the_source_is_documented() -> None:
    doc = documented()
    undocumented = {code: sorted(where) for code, where in sorted(source_codes().items())
                    if f"`{code}`" not in doc}
    assert undocumented == {}, f"codes with no row in docs/errors.md: {undocumented}"


def test_the_resilience_codes_are_documented() -> None:
    for code in (EXHAUSTED, UNCLASSIFIED):
        assert f"`{code}`" in documented()
