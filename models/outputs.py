"""Where bfnas writes: output paths checked before the work, and files that appear whole.

`check_output_dir` / `check_output_file` are called on every output flag before anything
expensive runs: a path that cannot be written (a file where a folder is meant and the other
way round, a missing folder, a read-only filesystem, no permission) is one line naming the
flag and the path (`InputError`, exit 2), and nothing is created.

`atomic_path` is the one way an output file is written: into a temporary name in the same
folder, then `os.replace`d onto the real name, so a reader (or a rerun) never sees half a file;
a write that fails removes its temporary file, and a full disk is `disk_full(path)` (one line,
exit 1) instead of an OSError traceback.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bfnas.errors import InputError, disk_full

FULL = (errno.ENOSPC, errno.EDQUOT)


def _probe(folder: Path, flag: str, path: Path) -> None:
    """Can a file be created in `folder`? Tried for real: `os.access` says yes to root on a
    read-only filesystem, and no flag tells of a full one."""
    probe = folder / f".bfnas-probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        if exc.errno in FULL:
            raise disk_full(path) from None
        raise InputError(
            flag, None, f"{path}: cannot write in {folder} ({exc.strerror or exc})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def nearest_existing(path: Path) -> Path:
    """`path` or the closest folder above it that exists (what a `mkdir -p` would start from)."""
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_folder(folder: Path, flag: str, path: Path) -> None:
    """`folder` exists and is writable, or can be made (as `mkdir -p` would: from the
    closest folder above it that exists)."""
    base = nearest_existing(folder)
    if not base.is_dir():
        raise InputError(flag, None, f"{path}: {base} is a file, not a folder")
    _probe(base, flag, path)


def check_output_dir(path: str | Path, flag: str, holds: Iterable[str] = ()) -> Path:
    """`path` as a folder bfnas may create (with its parents) and write in; `holds` are the
    names it will write inside, which must not be folders. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(flag, None, f"{path}: is a file, not a folder")
    for name in holds:
        if (path / name).is_dir():
            raise InputError(
                flag, None, f"{path}: {path / name} is a folder, where bfnas writes a file"
            )
    _check_folder(path, flag, path)
    return path


def check_output_file(path: str | Path, flag: str) -> Path:
    """`path` as a file bfnas may write (replacing it if it is there, making its folder if
    it is not): not a folder, not a device, and in a folder that is or can be made writable.
    Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise InputError(flag, None, f"{path}: is a folder, not a file")
    if path.exists() and not path.is_file():
        raise InputError(flag, None, f"{path}: not a regular file")
    _check_folder(path.parent, flag, path)
    return path


@contextmanager
def disk_full_is_failure(path: str | Path) -> Iterator[None]:
    """An OSError for a full disk (or quota) inside the block is `disk_full(path)`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in FULL:
            raise disk_full(path) from None
        raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to `path` for the caller to write (by any writer: `open`,
    `onnx.save`, `savefig`, `np.savez`); when the block ends it replaces `path`, and when it
    fails it is removed. It keeps `path`'s suffix, which some writers go by. A missing folder
    is made, as bfnas makes every output folder."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # replace what the link points at, not the link
    if path.exists() and not path.is_file():
        # Never replace a folder or a device (/dev/null, a pipe) with a file.
        raise InputError(str(path), None, "not a regular file: bfnas writes only files")
    with disk_full_is_failure(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        with disk_full_is_failure(path):
            yield tmp
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path` whole or not at all."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)
