"""S15: committed secrets. ``make lint`` runs detect-secrets (``.ci/secrets_scan.py``) over
every file git tracks, against the reviewed baseline ``.secrets.baseline``. Here: the scan
finds planted secrets of several kinds and names each by file, line and kind (never its
value); a reviewed fake stays accepted when its line moves; the baseline names tracked files
only and was made under the scan's rules; lint runs it. The whole-repository scan itself is
``make lint``'s (about half a minute of one core: too slow for the suite's budget)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# Fakes shaped like real credentials (none is live), built up so that this file holds none.
PLANTED = {
    "AWS Access Key": "aws_access_key_id = " + "AKIA" + "Z7QW3RT5YU8IO2PL",
    "GitHub Token": "token = " + "ghp_" + "x7Hk2Lm9Qw4Er6Ty8Ui0Op1As3Df5Gh7Jk9L",
    "Private Key": "-----BEGIN " + "RSA PRIVATE KEY-----",
    "Secret Keyword": 'db_password = "' + "Tr0ub4dor&3-horse-staple" + '"',
    "Basic Auth Credentials": "url = 'https://admin:" + "s3cr3tPassw0rd" + "@erp.example.com/'",
}


def _scanner() -> Any:
    spec = importlib.util.spec_from_file_location("secrets_scan",
                                                  ROOT / ".ci" / "secrets_scan.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_planted_secrets_are_found_and_named_without_their_value(tmp_path: Path) -> None:
    scanner = _scanner()
    (tmp_path / "clean.py").write_text('GREETING = "hello"\nTIMEOUT_S = 5\n')
    lines = ["# settings", *PLANTED.values()]
    (tmp_path / "leaky.py").write_text("\n".join(lines) + "\n")
    empty = tmp_path / "baseline.json"
    empty.write_text(json.dumps({"version": "1.5.0", "plugins_used": [], "filters_used": [],
                                 "results": {}}))
    found = scanner.scan(["clean.py", "leaky.py"], tmp_path)
    new = scanner.unreviewed(found, empty)
    assert {kind for _, _, kind in new} >= set(PLANTED), new
    assert all(f == "leaky.py" for f, _, _ in new)
    for _, line, kind in new:
        if kind in PLANTED:
            assert lines[line - 1] == PLANTED[kind]  # named by its line
    assert not any(secret.split()[-1].strip("\"'") in repr(new) for secret in PLANTED.values())

    # Reviewed: the same findings as a baseline; then the file gains lines above them.
    with scanner.default_settings():
        doc = scanner.ds_baseline.format_for_output(found)
    reviewed = tmp_path / "reviewed.json"
    reviewed.write_text(json.dumps(doc))
    (tmp_path / "leaky.py").write_text("\n".join(["", "", *lines]) + "\n")
    assert scanner.unreviewed(scanner.scan(["leaky.py"], tmp_path), reviewed) == []


def test_the_baseline_is_reviewed_fakes_of_tracked_files_under_the_same_rules() -> None:
    """Every baseline entry names a file git tracks, and the baseline was made with the
    plugins and filters the scan uses (so lint compares like with like)."""
    scanner = _scanner()
    doc = json.loads(scanner.BASELINE.read_text())
    tracked = set(scanner.tracked_files(ROOT))
    assert {"Makefile", "gateway/app.py", "tests/security/test_secrets_scan.py"} <= tracked
    assert scanner.BASELINE.name not in tracked and not [f for f in tracked
                                                         if f.startswith(".venv/")]
    assert doc["results"] and set(doc["results"]) <= tracked
    with scanner.default_settings():
        rules = scanner.ds_baseline.format_for_output(scanner.SecretsCollection())
    assert (doc["plugins_used"], doc["filters_used"]) == (rules["plugins_used"],
                                                          rules["filters_used"])


def test_make_lint_runs_the_scan() -> None:
    lint = (ROOT / "Makefile").read_text().split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "$(BIN)/python .ci/secrets_scan.py" in lint
