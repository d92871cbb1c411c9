"""`SqliteStore`: the guarded SQLite file every bfnas store is (latency, accuracy).

A store's numbers are worth hours of device or training time, so the file is guarded the same
way for each kind: opening is checked before anything can change the file (a file that is not
SQLite, a damaged store, an SQLite file bfnas did not make, a store of another kind and a store
of another schema version are each one line, `InputError`, and stay byte for byte as they
were); a store is created (or a 0-byte file initialised, as SQLite itself would) only by a
writing open; a read-only open refuses a missing or empty file and never writes. Every SQLite
error a method meets is one line at this boundary: a full disk is `disk_full` (the transaction
is rolled back, so a rerun resumes), a lock held past the timeout is `OperationFailed`, damage
found on the way is `InputError`.

A subclass names its kind, schema, schema version and tables (`KIND`, `SCHEMA`,
`SCHEMA_VERSION`, `TABLES`). Its schema has a `meta(key, value)` table, a `runs` table with
`host`, `pid`, `status` and `summary` (runs of killed processes are marked `interrupted`), and
a `claims` table with `host`, `pid` and `created` (what a process is working on right now).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from bfnas.errors import InputError, OperationFailed, disk_full, short
from bfnas.models.outputs import nearest_existing

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 60
# An I/O error with less free space than this on the store's filesystem is taken for a full
# disk: SQLite reports a -shm file it could not grow as an I/O error, not as SQLITE_FULL.
FULL_MARGIN_BYTES = 1 << 20
# Stores made before their kind was recorded in meta ('store'), told apart by their tables:
# every one of them is a latency store (schema 1 and 2).
UNMARKED_KINDS = {"latency store": frozenset({"profiles", "measurements"})}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with this id exists (one of another user's counts)."""
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


def _article(kind: str) -> str:
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


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


def _connect(path: Path, read_only: bool, timeout_s: float) -> sqlite3.Connection:
    if not read_only:
        return sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    if _read_only_fs(path):
        # Nobody can write a read-only filesystem, so the file is immutable. Without a -shm
        # file SQLite cannot open a WAL store read-only otherwise (it cannot make one here).
        shm = Path(f"{path}-shm").exists() and Path(f"{path}-wal").exists()
        uri = path.absolute().as_uri() + ("?mode=ro" if shm else "?mode=ro&immutable=1")
        return sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
    if not os.access(nearest_existing(path.parent), os.W_OK):
        uri = path.absolute().as_uri() + "?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
    # A writable folder: a plain connection that may not write. Unlike `mode=ro`, whose -wal
    # and -shm files would stay behind, the last connection to close removes them (and
    # checkpoints what a killed writer committed), so reading leaves the folder as it was.
    db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    db.execute("PRAGMA query_only = ON")
    return db


F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """A store method whose SQLite errors are one line (see `SqliteStore.store_error`)."""

    @functools.wraps(method)
    def wrapper(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        with self.one_line():
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class SqliteStore:
    """A bfnas store of one kind at `path`; see the module's docstring.

    By default it is opened for writing: a missing or 0-byte file becomes a new store
    (`create=False`: refused instead), and runs left `running` by processes of this host that
    are gone are marked `interrupted`. `read_only=True` opens an existing store without
    writing anything to it.
    """

    KIND: ClassVar[str]  # "latency store": what every message calls the file
    SCHEMA: ClassVar[str]  # CREATE ... IF NOT EXISTS statements, run at every writing open
    SCHEMA_VERSION: ClassVar[int]
    TABLES: ClassVar[tuple[str, ...]]  # a store lacking one of these is damaged
    MAKE_HINT: ClassVar[str]  # how a user makes one, for an empty file read
    ANOTHER: ClassVar[str]  # what to do instead of a damaged store

    def __init__(self, path: str | Path, *, read_only: bool = False, create: bool = True) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.host = socket.gethostname()
        if read_only:
            self._connect_and_open(self._check_bytes(self.path, read_only, create))
            return
        # Writers open one at a time: a process that creates the store writes its header and
        # switches it to WAL while another would read a half-made file ("truncated") or find
        # the journal mode locked. The lock is on the nearest folder that exists already.
        with _folder_lock(nearest_existing(self.path.parent)):
            fresh = self._check_bytes(self.path, read_only, create)
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

    # -- errors -------------------------------------------------------------------------
    def busy_timeout_s(self) -> float:
        """Seconds a write waits for another process's lock before it gives up (a method, so
        that a kind reads its own module's setting, which tests shorten)."""
        return BUSY_TIMEOUT_S

    @classmethod
    def _damaged(cls, path: Path, what: str) -> InputError:
        return InputError(
            str(path), None, f"damaged ({what}); restore it from a copy or {cls.ANOTHER}"
        )

    def store_error(self, exc: sqlite3.Error) -> Exception | None:
        """The one-line error for an SQLite error met on this store, or None for a bug (a
        misused API, a broken constraint), which keeps its own type."""
        path = self.path
        code = getattr(exc, "sqlite_errorcode", None)
        base = None if code is None else code & 0xFF
        if base == sqlite3.SQLITE_FULL:
            return disk_full(path)
        if base in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return self._damaged(path, f"integrity check: {exc}")
        if base in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return OperationFailed(
                f"{path}: the store is locked: another process held it for over "
                f"{self.busy_timeout_s()} s; run the same command again when it is done"
            )
        if base == sqlite3.SQLITE_READONLY:
            return InputError(str(path), None, _not_writable(path) or f"cannot write ({exc})")
        if base == sqlite3.SQLITE_CANTOPEN and not os.access(
            nearest_existing(path.parent), os.W_OK
        ):
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

    @contextmanager
    def one_line(self) -> Iterator[None]:
        """An SQLite error inside the block as its one-line error (see `store_error`)."""
        try:
            yield
        except sqlite3.Error as exc:
            mapped = self.store_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def _check_bytes(cls, path: Path, read_only: bool, create: bool) -> bool:
        """Cheap checks of the file before SQLite opens it (SQLite would change or refuse it
        with a traceback). Returns True when there is no store yet: absent or 0 bytes."""
        where = str(path)
        if path.is_dir():
            raise InputError(where, None, "a folder, not a store file")
        # Looked at before the file's size: a writer closing now checkpoints its -wal into the
        # file and then deletes it, and the file is whole only once the -wal is gone.
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
                    where, None, f"an empty file, not a bfnas {cls.KIND} ({cls.MAKE_HINT})"
                )
            return True  # what SQLite itself does with a 0-byte file: make the database in it
        if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
            raise InputError(where, None, f"not a bfnas {cls.KIND} (not an SQLite file)")
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        if page < 512 or page & (page - 1):
            raise cls._damaged(path, f"its header gives a page size of {page}")
        # The page count in the header is valid when the change counter matches the
        # version-valid-for number; pages may still sit in a -wal file that is not checkpointed.
        pages = int.from_bytes(head[28:32], "big")
        if pages and head[24:28] == head[92:96] and size < pages * page and not wal_pages:
            raise cls._damaged(path, f"truncated: {size:,} bytes, its header says {pages * page:,}")
        return False

    def _connect_and_open(self, fresh: bool) -> None:
        with self.one_line():
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), so a claim
            # check and the claim itself happen under one write lock.
            self.db = _connect(self.path, self.read_only, self.busy_timeout_s())
        try:
            with self.one_line():
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
        exists = not cls._check_bytes(path, read_only=False, create=True)
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
        # Its kind is recorded too, so that another kind of store refuses it by name.
        self.db.executescript(
            f"BEGIN IMMEDIATE; {self.SCHEMA} INSERT OR IGNORE INTO meta VALUES "
            f"('schema_version', '{self.SCHEMA_VERSION}'); INSERT OR IGNORE INTO meta VALUES "
            f"('store', '{self.KIND}'); COMMIT;"
        )
        self.mark_interrupted()

    def _meta(self, key: str) -> str | None:
        try:
            found = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:  # a meta table of another shape: someone else's
            return None
        return None if found is None else found[0]

    def _check_schema(self) -> bool:
        """Refuse an SQLite file that is not a bfnas store of this kind and schema, or is
        damaged, reading only. Returns True for an SQLite database without any table (a new
        store may be made in it)."""
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
                    where, None, f"an SQLite database without tables, not a bfnas {self.KIND} yet"
                )
            return True
        if "meta" not in tables:
            raise InputError(
                where,
                None,
                f"not a bfnas {self.KIND} (an SQLite database "
                f"with tables {short(sorted(tables))} and no meta)",
            )
        # The kind before the version: a store of another kind is that, whatever its version.
        kind = self._meta("store") or next(
            (k for k, marks in UNMARKED_KINDS.items() if marks <= tables), None
        )
        if kind is not None and kind != self.KIND:
            # Another bfnas kind reads as words; anything else is quoted, as a user's value.
            plain = len(kind) <= 40 and kind.replace(" ", "").isalpha()
            found_kind = kind if plain else short(kind, 40)
            raise InputError(where, None, f"a bfnas {found_kind}, not {_article(self.KIND)}")
        found = self._meta("schema_version")
        if not found:
            raise InputError(
                where, None, f"not a bfnas {self.KIND} (its meta table has no schema_version)"
            )
        if found != str(self.SCHEMA_VERSION):
            raise InputError(
                where,
                "schema_version",
                f"store has schema {short(found)}, this bfnas reads {self.SCHEMA_VERSION}",
            )
        missing = [t for t in self.TABLES if t not in tables]
        if missing:
            raise self._damaged(self.path, f"tables missing: {', '.join(missing)}")
        # Every page read once (milliseconds for a 10 MB store): damage is found here, not
        # halfway through a job or as wrong numbers.
        check = self.db.execute("PRAGMA quick_check(3)").fetchall()
        if [r[0] for r in check] != ["ok"]:
            found = "; ".join(" ".join(str(r[0]).split()) for r in check)
            raise self._damaged(self.path, f"integrity check: {found[:200]}")
        return False

    # -- runs and claims ----------------------------------------------------------------
    @guarded
    def mark_interrupted(self) -> int:
        """Mark the runs of this host still `running` whose process is gone `interrupted`
        (a killed job cannot say so itself); returns how many."""
        rows = self.db.execute(
            "SELECT id, pid FROM runs WHERE status = 'running' AND host = ?", (self.host,)
        ).fetchall()
        gone = [r["id"] for r in rows if r["pid"] != os.getpid() and not pid_alive(r["pid"])]
        if gone:
            note = json.dumps({"interrupted": f"its process was gone at {now()}"})
            with self.transaction() as db:
                db.executemany(
                    "UPDATE runs SET status = 'interrupted', summary = ? "
                    "WHERE id = ? AND status = 'running'",
                    [(note, i) for i in gone],
                )
        return len(gone)

    def _take_claim(self, db: sqlite3.Connection, work: dict[str, Any]) -> bool:
        """Claim the work whose `claims` columns are `work`, inside the caller's transaction
        (which checked it is not done yet). False while another live process holds it; a
        claim of a process of this host that is gone is taken over. One of another host is
        never taken: whether its process lives cannot be told from here."""
        where = " AND ".join(f"{column} = ?" for column in work)
        held = db.execute(
            f"SELECT host, pid FROM claims WHERE {where}", tuple(work.values())
        ).fetchone()
        if held and not (
            held["host"] == self.host and (held["pid"] == os.getpid() or not pid_alive(held["pid"]))
        ):
            return False
        columns = [*work, "host", "pid", "created"]
        db.execute(
            f"INSERT OR REPLACE INTO claims({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})",
            (*work.values(), self.host, os.getpid(), now()),
        )
        return True

    # -- the connection -----------------------------------------------------------------
    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
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
            mapped = self.store_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    @guarded
    def integrity(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]
