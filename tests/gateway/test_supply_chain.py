"""S22/S23: the static security rules find nothing unjustified, and every install of `make`
comes from a lock file pinned with hashes that agrees with constraints.txt."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CODE = ("actors", "gateway", "contracts", "sim", "bench")
NOQA_S = re.compile(r"#\s*noqa:\s*([A-Z0-9, ]*\bS\d+[A-Z0-9, ]*)(.*)$")


def _requirements(text: str) -> dict[str, tuple[str, list[str]]]:
    """``{name: (version, hashes)}`` of a pip requirements file (continuation lines joined)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for entry in text.replace("\\\n", " ").splitlines():
        entry = entry.split("#", 1)[0].strip()
        if not entry or entry.startswith("-"):
            continue
        spec, *opts = entry.split()
        name, _, version = spec.partition("==")
        hashes = [o.removeprefix("--hash=") for o in opts if o.startswith("--hash=")]
        out[re.sub(r"[-_.]+", "-", name).lower()] = (version, hashes)
    return out


def test_ruff_security_rules_find_nothing() -> None:
    """ruff's S rules (bandit's checks) over all shipped code: no finding that is not
    explicitly waived at its line."""
    run = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "json", *CODE],
        cwd=ROOT, capture_output=True, text=True, check=False)
    findings = [f for f in json.loads(run.stdout or "[]") if f["code"].startswith("S")]
    assert [(f["filename"], f["location"]["row"], f["code"]) for f in findings] == []
    config = (ROOT / "pyproject.toml").read_text()
    assert '"S"' in config.split("[tool.ruff.lint]", 1)[1].split("\n", 2)[1]  # S selected


def test_every_security_waiver_says_why() -> None:
    """A ``noqa: S…`` carries its reason on the line, or in a comment just above it (up to
    eight lines: the start of the statement or literal it is in)."""
    bare = []
    for top in CODE:
        for path in sorted((ROOT / top).rglob("*.py")):
            lines = path.read_text().splitlines()
            for i, line in enumerate(lines):
                m = NOQA_S.search(line)
                if m is None:
                    continue
                reason = m.group(2).strip(" -—()")
                above = any(ln.strip().startswith("#") for ln in lines[max(0, i - 8):i])
                if len(reason) < 8 and not above:
                    bare.append(f"{path.relative_to(ROOT)}:{i + 1}")
    assert bare == []


def test_make_installs_only_hashed_pins_that_match_the_constraints() -> None:
    make = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes --no-deps -r requirements.lock" in make
    assert "--no-deps --no-build-isolation -e ." in make
    lock = _requirements((ROOT / "requirements.lock").read_text())
    pins = _requirements((ROOT / "constraints.txt").read_text())
    assert lock, "empty lock"
    unhashed = [n for n, (v, h) in lock.items() if not v or not h]
    assert unhashed == []
    differ = {n: (v, pins[n][0]) for n, (v, _) in lock.items() if n in pins and pins[n][0] != v}
    assert differ == {}
    # Every runtime and dev dependency of the project is in the lock.
    for name in ("nats-py", "msgspec", "aiohttp", "nkeys", "pip-audit", "detect-secrets", "pytest",
                 "setuptools"):
        assert name in lock, name


def _deps_audit() -> Any:
    spec = importlib.util.spec_from_file_location("deps_audit", ROOT / ".ci" / "deps_audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dependency_audit_never_passes_silently() -> None:
    verdict = _deps_audit().verdict
    ok = {"name": "a", "version": "1", "vulns": []}
    bad = {"name": "b", "version": "2", "vulns": [{"id": "GHSA-x", "fix_versions": ["3"]}]}
    unknown = {"name": "c", "version": "1", "skip_reason": "Dependency not found on PyPI"}
    assert verdict({"dependencies": [ok]}, strict=True)[0] == 0
    code, lines = verdict({"dependencies": [ok, bad]}, strict=False)
    assert code == 1 and "GHSA-x (fixed in 3)" in lines[0]
    assert verdict({"dependencies": [ok, unknown]}, strict=False)[0] == 1  # one unknown: fail
    code, lines = verdict({"dependencies": [unknown, unknown]}, strict=False)
    assert code == 0 and "NOT CHECKED" in lines[-1]  # service unusable: said, not hidden
    assert verdict({"dependencies": [unknown, unknown]}, strict=True)[0] == 1
    assert verdict({"dependencies": []}, strict=False)[0] == 1
