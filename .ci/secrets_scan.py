"""Secrets committed to the repository (S15): detect-secrets over every file git tracks,
against the reviewed baseline ``.secrets.baseline``.

The baseline lists what the scanner flags and a person has checked is not a secret: the
tests' fake credentials and canaries, the simulator's demo keys, setting names such as
``consumer_secret_env``. A finding not in it (same file, same secret, same kind; its line may
move) fails ``make lint`` with its file, line and kind, never its value. After checking that a
new finding is a fake, record it with ``python .ci/secrets_scan.py --update`` and commit the
baseline; a real secret is removed from the code (and rotated) instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from detect_secrets.core import baseline as ds_baseline
from detect_secrets.core.secrets_collection import SecretsCollection
from detect_secrets.settings import default_settings

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / ".secrets.baseline"


def tracked_files(root: Path) -> list[str]:
    """The files git tracks under ``root`` (relative paths), the baseline excepted."""
    run = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True,  # noqa: S607 - git from PATH, fixed arguments
                         check=True)
    names = [n for n in run.stdout.decode().split("\0") if n]
    return [n for n in names if n != BASELINE.name and (root / n).is_file()]


def scan(files: Sequence[str], root: Path) -> SecretsCollection:
    """What the scanner finds in ``files`` (relative to ``root``), with every plugin and the
    default filters."""
    with default_settings():
        found = SecretsCollection(root=str(root))
        found.scan_files(*files, num_processors=1)
    return found


def unreviewed(found: SecretsCollection, baseline: Path) -> list[tuple[str, int, str]]:
    """``(file, line, kind)`` of every finding the baseline does not list."""
    known = SecretsCollection.load_from_baseline(json.loads(baseline.read_text()))
    new = found - known
    return sorted((filename, s.line_number, s.type) for filename, s in new)


def main(argv: Sequence[str]) -> int:
    found = scan(tracked_files(ROOT), ROOT)
    if "--update" in argv:
        with default_settings():
            doc = ds_baseline.format_for_output(found)
        doc.pop("generated_at", None)
        BASELINE.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        print(f"secrets-scan: baseline rewritten with {sum(1 for _ in found)} finding(s); "
              "check each is a fake before committing it")
        return 0
    new = unreviewed(found, BASELINE)
    for filename, line, kind in new:
        print(f"secrets-scan: {filename}:{line}: {kind} not in {BASELINE.name}")
    if new:
        print(f"secrets-scan: FAILED: {len(new)} possible secret(s); remove them, or record a "
              "checked fake with `python .ci/secrets_scan.py --update`")
        return 1
    print(f"secrets-scan: ok ({sum(1 for _ in found)} finding(s), all in {BASELINE.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
