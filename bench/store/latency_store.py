"""`LatencyStore`: every measurement, with its provenance, in one SQLite file (WAL).

Tables: profiles (resolved profile JSON + hash), subnets (key, canonical JSON, space), runs
(one profiling job each), measurements (statistics, raw samples, environment, status), and
claims (which process is measuring what right now). A measurement is committed as soon as it
completes; a subnet is claimed before it is measured, so two processes profiling into one
store neither duplicate nor lose work, and a claim left by a killed process is taken over.

Opening is checked before anything can change the file: a file that is not SQLite, a store
that is damaged, an SQLite file bfnas did not make and a store of another schema version are
each one line (`InputError`) and stay byte for byte as they were. A store is created (or a
0-byte file initialised, as SQLite itself would) only by a writing open; `read_only=True`
(`db summary`, `db export`, `predictor`, `report`) refuses a missing or empty file and never
writes. Every SQLite error a method meets is turned into one line at this boundary: a full
disk is `disk_full` (the transaction is rolled back, so a rerun resumes), a lock held past
the timeout is `OperationFailed`, damage found on the way is `InputError`.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import functools
import json
import os
import socket
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from bfnas.errors import InputError, OperationFailed, disk_full, short
from bfnas.models.outputs import atomic_path, nearest_existing
from bfnas.models.space.subnet import SubnetConfig

SCHEMA_VERSION = 2

# Every latency a user sees says which it is (columns, JSON `unit` fields, report axes).
LATENCY_UNITS = {
    "median_ms": "raw median ms on the device",
    "normalized_ms": "anchor-normalized ms",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    json TEXT NOT NULL,
    imported INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subnets (
    key TEXT PRIMARY KEY,
    json TEXT NOT NULL,
    space TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_hash TEXT NOT NULL REFERENCES profiles(hash),
    kind TEXT NOT NULL,
    args TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    summary TEXT
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER REFERENCES runs(id),
    profile_hash TEXT NOT NULL REFERENCES profiles(hash),
    subnet_key TEXT NOT NULL REFERENCES subnets(key),
    role TEXT NOT NULL DEFAULT 'sample',
    status TEXT NOT NULL,
    median_ms REAL, mean_ms REAL, std_ms REAL, cov REAL, min_ms REAL,
    p90_ms REAL, p95_ms REAL, p99_ms REAL, runs INTEGER, outliers INTEGER,
    median_rel_ci REAL, first_ms REAL,
    ratio REAL, ratio_rel_ci REAL, anchor_ms REAL, anchor_key TEXT,
    reference_ms REAL,
    samples TEXT,
    stats TEXT,
    environment TEXT,
    artifact TEXT,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    created TEXT NOT NULL
);
-- One sample measurement per (profile, subnet): the database itself refuses duplicates.
CREATE UNIQUE INDEX IF NOT EXISTS one_sample
    ON measurements(profile_hash, subnet_key) WHERE role = 'sample';
CREATE INDEX IF NOT EXISTS by_profile ON measurements(profile_hash, status);
CREATE TABLE IF NOT EXISTS claims (
    profile_hash TEXT NOT NULL,
    subnet_key TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (profile_hash, subnet_key)
);
"""

STAT_COLUMNS = (
    "median_ms",
    "mean_ms",
    "std_ms",
    "cov",
    "min_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "runs",
    "outliers",
    "median_rel_ci",
    "first_ms",
    "ratio",
    "ratio_rel_ci",
    "anchor_ms",
    "anchor_key",
)


TABLES = ("meta", "profiles", "subnets", "runs", "measurements", "claims")
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 60
# An I/O error with less free space than this on the store's filesystem is taken for a full
# disk: SQLite reports a -shm file it could not grow as an I/O error, not as SQLITE_FULL.
FULL_MARGIN_BYTES = 1 << 20


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(nearest_existing(path)).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(nearest_existing(path))
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _not_writable(path: Path) -> str | None:
    """Why a writing open of `path` cannot work, or None. WAL needs to create the -wal and
    -shm files beside the store, so the folder must be writable as well as the file."""
    if _read_only_fs(path):
        return "cannot write: read-only filesystem"
    if path.exists() and not os.access(path, os.W_OK):
        return "cannot write: read-only file"
    folder = nearest_existing(path.parent)
    if not os.access(folder, os.W_OK):
        return (
            f"cannot write: read-only folder {folder} (the store's -wal and -shm files "
            "are made beside it)"
        )
    return None


def _damaged(path: Path, what: str) -> InputError:
    return InputError(
        str(path), None, f"damaged ({what}); restore it from a copy or give another --db"
    )


def _store_error(path: Path, exc: sqlite3.Error) -> Exception | None:
    """The one-line error for an SQLite error met on `path`, or None for a bug (a misused
    API, a broken constraint), which keeps its own type."""
    code = getattr(exc, "sqlite_errorcode", None)
    base = None if code is None else code & 0xFF
    if base == sqlite3.SQLITE_FULL:
        return disk_full(path)
    if base in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return _damaged(path, f"integrity check: {exc}")
    if base in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return OperationFailed(
            f"{path}: the store is locked: another process held it for over "
            f"{BUSY_TIMEOUT_S} s; run the same command again when it is done"
        )
    if base == sqlite3.SQLITE_READONLY:
        return InputError(str(path), None, _not_writable(path) or f"cannot write ({exc})")
    if base == sqlite3.SQLITE_CANTOPEN and not os.access(nearest_existing(path.parent), os.W_OK):
        return InputError(
            str(path),
            None,
            "cannot open: its folder is read-only and SQLite "
            "needs a -shm file beside a WAL store (copy it "
            "somewhere writable)",
        )
    if base in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN):
        free = _free_bytes(path)
        if free is not None and free < FULL_MARGIN_BYTES:
            return disk_full(path)
        return OperationFailed(f"{path}: cannot read or write the store ({exc})")
    return None


F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def _one_line(path: Path) -> Iterator[None]:
    """An SQLite error inside the block as its one-line error (see `_store_error`)."""
    try:
        yield
    except sqlite3.Error as exc:
        mapped = _store_error(path, exc)
        if mapped is None:
            raise
        raise mapped from exc


def _guarded(method: F) -> F:
    """A store method whose SQLite errors are one line (see `_store_error`)."""

    @functools.wraps(method)
    def wrapper(self: LatencyStore, *args: Any, **kwargs: Any) -> Any:
        with _one_line(self.path):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _check_bytes(path: Path, read_only: bool, create: bool) -> bool:
    """Cheap checks of the file before SQLite opens it (SQLite would change or refuse it
    with a traceback). Returns True when there is no store yet: absent or 0 bytes."""
    where = str(path)
    if path.is_dir():
        raise InputError(where, None, "a folder, not a store file")
    # Looked at before the file's size: a writer closing now checkpoints its -wal into the file
    # and then deletes it, and the file is whole only once the -wal is gone.
    wal = Path(f"{path}-wal")
    try:
        wal_pages = wal.stat().st_size > 0
    except OSError:
        wal_pages = False
    try:
        size = path.stat().st_size
        if size:
            with path.open("rb") as fh:
                head = fh.read(100)
    except FileNotFoundError:
        if read_only or not create:
            raise InputError(where, None, "no such store") from None
        return True
    except OSError as exc:
        raise InputError(where, None, f"cannot read ({exc.strerror or exc})") from None
    if size == 0:
        if read_only or not create:
            raise InputError(
                where,
                None,
                "an empty file, not a bfnas latency store (profile or import into it to make one)",
            )
        return True  # what SQLite itself does with a 0-byte file: make the database in it
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        raise InputError(where, None, "not a bfnas latency store (not an SQLite file)")
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    if page < 512 or page & (page - 1):
        raise _damaged(path, f"its header gives a page size of {page}")
    # The page count in the header is valid when the change counter matches the
    # version-valid-for number; pages may still sit in a -wal file that is not checkpointed.
    pages = int.from_bytes(head[28:32], "big")
    if pages and head[24:28] == head[92:96] and size < pages * page and not wal_pages:
        raise _damaged(path, f"truncated: {size:,} bytes, its header says {pages * page:,}")
    return False


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An advisory lock on the store's folder (flock on the folder itself: no file is made)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # nothing to lock on: open unserialized, as before
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    if not read_only:
        return sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    if _read_only_fs(path):
        # Nobody can write a read-only filesystem, so the file is immutable. Without a -shm
        # file SQLite cannot open a WAL store read-only otherwise (it cannot make one here).
        shm = Path(f"{path}-shm").exists() and Path(f"{path}-wal").exists()
        uri = path.absolute().as_uri() + ("?mode=ro" if shm else "?mode=ro&immutable=1")
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    if not os.access(nearest_existing(path.parent), os.W_OK):
        uri = path.absolute().as_uri() + "?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    # A writable folder: a plain connection that may not write. Unlike `mode=ro`, whose -wal
    # and -shm files would stay behind, the last connection to close removes them (and
    # checkpoints what a killed writer committed), so reading leaves the folder as it was.
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    db.execute("PRAGMA query_only = ON")
    return db


class LatencyStore:
    """The latency store at `path`.

    By default it is opened for writing (`profile`, `import`, `bench`): a missing or 0-byte
    file becomes a new store (`create=False`: refused instead), and runs left `running` by
    processes of this host that are gone are marked `interrupted`. `read_only=True` opens an
    existing store without writing anything to it.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False, create: bool = True) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.host = socket.gethostname()
        if read_only:
            self._connect_and_open(_check_bytes(self.path, read_only, create))
            return
        # Writers open one at a time: a process that creates the store writes its header and
        # switches it to WAL while another would read a half-made file ("truncated") or find
        # the journal mode locked. The lock is on the nearest folder that exists already.
        with _folder_lock(nearest_existing(self.path.parent)):
            fresh = _check_bytes(self.path, read_only, create)
            why = _not_writable(self.path)
            if why:
                raise InputError(str(self.path), None, why)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise disk_full(self.path) from None
                raise InputError(
                    str(self.path), None, f"cannot make its folder ({exc.strerror or exc})"
                ) from None
            self._connect_and_open(fresh)

    def _connect_and_open(self, fresh: bool) -> None:
        with _one_line(self.path):
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), so a claim
            # check and the claim itself happen under one write lock.
            self.db = _connect(self.path, self.read_only)
        try:
            with _one_line(self.path):
                self._open(fresh)
        except BaseException:
            self.db.close()
            raise

    @classmethod
    def check(cls, path: str | Path) -> None:
        """Refuse, making and changing nothing, what a writing open of `path` would refuse
        (not a store, damaged, foreign, another schema, nowhere to write): for a command to
        call before the expensive work that comes before it writes."""
        path = Path(path)
        exists = not _check_bytes(path, read_only=False, create=True)
        why = _not_writable(path)
        if why:
            raise InputError(str(path), None, why)
        if exists:
            cls(path, read_only=True).close()

    def _open(self, fresh: bool) -> None:
        self.db.row_factory = sqlite3.Row
        if not fresh:
            fresh = self._check_schema()
        if self.read_only:
            return
        # Only now, with the file known to be a bfnas store (or none yet), is it changed.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        # One transaction: a store is never left with its tables but without its version.
        self.db.executescript(
            f"BEGIN IMMEDIATE; {SCHEMA} INSERT OR IGNORE INTO meta VALUES "
            f"('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
        )
        self.mark_interrupted()

    def _check_schema(self) -> bool:
        """Refuse an SQLite file that is not a bfnas store of this schema, or is damaged,
        reading only. Returns True for an SQLite database without any table (a new store
        may be made in it)."""
        where = str(self.path)
        tables = {
            r[0]
            for r in self.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        if not tables:
            if self.read_only:
                raise InputError(
                    where, None, "an SQLite database without tables, not a bfnas latency store yet"
                )
            return True
        if "meta" not in tables:
            raise InputError(
                where,
                None,
                "not a bfnas latency store (an SQLite database "
                f"with tables {short(sorted(tables))} and no meta)",
            )
        try:
            found = self.db.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.OperationalError:  # a meta table of another shape: someone else's
            found = None
        if not found:
            raise InputError(
                where, None, "not a bfnas latency store (its meta table has no schema_version)"
            )
        if found[0] != str(SCHEMA_VERSION):
            raise InputError(
                where,
                "schema_version",
                f"store has schema {short(found[0])}, this bfnas reads {SCHEMA_VERSION}",
            )
        missing = [t for t in TABLES if t not in tables]
        if missing:
            raise _damaged(self.path, f"tables missing: {', '.join(missing)}")
        # Every page read once (milliseconds for a 10 MB store): damage is found here, not
        # halfway through a job or as wrong numbers.
        check = self.db.execute("PRAGMA quick_check(3)").fetchall()
        if [r[0] for r in check] != ["ok"]:
            found = "; ".join(" ".join(str(r[0]).split()) for r in check)
            raise _damaged(self.path, f"integrity check: {found[:200]}")
        return False

    @_guarded
    def mark_interrupted(self) -> int:
        """Mark the runs of this host still `running` whose process is gone `interrupted`
        (a killed job cannot say so itself); returns how many."""
        rows = self.db.execute(
            "SELECT id, pid FROM runs WHERE status = 'running' AND host = ?", (self.host,)
        ).fetchall()
        gone = [r["id"] for r in rows if r["pid"] != os.getpid() and not _pid_alive(r["pid"])]
        if gone:
            note = json.dumps({"interrupted": f"its process was gone at {now()}"})
            with self.transaction() as db:
                db.executemany(
                    "UPDATE runs SET status = 'interrupted', summary = ? "
                    "WHERE id = ? AND status = 'running'",
                    [(note, i) for i in gone],
                )
        return len(gone)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> LatencyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all or nothing. Inside another, it is part of that one, so
        a command may make several writes a single one (`bfnas import`)."""
        if self.db.in_transaction:
            yield self.db
            return
        try:
            try:
                # BEGIN inside the try: a Ctrl-C just after it must roll back too, not leave a
                # transaction open that every later write would join and none commit.
                self.db.execute("BEGIN IMMEDIATE")
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back itself (a full disk does): a second ROLLBACK
                # would hide the error that caused it.
                if self.db.in_transaction:
                    with suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            mapped = _store_error(self.path, exc)
            if mapped is None:
                raise
            raise mapped from exc

    # -- profiles and subnets -----------------------------------------------------------
    @_guarded
    def add_profile(
        self, name: str, resolved: dict, profile_hash: str, imported: bool = False
    ) -> str:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO profiles(hash, name, json, imported, created) VALUES "
                "(?,?,?,?,?)",
                (profile_hash, name, json.dumps(resolved, sort_keys=True), int(imported), now()),
            )
        return profile_hash

    @_guarded
    def profiles(self) -> list[dict]:
        rows = self.db.execute("SELECT hash, name, imported, json FROM profiles ORDER BY name")
        return [dict(r) for r in rows]

    def _add_subnet(self, db: sqlite3.Connection, cfg: SubnetConfig, space: str) -> None:
        db.execute(
            "INSERT OR IGNORE INTO subnets(key, json, space) VALUES (?,?,?)",
            (cfg.key(), cfg.to_json(), space),
        )

    # -- runs ---------------------------------------------------------------------------
    @_guarded
    def start_run(
        self, profile_hash: str, kind: str, args: dict, started: str | None = None
    ) -> int:
        """A run's row; `started` (a `now()` string) when the work began before the row
        was written (a search writes it once it has something to record)."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO runs(profile_hash, kind, args, host, pid, started) VALUES "
                "(?,?,?,?,?,?)",
                (
                    profile_hash,
                    kind,
                    json.dumps(args, sort_keys=True),
                    self.host,
                    os.getpid(),
                    started or now(),
                ),
            )
        return int(cur.lastrowid)

    @_guarded
    def finish_run(self, run_id: int, status: str, summary: dict) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished = ?, status = ?, summary = ? WHERE id = ?",
                (now(), status, json.dumps(summary, sort_keys=True), run_id),
            )

    # -- claims -------------------------------------------------------------------------
    @_guarded
    def claim(self, profile_hash: str, cfg: SubnetConfig, retry: tuple[str, ...] = ()) -> bool:
        """Take the right to measure `cfg` for this profile. False when it is measured
        already (with a status not in `retry`) or another live process holds it."""
        key = cfg.key()
        with self.transaction() as db:
            done = db.execute(
                "SELECT status FROM measurements WHERE profile_hash = ? AND subnet_key = ? "
                "AND role = 'sample'",
                (profile_hash, key),
            ).fetchone()
            if done and done["status"] not in retry:
                return False
            held = db.execute(
                "SELECT host, pid FROM claims WHERE profile_hash = ? AND subnet_key = ?",
                (profile_hash, key),
            ).fetchone()
            if held and not (
                held["host"] == self.host
                and (held["pid"] == os.getpid() or not _pid_alive(held["pid"]))
            ):
                return False
            db.execute(
                "INSERT OR REPLACE INTO claims(profile_hash, subnet_key, host, pid, created) "
                "VALUES (?,?,?,?,?)",
                (profile_hash, key, self.host, os.getpid(), now()),
            )
        return True

    @_guarded
    def release(self, profile_hash: str, cfg: SubnetConfig) -> None:
        with self.transaction() as db:
            db.execute(
                "DELETE FROM claims WHERE profile_hash = ? AND subnet_key = ? AND pid = ?",
                (profile_hash, cfg.key(), os.getpid()),
            )

    # -- measurements -------------------------------------------------------------------
    @_guarded
    def add_measurement(
        self,
        profile_hash: str,
        cfg: SubnetConfig,
        space: str,
        result: dict,
        run_id: int | None = None,
        role: str = "sample",
        artifact: dict | None = None,
        reference_ms: float | None = None,
        supersede: bool = False,
    ) -> int:
        """Store one result and drop the claim on it, in one transaction. With `supersede`,
        an earlier sample of the same subnet is kept with role 'superseded' (a retried
        unstable or failed measurement stays on record)."""
        stats = {k: result.get(k) for k in STAT_COLUMNS}
        if isinstance(result.get("anchor"), dict):
            stats["anchor_ms"] = result["anchor"]["median_ms"]
        extra = {
            k: v
            for k, v in result.items()
            if k not in STAT_COLUMNS
            and k not in ("samples_ms", "environment", "status", "reason", "attempts")
        }
        with self.transaction() as db:
            self._add_subnet(db, cfg, space)
            if supersede and role == "sample":
                db.execute(
                    "UPDATE measurements SET role = 'superseded' WHERE profile_hash = ? "
                    "AND subnet_key = ? AND role = 'sample'",
                    (profile_hash, cfg.key()),
                )
            cur = db.execute(
                f"INSERT INTO measurements(run_id, profile_hash, subnet_key, role, status, "
                f"{', '.join(STAT_COLUMNS)}, reference_ms, samples, stats, environment, artifact, "
                f"reason, attempts, created) VALUES ({', '.join('?' * (len(STAT_COLUMNS) + 13))})",
                (
                    run_id,
                    profile_hash,
                    cfg.key(),
                    role,
                    result["status"],
                    *stats.values(),
                    reference_ms,
                    json.dumps(result.get("samples_ms")) if "samples_ms" in result else None,
                    json.dumps(extra, sort_keys=True),
                    json.dumps(result.get("environment"), sort_keys=True)
                    if result.get("environment")
                    else None,
                    json.dumps(artifact, sort_keys=True) if artifact else None,
                    result.get("reason"),
                    result.get("attempts", 1),
                    now(),
                ),
            )
            if role == "sample":
                db.execute(
                    "DELETE FROM claims WHERE profile_hash = ? AND subnet_key = ?",
                    (profile_hash, cfg.key()),
                )
        return int(cur.lastrowid)

    @_guarded
    def mark_unstable(self, ids: list[int], reason: str) -> int:
        """Mark trusted measurements unstable after the fact (a drift put them in doubt);
        returns how many were marked. Their numbers stay as they were."""
        if not ids:
            return 0
        with self.transaction() as db:
            cur = db.executemany(
                "UPDATE measurements SET status = 'unstable', reason = ? "
                "WHERE id = ? AND status = 'ok'",
                [(reason, i) for i in ids],
            )
        return cur.rowcount

    @_guarded
    def add_imported(
        self, profile_hash: str, space: str, rows: Iterable[tuple[SubnetConfig, dict]]
    ) -> tuple[int, int]:
        """Insert many imported measurements in one transaction: all or nothing.
        Returns (added, already present)."""
        added = skipped = 0
        with self.transaction() as db:
            for cfg, result in rows:
                self._add_subnet(db, cfg, space)
                cur = db.execute(
                    "INSERT OR IGNORE INTO measurements(profile_hash, subnet_key, role, status, "
                    "median_ms, mean_ms, runs, stats, reason, created) VALUES "
                    "(?,?,?,?,?,?,?,?,?,?)",
                    (
                        profile_hash,
                        cfg.key(),
                        "sample",
                        result["status"],
                        result["median_ms"],
                        result.get("mean_ms"),
                        result.get("runs"),
                        json.dumps(result.get("stats", {}), sort_keys=True),
                        result.get("reason"),
                        now(),
                    ),
                )
                if cur.rowcount:
                    added += 1
                else:
                    skipped += 1
        return added, skipped

    @_guarded
    def measured_keys(self, profile_hash: str, exclude: tuple[str, ...] = ()) -> set[str]:
        """Keys of the subnets measured for this profile, except those whose status is in
        `exclude` (what a job asked to measure again)."""
        rows = self.db.execute(
            "SELECT subnet_key, status FROM measurements WHERE profile_hash = ? AND role = "
            "'sample'",
            (profile_hash,),
        )
        return {r["subnet_key"] for r in rows if r["status"] not in exclude}

    @_guarded
    def measurements(
        self,
        profile_hash: str | None = None,
        role: str = "sample",
        statuses: tuple[str, ...] = ("ok", "unstable", "imported", "failed"),
    ) -> list[dict]:
        sql = (
            "SELECT m.*, p.name AS profile, s.json AS arch, s.space AS space FROM measurements m "
            "JOIN profiles p ON p.hash = m.profile_hash JOIN subnets s ON s.key = m.subnet_key "
            f"WHERE m.role = ? AND m.status IN ({', '.join('?' * len(statuses))})"
        )
        params: list[Any] = [role, *statuses]
        if profile_hash:
            sql += " AND m.profile_hash = ?"
            params.append(profile_hash)
        rows = [dict(r) for r in self.db.execute(sql + " ORDER BY m.id", params)]
        baseline = self.anchor_baselines()
        for r in rows:
            base = baseline.get((r["profile_hash"], r["anchor_key"]))
            r["anchor_baseline_ms"] = base  # what the unit of `normalized_ms` is, here
            r["normalized_ms"] = r["ratio"] * base if r["ratio"] is not None and base else None
            extra = json.loads(r["stats"]) if r["stats"] else {}
            # What other processes used while it was measured: reported beside it, not a verdict.
            cpu = extra.get("cpu")
            r["other_cores"] = cpu.get("other_cores") if isinstance(cpu, dict) else None
            # Seconds the device spent on it, every attempt (None: imported, or stored before
            # bfnas recorded it).
            r["device_s"] = extra.get("device_s")
        return rows

    @_guarded
    def anchor_baselines(self) -> dict[tuple[str, str], float]:
        """Per profile and anchor, the median of every stored median of that anchor: its
        latency at the device's typical speed.

        A measurement's `normalized_ms` is its ratio to the anchor run beside it times this
        baseline: its latency at the device's typical speed, free of the speed swings that
        happened while it was measured. It moves only as the baseline gains data."""
        out: dict[tuple[str, str], list[float]] = {}
        for r in self.db.execute(
            "SELECT profile_hash, anchor_key, anchor_ms FROM measurements "
            "WHERE anchor_ms IS NOT NULL AND status IN ('ok', 'unstable')"
        ):
            out.setdefault((r["profile_hash"], r["anchor_key"]), []).append(r["anchor_ms"])
        return {k: float(statistics.median(v)) for k, v in out.items()}

    # -- reports ------------------------------------------------------------------------
    @_guarded
    def summary(self) -> dict:
        out = []
        for p in self.profiles():
            counts = {
                r["status"]: r["n"]
                for r in self.db.execute(
                    "SELECT status, COUNT(*) AS n FROM measurements "
                    "WHERE profile_hash = ? AND role = 'sample' GROUP BY status",
                    (p["hash"],),
                )
            }
            refs = self.db.execute(
                "SELECT COUNT(*) AS n FROM measurements WHERE profile_hash = ? AND role = "
                "'reference'",
                (p["hash"],),
            ).fetchone()["n"]
            out.append(
                {
                    "profile": p["name"],
                    "hash": p["hash"],
                    "imported": bool(p["imported"]),
                    "measurements": sum(counts.values()),
                    "by_status": counts,
                    "reference_measurements": refs,
                }
            )
        runs = self.db.execute("SELECT COUNT(*) AS n FROM runs").fetchone()["n"]
        subnets = self.db.execute("SELECT COUNT(*) AS n FROM subnets").fetchone()["n"]
        return {"db": str(self.path), "profiles": out, "subnets": subnets, "runs": runs}

    @_guarded
    def export_csv(self, path: Path) -> int:
        rows = self.measurements()
        fields = [
            "profile",
            "profile_hash",
            "subnet_key",
            "space",
            "layers",
            "hidden",
            "heads",
            "qkv",
            "ffn",
            "status",
            *STAT_COLUMNS,
            "normalized_ms",
            "other_cores",
            "reference_ms",
            "attempts",
            "reason",
            "created",
            "arch",
        ]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                arch = json.loads(r["arch"])
                w.writerow(
                    {
                        **r,
                        "layers": arch["layers"],
                        "hidden": arch["hidden"],
                        "heads": " ".join(map(str, arch["heads"])),
                        "qkv": " ".join(map(str, arch["qkv"])),
                        "ffn": " ".join(map(str, arch["ffn"])),
                    }
                )
        return len(rows)

    @_guarded
    def runs(self, kind: str, profile_hash: str | None = None) -> list[dict]:
        """Every run of one kind (`search`, `profile`, ...), oldest first, with its profile's
        name; only one profile's with `profile_hash`."""
        sql = (
            "SELECT r.*, p.name AS profile FROM runs r JOIN profiles p ON p.hash = "
            "r.profile_hash WHERE r.kind = ?"
        )
        params = [kind]
        if profile_hash is not None:
            sql += " AND r.profile_hash = ?"
            params.append(profile_hash)
        return [dict(r) for r in self.db.execute(sql + " ORDER BY r.id", params)]

    @_guarded
    def integrity(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]
