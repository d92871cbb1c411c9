"""Table-driven checks that bad input and faults are refused the way the README promises.

A `Refusal` is one row: files to lay out in an empty folder, a command line, the exit code,
and a piece of text the one error line must contain (the file, flag or field it names). The
check asserts: that exit code; exactly one line on stderr, starting `bfnas: error:`; the
named text in it; no traceback and no internal error; and every file in the folder
byte-identical afterwards (nothing written, nothing changed, no store journal left).

Each test file that refuses something builds its rows and calls `check_refusal`; arguments
may use `{tmp}` for the folder. Files are bytes, text, or a callable that makes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bfnas.cli import main

Maker = bytes | str | Callable[[Path], None]


@dataclass
class Refusal:
    id: str
    argv: list[str]
    names: str  # text the error line must contain: the file, flag or field
    files: dict[str, Maker] = field(default_factory=dict)
    code: int = 2
    # Checked before the command: a row whose setup needs something (root, a tool) says so.
    needs: Callable[[], str | None] | None = None


def lay_out(root: Path, files: dict[str, Maker]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root, with the sha256 of each file's bytes."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors exit from inside parse_args
        code = exc.code
    out, err = capsys.readouterr()
    return int(code or 0), out, err


def check_refusal(case: Refusal, tmp_path: Path, capsys, monkeypatch) -> str:
    """Run the row in `tmp_path` and assert everything it promises; returns the error line."""
    import pytest

    if case.needs is not None and (why := case.needs()):
        pytest.skip(why)
    lay_out(tmp_path, case.files)
    # Logs of an internal error would land in the folder and fail the snapshot: good.
    monkeypatch.setenv("BFNAS_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("BFNAS_CACHE", str(tmp_path / "cache"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in case.argv]
    before = snapshot(tmp_path)
    code, _out, err = run_cli(capsys, argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "internal error" not in err, err
    assert code == case.code, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("bfnas") and "error:" in lines[0], lines[0]
    names = case.names.replace("{tmp}", str(tmp_path))
    assert names in lines[0], (names, lines[0])
    assert snapshot(tmp_path) == before, "the folder changed"
    return lines[0]


def as_root() -> str | None:
    """None when running as root (a test may mount a filesystem), else the skip reason."""
    import os

    return None if os.geteuid() == 0 else "needs root to mount a tmpfs"
