"""The CLI's last line of defence: an exception nobody expected becomes one line on the
terminal and a log file with the whole traceback.

It is a net, not a fix: every failure a user can cause or meet (bad input, a damaged file, a
full disk, a busy machine) has its own one-line message where it arises, and the tests check
that none of them reaches this.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bfnas import __version__


def log_dir() -> Path:
    """`$BFNAS_LOG_DIR`, else ~/.cache/bfnas/logs."""
    env = os.environ.get("BFNAS_LOG_DIR")
    return Path(env) if env else Path.home() / ".cache" / "bfnas" / "logs"


def write_log(exc: BaseException, argv: list[str]) -> Path | None:
    """The traceback, the command line and versions in a fresh file; None if no folder
    could take it (the one line still says what went wrong)."""
    text = (
        f"bfnas {__version__}, python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
        f"command: bfnas {' '.join(argv)}\n\n" + "".join(traceback.format_exception(exc))
    )
    for folder in (log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="internal-error-", suffix=".log", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            return Path(name)
        except OSError:
            continue
    return None


def report(exc: BaseException, argv: list[str]) -> str:
    """The one line a user sees."""
    what = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    if len(what) > 200:
        what = what[:200] + "..."
    path = write_log(exc, argv)
    where = f"details in {path}" if path else "no log could be written"
    return f"bfnas: internal error: {what}; {where} (please report it)"
