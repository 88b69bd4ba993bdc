"""Known vulnerabilities in the locked dependencies (S22): pip-audit over requirements.lock.

Exit 1 when a locked package has a known vulnerability, or when the vulnerability service
answered for some packages but not for others (a package it does not know may not come from
PyPI at all). When it answered for none (a network that reaches only a mirror of the package
index, without PyPI's JSON API), the result is printed as NOT CHECKED and the exit code is 0,
or 1 with ERPGW_DEPS_AUDIT=strict: the check never passes silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"


def verdict(doc: dict[str, Any], *, strict: bool) -> tuple[int, list[str]]:
    """Exit code and report lines for pip-audit's JSON ``doc`` (see the module docstring)."""
    deps = doc.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    out = []
    for d in vulnerable:
        ids = ", ".join(v["id"] + (f" (fixed in {', '.join(v['fix_versions'])})"
                                   if v.get("fix_versions") else "") for v in d["vulns"])
        out.append(f"deps-audit: {d['name']} {d['version']}: {ids}")
    if vulnerable:
        out.append(f"deps-audit: FAILED: {len(vulnerable)} locked package(s) with known "
                   "vulnerabilities; upgrade them (make constraints lock)")
        return 1, out
    if skipped and len(skipped) == len(deps):
        out.append(f"deps-audit: NOT CHECKED: the vulnerability service answered for none of "
                   f"the {len(deps)} locked packages ({skipped[0]['skip_reason']})")
        return (1 if strict else 0), out
    if skipped:
        out += [f"deps-audit: {d['name']}: {d['skip_reason']}" for d in skipped]
        out.append(f"deps-audit: FAILED: {len(skipped)} of {len(deps)} locked packages "
                   "unknown to the vulnerability service")
        return 1, out
    if not deps:
        return 1, ["deps-audit: FAILED: pip-audit listed no package"]
    return 0, [f"deps-audit: {len(deps)} locked packages, no known vulnerabilities"]


def main() -> int:
    strict = os.environ.get("ERPGW_DEPS_AUDIT", "") == "strict"
    run = subprocess.run(  # noqa: S603 - fixed argv: this interpreter's pip-audit on our lock
        [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--format", "json",
         "--disable-pip", "--no-deps", "--require-hashes", "-r", str(LOCK)],
        capture_output=True, text=True, check=False)
    try:
        doc = json.loads(run.stdout)
    except json.JSONDecodeError:
        print(f"deps-audit: pip-audit failed (exit {run.returncode}):\n{run.stderr[-2000:]}",
              file=sys.stderr)
        return 1
    code, lines = verdict(doc, strict=strict)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main())
