"""Latency stores the CLI must refuse, or must leave as they were (issue 15, causes 4 and 5).

Cause 4: a `--db` that is not a store, a damaged store, a store where nothing can be written,
a full disk or a locked store is one line naming the file and what is wrong, never an sqlite3
traceback. Cause 5: a command that only reads a store, or refuses it, does not change it: no
store made from a 0-byte or missing file, no WAL switch or tables added to a store of another
schema or an SQLite file bfnas did not make.

Every file here is real: SQLite files made by SQLite and then cut or overwritten, and real
read-only and full filesystems (a tmpfs this test mounts, as root; skipped otherwise).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SEED_FILE
from refusals import Refusal, as_root, check_refusal, run_cli

from bfnas.bench.store.latency_store import LatencyStore
from bfnas.models.space.subnet import SubnetConfig

SEED_LINES = "".join(SEED_FILE.read_text().splitlines(keepends=True)[:200])
IMPORT = ["import", "{tmp}/seed.tsv", "--hw", "seed-cpu-fp32", "--space", "bigger-faster"]
PAGE = 4096
# Refused before its export and measurement: the store is checked first.
BENCH = [
    "bench",
    "--hw",
    "{hw}",
    "--space",
    "{space}",
    "--arch",
    '{"layers": 1, "hidden": 64, "heads": [2], "qkv": [64], "ffn": [128]}',
]


def make_store(path: Path, rows: int = 300) -> None:
    """A real store of several dozen pages, closed (its WAL checkpointed and removed)."""
    with LatencyStore(path) as store:
        store.add_profile("seed-cpu-fp32", {"name": "seed-cpu-fp32"}, "h1", imported=True)
        data = [
            (
                SubnetConfig(1, 64 + i, (2,), (64,), (128,)),
                {
                    "status": "imported",
                    "median_ms": 1.0 + i,
                    "stats": {"line": i, "pad": "x" * 300},
                },
            )
            for i in range(rows)
        ]
        store.add_imported("h1", "tiny", data)
    assert not Path(f"{path}-wal").exists()


def truncated(keep: float, extra: int = 0) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        make_store(path)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep) // PAGE * PAGE + extra])

    return make


def page_overwritten(page: int | None) -> Callable[[Path], None]:
    """A store with one page (1-based; None: the last) replaced by random bytes."""

    def make(path: Path) -> None:
        make_store(path)
        data = bytearray(path.read_bytes())
        n = page or len(data) // PAGE
        data[(n - 1) * PAGE : n * PAGE] = random.Random(n).randbytes(PAGE)
        path.write_bytes(bytes(data))

    return make


def header_page_size(path: Path) -> None:
    make_store(path)
    data = bytearray(path.read_bytes())
    data[16:18] = (1000).to_bytes(2, "big")  # not a power of two
    path.write_bytes(bytes(data))


def sqlite_db(*sql: str, wal: bool = False) -> Callable[[Path], None]:
    """An SQLite file made by someone else (or by nobody: no statement, no table)."""

    def make(path: Path) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        if wal:
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA user_version = 7")  # writes the header page: a real, empty database
        for statement in sql:
            db.execute(statement)
        db.close()

    return make


def store_of_schema(version: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        make_store(path, rows=5)
        db = sqlite3.connect(path)
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
        db.commit()
        db.close()

    return make


def mount(path: Path, size: str = "4m") -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


def read_only_fs(inside: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """A tmpfs at the path, filled by `inside` (given the store's path), then remounted ro."""

    def make(folder: Path) -> None:
        mount(folder)
        if inside is not None:
            inside(folder / "lat.db")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)

    return make


def read_only_bind(folder: Path) -> None:
    """A folder of this disk holding a store, made read-only by a read-only bind mount."""
    folder.mkdir(parents=True)
    make_store(folder / "lat.db")
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)


@pytest.fixture(autouse=True)
def unmount(tmp_path):
    """Whatever a test mounted under its folder is unmounted, the innermost first."""
    yield
    root = os.path.realpath(tmp_path)
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in reversed(points):
        if point == root or point.startswith(root + "/"):
            subprocess.run(["umount", point], check=False)


DB = "{tmp}/lat.db"
CAUSE_4 = [
    # Not an SQLite file at all.
    Refusal(
        "text-file-summary",
        ["db", "summary", "--db", DB],
        f"{DB}: not a bfnas latency store (not an SQLite file)",
        {"lat.db": "profile,ms\nseed,5.6\n"},
    ),
    Refusal(
        "random-bytes-export",
        ["db", "export", "--db", DB, "--csv", "{tmp}/out.csv"],
        f"{DB}: not a bfnas latency store (not an SQLite file)",
        {"lat.db": random.Random(0).randbytes(5000)},
    ),
    Refusal(
        "random-bytes-import",
        [*IMPORT, "--db", DB],
        "not an SQLite file",
        {"seed.tsv": SEED_LINES, "lat.db": random.Random(1).randbytes(PAGE * 3)},
    ),
    Refusal(
        "magic-only-fit",
        ["predictor", "fit", "--hw", "seed-cpu-fp32", "--db", DB, "--out", "{tmp}/pred"],
        "not an SQLite file",
        {"lat.db": b"SQLite format 3\x00"},
    ),
    # A store, damaged.
    Refusal(
        "truncated-summary",
        ["db", "summary", "--db", DB],
        f"{DB}: damaged (truncated",
        {"lat.db": truncated(0.5)},
    ),
    Refusal(
        "truncated-mid-page-fit",
        ["predictor", "fit", "--hw", "seed-cpu-fp32", "--db", DB, "--out", "{tmp}/pred"],
        f"{DB}: damaged (truncated",
        {"lat.db": truncated(0.7, extra=123)},
    ),
    Refusal(
        "truncated-import",
        [*IMPORT, "--db", DB],
        f"{DB}: damaged (truncated",
        {"seed.tsv": SEED_LINES, "lat.db": truncated(0.3)},
    ),
    Refusal(
        "page-corrupted-summary",
        ["db", "summary", "--db", DB],
        f"{DB}: damaged (integrity",
        {"lat.db": page_overwritten(6)},
    ),
    Refusal(
        "page-corrupted-export",
        ["db", "export", "--db", DB, "--csv", "{tmp}/out.csv"],
        f"{DB}: damaged (integrity",
        {"lat.db": page_overwritten(2)},
    ),
    Refusal(
        "last-page-corrupted-fit",
        ["predictor", "fit", "--hw", "seed-cpu-fp32", "--db", DB, "--out", "{tmp}/pred"],
        f"{DB}: damaged (integrity",
        {"lat.db": page_overwritten(None)},
    ),
    Refusal(
        "page-corrupted-import",
        [*IMPORT, "--db", DB],
        f"{DB}: damaged (integrity",
        {"seed.tsv": SEED_LINES, "lat.db": page_overwritten(6)},
    ),
    Refusal(
        "page-corrupted-profile",
        ["profile", "--hw", "{hw}", "--space", "{space}", "--samples", "2", "--db", DB],
        f"{DB}: damaged (integrity",
        {"lat.db": page_overwritten(4)},
    ),
    Refusal(
        "page-corrupted-bench",
        [*BENCH, "--db", DB],
        f"{DB}: damaged (integrity",
        {"lat.db": page_overwritten(3)},
    ),
    Refusal(
        "bad-header-summary",
        ["db", "summary", "--db", DB],
        f"{DB}: damaged (its header",
        {"lat.db": header_page_size},
    ),
    Refusal(
        "folder-as-store", ["db", "summary", "--db", "{tmp}/d"], "{tmp}/d: a folder", {"d/x": "x"}
    ),
    # Nothing can be written where the store is (WAL makes -wal and -shm files beside it).
    Refusal(
        "read-only-fs-import",
        [*IMPORT, "--db", "{tmp}/ro/lat.db"],
        "{tmp}/ro/lat.db: cannot write: read-only filesystem",
        {"seed.tsv": SEED_LINES, "ro": read_only_fs(make_store)},
        needs=as_root,
    ),
    Refusal(
        "read-only-fs-new-store",
        [*IMPORT, "--db", "{tmp}/ro/new/lat.db"],
        "{tmp}/ro/new/lat.db: cannot write: read-only filesystem",
        {"seed.tsv": SEED_LINES, "ro": read_only_fs()},
        needs=as_root,
    ),
    Refusal(
        "read-only-fs-bench",
        [*BENCH, "--db", "{tmp}/ro/lat.db"],
        "{tmp}/ro/lat.db: cannot write: read-only filesystem",
        {"ro": read_only_fs()},
        needs=as_root,
    ),
    Refusal(
        "read-only-bind-profile",
        [
            "profile",
            "--hw",
            "{hw}",
            "--space",
            "{space}",
            "--samples",
            "2",
            "--db",
            "{tmp}/ro/lat.db",
        ],
        "{tmp}/ro/lat.db: cannot write: read-only filesystem",
        {"ro": read_only_bind},
        needs=as_root,
    ),
]

CAUSE_5 = [
    # A read-only command never makes a store.
    Refusal(
        "empty-file-summary", ["db", "summary", "--db", DB], f"{DB}: an empty file", {"lat.db": b""}
    ),
    Refusal(
        "empty-file-export",
        ["db", "export", "--db", DB, "--csv", "{tmp}/out.csv"],
        f"{DB}: an empty file",
        {"lat.db": b""},
    ),
    Refusal("missing-summary", ["db", "summary", "--db", DB], f"{DB}: no such store"),
    Refusal(
        "missing-export",
        ["db", "export", "--db", DB, "--csv", "{tmp}/out.csv"],
        f"{DB}: no such store",
    ),
    Refusal(
        "missing-in-missing-folder-fit",
        [
            "predictor",
            "fit",
            "--hw",
            "seed-cpu-fp32",
            "--db",
            "{tmp}/no/lat.db",
            "--out",
            "{tmp}/p",
        ],
        "{tmp}/no/lat.db: no such store",
    ),
    Refusal("missing-report", ["report", "--db", DB, "--out", "{tmp}/r"], f"{DB}: no such store"),
    Refusal(
        "no-tables-summary",
        ["db", "summary", "--db", DB],
        f"{DB}: an SQLite database without tables",
        {"lat.db": sqlite_db()},
    ),
    # A file bfnas did not make, or of another schema, is refused untouched (no WAL switch,
    # no tables added), by reading and writing commands alike.
    Refusal(
        "foreign-import",
        [*IMPORT, "--db", DB],
        f"{DB}: not a bfnas latency store (an SQLite database with tables ['people']",
        {
            "seed.tsv": SEED_LINES,
            "lat.db": sqlite_db(
                "CREATE TABLE people(name TEXT)", "INSERT INTO people VALUES ('ada')"
            ),
        },
    ),
    Refusal(
        "foreign-wal-summary",
        ["db", "summary", "--db", DB],
        f"{DB}: not a bfnas latency store (an SQLite database with tables",
        {"lat.db": sqlite_db("CREATE TABLE t(x)", "INSERT INTO t VALUES (1)", wal=True)},
    ),
    Refusal(
        "foreign-meta-profile",
        ["profile", "--hw", "{hw}", "--space", "{space}", "--samples", "2", "--db", DB],
        f"{DB}: not a bfnas latency store (its meta table has no schema_version)",
        {
            "lat.db": sqlite_db(
                "CREATE TABLE meta(key TEXT, value TEXT)",
                "INSERT INTO meta VALUES ('app', 'other')",
            )
        },
    ),
    Refusal(
        "schema-99-import",
        [*IMPORT, "--db", DB],
        f"{DB}: schema_version: store has schema '99', this bfnas reads 2",
        {"seed.tsv": SEED_LINES, "lat.db": store_of_schema("99")},
    ),
    Refusal(
        "schema-99-bench",
        [*BENCH, "--db", DB],
        f"{DB}: schema_version: store has schema '99'",
        {"lat.db": store_of_schema("99")},
    ),
    Refusal(
        "schema-1-summary",
        ["db", "summary", "--db", DB],
        f"{DB}: schema_version: store has schema '1'",
        {"lat.db": store_of_schema("1")},
    ),
    Refusal(
        "schema-99-report",
        ["report", "--db", DB, "--out", "{tmp}/r"],
        f"{DB}: schema_version: store has schema '99'",
        {"lat.db": store_of_schema("99")},
    ),
]


@pytest.mark.parametrize("case", CAUSE_4 + CAUSE_5, ids=lambda c: c.id)
def test_a_bad_store_is_one_line_and_stays_as_it_was(
    case, tmp_path, capsys, monkeypatch, fast_profile_file, tiny_space_file
):
    fill = {"{hw}": str(fast_profile_file), "{space}": str(tiny_space_file)}
    argv = [fill.get(a, a) for a in case.argv]
    check_refusal(dataclasses.replace(case, argv=argv), tmp_path, capsys, monkeypatch)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_reading_commands_leave_a_store_byte_for_byte(tmp_path, capsys):
    db = tmp_path / "s" / "lat.db"
    db.parent.mkdir()
    make_store(db)
    before = digest(db.parent)
    code, out, err = run_cli(capsys, ["db", "summary", "--db", str(db), "--json"])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["integrity"] == "ok" and summary["profiles"][0]["measurements"] == 300
    code, out, err = run_cli(
        capsys, ["db", "export", "--db", str(db), "--csv", str(tmp_path / "out.csv"), "--json"]
    )
    assert code == 0 and json.loads(out)["rows"] == 300, err
    assert digest(db.parent) == before  # the same bytes, and no -wal or -shm left beside it


def test_a_store_on_a_read_only_filesystem_can_be_read(tmp_path, capsys):
    if why := as_root():
        pytest.skip(why)
    folder = tmp_path / "ro"
    read_only_fs(make_store)(folder)
    assert not (folder / "lat.db-shm").exists()  # SQLite cannot make one here
    code, out, err = run_cli(capsys, ["db", "summary", "--db", str(folder / "lat.db"), "--json"])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["integrity"] == "ok" and summary["profiles"][0]["measurements"] == 300


def test_a_writing_command_makes_a_store_in_an_empty_file(tmp_path, capsys):
    """A 0-byte file is what SQLite itself makes a database in: a writing command may too."""
    (tmp_path / "seed.tsv").write_text(SEED_LINES)
    db = tmp_path / "lat.db"
    db.write_bytes(b"")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in IMPORT] + ["--db", str(db), "--json"]
    code, out, err = run_cli(capsys, argv)
    assert code == 0 and json.loads(out)["added"] == 200, err
    with LatencyStore(db, read_only=True) as store:
        assert store.integrity() == "ok" and len(store.measurements()) == 200


def test_checking_a_store_before_writing_makes_nothing(tmp_path):
    LatencyStore.check(tmp_path / "new" / "lat.db")  # where a store may be made: fine
    db = tmp_path / "lat.db"
    make_store(db, rows=5)
    before = digest(tmp_path)
    LatencyStore.check(db)
    assert digest(tmp_path) == before and not (tmp_path / "new").exists()


def _fill(folder: Path, leave: int) -> Path:
    """Fill the filesystem of `folder` but for about `leave` bytes."""
    st = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


@pytest.mark.parametrize("leave", [256 * 1024, 0], ids=["wal-fills-up", "no-room-at-all"])
def test_a_full_disk_keeps_the_store_and_the_rerun_completes(tmp_path, capsys, leave):
    """The disk fills up during an import into an existing store: exit 1, one line naming the
    store; the store is as it was (the import is one transaction) and passes its integrity
    check; with space again the same command imports everything."""
    if why := as_root():
        pytest.skip(why)
    (tmp_path / "seed.tsv").write_text("".join(SEED_FILE.read_text().splitlines(True)[:2000]))
    disk = tmp_path / "disk"
    mount(disk, "4m")
    db = disk / "lat.db"
    make_store(db, rows=5)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    filler = _fill(disk, leave)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in IMPORT] + ["--db", str(db), "--json"]
    code, _out, err = run_cli(capsys, argv)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert (
        lines[0] == f"bfnas: error: the disk is full writing {db}: nothing half-written was "
        "kept; free some space and run the same command again"
    )
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    filler.unlink()
    with LatencyStore(db, read_only=True) as store:
        assert store.integrity() == "ok"
        assert len(store.measurements()) == 5 and len(store.profiles()) == 1
    code, out, err = run_cli(capsys, argv)
    assert code == 0 and json.loads(out)["added"] == 2000, err
    with LatencyStore(db, read_only=True) as store:
        assert store.integrity() == "ok" and len(store.measurements()) == 2005


def test_a_full_disk_with_no_store_yet_then_the_rerun_makes_it(tmp_path, capsys):
    if why := as_root():
        pytest.skip(why)
    (tmp_path / "seed.tsv").write_text(SEED_LINES)
    disk = tmp_path / "disk"
    mount(disk, "1m")
    filler = _fill(disk, 0)
    db = disk / "new" / "lat.db"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in IMPORT] + ["--db", str(db), "--json"]
    code, _out, err = run_cli(capsys, argv)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "the disk is full writing" in err and str(disk) in err and "Traceback" not in err
    filler.unlink()
    code, out, err = run_cli(capsys, argv)  # what the failed run left (if anything) is reused
    assert code == 0 and json.loads(out)["added"] == 200, err


def test_a_locked_store_is_one_line_after_the_timeout(tmp_path, capsys, monkeypatch):
    """Another process holds the write lock past the timeout: exit 1, one line, nothing lost."""
    import bfnas.bench.store.latency_store as store_module

    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.2)
    db = tmp_path / "lat.db"
    make_store(db, rows=5)
    (tmp_path / "seed.tsv").write_text(SEED_LINES)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, time\n"
            f"db = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "db.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        argv = [a.replace("{tmp}", str(tmp_path)) for a in IMPORT] + ["--db", str(db)]
        code, _out, err = run_cli(capsys, argv)
    finally:
        holder.kill()
        holder.wait()
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"{db}: the store is locked" in err and "Traceback" not in err
    with LatencyStore(db, read_only=True) as store:
        assert len(store.measurements()) == 5
