"""The CLI's net for the unexpected: one line on the terminal, the traceback in a log file."""

import errno
from pathlib import Path

from refusals import run_cli

from bfnas.models.space import search_space as space


def _raise(exc):
    def handler(*args):
        raise exc

    return handler


def test_an_unexpected_exception_is_one_line_and_a_log(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("BFNAS_LOG_DIR", str(tmp_path))
    monkeypatch.setattr(space, "shipped_spaces", _raise(ZeroDivisionError("boom\nsecond line")))
    code, out, err = run_cli(capsys, ["space", "list"])
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("bfnas: internal error: ZeroDivisionError: boom; details in ")
    log = err.strip().split("details in ")[1].split(" (please")[0]
    text = Path(log).read_text()
    assert "Traceback" in text and "ZeroDivisionError: boom" in text and "bfnas space list" in text


def test_a_full_disk_is_one_line_naming_the_path(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("BFNAS_LOG_DIR", str(tmp_path / "logs"))
    full = OSError(errno.ENOSPC, "No space left on device", "/mnt/x/out.onnx")
    monkeypatch.setattr(space, "shipped_spaces", _raise(full))
    code, _, err = run_cli(capsys, ["space", "list"])
    assert code == 1 and err.count("\n") == 1
    assert "the disk is full writing /mnt/x/out.onnx" in err
    assert not (tmp_path / "logs").exists()  # a fault, not a bug: no internal-error log
