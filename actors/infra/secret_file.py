"""Reading a secret from a file: the one place that checks such a file is private.

Every ``*_file`` secret setting (platform credentials, the admin token, broker credentials and
seeds, the store key, the audit key, webhook signing secrets) is read by ``read_secret_file``:
the file must be a regular file readable by its owner only (mode 0600 or stricter, on POSIX)
and hold something; its text is stripped of surrounding whitespace. A failure names the
setting and the file, never the content, and each caller turns it into its own error code
through ``fail(kind, message)``, ``kind`` being one of ``SecretFileProblem``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Literal

__all__ = ["SecretFileProblem", "read_secret_file"]

# missing: absent or not readable; mode: others may read it; empty: nothing in it;
# invalid: not a regular file or not UTF-8 text.
SecretFileProblem = Literal["missing", "mode", "empty", "invalid"]


def read_secret_file(path: Path | str, setting: str,
                     fail: Callable[[SecretFileProblem, str], Exception]) -> str:
    """The stripped text of the secret file ``path`` given by ``setting`` (its name in the
    configuration, e.g. ``audit.key_file``). Raises ``fail(kind, message)``."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise fail("missing", f"{setting}: cannot read {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise fail("invalid", f"{setting}: {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if os.name == "posix" and mode & 0o077:
        raise fail("mode", f"{setting}: {path} is readable by others (mode {mode:04o}); a "
                           f"secret file must be readable by its owner only: run "
                           f"`chmod 600 {path}`")
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise fail("missing", f"{setting}: cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise fail("invalid", f"{setting}: {path} is not UTF-8 text") from exc
    if not value:
        raise fail("empty", f"{setting}: {path} is empty")
    return value
